package wrapper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxi2i/fluxi2i/internal/errprefix"
)

// The one send path.
//
// send sends every request the client makes: API calls, the status
// stream, image downloads and the proxy's forwards. Each is one attempt,
// whose state is an *attempt value owned by whoever makes it (the retry
// loop, do, for all but the proxy's forwards): no state travels in the
// context. An attempt sends under a lane (a context and an idle timer):
// its own, or the one its owner lends the calls of a job (begin). send
// hands back the answer whatever its status, with a body whose Close ends
// the attempt's transport (gen's parsers close it when they have read
// it); a failure to send ends it at once. The Observer hears of the
// attempt when its body is closed and its owner has judged it (judge): a
// parsed answer that proves undecodable is a failure there too.
// checkAnswer is the funnel: a non-2xx answer becomes an *APIError. gen
// builds every API request (its New…RequestWithContext builders, from the
// spec, for the attempt's context) and parses every answer (its
// Parse…Response parsers); roundTrip joins the two for an API call.

// route is where an attempt's request goes, and how.
type route struct {
	hc     *http.Client
	auth   bool // attach the credential (authorize: to a configured origin only)
	capped bool // the answer's body is capped at WithMaxResponseBytes
	paced  bool // the account's 429 pauses apply (API calls)
}

// attempt is one try of one request. The loop that makes it owns it; send
// fills in what came back.
type attempt struct {
	op, id string
	resend int    // attempts of the same request before this one
	via    *route // where the request goes

	started bool        // send was reached: the request was built
	status  int         // the answer's status code, 0 when none came
	header  http.Header // the answer's headers, when one came
	err     error       // the attempt's failure, as the observer hears it
	// progressed is set by an attempt that delivered something before it
	// failed (a status stream's events): the retry budget starts afresh.
	progressed bool

	lane     *lane                    // what it sends under: its owner's, or nil (its own)
	ctx      context.Context          // the lane's context, once the attempt began
	idle     *idleTimer               // the lane's timer: cancels the attempt when it stalls
	body     answerBody               // the answer's body wrapper (storage)
	sent     sentBody                 // the request's body wrapper (storage)
	replay   atomic.Pointer[sentBody] // the body's latest replay (GetBody), if any
	released atomic.Bool              // the attempt left its lane
	parties  atomic.Int32             // the verdict, and the answer's body while open
	obs      Observer                 // set once the observer saw the request start
	obsCtx   context.Context          // what StartRequest returned
}

// release ends the attempt's use of its lane, once. A clean end (the
// answer read to its end, and the request's body, if any, closed by the
// transport: it reads no more of it) leaves a shared lane for the next
// attempt; any other end, or the end of a lane of its own, stops the
// lane's timer and ends its context, which aborts what is still in
// flight (an upload the server answered before it was done, say).
func (a *attempt) release(clean bool) {
	if a.released.CompareAndSwap(false, true) {
		sent := &a.sent
		if r := a.replay.Load(); r != nil {
			sent = r
		}
		a.lane.leave(clean && (sent.ReadCloser == nil || sent.closed.Load()))
	}
}

// lane is the context and idle timer that attempts send under, one at a
// time. An attempt has one of its own, made for it and ended with it,
// unless its owner lends it one: Run and Wait lend the one of their job to
// its submit, status, stream and result calls, whose attempts then share
// one context and one timer. It is made again after an attempt that did
// not end cleanly (a failure to send, a stall, an answer left before its
// end, a request body not yet closed: the latest one net/http was given,
// when it sent the body again); an attempt that failed on an answer read
// to its end (an error answer, an undecodable one) leaves it as it is.
// Every attempt of a shared lane sends under its owner's context; the
// owner ends the lane when it returns, and a polling wait ends it before
// each pause, so that a job waiting for its next poll holds none of it.
type lane struct {
	shared bool
	busy   atomic.Bool     // an attempt is sending under it
	ctx    context.Context // ends when idle fires or the lane ends
	idle   *idleTimer      // nil: no context yet, or the last one ended
}

