package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Both servers answer /healthz and /metrics (Prometheus text), and stop
// on SIGTERM (the context) with exit 0: /healthz turns 503 first, then the
// listener closes.
func TestServersHealthMetricsAndStop(t *testing.T) {
	for _, args := range [][]string{
		{"simulate", "--addr", "127.0.0.1:0", "--queue-time", "10ms", "--run-time", "20ms"},
		{"proxy", "--addr", "127.0.0.1:0"},
	} {
		t.Run(args[0], func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out, errb syncBuffer
			done := make(chan int, 1)
			go func() { done <- Main(ctx, args, nil, &out, &errb) }()
			base := waitFor(t, &errb)
			code, body := get(t, base+"/healthz")
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, "ok\n", body)
			code, body = get(t, base+"/metrics")
			assert.Equal(t, http.StatusOK, code)
			assert.Contains(t, body, "# TYPE fluxi2i_up gauge\nfluxi2i_up 1\n")
			if args[0] == "simulate" {
				assert.Contains(t, body, "# TYPE fluxi2i_simulator_jobs_total counter")
				assert.Contains(t, body, "fluxi2i_simulator_bytes_held ")
			} else {
				assert.Contains(t, body, "fluxi2i_proxy_forwarded_total 0\n")
			}

			cancel()
			require.Eventually(t, func() bool {
				resp, err := http.Get(base + "/healthz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusServiceUnavailable
			}, 2*time.Second, 5*time.Millisecond, "not ready while shutting down")
			select {
			case c := <-done:
				assert.Equal(t, 0, c, errb.String())
			case <-time.After(5 * time.Second):
				t.Fatal("did not stop")
			}
			_, err := http.Get(base + "/healthz")
			assert.Error(t, err, "stopped accepting")
		})
	}
}

// waitFor returns the http://127.0.0.1:PORT a serving command names.
func waitFor(t *testing.T, errb *syncBuffer) string {
	t.Helper()
	re := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)`)
	for range 250 {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			return "http://" + m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("did not start: %s", errb.String())
	return ""
}

// Behind fluxi2i proxy, the built-in simulator's images and uploads are
// on the proxy's own origin: a page that reaches the proxy reaches them.
func TestTheBuiltInSimulatorsFilesAreOnTheProxysOrigin(t *testing.T) {
	base, _ := startCommand(t, "proxy", "--addr", "127.0.0.1:0")
	send := func(method, target, body string) (int, []byte) {
		req, err := http.NewRequest(method, base+"/api/fal/proxy", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set(proxy.TargetHeader, target)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, b := send(http.MethodPost, "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3", `{"content_type":"image/png","file_name":"cat.png"}`)
	require.Equal(t, http.StatusOK, code, string(b))
	var up gen.UploadTarget
	require.NoError(t, json.Unmarshal(b, &up))
	assert.True(t, strings.HasPrefix(up.UploadURL, base+"/"), "upload on the proxy's origin: %s", up.UploadURL)
	assert.True(t, strings.HasPrefix(up.FileURL, base+"/"), up.FileURL)
	img, err := os.ReadFile(sample)
	require.NoError(t, err)
	put, err := http.NewRequest(http.MethodPut, up.UploadURL, bytes.NewReader(img))
	require.NoError(t, err)
	put.Header.Set("Content-Type", "image/png")
	presp, err := http.DefaultClient.Do(put)
	require.NoError(t, err)
	presp.Body.Close()
	require.Equal(t, http.StatusOK, presp.StatusCode)

	in, _ := json.Marshal(map[string]any{"image_url": up.FileURL, "prompt": "p", "sync_mode": false})
	code, b = send(http.MethodPost, "https://queue.fal.run/fal-ai/flux-1/dev/image-to-image", string(in))
	require.Equal(t, http.StatusOK, code, string(b))
	var q gen.Enqueued
	require.NoError(t, json.Unmarshal(b, &q))
	var out gen.Output
	require.Eventually(t, func() bool {
		code, b = send(http.MethodGet, "https://queue.fal.run/fal-ai/flux-1/requests/"+q.RequestID, "")
		return code == http.StatusOK && json.Unmarshal(b, &out) == nil
	}, 10*time.Second, 50*time.Millisecond)
	require.NotEmpty(t, out.Images)
	assert.True(t, strings.HasPrefix(out.Images[0].URL, base+"/files/"), "the image on the proxy's origin: %s", out.Images[0].URL)
	code, _ = get(t, out.Images[0].URL)
	assert.Equal(t, http.StatusOK, code)
}
