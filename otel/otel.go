// Package fluxi2iotel instruments a fluxi2i client with OpenTelemetry:
// a span per job, a child span per HTTP attempt, trace context carried to
// the server, and the job's metrics. It is its own module
// (github.com/fluxi2i/fluxi2i/otel), so that a program importing only the
// client links no OpenTelemetry package.
//
//	c, err := wrapper.New(fluxi2iotel.Option()) // the global TracerProvider and MeterProvider
//
// # Spans
//
// Each Run and Submit is a CLIENT span named "generate_content
// fal-ai/flux-1/dev/image-to-image" (the GenAI conventions define no image
// operation; generate_content is their multimodal generation), and a Wait
// on a stored request id is a "fetch_response ..." span. Attributes:
// gen_ai.operation.name, gen_ai.provider.name "fal" (a custom value: the
// conventions define none for fal), gen_ai.request.model,
// gen_ai.output.type "image", gen_ai.request.seed when set,
// gen_ai.request.choice.count when not 1, gen_ai.response.id (the request
// id), server.address, server.port, fluxi2i.billable_units, and error.type
// on failure. Events: fluxi2i.queued, fluxi2i.status (each status or queue
// position change, with fluxi2i.status and fluxi2i.queue_position),
// fluxi2i.retry (fluxi2i.operation, fluxi2i.attempt, fluxi2i.retry.delay
// in seconds, fluxi2i.retry.reason) and fluxi2i.history (a lost submit
// looked up in the request history, fluxi2i.history.found).
//
// Each HTTP attempt (submit, status, stream, result, cancel, history,
// download) is a CLIENT child span named by its method (a download that
// follows its job's call, SaveImages or OpenImage, is a child of the span
// of the job whose result named the image, unless the caller's context
// carries a span of its own), following the
// HTTP client conventions: http.request.method, url.full (query
// redacted), server.address, server.port, http.response.status_code,
// http.request.resend_count on retries, error.type; plus
// fluxi2i.operation. Its context goes to the server as W3C traceparent
// (WithPropagator replaces the propagator), never to an image download's
// host.
//
// The GenAI conventions are in development: unless
// OTEL_SEMCONV_STABILITY_OPT_IN names gen_ai_latest_experimental, the
// deprecated gen_ai.system is set beside gen_ai.provider.name for older
// back ends.
//
// # Metrics
//
// gen_ai.client.inference.duration (histogram, s; gen_ai.operation.name,
// gen_ai.provider.name, gen_ai.request.model, server.address, error.type
// on failure: one of fal's error types or the status code; not recorded
// for a Submit alone, which is not a whole job), fluxi2i.job.queue.duration and fluxi2i.job.run.duration
// (histograms, s: from queued to running, from running to completed, as
// the client saw them), fluxi2i.retries (counter; fluxi2i.operation,
// fluxi2i.retry.reason), fluxi2i.billable_units (counter), fluxi2i.jobs.in_flight
// (up-down counter) and http.client.request.duration (histogram, s).
package fluxi2iotel

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxi2i/fluxi2i/internal/endpoint"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/fluxi2i/fluxi2i/otel"

// Operation names (gen_ai.operation.name).
const (
	OperationGenerate = "generate_content" // Run and Submit
	OperationFetch    = "fetch_response"   // Wait on a stored request id
)

// ProviderName is gen_ai.provider.name: a custom value, as the
// conventions define none for fal.
const ProviderName = "fal"

// Setting configures the instrumentation.
type Setting func(*config)

type config struct {
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	prop propagation.TextMapPropagator
	env  func(string) string
}

// WithTracerProvider uses tp instead of the global TracerProvider.
func WithTracerProvider(tp trace.TracerProvider) Setting { return func(c *config) { c.tp = tp } }

// WithMeterProvider uses mp instead of the global MeterProvider.
func WithMeterProvider(mp metric.MeterProvider) Setting { return func(c *config) { c.mp = mp } }

// WithPropagator carries trace context to the server with p instead of
// W3C Trace Context.
func WithPropagator(p propagation.TextMapPropagator) Setting {
	return func(c *config) { c.prop = p }
}

