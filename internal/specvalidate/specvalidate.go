// Package specvalidate checks HTTP traffic against openapi/openapi.yaml with
// kin-openapi. Every client test runs its requests and responses through
// Transport, and the fake queue server checks every request it receives, so
// a test cannot pass while the wire traffic violates the contract.
package specvalidate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/fluxi2i/fluxi2i/internal/sse"
	"github.com/fluxi2i/fluxi2i/openapi"
)

// FaultHeader marks a response that a test server breaks on purpose
// (truncated or garbled body). Its status code is still checked against the
// spec; its body is not.
const FaultHeader = "X-Queuetest-Fault"

// Validator validates requests and responses against the spec.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
}

var (
	loadOnce sync.Once
	loaded   *Validator
	loadErr  error
)

func init() {
	// The status stream's body is text; kin-openapi has no decoder for it.
	openapi3filter.RegisterBodyDecoder("text/event-stream", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(r)
		return string(b), err
	})
}

// Load parses and validates the embedded spec once and returns the shared
// Validator.
func Load() (*Validator, error) {
	loadOnce.Do(func() {
		loaded, loadErr = newValidator()
	})
	return loaded, loadErr
}

// MustLoad is Load for package-level test setup; it panics on a broken spec.
func MustLoad() *Validator {
	v, err := Load()
	if err != nil {
		panic(err)
	}
	return v
}

// LoadDoc parses and validates the embedded spec into a fresh document.
func LoadDoc() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.Spec)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("validate openapi.yaml: %w", err)
	}
	return doc, nil
}

func newValidator() (*Validator, error) {
	doc, err := LoadDoc()
	if err != nil {
		return nil, err
	}
	// Route on paths alone: tests serve the API from loopback addresses,
	// not from the servers the spec names.
	routed := *doc
	routed.Servers = nil
	paths := openapi3.NewPaths()
	for path, item := range doc.Paths.Map() {
		it := *item
		it.Servers = nil // the Platform API's own server
		paths.Set(path, &it)
	}
	routed.Paths = paths
	r, err := legacy.NewRouter(&routed)
	if err != nil {
		return nil, err
	}
	return &Validator{doc: doc, router: r}, nil
}

// Doc returns the parsed spec. Callers must not modify it.
func (v *Validator) Doc() *openapi3.T { return v.doc }

func (v *Validator) options() *openapi3filter.Options {
	return &openapi3filter.Options{
		MultiError:            true,
		IncludeResponseStatus: true, // an undocumented status code is a violation
		SkipSettingDefaults:   true, // defaults are the server's, never written into a request
		AuthenticationFunc:    authenticate,
	}
}

// authenticate accepts a request that carries the scheme's credential shape;
// which key is valid is the server's business, not the contract's.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	h := in.RequestValidationInput.Request.Header.Get("Authorization")
	var prefix string
	switch in.SecuritySchemeName {
	case "bearer":
		prefix = "Bearer "
	case "falKey":
		prefix = "Key "
	default:
		return fmt.Errorf("unknown security scheme %q", in.SecuritySchemeName)
	}
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return fmt.Errorf("Authorization header is not %q followed by a credential", prefix)
	}
	return nil
}

// Request validates req, whose body (if any) is body, and returns the input
// needed to validate the matching response. req.Body is not read.
func (v *Validator) Request(ctx context.Context, req *http.Request, body []byte) (*openapi3filter.RequestValidationInput, error) {
	route, params, err := v.route(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	probe := req.Clone(ctx)
	probe.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{
		Request:    probe,
		PathParams: params,
		Route:      route,
		Options:    v.options(),
	}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
		return in, fmt.Errorf("request %s %s violates the spec: %w", req.Method, req.URL.Path, err)
	}
	return in, nil
}

// route finds the operation of req. A base path in front of the spec's
// paths (a proxy mount) is allowed.
func (v *Validator) route(req *http.Request) (*routers.Route, map[string]string, error) {
	u := *req.URL
	for {
		r := &http.Request{Method: req.Method, URL: &u, Header: req.Header}
		route, params, err := v.router.FindRoute(r)
		if err == nil {
			return route, params, nil
		}
		// Drop one leading segment of a mount prefix and try again.
		i := strings.IndexByte(strings.TrimPrefix(u.Path, "/"), '/')
		if i < 0 {
			return nil, nil, err
		}
		u.Path = u.Path[i+1:]
		u.RawPath = ""
	}
}

// Response validates one response to the request described by in.
func (v *Validator) Response(ctx context.Context, in *openapi3filter.RequestValidationInput, status int, header http.Header, body []byte) error {
	opts := v.options()
	if header.Get(FaultHeader) != "" || strings.HasPrefix(header.Get("Content-Type"), "text/event-stream") {
		opts.ExcludeResponseBody = true
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Options:                opts,
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("response %d to %s %s violates the spec: %w", status, in.Request.Method, in.Request.URL.Path, err)
	}
	return nil
}

// Violation is the error Transport returns when traffic breaks the spec.
type Violation struct{ Err error }

// Error describes the violation.
func (e *Violation) Error() string { return "spec violation: " + e.Err.Error() }

// Unwrap returns the validation error.
func (e *Violation) Unwrap() error { return e.Err }

