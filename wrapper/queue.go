package wrapper

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
	"github.com/fluxi2i/fluxi2i/internal/inputcheck"
)

// Status values the queue is known to send (the spec's JobStatus). Others
// (FAILED, CANCELLED, ...) decode too and are kept as they come.
const (
	StatusInQueue    = string(gen.JobStatusInQueue)
	StatusInProgress = string(gen.JobStatusInProgress)
	StatusCompleted  = string(gen.JobStatusCompleted)
)

// Queued is the queue's answer to Submit.
type Queued struct {
	RequestID     string
	QueuePosition *int
	// Attempts is the number of submit requests sent: above 1 the submit was
	// retried (see the package documentation on duplicate jobs).
	Attempts int
	// Raw is the answer's JSON as received (with the job URLs the server
	// returned, which the client does not use: it builds its own), or the
	// request history's item when FromHistory.
	Raw json.RawMessage
	// FromHistory is set when the submit's answer was lost and the job was
	// found in the request history (see the package documentation).
	FromHistory bool
}

// Status is one observation of a job's status.
type Status struct {
	gen.QueueStatus
	// NewLogs are the log lines no earlier Status of the same Wait, Run or
	// Updates call carried, in order.
	NewLogs []gen.LogEntry
	// Raw is the status JSON as received, unknown fields included.
	Raw json.RawMessage

	retryAfter time.Duration // the answer's Retry-After; -1 when none
}

// Result is a completed job's output, with its request id and what the
// server billed for it.
type Result struct {
	gen.Output
	RequestID string
	// BillableUnits is what the server reported billing the job
	// (X-Fal-Billable-Units); 0 when it reported nothing.
	BillableUnits float64
}

// Submit validates in and queues it, returning at once with the request id.
// Nothing is sent when in is invalid: the *InputError names every bad field.
func (c *Client) Submit(ctx context.Context, in gen.Input, opts ...Option) (*Queued, error) {
	s, err := c.call(forSubmit, "Submit", opts)
	if err != nil {
		return nil, err
	}
	ctx, end := c.startJob(ctx, JobStart{Call: "submit", Input: &in})
	q, err := c.submit(ctx, in, s, nil)
	if err != nil {
		end("", nil, err)
		return nil, err
	}
	end(q.RequestID, nil, nil)
	return q, nil
}

// imageMarker stands in for image_url while the body of a WithImage submit
// is encoded; the image is streamed in its place.
const imageMarker = "fluxi2i:streamed-image:7f3a9c"

// submit sends in, its attempts under l (nil: each under its own lane).
func (c *Client) submit(ctx context.Context, in gen.Input, s *settings, l *lane) (*Queued, error) {
	p, err := c.encode(in, s)
	if err != nil {
		return nil, err
	}
	return c.submitBody(ctx, p, s, l)
}

// payload is a submit's JSON body, made afresh for every attempt: whole,
// or with the image streamed into it (open).
type payload struct {
	whole []byte
	open  func() (io.ReadCloser, error)
	size  int64
}

// reader returns the body from its first byte.
func (p *payload) reader() (io.ReadCloser, error) {
	if p.whole != nil {
		return io.NopCloser(bytes.NewReader(p.whole)), nil
	}
	return p.open()
}

// encode validates in and s's submit parameters and returns the submit's
// body.
func (c *Client) encode(in gen.Input, s *settings) (*payload, error) {
	in = inputcheck.Normalize(in)
	if s.image != nil {
		in.ImageURL = s.image.prefix() // a valid, empty data URI of the sniffed type
	}
	if err := validate(in); err != nil {
		return nil, err
	}
	if err := validateParams(&s.params); err != nil {
		return nil, err
	}
	if s.image == nil {
		body, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: encoding the input: %w", err)
		}
		return &payload{whole: body, size: int64(len(body))}, nil
	}
	im := s.image
	in.ImageURL = imageMarker
	js, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("fluxi2i: encoding the input: %w", err)
	}
	i := bytes.Index(js, []byte(`"`+imageMarker+`"`))
	prefix := append(js[:i+1:i+1], im.prefix()...)
	suffix := js[i+1+len(imageMarker):]
	size := int64(len(prefix)) + int64(base64.StdEncoding.EncodedLen(int(im.size))) + int64(len(suffix))
	return &payload{size: size, open: func() (io.ReadCloser, error) {
		src, err := im.open()
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: opening the image: %w", err)
		}
		return &streamedBody{Reader: io.MultiReader(bytes.NewReader(prefix), &b64Reader{src: src}, bytes.NewReader(suffix)), src: src}, nil
	}}, nil
}