// Option returns the wrapper.Option that instruments a client (for
// wrapper.New).
func Option(settings ...Setting) wrapper.Option {
	return wrapper.WithObserver(NewObserver(settings...))
}

// NewObserver returns the wrapper.Observer behind Option, for a program
// that combines observers.
func NewObserver(settings ...Setting) wrapper.Observer {
	cfg := newConfig(settings)
	o := &observer{
		httpSets: map[httpKey]metric.MeasurementOption{},
		tracer:   cfg.tp.Tracer(ScopeName),
		prop:     cfg.prop,
		model:    endpoint.ID(),
		legacy:   !strings.Contains(cfg.env("OTEL_SEMCONV_STABILITY_OPT_IN"), "gen_ai_latest_experimental"),
	}
	m := cfg.mp.Meter(ScopeName)
	sec := metric.WithUnit("s")
	genAI := metric.WithExplicitBucketBoundaries(genAIBuckets...)
	o.inference, _ = m.Float64Histogram("gen_ai.client.inference.duration", sec, genAI,
		metric.WithDescription("Duration of a job, from its call to its result or error."))
	o.queueTime, _ = m.Float64Histogram("fluxi2i.job.queue.duration", sec, genAI,
		metric.WithDescription("Time a job waited in the queue, as the client saw it."))
	o.runTime, _ = m.Float64Histogram("fluxi2i.job.run.duration", sec, genAI,
		metric.WithDescription("Time a job ran, as the client saw it."))
	o.retries, _ = m.Int64Counter("fluxi2i.retries", metric.WithUnit("{retry}"),
		metric.WithDescription("Attempts retried, by operation and reason."))
	o.units, _ = m.Float64Counter("fluxi2i.billable_units", metric.WithUnit("{unit}"),
		metric.WithDescription("What the server billed (X-Fal-Billable-Units)."))
	o.inFlight, _ = m.Int64UpDownCounter("fluxi2i.jobs.in_flight", metric.WithUnit("{job}"),
		metric.WithDescription("Jobs whose call has begun and not ended."))
	o.httpDuration, _ = m.Float64Histogram("http.client.request.duration", sec, metric.WithExplicitBucketBoundaries(httpBuckets...),
		metric.WithDescription("Duration of HTTP client requests."))
	return o
}

func newConfig(settings []Setting) config {
	cfg := config{prop: propagation.TraceContext{}, env: os.Getenv}
	for _, s := range settings {
		s(&cfg)
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	return cfg
}

// The histograms' buckets, as the conventions advise: GenAI durations
// from 10 ms doubling to 82 s, HTTP requests from 5 ms to 10 s.
var (
	genAIBuckets = []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
	httpBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
)

type observer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	model  string
	legacy bool
	sets   sync.Map // string key -> metric.MeasurementOption: attribute sets made once
	setsN  atomic.Int64
	hosts  sync.Map // base URL -> hostPortOf
	images recent   // a result's image URLs -> its job's span, for the downloads that follow

	mu       sync.Mutex
	httpSets map[httpKey]metric.MeasurementOption

	inference, queueTime, runTime, httpDuration metric.Float64Histogram
	units                                       metric.Float64Counter
	retries                                     metric.Int64Counter
	inFlight                                    metric.Int64UpDownCounter
}

// recent remembers the job span of the last results' image URLs, so that
// a download started after its job's call ended (SaveImages, OpenImage)
// is still that job's child span. It holds at most recentImages URLs.
type recent struct {
	mu    sync.Mutex
	m     map[string]trace.SpanContext
	order []string // insertion order, for eviction
}

const recentImages = 4096

func (r *recent) put(url string, sc trace.SpanContext) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]trace.SpanContext{}
	}
	if _, ok := r.m[url]; !ok {
		if len(r.order) >= recentImages {
			delete(r.m, r.order[0])
			r.order = r.order[1:]
		}
		r.order = append(r.order, url)
	}
	r.m[url] = sc
}