// enter readies l for an attempt under ctx, with the idle limit d, and
// returns the context to send under; false when another attempt is under
// it (the caller then takes a lane of its own).
func (l *lane) enter(ctx context.Context, d time.Duration) (context.Context, bool) {
	if !l.busy.CompareAndSwap(false, true) {
		return nil, false
	}
	if l.idle != nil && l.idle.rearm(d) {
		return l.ctx, true // only its timer ends its context, short of ctx itself
	}
	l.end() // none yet, or its timer fired
	var cancel context.CancelFunc
	l.ctx, cancel = context.WithCancel(ctx)
	l.idle = &idleTimer{d: d, cancel: cancel}
	l.idle.t = time.AfterFunc(d, l.idle.fire)
	return l.ctx, true
}

// leave ends an attempt under l: clean keeps a shared lane's context for
// the next attempt, with its timer paused (one that fired meanwhile ends
// the lane: its context is gone).
func (l *lane) leave(clean bool) {
	if !clean || !l.shared || l.idle == nil || !l.idle.pause() {
		l.end()
	}
	l.busy.Store(false)
}

// end stops the lane's timer and ends its context.
func (l *lane) end() {
	if l.idle != nil {
		l.idle.end()
		l.idle = nil
	}
}

// done is one party's end of the attempt (its body closed, its verdict
// given); the last tells the observer, with a.err.
func (a *attempt) done() {
	if a.parties.Add(-1) == 0 && a.obs != nil {
		a.obs.EndRequest(a.obsCtx, RequestEnd{Op: a.op, StatusCode: a.status, Err: a.err})
	}
}

// judge is the owner's verdict on the attempt: err is its failure (nil: it
// succeeded). A failed attempt's transport is released at once, unless it
// left its lane already, its answer read to its end and closed (an error
// answer, cleanly when its request body was closed too); a successful
// one's, when its body is closed (OpenImage hands it over).
func (a *attempt) judge(err error) {
	if !a.started {
		return
	}
	if err != nil {
		a.err = err
		a.release(false)
	}
	a.done()
}

// begin puts the attempt a under its lane (its owner's, or one of its own
// when it has none or that one is taken) and returns the context its
// request is to be sent under: it ends when ctx does, when the attempt
// makes no progress for the idle limit or when the lane ends (with the
// attempt, unless the lane is shared and the attempt ends cleanly).
func (c *Client) begin(ctx context.Context, a *attempt) context.Context {
	var ok bool
	if a.lane != nil {
		a.ctx, ok = a.lane.enter(ctx, c.set.idle)
	}
	if !ok {
		a.lane = new(lane)
		a.ctx, _ = a.lane.enter(ctx, c.set.idle)
	}
	a.idle = a.lane.idle
	return a.ctx
}

// send sends req as the attempt a, which begins here unless it has: the
// request goes under the attempt's context (the cause is errIdle when the
// idle limit ended it), taking it unless it was built for it.
func (c *Client) send(ctx context.Context, a *attempt, req *http.Request) (*http.Response, error) {
	via := a.via
	if a.ctx == nil {
		c.begin(ctx, a)
	}
	ctx = a.ctx
	a.started = true
	a.parties.Store(1) // the verdict; the body is the other
	if via.auth {
		c.authorize(req)
	} else {
		req.Header["User-Agent"] = c.userAgent // and never the credential
		req.Header.Del("Authorization")
	}
	if o := c.set.observer; o != nil {
		a.obsCtx = o.StartRequest(ctx, req, RequestInfo{Op: a.op, RequestID: a.id, Resend: a.resend})
		a.obs = o
	}
	if req.Context() != ctx { // ctx is a *cancelCtx: the comparison cannot panic
		req = req.WithContext(ctx)
	}
	if req.Body != nil && req.Body != http.NoBody {
		a.sent.ReadCloser, a.sent.idle = req.Body, a.idle
		req.Body = &a.sent
		if again := req.GetBody; again != nil {
			// net/http sends the body again on a connection that died
			// unused, after a GOAWAY or a redirect: those reads are
			// progress too, and the transport is done with the latest.
			req.GetBody = func() (io.ReadCloser, error) {
				rc, err := again()
				if err != nil || rc == nil || rc == http.NoBody {
					return rc, err
				}
				b := &sentBody{ReadCloser: rc, idle: a.idle}
				a.replay.Store(b)
				return b, nil
			}
		}
	}
	resp, err := via.hc.Do(req)
	if err != nil {
		if a.idle.fired.Load() {
			err = errIdle
		}
		err = &sendError{op: a.op, id: a.id, sent: !notSent(err), err: scrubURL(err)}
		a.release(false)
		return nil, err
	}
	a.status, a.header = resp.StatusCode, resp.Header
	a.parties.Add(1)
	if (via == &c.apiRoute || via == &c.streamRoute) && resp.ProtoMajor >= 2 && !c.multiplexed.Load() {
		c.multiplexed.Store(true) // the queue speaks HTTP/2: streams share connections
	}
	a.body = answerBody{ReadCloser: resp.Body, a: a}
	if via.capped {
		a.body.limit = c.set.maxBody
	}
	resp.Body = &a.body
	return resp, nil
}

