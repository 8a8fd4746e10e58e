package wrapper

import (
	"context"
	"net/http"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
)

// Observer sees each job's life and each HTTP request the client sends,
// for tracing and metrics (package github.com/fluxi2i/fluxi2i/otel adapts
// it to OpenTelemetry; this package links none). WithObserver installs
// one. Its methods are called synchronously on the caller's goroutine, so
// they must be quick and safe for concurrent use. A Start method returns
// the context the matching calls get (carrying a span, say).
type Observer interface {
	// StartJob is called when Run, Submit, Wait or Settle begins.
	StartJob(ctx context.Context, job JobStart) context.Context
	// JobEvent reports a step of the job: queued, a status change, a retry,
	// the request history's lookup of a lost submit.
	JobEvent(ctx context.Context, ev JobEvent)
	// EndJob is called when the call ends, with its outcome.
	EndJob(ctx context.Context, end JobEnd)
	// StartRequest is called before each HTTP attempt; it may set headers
	// of req (a traceparent). ctx is the job's, when the request is one.
	StartRequest(ctx context.Context, req *http.Request, info RequestInfo) context.Context
	// EndRequest is called when the attempt ends: when its answer's body
	// is closed (read whole by the client, or, for OpenImage, closed by
	// the caller), or when it failed before that.
	EndRequest(ctx context.Context, end RequestEnd)
}

// JobStart describes a job's call as it begins.
type JobStart struct {
	// Call is "run", "submit", "wait" (a stored request id resumed) or
	// "settle" (Settle's lookup of a journaled submit).
	Call      string
	RequestID string     // set for a wait
	Input     *gen.Input // the input, for run and submit
	BaseURL   string
}

// JobEventKind names a step of a job.
type JobEventKind int

// The steps JobEvent reports.
const (
	EventQueued  JobEventKind = iota + 1 // the request id is known
	EventStatus                          // the status or queue position changed
	EventRetry                           // an attempt failed and another follows
	EventHistory                         // a lost submit was looked up in the request history
)

// JobEvent is one step of a job.
type JobEvent struct {
	Kind      JobEventKind
	RequestID string
	// EventStatus: the status and queue position seen.
	Status        string
	QueuePosition *int
	// EventRetry: the operation ("submit", "status", "result", ...), the
	// attempt that follows (2 for the first retry), how long until it, and
	// why ("HTTP 503", "connection refused", ...).
	Op      string
	Attempt int
	Delay   time.Duration
	Reason  string
	// EventHistory: whether the job was found (then RequestID is set).
	Found bool
}

// JobEnd is the outcome of a job's call.
type JobEnd struct {
	RequestID     string
	BillableUnits float64 // what the server billed, for a result
	// Result is the job's result, when the call fetched it: its images'
	// URLs let an observer tie the downloads that follow to the job.
	Result *Result
	Err    error // nil on success
}

// RequestInfo describes one HTTP attempt.
type RequestInfo struct {
	Op        string // "submit", "status", "stream", "result", "cancel", "history", "download", "proxy" (package proxy's forwards)
	RequestID string
	Resend    int // attempts of the same request before this one
}

// RequestEnd is the outcome of one HTTP attempt.
type RequestEnd struct {
	Op         string
	StatusCode int   // 0 when no answer came
	Err        error // the attempt's failure, if it failed
}

// WithObserver reports each job's life and each request to o (New only).
func WithObserver(o Observer) Option {
	return option("WithObserver", scopeClient, func(s *settings) error { s.observer = o; return nil })
}

// startJob reports a job's call to the observer; the returned end reports
// its outcome.
func (c *Client) startJob(ctx context.Context, js JobStart) (context.Context, func(requestID string, res *Result, err error)) {
	o := c.set.observer
	if o == nil {
		return ctx, func(string, *Result, error) {}
	}
	js.BaseURL = c.server
	ctx = o.StartJob(ctx, js)
	return ctx, func(id string, res *Result, err error) {
		end := JobEnd{RequestID: id, Result: res, Err: err}
		if res != nil {
			end.BillableUnits = res.BillableUnits
		}
		o.EndJob(ctx, end)
	}
}

// event reports a step of a job.
func (c *Client) event(ctx context.Context, ev JobEvent) {
	if o := c.set.observer; o != nil {
		o.JobEvent(ctx, ev)
	}
}