func (r *recent) get(url string) (trace.SpanContext, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sc, ok := r.m[url]
	return sc, ok
}

type hostPortOf struct {
	host string
	port int
}

// maxSets bounds the attribute sets kept for reuse.
const maxSets = 1024

// attrSet returns the metric option of attrs, made once for key: a
// metric's attribute set is sorted and hashed when made, so the few that
// recur are kept.
func (o *observer) attrSet(key string, attrs ...attribute.KeyValue) metric.MeasurementOption {
	if v, ok := o.sets.Load(key); ok {
		return v.(metric.MeasurementOption)
	}
	opt := metric.WithAttributeSet(attribute.NewSet(attrs...))
	if o.setsN.Add(1) <= maxSets {
		o.sets.Store(key, opt)
	}
	return opt
}

// job is a job's state, kept in its context by StartJob.
type job struct {
	call      string                   // "run", "submit", "wait", "settle"
	key       string                   // of set, for the attribute sets made from it
	set       metric.MeasurementOption // the metrics' attributes, as a set
	idSet     bool                     // gen_ai.response.id is on the span
	id        string                   // the request id, once queued
	span      trace.Span
	start     time.Time
	common    []attribute.KeyValue // the metrics' attributes
	queued    time.Time
	running   time.Time
	completed time.Time
}

type jobKey struct{}

func jobOf(ctx context.Context) *job {
	j, _ := ctx.Value(jobKey{}).(*job)
	return j
}

func hostPort(raw string) (string, int) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", 0
	}
	return urlHostPort(u)
}

// urlHostPort is server.address and server.port of u (the scheme's port
// when it names none).
func urlHostPort(u *url.URL) (string, int) {
	port, _ := strconv.Atoi(u.Port())
	if port == 0 {
		port = 80
		if u.Scheme == "https" {
			port = 443
		}
	}
	return u.Hostname(), port
}

func (o *observer) StartJob(ctx context.Context, js wrapper.JobStart) context.Context {
	opName := OperationGenerate
	if js.Call == "wait" || js.Call == "settle" {
		opName = OperationFetch
	}
	hp, ok := o.hosts.Load(js.BaseURL)
	if !ok {
		h, p := hostPort(js.BaseURL)
		hp = hostPortOf{h, p}
		o.hosts.Store(js.BaseURL, hp)
	}
	host, port := hp.(hostPortOf).host, hp.(hostPortOf).port
	common := []attribute.KeyValue{
		attribute.String("gen_ai.operation.name", opName),
		attribute.String("gen_ai.provider.name", ProviderName),
		attribute.String("gen_ai.request.model", o.model),
		attribute.String("server.address", host),
		attribute.Int("server.port", port),
	}
	attrs := append(common[:len(common):len(common)], attribute.String("gen_ai.output.type", "image"))
	if o.legacy {
		attrs = append(attrs, attribute.String("gen_ai.system", ProviderName))
	}
	if in := js.Input; in != nil {
		if in.Seed != nil {
			attrs = append(attrs, attribute.Int64("gen_ai.request.seed", *in.Seed))
		}
		if in.NumImages != nil && *in.NumImages != 1 {
			attrs = append(attrs, attribute.Int("gen_ai.request.choice.count", *in.NumImages))
		}
	}
	if js.RequestID != "" {
		attrs = append(attrs, attribute.String("gen_ai.response.id", js.RequestID))
	}
	ctx, span := o.tracer.Start(ctx, opName+" "+o.model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	o.inFlight.Add(ctx, 1)
	key := opName + "|" + js.BaseURL
	return context.WithValue(ctx, jobKey{}, &job{span: span, start: time.Now(), common: common[:4], call: js.Call,
		key: key, set: o.attrSet(key, common[:4]...), idSet: js.RequestID != ""})
}

func (o *observer) JobEvent(ctx context.Context, ev wrapper.JobEvent) {
	j := jobOf(ctx)
	if j == nil {
		if ev.Kind == wrapper.EventRetry { // a call outside a job (Status, Result, a download)
			o.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("fluxi2i.operation", ev.Op), attribute.String("fluxi2i.retry.reason", ev.Reason)))
		}
		return
	}
	now := time.Now()
	switch ev.Kind {
	case wrapper.EventQueued:
		j.queued = now
		j.id = ev.RequestID // set on the span at its end, with the rest: one write
		j.span.AddEvent("fluxi2i.queued", trace.WithAttributes(attribute.String("gen_ai.response.id", ev.RequestID)))
	case wrapper.EventStatus:
		attrs := []attribute.KeyValue{attribute.String("fluxi2i.status", ev.Status)}
		if ev.QueuePosition != nil {
			attrs = append(attrs, attribute.Int("fluxi2i.queue_position", *ev.QueuePosition))
		}
		j.span.AddEvent("fluxi2i.status", trace.WithAttributes(attrs...))
		switch ev.Status {
		case wrapper.StatusInQueue:
			if j.queued.IsZero() {
				j.queued = now
			}
		case wrapper.StatusInProgress:
			if j.running.IsZero() {
				j.running = now
			}
		case wrapper.StatusCompleted:
			if j.completed.IsZero() {
				j.completed = now
			}
		}
	case wrapper.EventRetry:
		reason := attribute.String("fluxi2i.retry.reason", ev.Reason)
		op := attribute.String("fluxi2i.operation", ev.Op)
		j.span.AddEvent("fluxi2i.retry", trace.WithAttributes(op, attribute.Int("fluxi2i.attempt", ev.Attempt),
			attribute.Float64("fluxi2i.retry.delay", ev.Delay.Seconds()), reason))
		o.retries.Add(ctx, 1, o.attrSet(j.key+"|retry|"+ev.Op+"|"+ev.Reason, append(j.common[:len(j.common):len(j.common)], op, reason)...))
	case wrapper.EventHistory:
		attrs := []attribute.KeyValue{attribute.Bool("fluxi2i.history.found", ev.Found)}
		if ev.Found {
			attrs = append(attrs, attribute.String("gen_ai.response.id", ev.RequestID))
		}
		j.span.AddEvent("fluxi2i.history", trace.WithAttributes(attrs...))
	}
}