// maxErrorBody caps an error answer's body, read for its message.
const maxErrorBody = 1 << 20

// checkAnswer is the funnel: a non-2xx answer is read (for its message,
// capped), closed and returned as an *APIError; a 2xx one is left to its
// reader.
func checkAnswer(a *attempt, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	if a.body.limit <= 0 || a.body.limit > maxErrorBody {
		a.body.limit = maxErrorBody
	}
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = apiError(a.op, a.id, resp, b)
	}
	resp.Body.Close()
	return err
}

// roundTrip begins the attempt a, builds its API request with build (one
// of gen's builders, for the attempt's context) and sends it through the
// funnel: it returns a 2xx answer for gen's parser to read.
func (c *Client) roundTrip(ctx context.Context, a *attempt, build func(context.Context) (*http.Request, error)) (*http.Response, error) {
	req, err := build(c.begin(ctx, a))
	if err != nil {
		a.release(true) // nothing was sent
		return nil, fmt.Errorf("fluxi2i: %s%s: building the request: %w", a.op, ofID(a.id), err)
	}
	resp, err := c.send(ctx, a, req)
	if err != nil {
		return nil, err
	}
	if err := checkAnswer(a, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// undecodable is err, gen's parser's failure to decode a 2xx answer of a,
// as an error of the operation; a failure to read it is one already.
func undecodable(a *attempt, err error) error {
	var se *sendError
	if errors.As(err, &se) {
		return err
	}
	return errprefix.Errorf("fluxi2i: %s%s: undecodable HTTP %d answer: %w", a.op, ofID(a.id), a.status, err)
}

// authorize sets the User-Agent and the credential, the latter only for a
// request to a configured origin (checked here, where the key is attached;
// the origin guard checks it again on every hop).
func (c *Client) authorize(req *http.Request) {
	req.Header["User-Agent"] = c.userAgent // shared, never changed: http.Header.Set replaces a value
	if sameOrigin(req.URL, c.set.base) || sameOrigin(req.URL, c.histOrigin) || sameOrigin(req.URL, c.storeOrigin) {
		req.Header["Authorization"] = c.set.auth.values
	} else {
		req.Header.Del("Authorization")
	}
}

// sendError is an attempt that got no complete answer: a transport
// failure, an idle timeout, a body cut short. sent tells that the request
// may have reached the server.
type sendError struct {
	op, id string
	sent   bool
	err    error
}

func (e *sendError) Error() string {
	return fmt.Sprintf("fluxi2i: %s%s: %v", e.op, ofID(e.id), e.err)
}
func (e *sendError) Unwrap() error { return e.err }

// permanent marks an attempt's failure that another attempt cannot mend
// although an answer came (a refused download target, bytes that are not
// the image they were declared to be, a consumer that stopped listening):
// classify never retries it.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// errIdle is the cause of an attempt that made no progress for the idle
// limit (WithIdleTimeout); it is retried like any timeout.
var errIdle = errors.New("no progress within the idle limit")

// idleTimer cancels an attempt that makes no progress for d. Between two
// attempts of a shared lane it is paused: what the last one's transport
// still does (a read of a body) no longer arms it. Once ended it never
// arms again.
type idleTimer struct {
	t      *time.Timer
	cancel context.CancelFunc
	fired  atomic.Bool
	mu     sync.Mutex // what follows, and the arming of t
	d      time.Duration
	fixed  bool // deadline was set: progress no longer resets it
	paused bool // between two attempts
	ended  bool
}

func (i *idleTimer) fire() {
	i.fired.Store(true)
	i.cancel() // fired tells the idle limit from the caller's cancel
}

// reset is progress: the attempt has d again.
func (i *idleTimer) reset() {
	i.mu.Lock()
	if !i.fixed && !i.paused && !i.ended {
		i.t.Reset(i.d)
	}
	i.mu.Unlock()
}

// deadline makes the attempt end d from now, whatever it reads meanwhile.
func (i *idleTimer) deadline(d time.Duration) {
	i.mu.Lock()
	if !i.paused && !i.ended {
		i.fixed = true
		i.t.Reset(d)
	}
	i.mu.Unlock()
}

// pause stops the timer after a clean end; false when it had fired.
func (i *idleTimer) pause() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.paused = true
	return i.t.Stop() && !i.fired.Load()
}

// rearm starts the paused timer again, for d from now, for the next
// attempt; false when it has fired or ended.
func (i *idleTimer) rearm(d time.Duration) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ended || i.fired.Load() {
		return false
	}
	i.d, i.fixed, i.paused = d, false, false
	i.t.Reset(d)
	return true
}

