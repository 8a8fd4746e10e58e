package wrapper

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
)

// Status values the queue is known to send. Others (FAILED, CANCELLED, ...)
// decode too and are kept as they come.
const (
	StatusInQueue    = "IN_QUEUE"
	StatusInProgress = "IN_PROGRESS"
	StatusCompleted  = "COMPLETED"
)

// Queued is the queue's answer to Submit.
type Queued struct {
	RequestID string
	// The URLs as the server returned them. Status, Result and Cancel only
	// use them when they are on the configured origin.
	StatusURL, ResponseURL, CancelURL string
	QueuePosition                     *int
	// Attempts is the number of submit requests sent: above 1 the submit was
	// retried (see the package documentation on duplicate jobs).
	Attempts int
	// Raw is the answer's JSON as received.
	Raw json.RawMessage
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

// Submit validates in and queues it, returning at once with the request id.
// Nothing is sent when in is invalid: the *InputError names every bad field.
func (c *Client) Submit(ctx context.Context, in gen.Input, opts ...CallOption) (*Queued, error) {
	cfg, err := c.callConfig(opts)
	if err != nil {
		return nil, err
	}
	return c.submit(ctx, in, cfg)
}

// imageMarker stands in for image_url while the body of a WithImage submit
// is encoded; the image is streamed in its place.
const imageMarker = "fluxi2i:streamed-image:7f3a9c"

func (c *Client) submit(ctx context.Context, in gen.Input, cfg *callConfig) (*Queued, error) {
	in = Normalize(in)
	if cfg.image != nil {
		in.ImageURL = cfg.image.prefix() // a valid, empty data URI of the sniffed type
	}
	if err := Validate(in); err != nil {
		return nil, err
	}
	if cfg.image == nil {
		body, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: encoding the input: %w", err)
		}
		return c.submitBody(ctx, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }, int64(len(body)), cfg)
	}
	im := cfg.image
	in.ImageURL = imageMarker
	js, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("fluxi2i: encoding the input: %w", err)
	}
	i := bytes.Index(js, []byte(`"`+imageMarker+`"`))
	prefix := append(js[:i+1:i+1], im.prefix()...)
	suffix := js[i+1+len(imageMarker):]
	size := int64(len(prefix)) + int64(base64.StdEncoding.EncodedLen(int(im.size))) + int64(len(suffix))
	return c.submitBody(ctx, func() (io.ReadCloser, error) {
		src, err := im.open()
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: opening the image: %w", err)
		}
		return &streamedBody{Reader: io.MultiReader(bytes.NewReader(prefix), &b64Reader{src: src}, bytes.NewReader(suffix)), src: src}, nil
	}, size, cfg)
}

