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
)

// The one send path. gen builds every API request from the spec
// (ClientWithResponses), c.authorize is its request editor, and sender is
// its HTTP doer: the idle limit, the response size limit and the error
// funnel (every non-2xx answer becomes an *APIError before gen sees it) are
// here, for queue calls, the status stream and image downloads alike. The
// retry loop (retry.go) drives attempts through it.

// exchange describes one attempt to sender and records what came back.
// It is the attempt's context, so it travels with the request.
type exchange struct {
	context.Context

	op, id   string
	stream   bool // hand the body over unread (status stream, downloads)
	download bool // not an API call: no origin binding, never the key

	started bool        // sender was reached: the request was built
	header  http.Header // the answer's headers, when one came
	status  int         // the answer's status code, 0 when none came

	idle   *idleTimer         // cancels the attempt when it stalls
	cancel context.CancelFunc // ends the attempt's context
	timer  idleTimer          // idle's storage: one allocation less
	body   progressBody       // the answer's body wrapper, likewise

	resend  int             // attempts of the same request before this one
	err     error           // the attempt's failure, for the observer
	obs     Observer        // set once the observer saw the request start
	obsCtx  context.Context // what StartRequest returned
	endOnce sync.Once
}

type exchangeKey struct{}

// begin derives the attempt's context from ctx: it carries x, and ends
// when the attempt makes no progress for d (the cause is then errIdle) or
// when x.end is called.
func (x *exchange) begin(ctx context.Context, d time.Duration) context.Context {
	x.Context, x.cancel = context.WithCancel(ctx)
	x.timer.d, x.timer.cancel = d, x.cancel
	x.timer.t = time.AfterFunc(d, x.timer.fire)
	x.idle = &x.timer
	return x
}

// Value finds x itself under exchangeKey.
func (x *exchange) Value(key any) any {
	if key == (exchangeKey{}) {
		return x
	}
	return x.Context.Value(key)
}

// end stops the idle timer and ends the attempt's context, and tells the
// observer once.
func (x *exchange) end() {
	x.idle.stop()
	x.cancel()
	if x.obs != nil {
		x.endOnce.Do(func() { x.obs.EndRequest(x.obsCtx, RequestEnd{Op: x.op, StatusCode: x.status, Err: x.err}) })
	}
}

// authorize is gen's request editor: the User-Agent, and the credential,
// only for a request to the configured origin; checked here, where the key
// is attached.
func (c *Client) authorize(_ context.Context, req *http.Request) error {
	req.Header.Set("User-Agent", c.set.userAgent)
	if sameOrigin(req.URL, c.set.base) || sameOrigin(req.URL, c.histOrigin) || sameOrigin(req.URL, c.storeOrigin) {
		req.Header.Set("Authorization", c.set.auth.header())
	} else {
		req.Header.Del("Authorization")
	}
	return nil
}

// sender is the HTTP doer gen's client sends through.
type sender struct{ c *Client }

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

// errIdle is the cause of an attempt that made no progress for the idle
// limit (WithIdleTimeout); it is retried like any timeout.
var errIdle = errors.New("no progress within the idle limit")

// Do sends req: the exchange in its context says how.
func (s sender) Do(req *http.Request) (*http.Response, error) {
	c := s.c
	x, ok := req.Context().Value(exchangeKey{}).(*exchange)
	if !ok { // every call goes through do or the stream, which set one
		return nil, errors.New("fluxi2i: internal error: a request sent outside an attempt")
	}
	x.started = true
	if o := c.set.observer; o != nil {
		x.obsCtx = o.StartRequest(x.Context, req, RequestInfo{Op: x.op, RequestID: x.id, Resend: x.resend})
		x.obs = o
	}
	idle := x.idle
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &progressBody{ReadCloser: req.Body, idle: idle}
	}
	hc := c.queue
	if x.download {
		hc = c.download
	}
	resp, err := hc.Do(req)
	if err != nil {
		if idle.fired.Load() {
			err = errIdle
		}
		return nil, &sendError{op: x.op, id: x.id, sent: !notSent(err), err: scrubURL(err)}
	}
	x.status, x.header = resp.StatusCode, resp.Header
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		// An error body is for reading, not for holding.
		b, rerr := readLimited(&progressBody{ReadCloser: resp.Body, idle: idle}, min(c.set.maxBody, 1<<20))
		resp.Body.Close()
		if rerr != nil {
			return nil, bodyError(x, resp.StatusCode, rerr)
		}
		return nil, apiError(x.op, x.id, resp, b)
	}
	if x.stream {
		resp.Body = &progressBody{ReadCloser: resp.Body, idle: idle, done: x.end}
		return resp, nil
	}
	// gen's parser reads the body: through the size limit, with a failure
	// to read it marked as one (retried), not as undecodable JSON.
	x.body = progressBody{ReadCloser: resp.Body, idle: idle, x: x, limit: c.set.maxBody}
	resp.Body = &x.body
	return resp, nil
}

// bodyError is a 2xx or error body that could not be read whole.
func bodyError(x *exchange, status int, err error) error {
	var tooBig *tooLargeError
	if errors.As(err, &tooBig) {
		return &sendError{op: x.op, id: x.id, sent: true, err: err}
	}
	return &sendError{op: x.op, id: x.id, sent: true, err: fmt.Errorf("reading the HTTP %d answer: %w", status, err)}
}

// idleTimer cancels an attempt that makes no progress for d.
type idleTimer struct {
	d      time.Duration
	t      *time.Timer
	fired  atomic.Bool
	cancel context.CancelFunc
}

func (i *idleTimer) fire() {
	i.fired.Store(true)
	i.cancel() // fired tells the idle limit from the caller's cancel
}

func (i *idleTimer) reset() { i.t.Reset(i.d) }
func (i *idleTimer) stop()  { i.t.Stop() }

// progressBody resets the idle timer on every read that moves bytes; with
// done set (a body handed over unread), closing it ends the attempt. With a limit, it fails past
// limit bytes and reports a failed read as a *sendError of x.
type progressBody struct {
	io.ReadCloser
	idle  *idleTimer
	done  func()
	once  sync.Once
	x     *exchange
	limit int64
	n     int64
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.idle.reset()
	}
	if err != nil && err != io.EOF && b.idle.fired.Load() {
		err = errIdle
	}
	if b.limit > 0 {
		b.n += int64(n)
		if b.n > b.limit {
			n, err = 0, &tooLargeError{b.limit}
		}
		if err != nil && err != io.EOF {
			err = bodyError(b.x, b.x.status, err)
		}
	}
	return n, err
}

func (b *progressBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done != nil {
		b.once.Do(b.done)
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
