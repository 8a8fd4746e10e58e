package proxy

import (
	"context"
	"net/http"
	"regexp"
	"time"
)

// Observer sees what the proxy forwards and refuses, for tracing and
// metrics (package github.com/fluxi2i/fluxi2i/otel adapts it to
// OpenTelemetry; this package links none). Its methods are called on the
// request's goroutine and must be quick and safe for concurrent use.
type Observer interface {
	// StartForward is called before a request goes upstream; it may set
	// headers of up (a traceparent continuing the server's span). The
	// returned context is given to EndForward.
	StartForward(ctx context.Context, up *http.Request, operation string) context.Context
	// EndForward is called when the upstream's answer has been passed on
	// (or could not be had).
	EndForward(ctx context.Context, f Forwarded)
	// Refused is called for every refusal.
	Refused(ctx context.Context, r Refusal)
}

// Forwarded is one forwarded request.
type Forwarded struct {
	Operation  string // "submit", "status", "stream", "result", "cancel", "upload"
	RequestID  string
	StatusCode int // the upstream's; 0 when it could not be reached
	Duration   time.Duration
}

// Refusal is one refused request.
type Refusal struct {
	Reason     string // as Stats counts it: "target", "operation", "limit", ...
	StatusCode int
	Detail     string
}

// WithObserver reports each forwarded and refused request to o.
func WithObserver(o Observer) Option {
	return func(c *config) error { c.observer = o; return nil }
}

// traceparent is the W3C Trace Context header's form.
var traceparent = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// continueTrace copies the browser's W3C trace context to the upstream
// request (a well-formed traceparent, and its tracestate), then lets the
// observer, if any, replace it with the server's own span.
func (h *Handler) continueTrace(r, up *http.Request, o op) context.Context {
	if tp := r.Header.Get("Traceparent"); traceparent.MatchString(tp) && tp[:2] != "ff" {
		up.Header.Set("Traceparent", tp)
		if ts := r.Header.Get("Tracestate"); ts != "" && len(ts) <= 512 {
			up.Header.Set("Tracestate", ts)
		}
	}
	if h.cfg.observer == nil {
		return r.Context()
	}
	return h.cfg.observer.StartForward(r.Context(), up, opNames[o])
}