// submitBody sends a submit whose JSON body newBody produces afresh for
// every attempt.
func (c *Client) submitBody(ctx context.Context, newBody func() (io.ReadCloser, error), size int64, cfg *callConfig) (*Queued, error) {
	var q Queued
	attempts, err := c.do(ctx, call{
		op:         "submit",
		submit:     true,
		atMostOnce: cfg.atMostOnce,
		build: func(ctx context.Context) (*http.Request, error) {
			body, err := newBody()
			if err != nil {
				return nil, err
			}
			req, err := gen.NewSubmitRequestWithBody(c.server+"/", &cfg.params, "application/json", body)
			if err != nil {
				body.Close()
				return nil, err
			}
			req.ContentLength = size
			req.GetBody = newBody
			for k, vs := range cfg.headers {
				req.Header[k] = vs
			}
			req.Header.Set("Accept", "application/json")
			return req.WithContext(ctx), nil
		},
		decode: func(resp *http.Response, body []byte) error {
			var e gen.Enqueued
			if err := json.Unmarshal(body, &e); err != nil || e.RequestID == "" {
				// The job exists; its id may still be in the header.
				if id := resp.Header.Get("X-Fal-Request-Id"); id != "" {
					q = Queued{RequestID: id, Raw: append(json.RawMessage(nil), body...)}
					return nil
				}
				if err == nil {
					err = errors.New("no request_id")
				}
				return err
			}
			q = Queued{
				RequestID:     e.RequestID,
				StatusURL:     deref(e.StatusURL),
				ResponseURL:   deref(e.ResponseURL),
				CancelURL:     deref(e.CancelURL),
				QueuePosition: e.QueuePosition,
				Raw:           body,
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	q.Attempts = attempts
	c.stats.submits.Add(1)
	c.log.Debug("fluxi2i: queued", "request_id", q.RequestID, "attempts", attempts)
	return &q, nil
}

// Status returns the job's current status; withLogs asks for its log lines.
func (c *Client) Status(ctx context.Context, requestID string, withLogs bool) (*Status, error) {
	if err := checkID(requestID); err != nil {
		return nil, err
	}
	return c.status(ctx, requestID, c.endpointsFor(requestID, nil), withLogs)
}

func (c *Client) status(ctx context.Context, id string, ep endpoints, withLogs bool) (*Status, error) {
	var st Status
	c.stats.polls.Add(1)
	target := ep.status
	if withLogs {
		target += "?logs=1"
	}
	_, err := c.do(ctx, call{
		op: "status",
		id: id,
		build: func(ctx context.Context) (*http.Request, error) {
			return newRequest(ctx, http.MethodGet, target)
		},
		decode: func(resp *http.Response, body []byte) error {
			var err error
			st, err = decodeStatus(body)
			st.retryAfter = retryAfter(resp.Header, time.Now())
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// Result fetches the output of a completed job. A failed model answers its
// error here, as an *APIError naming the request id.
func (c *Client) Result(ctx context.Context, requestID string) (*gen.Output, error) {
	if err := checkID(requestID); err != nil {
		return nil, err
	}
	return c.result(ctx, requestID, c.endpointsFor(requestID, nil))
}

func (c *Client) result(ctx context.Context, id string, ep endpoints) (*gen.Output, error) {
	var out gen.Output
	_, err := c.do(ctx, call{
		op: "result",
		id: id,
		build: func(ctx context.Context) (*http.Request, error) {
			return newRequest(ctx, http.MethodGet, ep.result)
		},
		decode: func(_ *http.Response, body []byte) error {
			var err error
			out, err = decodeOutput(body)
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// decodeStatus decodes a status body (or stream event): unknown statuses
// and fields are kept (Raw), a missing status is an error.
func decodeStatus(body []byte) (Status, error) {
	st := Status{Raw: body}
	if err := json.Unmarshal(body, &st.QueueStatus); err != nil {
		return Status{}, err
	}
	if st.Status == "" {
		return Status{}, errors.New("no status field")
	}
	return st, nil
}

// decodeOutput decodes a result body; one without images is an error,
// never an empty output.
func decodeOutput(body []byte) (gen.Output, error) {
	var out gen.Output
	if err := json.Unmarshal(body, &out); err != nil {
		return gen.Output{}, err
	}
	if out.Images == nil {
		return gen.Output{}, errors.New("no images field")
	}
	return out, nil
}

// ErrAlreadyCompleted matches (errors.Is) the APIError of a Cancel that came
// too late: the job had completed.
var ErrAlreadyCompleted = errors.New("fluxi2i: job already completed")

// Cancel asks the queue to cancel the job. Only an explicit cancel stops a
// queued job. A job that already completed gives an error matching
// ErrAlreadyCompleted; an unknown one, ErrNotFound.
func (c *Client) Cancel(ctx context.Context, requestID string) error {
	if err := checkID(requestID); err != nil {
		return err
	}
	return c.cancel(ctx, requestID, c.endpointsFor(requestID, nil))
}

func (c *Client) cancel(ctx context.Context, id string, ep endpoints) error {
	_, err := c.do(ctx, call{
		op: "cancel",
		id: id,
		build: func(ctx context.Context) (*http.Request, error) {
			return newRequest(ctx, http.MethodPut, ep.cancel)
		},
		decode: func(_ *http.Response, body []byte) error {
			var cs gen.CancelStatus
			return json.Unmarshal(body, &cs)
		},
	})
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest && apiErr.Detail == "ALREADY_COMPLETED" {
		return fmt.Errorf("%w: %w", ErrAlreadyCompleted, err)
	}
	return err
}

func newRequest(ctx context.Context, method, target string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

func checkID(id string) error {
	if id == "" {
		return &InputError{Fields: []FieldError{{Field: "request_id", Message: "must not be empty"}}}
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
