package wrapper

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
)

// CallOption adjusts one Submit, Wait, Run or Updates call. Options that
// only concern submitting are ignored by Wait and Updates.
type CallOption func(*callConfig) error

type callConfig struct {
	params     gen.SubmitParams
	headers    http.Header
	onUpdate   func(Status)
	onQueued   func(*Queued)
	atMostOnce bool
	cancelWait time.Duration
	mode       StatusMode
	image      *Image
}

func (c *Client) callConfig(opts []CallOption) (*callConfig, error) {
	cfg := &callConfig{atMostOnce: c.atMostOnce, cancelWait: c.cancelWait, mode: c.mode}
	var errs []error
	for _, o := range opts {
		if err := o(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// Priority is the queue priority of a job.
type Priority = gen.SubmitParamsXFalQueuePriority

// Queue priorities (X-Fal-Queue-Priority).
const (
	PriorityNormal Priority = gen.SubmitParamsXFalQueuePriorityNormal
	PriorityLow    Priority = gen.SubmitParamsXFalQueuePriorityLow
)

// Webhook asks fal to POST the job's outcome to target when it ends (see
// the webhook verification of this package before trusting a delivery).
func Webhook(target string) CallOption {
	return func(cfg *callConfig) error {
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return &InputError{Fields: []FieldError{{Field: "fal_webhook", Message: "must be an absolute http(s) URL"}}}
		}
		cfg.params.FalWebhook = &target
		return nil
	}
}

// WithPriority sets the queue priority (normal or low).
func WithPriority(p Priority) CallOption {
	return func(cfg *callConfig) error {
		if !p.Valid() {
			return &InputError{Fields: []FieldError{{Field: "X-Fal-Queue-Priority", Message: fmt.Sprintf("%q is not one of normal, low", p)}}}
		}
		cfg.params.XFalQueuePriority = &p
		return nil
	}
}

// RunnerHint passes a routing or session-affinity hint.
func RunnerHint(hint string) CallOption {
	return func(cfg *callConfig) error {
		if strings.ContainsAny(hint, "\r\n") {
			return &InputError{Fields: []FieldError{{Field: "X-Fal-Runner-Hint", Message: "must be one line"}}}
		}
		cfg.params.XFalRunnerHint = &hint
		return nil
	}
}

// StartTimeout is how long the job may wait in the queue to START (more
// than 1 s). Past it the server answers 504 with a user timeout, which is
// never retried.
func StartTimeout(d time.Duration) CallOption {
	return func(cfg *callConfig) error {
		if d <= time.Second {
			return &InputError{Fields: []FieldError{{Field: "X-Fal-Request-Timeout", Message: fmt.Sprintf("%v: must be more than 1s", d)}}}
		}
		secs := d.Seconds()
		cfg.params.XFalRequestTimeout = &secs
		return nil
	}
}

// NoStoreIO asks fal not to keep the request and response payloads.
func NoStoreIO() CallOption {
	return func(cfg *callConfig) error {
		v := gen.SubmitParamsXFalStoreION0
		cfg.params.XFalStoreIO = &v
		return nil
	}
}

// MediaExpiry asks fal to delete the output media after d (whole seconds,
// at least 1).
func MediaExpiry(d time.Duration) CallOption {
	return func(cfg *callConfig) error {
		if d < time.Second {
			return &InputError{Fields: []FieldError{{Field: "X-Fal-Object-Lifecycle-Preference", Message: fmt.Sprintf("%v: must be at least 1s", d)}}}
		}
		v := `{"expiration_duration_seconds":` + strconv.FormatInt(int64(d/time.Second), 10) + `}`
		cfg.params.XFalObjectLifecyclePreference = &v
		return nil
	}
}

// WithHeader adds a request header to the submit. Authorization, Host and
// Content-Type are the client's own and cannot be set this way.
func WithHeader(key, value string) CallOption {
	return func(cfg *callConfig) error {
		k := textproto.CanonicalMIMEHeaderKey(key)
		switch k {
		case "Authorization", "Host", "Content-Type", "Content-Length":
			return &InputError{Fields: []FieldError{{Field: "header " + k, Message: "is set by the client"}}}
		}
		if strings.ContainsAny(key+value, "\r\n") || key == "" {
			return &InputError{Fields: []FieldError{{Field: "header " + key, Message: "must be a non-empty one-line name and a one-line value"}}}
		}
		if cfg.headers == nil {
			cfg.headers = http.Header{}
		}
		cfg.headers.Add(k, value)
		return nil
	}
}

// OnUpdate calls fn with every status change while Run or Wait waits: the
// queue position, and each log line once, in order (Status.NewLogs). fn runs
// on the waiting goroutine; keep it quick.
func OnUpdate(fn func(Status)) CallOption {
	return func(cfg *callConfig) error {
		cfg.onUpdate = fn
		return nil
	}
}

// OnQueued calls fn with the submit's answer as soon as Run has queued the
// job, before it waits.
func OnQueued(fn func(*Queued)) CallOption {
	return func(cfg *callConfig) error {
		cfg.onQueued = fn
		return nil
	}
}

// AtMostOnce makes this submit at-most-once (see WithAtMostOnce).
func AtMostOnce() CallOption {
	return func(cfg *callConfig) error { cfg.atMostOnce = true; return nil }
}

// KeepRunningOnExit leaves the job running when the context of Run or
// Wait ends, instead of sending the best-effort Cancel; the error names the
// request id to resume with Wait.
func KeepRunningOnExit() CallOption {
	return func(cfg *callConfig) error { cfg.cancelWait = 0; return nil }
}
