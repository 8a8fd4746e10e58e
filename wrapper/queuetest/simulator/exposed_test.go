package simulator

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// By default an http(s) image_url opens no connection: the common test
// input works offline, deterministically.
func TestURLsAreRenderedOfflineByDefault(t *testing.T) {
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer target.Close()
	model := NewModel(Config{})
	for _, u := range []string{"https://example.com/input.jpg", target.URL + "/secret.png"} {
		a, err := model(context.Background(), "r", gen.Input{ImageURL: u, Prompt: "p"})
		require.NoError(t, err, u)
		b, err := model(context.Background(), "r", gen.Input{ImageURL: u, Prompt: "p"})
		require.NoError(t, err)
		assert.Equal(t, a[0].Data, b[0].Data, "deterministic")
		assert.Equal(t, 512, a[0].Width)
	}
	assert.Zero(t, hits.Load(), "no connection was opened")
	other, err := model(context.Background(), "r", gen.Input{ImageURL: "https://example.com/other.jpg", Prompt: "p"})
	require.NoError(t, err)
	first, _ := model(context.Background(), "r", gen.Input{ImageURL: "https://example.com/input.jpg", Prompt: "p"})
	assert.NotEqual(t, first[0].Data, other[0].Data, "the URL shapes the picture")
}

// With fetching on, loopback, private and other non-public addresses are
// refused after resolution, and the error tells nothing of what is there.
func TestFetchingRefusesNonPublicAddresses(t *testing.T) {
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); w.Write(pngOf(t, 4, 4)) }))
	defer target.Close()
	model := NewModel(Config{FetchImages: true})
	port := target.URL[strings.LastIndex(target.URL, ":"):]
	for _, u := range []string{target.URL + "/a.png", "http://localhost" + port + "/a.png", "http://[::1]" + port + "/a.png", "http://0.0.0.0" + port + "/a.png", "http://0.0.0.1" + port + "/a.png", "http://[::127.0.0.1]" + port + "/a.png"} {
		_, err := model(context.Background(), "r", gen.Input{ImageURL: u, Prompt: "p"})
		var me *queuetest.ModelError
		require.True(t, errors.As(err, &me), "%s: %v", u, err)
		assert.Equal(t, "image_url", me.Field)
		assert.NotContains(t, me.Detail, "refused", "no read-back of what listens where")
		assert.NotContains(t, me.Detail, port)
	}
	assert.Zero(t, hits.Load())

}

func pngOf(t *testing.T, w, h int) []byte {
	var b bytes.Buffer
	require.NoError(t, png.Encode(&b, image.NewRGBA(image.Rect(0, 0, w, h))))
	return b.Bytes()
}

// A small file that decodes to a huge image is refused before it is
// decoded.
func TestHugeImagesAreRefusedBeforeDecoding(t *testing.T) {
	var b bytes.Buffer
	img := image.NewGray(image.Rect(0, 0, 8000, 5000))
	require.NoError(t, png.Encode(&b, img))
	assert.Less(t, b.Len(), 1<<20, "a small file")
	in := gen.Input{ImageURL: "data:image/png;base64," + base64.StdEncoding.EncodeToString(b.Bytes()), Prompt: "p", NumImages: ptr(4)}
	_, err := NewModel(Config{})(context.Background(), "r", in)
	var me *queuetest.ModelError
	require.True(t, errors.As(err, &me))
	assert.Contains(t, me.Detail, "too large")
}

func ptr[T any](v T) *T { return &v }

// A cancelled job's rendering stops.
func TestRenderingStopsWhenTheJobEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Transform(ctx, image.NewRGBA(image.Rect(0, 0, 100, 100)), "p", 1, 1)
	assert.ErrorIs(t, err, context.Canceled)
	_, err = NewModel(Config{})(ctx, "r", gen.Input{ImageURL: "https://example.com/a.png", Prompt: "p"})
	assert.Error(t, err)
}

// Exposed as `fluxi2i simulate` serves it: the key is checked before a
// body is read, bodies are capped with fal's error shape, finished jobs
// are forgotten after the retention time, and the number held is capped.
func TestTheServiceIsSafeToExpose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.NewPipeServer(append(Options(Config{}), queuetest.WithAPIKey("k"), queuetest.MaxJobs(3), queuetest.MaxJobsPerClient(3))...)
		defer srv.Close()
		hc := srv.Client()
		post := func(auth string, body *countingReader) *http.Response {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/fal-ai/flux-1/dev/image-to-image", body)
			req.Header.Set("Content-Type", "application/json")
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := hc.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp
		}
		big := &countingReader{r: strings.NewReader(`{"prompt":"p","image_url":"` + strings.Repeat("A", MaxBodyBytes+1) + `"}`)}
		assert.Equal(t, 401, post("", big).StatusCode)
		assert.Less(t, big.n.Load(), int64(1<<20), "an unauthenticated body is not read")
		big = &countingReader{r: strings.NewReader(`{"prompt":"p","image_url":"` + strings.Repeat("A", MaxBodyBytes+1) + `"}`)}
		resp := post("Key k", big)
		assert.Equal(t, 413, resp.StatusCode)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))

		ok := func() *countingReader {
			return &countingReader{r: strings.NewReader(`{"prompt":"p","image_url":"https://example.com/input.jpg"}`)}
		}
		for range 3 {
			assert.Equal(t, 200, post("Key k", ok()).StatusCode)
		}
		assert.Equal(t, 429, post("Key k", ok()).StatusCode, "at most MaxJobs held")
		time.Sleep(Retention + 5*time.Second)
		assert.Equal(t, 200, post("Key k", ok()).StatusCode, "finished jobs were forgotten")
	})
}

type countingReader struct {
	r *strings.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A job whose image and outputs could never fit the budget (4096 x 4096,
// four PNGs inline: the 241 MB sync result) fails at once with a
// 422 that says why, instead of taking the machine's memory.
func TestAJobLargerThanTheBudgetFailsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.NewPipeServer(append(Options(Config{}), queuetest.QueueTime(0), queuetest.RunTime(0))...)
		defer srv.Close()
		var b bytes.Buffer
		require.NoError(t, png.Encode(&b, image.NewGray(image.Rect(0, 0, 4096, 4096))))
		body := `{"prompt":"p","num_images":4,"output_format":"png","sync_mode":true,"image_url":"data:image/png;base64,` + base64.StdEncoding.EncodeToString(b.Bytes()) + `"}`
		do := func(method, path, body string) (*http.Response, string) {
			var r io.Reader
			if body != "" {
				r = strings.NewReader(body)
			}
			req, _ := http.NewRequest(method, srv.URL+path, r)
			req.Header.Set("Authorization", "Key k")
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, string(out)
		}
		resp, out := do(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", body)
		require.Equal(t, 200, resp.StatusCode, out)
		var q gen.Enqueued
		require.NoError(t, json.Unmarshal([]byte(out), &q))
		time.Sleep(time.Second)
		resp, out = do(http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "")
		assert.Equal(t, 422, resp.StatusCode)
		assert.Contains(t, out, "budget")
		assert.Contains(t, out, "--max-memory")
		assert.LessOrEqual(t, srv.Stats().PeakBytesHeld, int64(DefaultMaxBytes))
	})
}
