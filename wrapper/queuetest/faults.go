package queuetest

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// Op names one of the queue's operations, for Inject.
type Op string

// The operations faults can be injected into.
const (
	OpSubmit Op = "submit"
	OpStatus Op = "status"
	OpStream Op = "stream"
	OpResult Op = "result"
	OpCancel Op = "cancel"
	// OpHistory is the request history (fal's Platform API).
	OpHistory Op = "history"
	// OpStorage is fal's storage (upload initiate, PUT, complete).
	OpStorage Op = "storage"
	// OpFile is a download of a result image (Fail, DropBefore, Truncate
	// and Slow apply).
	OpFile Op = "file"
)

type faultKind int

const (
	faultStatus faultKind = iota
	faultDropBefore
	faultDropAfter
	faultTruncate
	faultGarble
	faultSlow
	faultBreakStream
	faultStallStream
	faultEndStreamEarly
	faultComeBack
)

// Fault is one scripted misbehaviour, consumed by one request of the
// operation it was injected into (see Server.Inject).
type Fault struct {
	kind        faultKind
	code        int
	retryAfter  string
	delay       time.Duration
	userTimeout bool
	retryable   string
	plain       bool
	noID        bool
}

// Fail answers with code and a platform error body (error_type and
// X-Fal-Error-Type chosen as fal does for that code), without acting.
func Fail(code int) Fault { return Fault{kind: faultStatus, code: code} }

// RetryAfter adds a Retry-After header of secs seconds to a Fail fault.
func (f Fault) RetryAfter(secs int) Fault { f.retryAfter = strconv.Itoa(secs); return f }

// RetryAfterValue adds a Retry-After header with a literal value (an HTTP
// date, say) to a Fail fault.
func (f Fault) RetryAfterValue(v string) Fault { f.retryAfter = v; return f }

// Retryable adds X-Fal-Retryable: true or false to a Fail fault.
func (f Fault) Retryable(ok bool) Fault { f.retryable = strconv.FormatBool(ok); return f }

// Plain makes a Fail fault a bare error, as a gateway or a crashing model
// sends it: no error_type in the body, no X-Fal-Error-Type.
func (f Fault) Plain() Fault { f.plain = true; return f }

// WithoutRequestID makes a Truncate or Garble fault lose the
// X-Fal-Request-Id header too: the client cannot learn the job's id from
// the answer at all.
func (f Fault) WithoutRequestID() Fault { f.noID = true; return f }

// UserTimeout answers 504 with X-Fal-Request-Timeout-Type: user: the job
// missed the start deadline the caller set. Clients must not retry it.
func UserTimeout() Fault { return Fault{kind: faultStatus, code: 504, userTimeout: true} }

// DropBefore closes the connection without acting on the request.
func DropBefore() Fault { return Fault{kind: faultDropBefore} }

// DropAfter acts on the request (a submit queues the job) and then closes
// the connection without answering.
func DropAfter() Fault { return Fault{kind: faultDropAfter} }

// Truncate acts, then sends half of the answer's body under a full
// Content-Length and closes the connection.
func Truncate() Fault { return Fault{kind: faultTruncate} }

// Garble acts, then answers 200 with a body that is not valid JSON.
func Garble() Fault { return Fault{kind: faultGarble} }

// Slow waits d (or until the client gives up) before handling the request.
func Slow(d time.Duration) Fault { return Fault{kind: faultSlow, delay: d} }

// BreakStream (status stream only) sends the first event, then drops the
// connection.
func BreakStream() Fault { return Fault{kind: faultBreakStream} }

// StallStream (status stream only) sends the first event, then stays
// silent, without keepalives, until the client hangs up.
func StallStream() Fault { return Fault{kind: faultStallStream} }

// EndStreamEarly (status stream only) sends the first event, then closes
// the stream cleanly although the job has not completed.
func EndStreamEarly() Fault { return Fault{kind: faultEndStreamEarly} }

// ComeBackAfter acts and answers as usual, 2xx included, with a
// Retry-After header of v (seconds or an HTTP date): how a busy queue
// paces its pollers.
func ComeBackAfter(v string) Fault { return Fault{kind: faultComeBack, retryAfter: v} }

// errorTypeFor is the error_type fal sends with a platform error code.
func errorTypeFor(code int) string {
	switch code {
	case 400:
		return "bad_request"
	case 408, 504:
		return "request_timeout"
	case 429:
		return "rate_limited"
	case 499:
		return "client_cancelled"
	case 500:
		return "internal_error"
	case 502:
		return "runner_incomplete_response"
	case 503:
		return "runner_scheduling_failure"
	}
	return ""
}

// String names the fault, as FaultCounts keys it.
func (f Fault) String() string {
	switch f.kind {
	case faultStatus:
		if f.userTimeout {
			return "user-timeout"
		}
		return strconv.Itoa(f.code)
	case faultDropBefore:
		return "drop-before"
	case faultDropAfter:
		return "drop-after"
	case faultTruncate:
		return "truncate"
	case faultGarble:
		return "garble"
	case faultSlow:
		return "slow"
	case faultBreakStream:
		return "break-stream"
	case faultStallStream:
		return "stall-stream"
	case faultEndStreamEarly:
		return "end-stream-early"
	case faultComeBack:
		return "come-back"
	}
	return "unknown"
}

// Recoverable lists, per operation, every fault a client can recover from:
// retryable codes (with and without Retry-After), dropped connections,
// truncated and garbled bodies, slow answers and, for the stream, every
// way it can break.
func Recoverable() map[Op][]Fault {
	common := []Fault{
		Fail(429).RetryAfter(1), Fail(500), Fail(502), Fail(503).RetryAfter(2), Fail(504), Fail(408),
		DropBefore(), DropAfter(), Truncate(), Garble(), Slow(3 * time.Second),
	}
	return map[Op][]Fault{
		OpSubmit: common,
		OpStatus: common,
		OpResult: common,
		OpCancel: common,
		OpStream: {Fail(405), Fail(501), Fail(502), DropBefore(), BreakStream(), StallStream(), EndStreamEarly(), Slow(time.Second)},
		OpFile:   {Fail(500), Fail(502), Fail(503).RetryAfter(1), Fail(429).RetryAfter(1), DropBefore(), Truncate(), Slow(time.Second)},
	}
}

type chaos struct {
	mu    sync.Mutex
	rate  float64
	rng   *rand.Rand
	menus map[Op][]Fault
}

// Chaos makes each request that has no scripted fault draw, with
// probability rate, a random fault from menus[op] (Recoverable() when nil),
// from a generator seeded with seed so a run can be replayed.
func Chaos(rate float64, seed uint64, menus map[Op][]Fault) Option {
	if menus == nil {
		menus = Recoverable()
	}
	return func(c *config) {
		c.chaos = &chaos{rate: rate, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), menus: menus}
	}
}

func (c *chaos) draw(op Op) *Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	menu := c.menus[op]
	if len(menu) == 0 || c.rng.Float64() >= c.rate {
		return nil
	}
	f := menu[c.rng.IntN(len(menu))]
	return &f
}
