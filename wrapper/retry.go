package wrapper

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fluxi2i/fluxi2i/internal/errprefix"
)

// maxRetryAfter bounds a server's Retry-After; the context bounds it too.
const maxRetryAfter = 2 * time.Minute

// outcome is what one attempt came to, as the retry decision sees it.
type outcome struct {
	err    error       // nil: success
	status int         // the answer's status code; 0 when none came
	header http.Header // the answer's headers, when one came
}

// classify tells whether another attempt may help (retry) and whether the
// server may have acted on this one (ambiguous). It is a pure function of
// the outcome:
//   - a transport failure, an idle timeout or a body cut short: retried;
//     ambiguous unless the connection was never made;
//   - a body over the size limit: not retried, ambiguous;
//   - an *APIError: retried when retryable (408, 429, 500, 502, 503, 504,
//     or X-Fal-Retryable: true; never a 504 of the caller's start
//     deadline, never X-Fal-Retryable: false); ambiguous when retried,
//     except 429 and 503, which turn the request away before any job;
//   - a 2xx whose body could not be decoded: retried, ambiguous;
//   - a permanent failure (a refused download, bytes that are not the
//     image declared) or a request that could not be built: neither.
func classify(o outcome) (retry, ambiguous bool) {
	var se *sendError
	var ae *APIError
	var tooBig *tooLargeError
	var perm permanent
	switch {
	case o.err == nil:
		return false, false
	case errors.As(o.err, &perm):
		return false, false
	case errors.As(o.err, &tooBig):
		return false, true
	case errors.As(o.err, &se):
		return true, se.sent
	case errors.As(o.err, &ae):
		if !ae.Retryable {
			return false, false // a definite answer: nothing was done
		}
		return true, ae.StatusCode != http.StatusTooManyRequests && ae.StatusCode != http.StatusServiceUnavailable
	case o.status >= 200 && o.status < 300:
		return true, true // undecodable answer
	}
	return false, false
}

// retryDelay is how long to wait before retry number attempt: the
// server's Retry-After when it sent one (never less than floor, never more
// than maxRetryAfter), the backoff otherwise.
func retryDelay(o outcome, attempt int, b Backoff, floor time.Duration, now time.Time) time.Duration {
	if d := retryAfter(o.header, now); d >= 0 {
		return max(d, floor)
	}
	return b(attempt)
}

// retryAfter parses Retry-After (seconds or an HTTP date), capped at
// maxRetryAfter; -1 when absent or unparsable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return -1
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || secs != secs {
			return -1
		}
		d = time.Duration(min(secs, maxRetryAfter.Seconds()) * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return -1
	}
	return min(d, maxRetryAfter)
}

// try is one attempt at an operation: it builds the request with gen,
// sends it as a (send, or roundTrip for an API call) and reads the answer,
// closing every answer body it does not hand to its caller.
type try func(ctx context.Context, a *attempt) error

// op is one operation for do.
type op struct {
	name, id string
	via      *route // nil: an API call
	submit   bool   // the paid POST: ambiguity is reported, atMostOnce honoured
	// once makes the first failure final (a status stream in StatusAuto,
	// which polling then replaces).
	once bool
	// persist keeps retrying past the retry budget, until the context
	// ends, the failures it names (observing a job that exists).
	persist persistence
	// settle looks for the job of a submit whose attempts from first to
	// last may have queued it; nil when it finds it (settle.go).
	settle func(ctx context.Context, first, last time.Time) error
	// lane is the owner's lane its attempts send under (nil: each its
	// own).
	lane *lane
}

// resultRepeats is how many times in a row a finished job's result call
// must meet the same plain 5xx (status and body) before it counts as the
// model's own answer rather than a transient fault.
//
// A finished job's result also gives up after twice the retry budget of
// plain 5xx answers (other faults not counted), however they differ.
const resultRepeats = 3

// persistence is which failures an operation keeps retrying past the
// retry budget.
type persistence int

const (
	persistNone persistence = iota
	// persistUnanswered: no answer came (transport failure, idle timeout,
	// body cut short, a 2xx broken in transit), or a gateway's or the
	// platform's answer came (408, 429, 502, 503, 504, anything with
	// X-Fal-Error-Type), or the server said a retry helps
	// (X-Fal-Retryable: true). A result call of a finished job persists
	// so: a 500 without X-Fal-Error-Type there is the model's own answer.
	persistUnanswered
	// persistRetryable: every retryable failure (status polls).
	persistRetryable
)