func (o *observer) EndJob(ctx context.Context, end wrapper.JobEnd) {
	j := jobOf(ctx)
	if j == nil {
		return
	}
	now := time.Now()
	var spanAttrs []attribute.KeyValue
	if id := cmp.Or(end.RequestID, j.id); id != "" && !j.idSet {
		spanAttrs = append(spanAttrs, attribute.String("gen_ai.response.id", id))
	}
	if end.BillableUnits > 0 {
		spanAttrs = append(spanAttrs, attribute.Float64("fluxi2i.billable_units", end.BillableUnits))
	}
	set := j.set
	if end.Err != nil {
		et := errorType(end.Err)
		spanAttrs = append(spanAttrs, attribute.String("error.type", et))
		j.span.SetStatus(codes.Error, end.Err.Error())
		set = o.attrSet(j.key+"|error|"+et, append(j.common[:len(j.common):len(j.common)], attribute.String("error.type", et))...)
	}
	if len(spanAttrs) > 0 {
		j.span.SetAttributes(spanAttrs...)
	}
	if end.BillableUnits > 0 {
		o.units.Add(ctx, end.BillableUnits, set)
	}
	if j.call != "submit" { // a submit alone is not a whole job
		o.inference.Record(ctx, now.Sub(j.start).Seconds(), set)
	}
	if !j.queued.IsZero() && !j.running.IsZero() {
		o.queueTime.Record(ctx, j.running.Sub(j.queued).Seconds(), j.set)
	}
	if !j.running.IsZero() && !j.completed.IsZero() {
		o.runTime.Record(ctx, j.completed.Sub(j.running).Seconds(), j.set)
	}
	if end.Result != nil {
		for _, im := range end.Result.Images {
			if strings.HasPrefix(im.URL, "http") {
				o.images.put(im.URL, j.span.SpanContext())
			}
		}
	}
	o.inFlight.Add(ctx, -1)
	j.span.End()
}

