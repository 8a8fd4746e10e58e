package wrapper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/fluxi2i/fluxi2i/gen"
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

// streamError is a status stream that failed without the caller's context
// ending: the reason polling takes over.
type streamError struct {
	refused bool // 404, 405, 501: the server does not stream
	events  int  // events the stream delivered before it failed
	err     error
}

func (e *streamError) Error() string { return "status stream: " + e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

var errStreamEnded = errors.New("ended before COMPLETED")

// maxEvent caps one status event: a status is a few hundred bytes, its
// logs a few KiB.
const maxEvent = 1 << 20

var acceptEvents gen.RequestEditorFn = func(_ context.Context, req *http.Request) error {
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	return nil
}

// stream follows the job over one status stream until COMPLETED (done),
// handing every event to w. Silence past the idle limit, headers included,
// ends it (the send path's idle timer, reset by every line that arrives,
// keepalive comments included).
func (w *watcher) stream(ctx context.Context) (done bool, err error) {
	c := w.c
	params := &gen.StreamStatusParams{}
	if w.withLogs {
		v := gen.StreamStatusParamsLogsN1
		params.Logs = &v
	}
	x := &exchange{op: "stream", id: w.id, stream: true}
	c.stats.streams.Add(1)
	x.resend = w.reopened
	resp, err := c.api.StreamStatus(x.begin(ctx, w.s.idle), w.id, params, acceptEvents)
	if err != nil {
		x.err = err
		x.end()
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			switch apiErr.StatusCode {
			case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
				return false, &streamError{refused: true, err: apiErr}
			}
		}
		return false, &streamError{err: err}
	}
	defer resp.Body.Close() // ends the attempt, with x.err
	defer func() {
		if err != nil && !done {
			x.err = err // a stream that broke after its headers is a failed attempt
		}
	}()
	r := sse.NewReader(resp.Body, maxEvent)
	for events := 0; ; events++ {
		ev, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
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

// decodeStatus decodes a stream event: unknown statuses and fields are
// kept (Raw), a missing status is an error.
func decodeStatus(body []byte) (Status, error) {
	st := Status{Raw: body, retryAfter: -1}
	if err := json.Unmarshal(body, &st.QueueStatus); err != nil {
		return Status{}, err
	}
	if st.Status == "" {
		return Status{}, errors.New("no status field")
	}
	return st, nil
}
