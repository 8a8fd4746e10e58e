package wrapper

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
)

// Sentinel errors: what the package returns matches them (errors.Is).
var (
	// ErrNotFound matches an APIError for an unknown request id.
	ErrNotFound = errors.New("fluxi2i: request not found")

	// ErrOutcomeUnknown matches a SubmitError whose job may or may not
	// have been queued: the request was sent and no answer came back.
	ErrOutcomeUnknown = errors.New("fluxi2i: submit outcome unknown: the job may have been queued")

	// ErrNotInHistory matches the error of a lost submit (or of Settle)
	// whose job the request history did not list within the settle
	// window: no job that the client can see was created.
	ErrNotInHistory = errors.New("fluxi2i: no job with this input in the request history")

	// ErrHistoryUnavailable matches the error of a lost submit (or of
	// Settle) that the request history could not settle: the server has
	// none (404, as the aggregator), the key may not read it (401, 403),
	// the submit asked fal to keep no payload (X-Fal-Store-IO: 0), or it
	// could not be reached.
	ErrHistoryUnavailable = errors.New("fluxi2i: the request history cannot settle this submit")

	// ErrAlreadyCompleted matches the APIError of a Cancel that came too
	// late: the job had completed.
	ErrAlreadyCompleted = errors.New("fluxi2i: job already completed")

	// ErrNoCredentials is returned by New when no API key was given and
	// none is in the environment.
	ErrNoCredentials = errors.New("fluxi2i: no API key: use WithAPIKey, WithBearerToken or WithFalKey, or set " + EnvAPIKey + " or " + EnvFalKey)

	// ErrNotAnImage is returned for input bytes that are not a jpeg, png,
	// webp, gif or avif image.
	ErrNotAnImage = errors.New("fluxi2i: not a jpeg, png, webp, gif or avif image")

	// The webhook verification failures: a WebhookError wraps one of
	// them.
	ErrWebhookMissingHeader = errors.New("missing signature header")
	ErrWebhookTimestamp     = errors.New("timestamp outside the tolerance")
	ErrWebhookSignature     = errors.New("no key verifies the signature")
	ErrWebhookKeys          = errors.New("signing keys unavailable")
	ErrWebhookUser          = errors.New("delivery for another fal user")
	// ErrWebhookRequestID is a signed delivery whose body names another
	// request than the signed X-Fal-Webhook-Request-Id (or none): the
	// signature covers the body, but a handler trusting the body's id
	// would act on a request the signer did not vouch for.
	ErrWebhookRequestID = errors.New("body names another request than the signature")
)

// APIError is a non-2xx answer from the API.
type APIError struct {
	Op         string // "submit", "status", "stream", "result", "cancel"
	StatusCode int
	RequestID  string // the job's request id, when known
	ErrorType  string // error_type of the body or X-Fal-Error-Type, e.g. "runner_disconnected"
	Detail     string // the message of the body
	// Retryable is what the server said (X-Fal-Retryable) or, without that
	// header, whether the status code is one that retries can help.
	Retryable bool
	// Fields are the field errors of a 422 (detail as a list).
	Fields []FieldError
	// Body is the raw body, read through the client's size limit.
	Body []byte
	// UserTimeout is set for a 504 caused by the start deadline the caller
	// gave (StartTimeout); it is never retried.
	UserTimeout bool
}

// Error names the operation, the request id, the status, the error type and the detail or field errors.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fluxi2i: %s", e.Op)
	if e.RequestID != "" {
		fmt.Fprintf(&b, " of request %s", e.RequestID)
	}
	fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	if e.ErrorType != "" {
		fmt.Fprintf(&b, " (%s)", e.ErrorType)
	}
	if len(e.Fields) > 0 {
		parts := make([]string, len(e.Fields))
		for i, f := range e.Fields {
			parts[i] = f.String()
		}
		fmt.Fprintf(&b, ": %s", strings.Join(parts, "; "))
	} else if e.Detail != "" {
		fmt.Fprintf(&b, ": %s", e.Detail)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) true for a 404.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.StatusCode == http.StatusNotFound
}

// FieldError is one field the API or the local validation rejected.
type FieldError struct {
	Field   string // "strength", or a path such as "body.strength" from the API
	Message string // what is wrong and what is allowed
}

// String reads "field: message". A message made of one of the package's
// errors reads without that error's "fluxi2i: " prefix: InputError's
// message has one, at its start.
func (f FieldError) String() string { return f.Field + ": " + errprefix.Strip(f.Message) }

// InputError lists every bad field of an input, found before anything was
// sent.
type InputError struct {
	Fields []FieldError
}

// Error lists every bad field.
func (e *InputError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.String()
	}
	return "fluxi2i: invalid input: " + strings.Join(parts, "; ")
}

