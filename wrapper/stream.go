package wrapper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

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

// errStreamEnded is a status stream that ended before the job did.
var errStreamEnded = errors.New("status stream ended before COMPLETED")

// maxEvent caps one status event: a status is a few hundred bytes, its
// logs a few KiB.
const maxEvent = 1 << 20

// stream is one attempt at following the job over its status stream: it
// opens the stream and hands every event to w until the job ends (nil).
// Silence past the idle limit, headers included, ends it (the send path's
// idle timer, reset by every line that arrives, keepalive comments
// included). A stream that delivered events before it broke marks the
// attempt as having progressed.
func (w *watcher) stream(ctx context.Context, a *attempt) error {
	c := w.c
	params := &gen.StreamStatusParams{}
	if w.withLogs {
		v := gen.StreamStatusParamsLogsN1
		params.Logs = &v
	}
	c.stats.streams.Add(1)
	resp, err := c.roundTrip(ctx, a, func(ctx context.Context) (*http.Request, error) {
		req, err := gen.NewStreamStatusRequestWithContext(ctx, c.apiServer, w.id, params)
		if err == nil {
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("Cache-Control", "no-cache")
		}
		return req, err
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close() // ends the attempt's transport; do's verdict ends the rest
	err = w.events(resp.Body, a)
	if err == nil {
		// The job ended, and the server ends its stream: reading that end
		// (for 10 ms at most, whatever arrives meanwhile) keeps the
		// connection for the result call, where closing the body first
		// would drop it.
		a.idle.deadline(streamDrain)
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	}
	return err
}

// streamDrain is how long a finished status stream is given to end.
const streamDrain = 10 * time.Millisecond

// events reads the stream's events until the job ends.
func (w *watcher) events(body io.Reader, a *attempt) error {
	r := sse.NewReader(body, maxEvent)
	for events := 0; ; events++ {
		ev, err := r.Next()
		if err != nil {
			a.progressed = events > 0
			if errors.Is(err, io.EOF) {
				return &sendError{op: a.op, id: a.id, sent: true, err: errStreamEnded}
			}
			return err
		}
		st, err := decodeStatus(ev.Data) // the event's own copy: kept as Raw
		if err != nil {
			a.progressed = events > 0
			return fmt.Errorf("fluxi2i: stream%s: undecodable event %.200q: %w", ofID(w.id), ev.Data, err)
		}
		if st.Logs != nil {
			st.NewLogs = *st.Logs // stream logs are incremental
			w.seenLogs += len(st.NewLogs)
		}
		if !w.observe(st) {
			return permanent{errStopped}
		}
		if ended(st.Status) {
			return nil
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
