package serve

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestWriteIsPrometheusText(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, Write(&b, []Metric{
		{Name: "x_total", Help: "Things.\nMore.", Samples: []Sample{{Value: 3}, {Labels: map[string]string{"reason": `a"b`, "code": "429"}, Value: 1.5}}},
		{Name: "y", Help: "A gauge.", Gauge: true, Samples: []Sample{{Value: 0}}},
	}))
	assert.Equal(t, `# HELP x_total Things.\nMore.
# TYPE x_total counter
x_total 3
x_total{code="429",reason="a\"b"} 1.5
# HELP y A gauge.
# TYPE y gauge
y 0
`, b.String())
}

// /healthz is 200 while serving and 503 once the stop begins; a long
// request is cut after the grace time and Serve returns nil.
func TestHealthAndAGracefulStop(t *testing.T) {
	streaming := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			close(streaming)
			<-r.Context().Done() // a status stream that outlives the grace time
			return
		}
		io.WriteString(w, "app")
	})
	s := New(&http.Server{Handler: app}, func() []Metric {
		return []Metric{{Name: "fluxi2i_requests_total", Help: "Requests.", Samples: []Sample{{Value: 7}}}}
	})
	s.Drain, s.Grace = 300*time.Millisecond, 300*time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	code, body := get(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)
	code, body = get(t, base+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "fluxi2i_requests_total 7\n")
	assert.Contains(t, body, "fluxi2i_up 1\n")
	_, body = get(t, base+"/x")
	assert.Equal(t, "app", body)

	resp, err := http.Get(base + "/stream")
	require.NoError(t, err)
	<-streaming
	start := time.Now()
	cancel()
	require.Eventually(t, func() bool { return !s.Ready() }, time.Second, time.Millisecond)
	code, body = get(t, base+"/healthz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "draining")
	assert.Equal(t, "shutting down\n", body)

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	took := time.Since(start)
	assert.GreaterOrEqual(t, took, 600*time.Millisecond, "drain, then grace")
	assert.Less(t, took, 3*time.Second)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Error(t, err, "the stream was cut, not ended cleanly")
	_, err = http.Get(base + "/healthz")
	assert.Error(t, err, "the listener is closed")
}
