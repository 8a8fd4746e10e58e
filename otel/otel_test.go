package fluxi2iotel_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fluxi2i/fluxi2i/gen"
	fluxi2iotel "github.com/fluxi2i/fluxi2i/otel"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

const spanName = "generate_content fal-ai/flux-1/dev/image-to-image"

// headerLog records the traceparent of every request the client sends.
type headerLog struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []string
}

func (h *headerLog) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Header.Get("Traceparent"))
	h.mu.Unlock()
	return h.next.RoundTrip(r)
}

type fixture struct {
	srv     *queuetest.Server
	c       *wrapper.Client
	spans   *tracetest.SpanRecorder
	reader  *sdkmetric.ManualReader
	headers *headerLog
}

func setup(t *testing.T, sopts []queuetest.Option, copts ...wrapper.Option) *fixture {
	t.Helper()
	t.Setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
	srv := spectest.NewServer(t, append([]queuetest.Option{queuetest.QueueTime(50 * time.Millisecond), queuetest.RunTime(50 * time.Millisecond)}, sopts...)...)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	hl := &headerLog{next: spectest.Client(t, srv).Transport}
	opts := append([]wrapper.Option{
		wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("t"), wrapper.WithEnvironment(nil),
		wrapper.WithHTTPClient(&http.Client{Transport: hl}),
		fluxi2iotel.Option(fluxi2iotel.WithTracerProvider(tp), fluxi2iotel.WithMeterProvider(mp)),
	}, copts...)
	c, err := wrapper.New(opts...)
	require.NoError(t, err)
	return &fixture{srv: srv, c: c, spans: rec, reader: reader, headers: hl}
}

func input() gen.Input {
	return gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "a cat"}
}

func attrs(s sdktrace.ReadOnlySpan) map[string]attribute.Value {
	m := map[string]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value
	}
	return m
}

// jobSpan is the one span named name, and the spans whose parent it is.
func jobSpan(t *testing.T, f *fixture, name string) (sdktrace.ReadOnlySpan, []sdktrace.ReadOnlySpan) {
	t.Helper()
	var job sdktrace.ReadOnlySpan
	for _, s := range f.spans.Ended() {
		if s.Name() == name {
			require.Nil(t, job, "one job span")
			job = s
		}
	}
	require.NotNil(t, job, "a span named %q", name)
	var children []sdktrace.ReadOnlySpan
	for _, s := range f.spans.Ended() {
		if s.Parent().SpanID() == job.SpanContext().SpanID() {
			children = append(children, s)
		}
	}
	return job, children
}