// keepsTrying reports whether o persists past the budget after out.
func (p persistence) keepsTrying(out outcome) bool {
	switch p {
	case persistRetryable:
		return true
	case persistUnanswered:
		var se *sendError
		if errors.As(out.err, &se) {
			return true
		}
		switch {
		case out.status >= 200 && out.status < 300:
			return true // an answer that broke in transit
		case out.status == http.StatusRequestTimeout, out.status == http.StatusTooManyRequests, out.status == http.StatusBadGateway,
			out.status == http.StatusServiceUnavailable, out.status == http.StatusGatewayTimeout:
			return true // the gateway's answer, not the model's
		case out.header.Get("X-Fal-Error-Type") != "":
			return true // a platform error (internal_error, ...), not the model's own
		}
		return strings.EqualFold(out.header.Get("X-Fal-Retryable"), "true")
	}
	return false
}

// do runs o's attempts until one succeeds, one fails for good, the
// retries run out or ctx ends, and returns the number of requests sent.
// A submit's failure is a *SubmitError saying whether the job may exist;
// a submit that may have queued its job is settled through the request
// history (o.settle) before it is sent again or given up.
func (c *Client) do(ctx context.Context, s *settings, o op, run try) (attempts int, err error) {
	unknown := false // some submit attempt may have queued the job
	var first, last time.Time
	var history error // why the history did not settle it
	fail := func(n int, err error) (int, error) {
		if o.submit {
			return n, &SubmitError{Attempts: n, Unknown: unknown, Err: err, History: history}
		}
		return n, err
	}
	// stopped is the failure of a call whose context ended, after n
	// requests, the last of which failed with last (nil: none failed).
	stopped := func(n int, last error) (int, error) {
		if last == nil {
			return fail(n, errprefix.Errorf("fluxi2i: %s%s: %w", o.name, ofID(o.id), ctx.Err()))
		}
		return fail(n, errprefix.Errorf("fluxi2i: %s%s: %w (the last attempt: %v)", o.name, ofID(o.id), ctx.Err(), last))
	}
	var prev outcome // the last plain 5xx of a finished job's result
	repeats, plain, warned, resubmitWarned := 0, 0, false, false
	spent := 0 // attempts against the retry budget: since the last that progressed
	via := o.via
	if via == nil {
		via = &c.apiRoute
	}
	for n := 1; ; n++ {
		if ctx.Err() != nil {
			return stopped(n-1, nil) // nothing more was sent
		}
		if via.paced {
			if c.waitPause(ctx, o.name) != nil {
				return stopped(n-1, nil)
			}
		}
		a := &attempt{op: o.name, id: o.id, resend: n - 1, via: via, lane: o.lane}
		var sent time.Time // a submit's attempts are the window the history is searched in
		if o.submit {
			sent = time.Now()
		}
		err := run(ctx, a)
		a.judge(err)
		if err == nil {
			if a.started {
				c.health.ok()
			}
			return n, nil
		}
		if !a.started { // never reached the wire
			return fail(n-1, err)
		}
		if a.progressed {
			spent = 0
		}
		spent++
		out := outcome{err: err, status: a.status, header: a.header}
		retry, ambiguous := classify(out)
		if retry {
			c.health.failed(failureText(err, a.status), time.Now())
		}
		if o.submit && ambiguous {
			unknown = true // the server may have the body, whatever the context says
			if first.IsZero() {
				first = sent
			}
			last = time.Now()
			if o.settle != nil && ctx.Err() == nil {
				history = o.settle(ctx, first, last)
				if history == nil {
					return n, nil // the history found the job
				}
			}
		}
		persist := o.persist.keepsTrying(out) ||
			(o.submit && unknown && !s.atMostOnce) // giving up would lose a job that may exist
		plain5xx := o.persist == persistUnanswered && out.status >= 500 && !persist
		if !plain5xx {
			repeats = 0 // only answers in a row count
		}
		switch {
		case ctx.Err() != nil:
			return stopped(n, err)
		case o.submit && s.atMostOnce && ambiguous:
			return fail(n, err)
		case !retry, o.once:
			return fail(n, err)
		case plain5xx:
			// A plain 5xx of a finished job's result: the model's own
			// answer only when it repeats, never for a spent budget.
			if repeats > 0 && sameAnswer(prev, out) {
				repeats++
			} else {
				repeats = 1
			}
			prev, plain = out, plain+1
			if repeats >= resultRepeats || plain >= 2*(s.retries+1) {
				return fail(n, err) // the same answer in a row, or plain 5xx only, many times
			}
			if plain > s.retries && !warned {
				warned = c.warnOnce(o, n, err)
			}
		case spent > s.retries && !persist:
			return fail(n, err)
		case spent > s.retries && !warned:
			warned = c.warnOnce(o, n, err)
		}
		wait := retryDelay(out, min(spent, 30), s.backoff, s.pollFirst, time.Now())
		if out.status == http.StatusTooManyRequests {
			c.pause(o.name, wait) // the account's limit: every such call of this client waits
		}
		c.set.log.Debug("fluxi2i: retrying", "op", o.name, "request_id", o.id, "attempt", n+1, "wait", wait, "error", err)
		c.event(ctx, JobEvent{Kind: EventRetry, RequestID: o.id, Op: o.name, Attempt: n + 1, Delay: wait, Reason: failureText(err, a.status)})
		if sleep(ctx, wait) != nil {
			return stopped(n, err)
		}
		c.stats.retries.Add(1)
		if o.submit {
			c.stats.submitRetries.Add(1)
			if unknown && !resubmitWarned {
				resubmitWarned = true
				c.set.log.Warn("fluxi2i: submitting again after a lost answer; if the lost one had queued the job it may run twice",
					"attempt", n+1, "error", err, "history", history)
			}
		}
	}
}