// Reporter is the part of testing.TB that Transport reports through.
type Reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// Transport is an http.RoundTripper that validates every request before it
// is sent and every response before it is handed back. A violation is
// reported (failing the test) and returned as a *Violation, so the request
// is not sent or the response is not used.
type Transport struct {
	Base      http.RoundTripper // nil means http.DefaultTransport
	Validator *Validator
	Report    func(error) // nil means violations are only returned
}

// NewTransport returns a Transport over base (nil: a fresh transport) that
// fails t on any violation.
func NewTransport(t Reporter, base http.RoundTripper) *Transport {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &Transport{
		Base:      base,
		Validator: MustLoad(),
		Report:    func(err error) { t.Helper(); t.Errorf("%v", err) },
	}
}

// Client is an *http.Client over NewTransport(t, base).
func Client(t Reporter, base http.RoundTripper) *http.Client {
	return &http.Client{Transport: NewTransport(t, base)}
}

func (t *Transport) fail(err error) error {
	v := &Violation{Err: err}
	if t.Report != nil {
		t.Report(v)
	}
	return v
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	v := t.Validator
	if v == nil {
		v = MustLoad()
	}
	if req.Header.Get("Authorization") == "" {
		if _, _, err := v.route(req); err != nil {
			// No credential and no operation of the spec: an output image
			// download, which is not in the contract.
			return base.RoundTrip(req)
		}
	}
	ctx := req.Context()
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	in, err := v.Request(ctx, req, body)
	if err != nil {
		return nil, t.fail(err)
	}
	out := req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.ContentLength = int64(len(body))
	}
	resp, err := base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// A stream is long-lived: check its status and headers now and
		// pass the body through.
		if err := v.Response(ctx, in, resp.StatusCode, resp.Header, nil); err != nil {
			resp.Body.Close()
			return nil, t.fail(err)
		}
		resp.Body = &eventCheck{body: resp.Body, v: v, fail: func(err error) { t.fail(err) }, parser: sse.NewParser(0)}
		return resp, nil
	}
	raw, readErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if readErr == nil {
		if err := v.Response(ctx, in, resp.StatusCode, resp.Header, raw); err != nil {
			return nil, t.fail(err)
		}
	}
	resp.Body = &replayBody{r: bytes.NewReader(raw), err: readErr}
	return resp, nil
}

// replayBody hands back what was read from the wire, then the read error
// (a truncated body stays truncated for the client under test).
type replayBody struct {
	r   *bytes.Reader
	err error
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) && b.err != nil {
		return n, b.err
	}
	return n, err
}

func (b *replayBody) Close() error { return nil }

// FieldErrors lists, for a validation error from Request, each offending
// body field as a JSON pointer ("/strength") with its reason.
func FieldErrors(err error) []FieldError {
	var out []FieldError
	var walk func(error)
	walk = func(err error) {
		var me openapi3.MultiError
		if errors.As(err, &me) {
			for _, e := range me {
				walk(e)
			}
			return
		}
		var re *openapi3filter.RequestError
		if errors.As(err, &re) && re.Err != nil && re.Err != err {
			if re.Parameter != nil {
				var se *openapi3.SchemaError
				reason := re.Err.Error()
				if errors.As(re.Err, &se) {
					reason = se.Reason
				}
				out = append(out, FieldError{Location: re.Parameter.In + ":" + re.Parameter.Name, Reason: reason})
				return
			}
			walk(re.Err)
			return
		}
		var se *openapi3.SchemaError
		if errors.As(err, &se) {
			ptr := "/" + strings.Join(se.JSONPointer(), "/")
			out = append(out, FieldError{Location: ptr, Reason: se.Reason})
			return
		}
		out = append(out, FieldError{Reason: err.Error()})
	}
	walk(err)
	return out
}

// FieldError is one entry of FieldErrors.
type FieldError struct {
	Location string // "/strength" for a body field, "header:X-Fal-Queue-Priority" for a parameter
	Reason   string
}

// eventCheck validates each event of a status stream as it is read: its
// data must be a QueueStatus.
type eventCheck struct {
	body   io.ReadCloser
	v      *Validator
	fail   func(error)
	line   []byte
	parser *sse.Parser
}

func (e *eventCheck) Read(p []byte) (int, error) {
	n, err := e.body.Read(p)
	e.line = append(e.line, p[:n]...)
	for {
		i := bytes.IndexByte(e.line, '\n')
		if i < 0 {
			break
		}
		ev, ok, perr := e.parser.Line(bytes.TrimSuffix(e.line[:i], []byte("\r")))
		switch {
		case perr != nil:
			e.fail(fmt.Errorf("status stream: %w", perr))
		case ok:
			if verr := e.v.StatusEvent(ev.Data); verr != nil {
				e.fail(verr)
			}
		}
		e.line = e.line[i+1:]
	}
	return n, err
}

func (e *eventCheck) Close() error { return e.body.Close() }

// StatusEvent validates the data of one status stream event.
func (v *Validator) StatusEvent(data []byte) error {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("status stream event %.100q is not JSON: %w", data, err)
	}
	if err := v.doc.Components.Schemas["QueueStatus"].Value.VisitJSON(doc); err != nil {
		return fmt.Errorf("status stream event violates QueueStatus: %w", err)
	}
	return nil
}