func events(s sdktrace.ReadOnlySpan, name string) []sdktrace.Event {
	var out []sdktrace.Event
	for _, e := range s.Events() {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// metric finds the metric named name.
func metric(t *testing.T, f *fixture, name string) metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, f.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m.Data
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func TestASuccessfulJob(t *testing.T) {
	f := setup(t, nil)
	in := input()
	seed, n := int64(42), 2
	in.Seed, in.NumImages = &seed, &n
	res, err := f.c.Run(context.Background(), in)
	require.NoError(t, err)

	job, children := jobSpan(t, f, spanName)
	assert.Equal(t, trace.SpanKindClient, job.SpanKind())
	a := attrs(job)
	assert.Equal(t, "generate_content", a["gen_ai.operation.name"].AsString())
	assert.Equal(t, "fal", a["gen_ai.provider.name"].AsString())
	assert.Equal(t, "fal-ai/flux-1/dev/image-to-image", a["gen_ai.request.model"].AsString())
	assert.Equal(t, "image", a["gen_ai.output.type"].AsString())
	assert.EqualValues(t, 42, a["gen_ai.request.seed"].AsInt64())
	assert.EqualValues(t, 2, a["gen_ai.request.choice.count"].AsInt64())
	assert.Equal(t, res.RequestID, a["gen_ai.response.id"].AsString())
	assert.Equal(t, "127.0.0.1", a["server.address"].AsString())
	assert.Positive(t, a["server.port"].AsInt64())
	assert.NotContains(t, a, "error.type")
	assert.NotContains(t, a, "gen_ai.system", "opted in to the latest names")
	assert.Equal(t, codes.Unset, job.Status().Code)
	assert.Len(t, events(job, "fluxi2i.queued"), 1)
	statuses := events(job, "fluxi2i.status")
	require.NotEmpty(t, statuses)
	assert.Equal(t, attribute.StringValue(wrapper.StatusCompleted), statuses[len(statuses)-1].Attributes[0].Value)

	ops := map[string]int{}
	for _, s := range children {
		ca := attrs(s)
		ops[ca["fluxi2i.operation"].AsString()]++
		assert.Equal(t, trace.SpanKindClient, s.SpanKind())
		assert.Equal(t, s.Name(), ca["http.request.method"].AsString())
		assert.Contains(t, ca["url.full"].AsString(), f.srv.URL)
		assert.Positive(t, ca["http.response.status_code"].AsInt64())
		assert.NotContains(t, ca, "http.request.resend_count")
	}
	assert.Equal(t, 1, ops["submit"])
	assert.Equal(t, 1, ops["result"])
	assert.Positive(t, ops["stream"]+ops["status"])

	// Each request carried its own span's context to the server.
	f.headers.mu.Lock()
	seen := append([]string(nil), f.headers.seen...)
	f.headers.mu.Unlock()
	require.NotEmpty(t, seen)
	for i, tp := range seen {
		assert.Contains(t, tp, job.SpanContext().TraceID().String(), "request %d", i)
	}

	dur := metric(t, f, "gen_ai.client.inference.duration").(metricdata.Histogram[float64])
	require.Len(t, dur.DataPoints, 1)
	assert.EqualValues(t, 1, dur.DataPoints[0].Count)
	v, ok := dur.DataPoints[0].Attributes.Value("gen_ai.request.model")
	assert.True(t, ok)
	assert.Equal(t, "fal-ai/flux-1/dev/image-to-image", v.AsString())
	units := metric(t, f, "fluxi2i.billable_units").(metricdata.Sum[float64])
	require.Len(t, units.DataPoints, 1)
	assert.EqualValues(t, 2, units.DataPoints[0].Value)
	inFlight := metric(t, f, "fluxi2i.jobs.in_flight").(metricdata.Sum[int64])
	require.Len(t, inFlight.DataPoints, 1)
	assert.Zero(t, inFlight.DataPoints[0].Value)
	for _, name := range []string{"fluxi2i.job.queue.duration", "fluxi2i.job.run.duration", "http.client.request.duration"} {
		h := metric(t, f, name).(metricdata.Histogram[float64])
		require.NotEmpty(t, h.DataPoints, name)
	}
}

func TestAJobWhoseSubmitIsRetried(t *testing.T) {
	f := setup(t, nil, wrapper.WithBackoff(func(int) time.Duration { return time.Millisecond }))
	f.srv.Inject(queuetest.OpSubmit, queuetest.Fail(503))
	_, err := f.c.Run(context.Background(), input())
	require.NoError(t, err)
	job, children := jobSpan(t, f, spanName)
	var submits []sdktrace.ReadOnlySpan
	for _, s := range children {
		if attrs(s)["fluxi2i.operation"].AsString() == "submit" {
			submits = append(submits, s)
		}
	}
	require.Len(t, submits, 2)
	assert.EqualValues(t, 503, attrs(submits[0])["http.response.status_code"].AsInt64())
	assert.Equal(t, "503", attrs(submits[0])["error.type"].AsString())
	assert.EqualValues(t, 1, attrs(submits[1])["http.request.resend_count"].AsInt64())
	retries := events(job, "fluxi2i.retry")
	require.Len(t, retries, 1)
	ev := map[string]attribute.Value{}
	for _, kv := range retries[0].Attributes {
		ev[string(kv.Key)] = kv.Value
	}
	assert.Equal(t, "submit", ev["fluxi2i.operation"].AsString())
	assert.Equal(t, "HTTP 503", ev["fluxi2i.retry.reason"].AsString())
	assert.EqualValues(t, 2, ev["fluxi2i.attempt"].AsInt64())
	r := metric(t, f, "fluxi2i.retries").(metricdata.Sum[int64])
	require.Len(t, r.DataPoints, 1)
	assert.EqualValues(t, 1, r.DataPoints[0].Value)
	reason, _ := r.DataPoints[0].Attributes.Value("fluxi2i.retry.reason")
	assert.Equal(t, "HTTP 503", reason.AsString())
}

func TestAJobFailingWith422(t *testing.T) {
	model := func(context.Context, string, gen.Input) ([]queuetest.Rendering, error) {
		return nil, &queuetest.ModelError{StatusCode: 422, Field: "image_url", Detail: "cannot read the image"}
	}
	f := setup(t, []queuetest.Option{queuetest.WithModel(model)})
	_, err := f.c.Run(context.Background(), input())
	require.Error(t, err)
	job, children := jobSpan(t, f, spanName)
	assert.Equal(t, "422", attrs(job)["error.type"].AsString())
	var result sdktrace.ReadOnlySpan
	for _, s := range children {
		if attrs(s)["fluxi2i.operation"].AsString() == "result" {
			result = s
		}
	}
	require.NotNil(t, result, "the result call is a child span")
	assert.EqualValues(t, 422, attrs(result)["http.response.status_code"].AsInt64())
	assert.Equal(t, codes.Error, result.Status().Code)
	assert.NotEmpty(t, events(job, "fluxi2i.status"))
	assert.Equal(t, codes.Error, job.Status().Code)
	dur := metric(t, f, "gen_ai.client.inference.duration").(metricdata.Histogram[float64])
	require.Len(t, dur.DataPoints, 1)
	et, ok := dur.DataPoints[0].Attributes.Value("error.type")
	assert.True(t, ok)
	assert.Equal(t, "422", et.AsString())
}

func TestAResumedWait(t *testing.T) {
	f := setup(t, nil)
	q, err := f.c.Submit(context.Background(), input())
	require.NoError(t, err)
	_, err = f.c.Wait(context.Background(), q.RequestID)
	require.NoError(t, err)
	submit, _ := jobSpan(t, f, spanName)
	assert.Equal(t, q.RequestID, attrs(submit)["gen_ai.response.id"].AsString())
	wait, children := jobSpan(t, f, "fetch_response fal-ai/flux-1/dev/image-to-image")
	assert.Equal(t, "fetch_response", attrs(wait)["gen_ai.operation.name"].AsString())
	assert.Equal(t, q.RequestID, attrs(wait)["gen_ai.response.id"].AsString())
	assert.NotEmpty(t, children)
	dur := metric(t, f, "gen_ai.client.inference.duration").(metricdata.Histogram[float64])
	require.Len(t, dur.DataPoints, 1, "the Wait, not the Submit")
	op, _ := dur.DataPoints[0].Attributes.Value("gen_ai.operation.name")
	assert.Equal(t, "fetch_response", op.AsString())
}

func TestAJobCancelledByItsContext(t *testing.T) {
	f := setup(t, []queuetest.Option{queuetest.QueueTime(time.Hour)})
	ctx, cancel := context.WithCancel(context.Background())
	_, err := f.c.Run(ctx, input(), wrapper.WithOnUpdate(func(wrapper.Status) { cancel() }))
	require.ErrorIs(t, err, context.Canceled)
	job, children := jobSpan(t, f, spanName)
	assert.Equal(t, "cancelled", attrs(job)["error.type"].AsString())
	var cancels int
	for _, s := range children {
		if attrs(s)["fluxi2i.operation"].AsString() == "cancel" {
			cancels++
		}
	}
	assert.Equal(t, 1, cancels, "the best-effort cancel is a child span")
	inFlight := metric(t, f, "fluxi2i.jobs.in_flight").(metricdata.Sum[int64])
	assert.Zero(t, inFlight.DataPoints[0].Value)
	dur := metric(t, f, "gen_ai.client.inference.duration").(metricdata.Histogram[float64])
	require.Len(t, dur.DataPoints, 1)
	et, _ := dur.DataPoints[0].Attributes.Value("error.type")
	assert.Equal(t, "cancelled", et.AsString())
}

// Without the opt-in, the deprecated gen_ai.system is set too.
func TestOlderBackEndsGetTheSystemName(t *testing.T) {
	f := setup(t, nil)
	t.Setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "")
	rec := tracetest.NewSpanRecorder()
	c, err := wrapper.New(wrapper.WithBaseURL(f.srv.URL), wrapper.WithBearerToken("t"), wrapper.WithEnvironment(nil),
		wrapper.WithHTTPClient(spectest.Client(t, f.srv)),
		fluxi2iotel.Option(fluxi2iotel.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))))
	require.NoError(t, err)
	_, err = c.Submit(context.Background(), input())
	require.NoError(t, err)
	var found bool
	for _, s := range rec.Ended() {
		if s.Name() == spanName {
			found = true
			assert.Equal(t, "fal", attrs(s)["gen_ai.system"].AsString())
			assert.Equal(t, "fal", attrs(s)["gen_ai.provider.name"].AsString())
		}
	}
	assert.True(t, found)
}
