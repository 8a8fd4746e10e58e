package wrapper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/fluxi2i/fluxi2i/internal/sse"
)

// StatusMode is how Wait, Run and Updates follow a job.
type StatusMode int

const (
	// StatusAuto follows the Server-Sent Events status stream and falls back
	// to polling, for the rest of that job, when the stream is refused,
	// breaks, stays silent past the idle limit or ends before COMPLETED.
	StatusAuto StatusMode = iota
	// StatusPoll only polls.
	StatusPoll
	// StatusStream only streams: a broken stream is reopened (with the
	// retry backoff), never replaced by polling.
	StatusStream
)

// String names the mode: auto, poll or stream.
func (m StatusMode) String() string {
	switch m {
	case StatusAuto:
		return "auto"
	case StatusPoll:
		return "poll"
	case StatusStream:
		return "stream"
	}
	return fmt.Sprintf("StatusMode(%d)", int(m))
}

// WithStatusMode sets how the client follows jobs (default StatusAuto).
func WithStatusMode(m StatusMode) Option {
	return func(c *Client) error {
		if m < StatusAuto || m > StatusStream {
			return fmt.Errorf("fluxi2i: WithStatusMode(%v): unknown mode", m)
		}
		c.mode = m
		return nil
	}
}

// WithStreamIdle sets how long the status stream may stay silent (no event,
// no keepalive) before it is given up (default 30 s).
func WithStreamIdle(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("fluxi2i: WithStreamIdle(%v): must be positive", d)
		}
		c.streamIdle = d
		return nil
	}
}

// WithMaxStreams caps how many status streams the client holds open at
// once (default 512): each is a connection. In StatusAuto a job that finds
// every stream taken polls instead; in StatusStream it waits for one.
func WithMaxStreams(n int) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("fluxi2i: WithMaxStreams(%d): must be at least 1", n)
		}
		c.streamSlots = make(chan struct{}, n)
		return nil
	}
}

// UseStatusMode overrides the client's StatusMode for one call.
func UseStatusMode(m StatusMode) CallOption {
	return func(cfg *callConfig) error {
		if m < StatusAuto || m > StatusStream {
			return &InputError{Fields: []FieldError{{Field: "status mode", Message: "unknown mode"}}}
		}
		cfg.mode = m
		return nil
	}
}

// streamError is a status stream that failed without the caller's context
// ending: the reason polling takes over.
type streamError struct {
	refused bool // 404, 405, 501: the server does not stream
	events  int  // events the stream delivered before it failed
	err     error
}

func (e *streamError) Error() string { return "status stream: " + e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

var (
	errStreamIdle  = errors.New("silent past the idle limit")
	errStreamEnded = errors.New("ended before COMPLETED")
)

// stream follows the job over one status stream until COMPLETED (done),
// handing every event to w.
func (w *watcher) stream(ctx context.Context) (done bool, err error) {
	c := w.c
	target := w.ep.status + "/stream"
	if w.withLogs {
		target += "?logs=1"
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, target, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	c.authorize(req)
	c.stats.streams.Add(1)
	// Silence is measured from the request on: a server that never answers
	// the headers is as dead as one that stops sending events.
	idle := time.AfterFunc(c.streamIdle, func() { cancel(errStreamIdle) })
	defer idle.Stop()
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if cause := context.Cause(sctx); cause != nil {
			err = cause
		}
		return false, &streamError{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := readLimited(resp.Body, 64<<10)
		apiErr := apiError("stream", w.id, resp, body)
		switch resp.StatusCode {
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
			return false, &streamError{refused: true, err: apiErr}
		}
		return false, &streamError{err: apiErr}
	}

	idle.Reset(c.streamIdle)
	r := sse.NewReader(resp.Body, int(min(c.maxBody, 1<<30)))
	r.OnLine = func() { idle.Reset(c.streamIdle) }
	for events := 0; ; events++ {
		ev, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if cause := context.Cause(sctx); cause != nil {
				err = cause
			} else if errors.Is(err, io.EOF) {
				err = errStreamEnded
			}
			return false, &streamError{events: events, err: err}
		}
		st, err := decodeStatus(append(json.RawMessage(nil), ev.Data...))
		if err != nil {
			return false, &streamError{events: events, err: fmt.Errorf("undecodable event %.200q: %w", ev.Data, err)}
		}
		if st.Logs != nil {
			st.NewLogs = *st.Logs // stream logs are incremental
			w.seenLogs += len(st.NewLogs)
		}
		if !w.observe(st) {
			return false, errStopped
		}
		if ended(st.Status) {
			return true, nil
		}
	}
}