// warnKey names a kind of call of a job, for warnOnce.
type warnKey struct{ op, id string }

// warnOnce logs, at warn level, that o keeps retrying past the budget:
// once per job and kind of call (a job polled through an outage warns
// once, not once a poll; a call without a job, once a call). The set of
// warned jobs is forgotten past maxWarned entries. It reports true.
func (c *Client) warnOnce(o op, n int, err error) bool {
	if o.id != "" {
		if _, seen := c.warned.LoadOrStore(warnKey{o.name, o.id}, struct{}{}); seen {
			return true
		}
		if c.warnedN.Add(1) > maxWarned {
			c.warned.Clear()
			c.warnedN.Store(0)
		}
	}
	c.set.log.Warn("fluxi2i: still retrying past the retry budget", "op", o.name, "request_id", o.id, "attempts", n, "error", err)
	return true
}

// maxWarned bounds the jobs warnOnce remembers.
const maxWarned = 10000

// sameAnswer reports two error answers with the same status, error type
// and detail (a trace id elsewhere in the body does not make them differ).
func sameAnswer(a, b outcome) bool {
	var ea, eb *APIError
	return a.status == b.status && errors.As(a.err, &ea) && errors.As(b.err, &eb) &&
		ea.ErrorType == eb.ErrorType && ea.Detail == eb.Detail && (ea.Detail != "" || bytes.Equal(ea.Body, eb.Body))
}

// pause makes every call of operation op (a submit, say) of the client
// wait d from now before its next attempt: a 429 is the account's limit,
// so the client slows down as a whole (a batch of jobs together), not one
// request at a time. Other operations go on: a job already queued is still
// watched and fetched.
func (c *Client) pause(op string, d time.Duration) {
	v, _ := c.paused.LoadOrStore(op, new(atomic.Int64))
	p := v.(*atomic.Int64)
	until := time.Now().Add(d).UnixNano()
	for {
		cur := p.Load()
		if cur >= until || p.CompareAndSwap(cur, until) {
			return
		}
	}
}

// waitPause waits out a pause of op, or until ctx ends.
func (c *Client) waitPause(ctx context.Context, op string) error {
	v, ok := c.paused.Load(op)
	if !ok {
		return nil
	}
	return sleep(ctx, time.Until(time.Unix(0, v.(*atomic.Int64).Load())))
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