// submitBody sends the submit of body p.
func (c *Client) submitBody(ctx context.Context, p *payload, s *settings, l *lane) (*Queued, error) {
	var q Queued
	params := &s.params
	if *params == (gen.SubmitParams{}) {
		params = nil // no query or header parameter to build
	}
	settle := func(ctx context.Context, first, last time.Time) error {
		found, err := c.settle(ctx, s, &lostSubmit{body: p.reader, size: p.size, first: first, last: last})
		if found != nil {
			q = *found
		}
		return err
	}
	attempts, err := c.do(ctx, s, op{name: "submit", submit: true, settle: settle, lane: l}, func(ctx context.Context, a *attempt) error {
		var body io.Reader
		if p.whole != nil {
			body = bytes.NewReader(p.whole) // gen's request knows its length
		} else {
			rc, err := p.open()
			if err != nil {
				return err
			}
			body = rc
		}
		resp, err := c.roundTrip(ctx, a, func(ctx context.Context) (*http.Request, error) {
			req, err := gen.NewSubmitRequestWithBodyWithContext(ctx, c.apiServer, params, "application/json", body)
			if err != nil {
				if rc, ok := body.(io.Closer); ok {
					rc.Close()
				}
				return nil, err
			}
			if p.whole == nil {
				// A streamed image: gen cannot know the length, nor make the
				// body again (net/http does, on a connection that died unused).
				req.ContentLength, req.GetBody = p.size, p.open
			}
			for k, vs := range s.headers {
				req.Header[k] = vs
			}
			return req, nil
		})
		if err != nil {
			return err
		}
		r, err := gen.ParseSubmitResponse(resp)
		if r != nil && r.JSON200 != nil && r.JSON200.RequestID != "" {
			e := r.JSON200
			q = Queued{RequestID: e.RequestID, QueuePosition: e.QueuePosition, Raw: r.Body}
			return nil
		}
		// Queued, but the answer is broken or cut short: the job exists
		// when its id came in the header.
		if id := a.header.Get("X-Fal-Request-Id"); id != "" {
			q = Queued{RequestID: id}
			if r != nil {
				q.Raw = r.Body
			}
			return nil
		}
		if err == nil {
			err = errors.New("no request_id")
		}
		return undecodable(a, err)
	})
	if err != nil {
		return nil, err
	}
	q.Attempts = attempts
	if !q.FromHistory {
		c.known.add(q.RequestID, time.Now())
	}
	c.stats.submits.Add(1)
	if c.set.log.Enabled(ctx, slog.LevelDebug) { // the arguments cost even when nothing is logged
		c.set.log.Debug("fluxi2i: queued", "request_id", q.RequestID, "attempts", attempts)
	}
	c.event(ctx, JobEvent{Kind: EventQueued, RequestID: q.RequestID, QueuePosition: q.QueuePosition})
	return &q, nil
}

// Status returns the job's current status; withLogs asks for its log lines.
func (c *Client) Status(ctx context.Context, requestID string, withLogs bool) (*Status, error) {
	if err := checkID(requestID); err != nil {
		return nil, err
	}
	return c.status(ctx, &c.set, requestID, withLogs, persistNone, nil)
}

var logsOn = gen.GetStatusParamsLogsN1

