package fluxi2iotel_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	fluxi2iotel "github.com/fluxi2i/fluxi2i/otel"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// A status stream that breaks after its headers is a failed attempt.
func TestABrokenStreamSpanIsAnError(t *testing.T) {
	f := setup(t, nil, wrapper.WithStatusMode(wrapper.StatusAuto))
	f.srv.Inject(queuetest.OpStream, queuetest.BreakStream())
	_, err := f.c.Run(context.Background(), input())
	require.NoError(t, err)
	_, children := jobSpan(t, f, spanName)
	streams := 0
	for _, s := range children {
		if attrs(s)["fluxi2i.operation"].AsString() == "stream" {
			streams++
			assert.Equal(t, codes.Error, s.Status().Code, "the stream broke: polling took over")
		}
	}
	assert.Equal(t, 1, streams)
}

// A Submit alone is not a whole job: no inference duration; Run's uses
// the advised buckets.
func TestInferenceDurationIsAWholeJobs(t *testing.T) {
	f := setup(t, nil)
	_, err := f.c.Submit(context.Background(), input())
	require.NoError(t, err)
	var rm metricdata.ResourceMetrics
	require.NoError(t, f.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			assert.NotEqual(t, "gen_ai.client.inference.duration", m.Name, "no point for a Submit")
		}
	}
	_, err = f.c.Run(context.Background(), input())
	require.NoError(t, err)
	h := metric(t, f, "gen_ai.client.inference.duration").(metricdata.Histogram[float64])
	require.Len(t, h.DataPoints, 1)
	assert.Equal(t, 0.01, h.DataPoints[0].Bounds[0], "GenAI's advised buckets")
	hh := metric(t, f, "http.client.request.duration").(metricdata.Histogram[float64])
	assert.Equal(t, 0.005, hh.DataPoints[0].Bounds[0], "HTTP's advised buckets")
	addr, ok := h.DataPoints[0].Attributes.Value("server.address")
	assert.True(t, ok)
	assert.Equal(t, "127.0.0.1", addr.AsString())
}

// error.type on metrics is one of fal's error types or a status code,
// whatever a server sends.
func TestErrorTypeIsLowCardinality(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.Header().Set("X-Fal-Error-Type", fmt.Sprintf("err-%d-%s", n.Add(1), strings.Repeat("x", 10)))
			w.WriteHeader(400)
			fmt.Fprint(w, `{"detail":"bad"}`)
		}
	}))
	defer srv.Close()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithEnvironment(nil), fluxi2iotel.Option(fluxi2iotel.WithMeterProvider(mp)))
	require.NoError(t, err)
	for range 20 {
		_, err := c.Run(context.Background(), input())
		require.Error(t, err)
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "gen_ai.client.inference.duration" {
				found = true
				pts := m.Data.(metricdata.Histogram[float64]).DataPoints
				require.Len(t, pts, 1)
				et, _ := pts[0].Attributes.Value("error.type")
				assert.Equal(t, "400", et.AsString())
			}
		}
	}
	assert.True(t, found)
}

// A download after the job's call is a child of that job's span, and
// carries no traceparent to the image's host.
func TestDownloadsAreTheJobsChildren(t *testing.T) {
	f := setup(t, nil)
	res, err := f.c.Run(context.Background(), input())
	require.NoError(t, err)
	before := len(f.headers.seen)
	_, err = f.c.SaveImages(context.Background(), &res.Output, t.TempDir(), res.RequestID)
	require.NoError(t, err)
	job, children := jobSpan(t, f, spanName)
	downloads := 0
	for _, s := range children {
		if attrs(s)["fluxi2i.operation"].AsString() == "download" {
			downloads++
			assert.Equal(t, job.SpanContext().TraceID(), s.SpanContext().TraceID())
		}
	}
	assert.Equal(t, 1, downloads, "the download is the job's child")
	f.headers.mu.Lock()
	defer f.headers.mu.Unlock()
	require.Greater(t, len(f.headers.seen), before)
	for _, tp := range f.headers.seen[before:] {
		assert.Empty(t, tp, "no trace context to an image's host")
	}
}

// A lost submit's history lookup is a child span and an event of the job.
func TestTheHistoryLookupIsTraced(t *testing.T) {
	f := setup(t, nil)
	f.srv.Inject(queuetest.OpSubmit, queuetest.DropAfter())
	_, err := f.c.Run(context.Background(), input())
	require.NoError(t, err)
	job, children := jobSpan(t, f, spanName)
	history := 0
	for _, s := range children {
		if attrs(s)["fluxi2i.operation"].AsString() == "history" {
			history++
		}
	}
	assert.Positive(t, history)
	ev := events(job, "fluxi2i.history")
	require.Len(t, ev, 1)
	found := false
	for _, kv := range ev[0].Attributes {
		if kv.Key == "fluxi2i.history.found" {
			found = kv.Value.AsBool()
		}
	}
	assert.True(t, found)
}

// Status events carry the queue position while queued.
func TestStatusEventsCarryTheQueuePosition(t *testing.T) {
	f := setup(t, []queuetest.Option{queuetest.QueueTime(150 * time.Millisecond)})
	_, err := f.c.Run(context.Background(), input())
	require.NoError(t, err)
	job, _ := jobSpan(t, f, spanName)
	positions := 0
	for _, e := range events(job, "fluxi2i.status") {
		for _, kv := range e.Attributes {
			if kv.Key == "fluxi2i.queue_position" {
				positions++
			}
		}
	}
	assert.GreaterOrEqual(t, positions, 2, "each queue position change is an event")
}
