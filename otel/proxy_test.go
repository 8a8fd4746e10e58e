package fluxi2iotel_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	fluxi2iotel "github.com/fluxi2i/fluxi2i/otel"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// The proxy's forwarded requests are CLIENT spans continuing the
// browser's trace, and its refusals are counted.
func TestAnInstrumentedProxy(t *testing.T) {
	srv := spectest.NewServer(t, queuetest.QueueTime(10*time.Millisecond), queuetest.RunTime(10*time.Millisecond))
	hl := &headerLog{next: spectest.Client(t, srv).Transport}
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil), wrapper.WithHTTPClient(&http.Client{Transport: hl}))
	require.NoError(t, err)
	rec := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	h, err := proxy.New(c, proxy.AllowAnyone(), fluxi2iotel.ProxyOption(
		fluxi2iotel.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))),
		fluxi2iotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))))
	require.NoError(t, err)
	const browser = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	send := func(target string) int {
		req := httptest.NewRequest(http.MethodPost, "/api/fal/proxy", strings.NewReader(`{"image_url":"https://example.com/a.png","prompt":"p"}`))
		req.Header.Set(proxy.TargetHeader, target)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Traceparent", browser)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	require.Equal(t, http.StatusOK, send("https://queue.fal.run/fal-ai/flux-1/dev/image-to-image"))
	require.Equal(t, http.StatusForbidden, send("https://queue.fal.run/fal-ai/other"))

	spans := rec.Ended()
	require.Len(t, spans, 1)
	s := spans[0]
	assert.Equal(t, "POST", s.Name())
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", s.SpanContext().TraceID().String(), "the browser's trace continues")
	assert.Equal(t, "00f067aa0ba902b7", s.Parent().SpanID().String())
	assert.Equal(t, "submit", attrs(s)["fluxi2i.operation"].AsString())
	assert.NotEmpty(t, attrs(s)["gen_ai.response.id"].AsString())
	hl.mu.Lock()
	assert.Contains(t, hl.seen[0], s.SpanContext().SpanID().String(), "the upstream gets the proxy span's context")
	hl.mu.Unlock()

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					got[m.Name] += dp.Value
				}
			}
		}
	}
	assert.EqualValues(t, 1, got["fluxi2i.proxy.forwarded"])
	assert.EqualValues(t, 1, got["fluxi2i.proxy.refused"])
}