func (c *Client) status(ctx context.Context, s *settings, id string, withLogs bool, persist persistence, l *lane) (*Status, error) {
	var st Status
	var params *gen.GetStatusParams // nil: no query to build
	if withLogs {
		params = &gen.GetStatusParams{Logs: &logsOn}
	}
	_, err := c.do(ctx, s, op{name: "status", id: id, persist: persist, lane: l}, func(ctx context.Context, a *attempt) error {
		c.stats.polls.Add(1)
		resp, err := c.roundTrip(ctx, a, func(ctx context.Context) (*http.Request, error) {
			return gen.NewGetStatusRequestWithContext(ctx, c.apiServer, id, params)
		})
		if err != nil {
			return err
		}
		r, err := gen.ParseGetStatusResponse(resp)
		if err != nil {
			return undecodable(a, err)
		}
		qs := r.JSON200
		if qs == nil {
			qs = r.JSON202
		}
		if qs == nil || qs.Status == "" {
			return fmt.Errorf("fluxi2i: status%s: undecodable HTTP %d answer", ofID(id), a.status)
		}
		st = Status{QueueStatus: *qs, Raw: r.Body, retryAfter: retryAfter(a.header, time.Now())}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// Result fetches the output of a completed job. A failed model answers its
// error here, as an *APIError naming the request id.
func (c *Client) Result(ctx context.Context, requestID string) (*Result, error) {
	if err := checkID(requestID); err != nil {
		return nil, err
	}
	c.known.add(requestID, time.Now()) // never the job of another lost submit
	return c.result(ctx, &c.set, requestID, persistNone, nil)
}

func (c *Client) result(ctx context.Context, s *settings, id string, persist persistence, l *lane) (*Result, error) {
	var res Result
	_, err := c.do(ctx, s, op{name: "result", id: id, persist: persist, lane: l}, func(ctx context.Context, a *attempt) error {
		resp, err := c.roundTrip(ctx, a, func(ctx context.Context) (*http.Request, error) {
			return gen.NewGetResultRequestWithContext(ctx, c.apiServer, id)
		})
		if err != nil {
			return err
		}
		r, err := gen.ParseGetResultResponse(resp)
		if err != nil {
			return undecodable(a, err)
		}
		if r.JSON200 == nil || r.JSON200.Images == nil {
			return fmt.Errorf("fluxi2i: result%s: undecodable HTTP %d answer: no images", ofID(id), a.status)
		}
		res = Result{Output: *r.JSON200, RequestID: id}
		if h := r.Headers200; h != nil && h.XFalBillableUnits != nil {
			res.BillableUnits, _ = strconv.ParseFloat(*h.XFalBillableUnits, 64)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// Cancel asks the queue to cancel the job. Only an explicit cancel stops a
// queued job. A job that already completed gives an error matching
// ErrAlreadyCompleted; an unknown one, ErrNotFound.
func (c *Client) Cancel(ctx context.Context, requestID string) error {
	if err := checkID(requestID); err != nil {
		return err
	}
	return c.cancel(ctx, &c.set, requestID)
}

func (c *Client) cancel(ctx context.Context, s *settings, id string) error {
	_, err := c.do(ctx, s, op{name: "cancel", id: id}, func(ctx context.Context, a *attempt) error {
		resp, err := c.roundTrip(ctx, a, func(ctx context.Context) (*http.Request, error) {
			return gen.NewCancelRequestWithContext(ctx, c.apiServer, id)
		})
		if err != nil {
			return err
		}
		r, err := gen.ParseCancelResponse(resp)
		switch {
		case err != nil:
			return undecodable(a, err)
		case r.JSON202 != nil:
			return nil
		case r.JSON200 != nil && r.JSON200.Success:
			return nil
		case r.JSON200 != nil:
			// A definite no, not worth retrying: wrapped so that it is not.
			return &APIError{Op: "cancel", StatusCode: a.status, RequestID: id, Detail: "the queue did not accept the cancellation"}
		}
		return fmt.Errorf("fluxi2i: cancel%s: undecodable HTTP %d answer", ofID(id), a.status)
	})
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest && apiErr.Detail == "ALREADY_COMPLETED" {
		return errprefix.Errorf("fluxi2i: %w: %w", ErrAlreadyCompleted, err)
	}
	return err
}

func checkID(id string) error {
	switch id {
	case "":
		return invalid("request_id", "must not be empty")
	case ".", "..":
		return invalid("request_id", "must not be %q: a dot segment would name another path", id)
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