// end stops the timer for good and ends the context.
func (i *idleTimer) end() {
	i.mu.Lock()
	i.ended = true
	i.t.Stop()
	i.mu.Unlock()
	i.cancel()
}

// sentBody is a request body: every read that moves bytes resets the idle
// timer; closed tells that whoever had it (the transport, or the client
// for a redirect it does not follow) is done with it.
type sentBody struct {
	io.ReadCloser
	idle   *idleTimer
	closed atomic.Bool
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.idle.reset()
	}
	return n, err
}

func (b *sentBody) Close() error {
	b.closed.Store(true)
	return b.ReadCloser.Close()
}

// answerBody is an answer's body: every read that moves bytes resets the
// idle timer; a read past limit bytes (when limit > 0) fails with a
// *tooLargeError, and a failed read is a *sendError of the attempt (the
// answer was cut short: retried, not taken for undecodable JSON). Closing
// it ends the attempt.
type answerBody struct {
	io.ReadCloser
	a      *attempt
	limit  int64
	n      int64
	eof    bool // read to its end
	closed bool // Close was called: a second one is only the body's
}

func (b *answerBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.a.idle.reset()
	}
	b.n += int64(n)
	switch {
	case b.limit > 0 && b.n > b.limit:
		return 0, &sendError{op: b.a.op, id: b.a.id, sent: true, err: &tooLargeError{b.limit}}
	case err != nil && err != io.EOF:
		if b.a.idle.fired.Load() {
			err = errIdle
		}
		return n, &sendError{op: b.a.op, id: b.a.id, sent: true, err: fmt.Errorf("reading the HTTP %d answer: %w", b.a.status, err)}
	case err == io.EOF:
		b.eof = true
	}
	return n, err
}

func (b *answerBody) Close() error {
	err := b.ReadCloser.Close()
	if !b.closed {
		b.closed = true
		b.a.release(b.eof)
		b.a.done()
	}
	return err
}

func ofID(id string) string {
	if id == "" {
		return ""
	}
	return " of request " + id
}

// notSent reports a transport error that happened before the request could
// be written: the connection was never made.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// scrubURL drops the query of a *url.Error's URL (a webhook URL may carry
// a token of the caller's).
func scrubURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.RawQuery != "" {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("body larger than the %d-byte limit (WithMaxResponseBytes)", e.limit)
}

// readLimited reads all of r, failing past limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return b, err
	}
	if int64(len(b)) > limit {
		return nil, &tooLargeError{limit}
	}
	return b, nil
}