// attempt is an HTTP attempt's state, kept in its context.
type attempt struct {
	span         trace.Span
	start        time.Time
	method, host string // for the metric's attribute sets
	attrs        []attribute.KeyValue
}

// httpKey names an attribute set of http.client.request.duration.
type httpKey struct {
	method, host, errorType string
	status                  int
}

type attemptKey struct{}

func (o *observer) StartRequest(ctx context.Context, req *http.Request, info wrapper.RequestInfo) context.Context {
	host, port := urlHostPort(req.URL)
	full := req.URL.String()
	if req.URL.RawQuery != "" || req.URL.User != nil {
		u := *req.URL
		if u.RawQuery != "" {
			u.RawQuery = "REDACTED" // a webhook URL may carry a token
		}
		u.User = nil
		full = u.String()
	}
	common := []attribute.KeyValue{
		attribute.String("http.request.method", req.Method),
		attribute.String("server.address", host),
		attribute.Int("server.port", port),
	}
	attrs := append(common[:len(common):len(common)], attribute.String("url.full", full), attribute.String("fluxi2i.operation", info.Op))
	if info.Resend > 0 {
		attrs = append(attrs, attribute.Int("http.request.resend_count", info.Resend))
	}
	if info.Op == "download" && !trace.SpanContextFromContext(ctx).IsValid() {
		if sc, ok := o.images.get(req.URL.String()); ok {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc) // the job whose result named the image
		}
	}
	ctx, span := o.tracer.Start(ctx, req.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	if info.Op != "download" { // an image's host is a CDN's, not the API's: no trace context there
		o.prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	return context.WithValue(ctx, attemptKey{}, &attempt{span: span, start: time.Now(), method: req.Method, host: req.URL.Host, attrs: common})
}

func (o *observer) EndRequest(ctx context.Context, end wrapper.RequestEnd) {
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	if a == nil {
		return
	}
	var et string
	switch {
	case end.StatusCode >= 400:
		et = strconv.Itoa(end.StatusCode)
	case end.Err != nil:
		et = errorType(end.Err)
	}
	attrs := a.attrs
	var extra [2]attribute.KeyValue
	n := 0
	if end.StatusCode != 0 {
		extra[n] = attribute.Int("http.response.status_code", end.StatusCode)
		n++
	}
	if et != "" {
		extra[n] = attribute.String("error.type", et)
		n++
		a.span.SetStatus(codes.Error, et)
	}
	if n > 0 {
		a.span.SetAttributes(extra[:n]...)
	}
	k := httpKey{a.method, a.host, et, end.StatusCode}
	o.mu.Lock()
	set, ok := o.httpSets[k]
	if !ok {
		set = metric.WithAttributeSet(attribute.NewSet(append(attrs[:len(attrs):len(attrs)], extra[:n]...)...))
		if len(o.httpSets) < maxSets {
			o.httpSets[k] = set
		}
	}
	o.mu.Unlock()
	o.httpDuration.Record(ctx, time.Since(a.start).Seconds(), set)
	a.span.End()
}

// knownErrorTypes are fal's error types: error.type takes one of these, or
// the status code.
var knownErrorTypes = map[string]bool{
	"request_timeout": true, "startup_timeout": true, "runner_scheduling_failure": true,
	"runner_connection_timeout": true, "runner_disconnected": true, "runner_connection_refused": true,
	"runner_connection_error": true, "runner_incomplete_response": true, "runner_server_error": true,
	"internal_error": true, "client_disconnected": true, "client_cancelled": true, "bad_request": true,
}

// errorType is error.type: low cardinality, as the conventions ask.
func errorType(err error) string {
	var ae *wrapper.APIError
	var ie *wrapper.InputError
	switch {
	case errors.As(err, &ae):
		if knownErrorTypes[ae.ErrorType] {
			return ae.ErrorType
		}
		return strconv.Itoa(ae.StatusCode) // the server's type, if any, is not trusted to be low-cardinality
	case errors.As(err, &ie):
		return "invalid_input"
	case errors.Is(err, wrapper.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "_OTHER"
}