// JobError is returned when waiting for a job ends without its result: the
// context ended, or the job ended without one. RequestID is always set, so
// the job can be resumed with Wait or fetched with Result.
type JobError struct {
	RequestID string
	// Status is the job's last known status ("" when none was seen).
	Status string
	// Cancelled reports that a best-effort Cancel was accepted by the server.
	Cancelled bool
	Err       error
}

// Error names the request id, its last status and the cause.
func (e *JobError) Error() string {
	msg := fmt.Sprintf("fluxi2i: request %s", e.RequestID)
	if e.Status != "" {
		msg += " (last status " + e.Status + ")"
	}
	if e.Cancelled {
		msg += ", cancelled"
	}
	return msg + ": " + errprefix.Strip(e.Err.Error())
}

// Unwrap returns the cause (a context error, an *APIError, ...).
func (e *JobError) Unwrap() error { return e.Err }

// SubmitError is a submit that failed after its request may have reached
// the server; errors.Is(err, ErrOutcomeUnknown) tells when the job may
// exist. Attempts counts the submit requests sent.
type SubmitError struct {
	Attempts int
	Unknown  bool
	Err      error
	// History is why the request history did not settle a submit whose
	// outcome was unknown (matching ErrNotInHistory or
	// ErrHistoryUnavailable); nil when it was not asked.
	History error
}

// Error says how many attempts were made, whether the job may exist and
// what the request history said.
func (e *SubmitError) Error() string {
	cause := errprefix.Strip(e.Err.Error())
	msg := fmt.Sprintf("fluxi2i: submit failed after %d attempt(s): %s", e.Attempts, cause)
	if e.Unknown {
		msg = fmt.Sprintf("fluxi2i: submit outcome unknown after %d attempt(s), the job may have been queued and billed: %s", e.Attempts, cause)
	}
	if e.History != nil {
		msg += "; " + errprefix.Strip(e.History.Error())
	}
	return msg
}

// Unwrap returns the cause, ErrOutcomeUnknown when the job may exist, and
// the history's answer when it was asked.
func (e *SubmitError) Unwrap() []error {
	errs := []error{e.Err}
	if e.Unknown {
		errs = append(errs, ErrOutcomeUnknown)
	}
	if e.History != nil {
		errs = append(errs, e.History)
	}
	return errs
}

// apiError is the one funnel that turns a non-2xx response into an APIError.
func apiError(op, id string, resp *http.Response, body []byte) *APIError {
	e := &APIError{
		Op:         op,
		StatusCode: resp.StatusCode,
		RequestID:  id,
		ErrorType:  resp.Header.Get("X-Fal-Error-Type"),
		Body:       body,
	}
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Fal-Request-Id")
	}
	e.UserTimeout = resp.StatusCode == http.StatusGatewayTimeout &&
		strings.EqualFold(resp.Header.Get("X-Fal-Request-Timeout-Type"), "user")
	switch strings.ToLower(resp.Header.Get("X-Fal-Retryable")) {
	case "true":
		e.Retryable = !e.UserTimeout
	case "false":
		e.Retryable = false
	default:
		e.Retryable = retryableStatus(resp.StatusCode) && !e.UserTimeout
	}

	var probe struct {
		Detail    json.RawMessage `json:"detail"`
		ErrorType string          `json:"error_type"`
		Status    string          `json:"status"`
	}
	if json.Unmarshal(body, &probe) != nil {
		e.Detail = strings.TrimSpace(string(truncate(body, 512)))
		return e
	}
	if probe.ErrorType != "" {
		e.ErrorType = probe.ErrorType
	}
	var detail gen.ValidationDetail
	if len(probe.Detail) > 0 && detail.UnmarshalJSON(probe.Detail) == nil {
		if s, err := detail.AsValidationDetail1(); err == nil && len(probe.Detail) > 0 && probe.Detail[0] == '"' {
			e.Detail = s
		} else if items, err := detail.AsValidationDetail0(); err == nil {
			for _, it := range items {
				e.Fields = append(e.Fields, FieldError{Field: locString(it.Loc), Message: it.Msg})
			}
		}
	}
	if e.Detail == "" && probe.Status != "" {
		e.Detail = probe.Status // cancel answers {"status": "NOT_FOUND"}
	}
	return e
}

func locString(loc *[]gen.ValidationErrorItem_Loc_Item) string {
	if loc == nil {
		return ""
	}
	parts := make([]string, 0, len(*loc))
	for _, item := range *loc {
		if s, err := item.AsValidationErrorItemLoc0(); err == nil {
			parts = append(parts, s)
		} else if n, err := item.AsValidationErrorItemLoc1(); err == nil {
			parts = append(parts, fmt.Sprint(n))
		}
	}
	return strings.Join(parts, ".")
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// retryableStatus lists the status codes a retry can help with.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}
