package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

const serverKey = "sk-server-secret-0123456789"

// recorder keeps the requests that went upstream.
type recorder struct {
	mu     sync.Mutex
	reqs   []*http.Request
	bodies []string
	next   http.RoundTripper
	mangle func(*http.Response) // when set, changes each answer (a hostile upstream)
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Clone(context.Background()))
	r.bodies = append(r.bodies, string(body))
	mangle := r.mangle
	r.mu.Unlock()
	resp, err := r.next.RoundTrip(req)
	if err == nil && mangle != nil {
		mangle(resp)
	}
	return resp, err
}

type fixture struct {
	up    *queuetest.Server
	rec   *recorder
	proxy *httptest.Server
	h     *proxy.Handler
	logs  *syncBuffer
}

// syncBuffer is a log sink that handlers write to while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T, opts ...proxy.Option) *fixture {
	t.Helper()
	return startWith(t, upstream{}, opts...)
}

// upstream configures the fake queue behind the proxy.
type upstream struct {
	opts   []queuetest.Option   // after the defaults
	mangle func(*http.Response) // changes each answer on its way back
}

func startWith(t *testing.T, u upstream, opts ...proxy.Option) *fixture {
	t.Helper()
	up := spectest.NewServer(t, append([]queuetest.Option{queuetest.QueueTime(50 * time.Millisecond), queuetest.RunTime(100 * time.Millisecond), queuetest.WithAPIKey(serverKey), queuetest.LogLines(2)}, u.opts...)...)
	rec := &recorder{next: spectest.Client(t, up).Transport, mangle: u.mangle}
	c, err := wrapper.New(wrapper.WithBaseURL(up.URL), wrapper.WithBearerToken(serverKey), wrapper.WithHTTPClient(&http.Client{Transport: rec}), wrapper.WithEnvironment(nil))
	require.NoError(t, err)
	logs := &syncBuffer{}
	h, err := proxy.New(c, append([]proxy.Option{proxy.Logger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)...)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{up: up, rec: rec, proxy: srv, h: h, logs: logs}
}

const queue = "https://queue.fal.run/fal-ai/flux-1"

// send makes a browser-like request through the proxy.
func (f *fixture) send(t *testing.T, method, target, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.proxy.URL, r)
	require.NoError(t, err)
	if target != "" {
		req.Header.Set(proxy.TargetHeader, target)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	assert.NotContains(t, string(b), serverKey, "the credential never appears in an answer")
	for k, vs := range resp.Header {
		assert.NotContains(t, strings.Join(vs, " "), serverKey, k)
	}
	return resp, b
}

const input = `{"image_url":"https://example.com/cat.png","prompt":"a cat","num_images":1}`

func TestTheWholeFlowThroughTheProxy(t *testing.T) {
	f := start(t, proxy.AllowAnyone())
	resp, b := f.send(t, http.MethodPost, queue+"/dev/image-to-image", input,
		"Authorization", "Bearer browser-token", "Cookie", "session=abc", "X-Fal-Queue-Priority", "low")
	require.Equal(t, 200, resp.StatusCode, string(b))
	var q struct {
		RequestID string `json:"request_id"`
	}
	require.NoError(t, json.Unmarshal(b, &q))
	require.NotEmpty(t, q.RequestID)

	// The status stream, passed through as it arrives.
	req, _ := http.NewRequest(http.MethodGet, f.proxy.URL, nil)
	req.Header.Set(proxy.TargetHeader, queue+"/requests/"+q.RequestID+"/status/stream?logs=1")
	req.Header.Set("Accept", "text/event-stream")
	sresp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	assert.Equal(t, "text/event-stream", sresp.Header.Get("Content-Type"))
	var events []string
	sc := bufio.NewScanner(sresp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			events = append(events, line)
		}
	}
	sresp.Body.Close()
	require.NotEmpty(t, events)
	assert.Contains(t, events[len(events)-1], `"COMPLETED"`)
	assert.Greater(t, len(events), 1, "every change, not one buffered answer")

	resp, b = f.send(t, http.MethodGet, queue+"/requests/"+q.RequestID+"/status?logs=1", "")
	assert.Equal(t, 200, resp.StatusCode, string(b))
	resp, b = f.send(t, http.MethodGet, queue+"/requests/"+q.RequestID, "")
	assert.Equal(t, 200, resp.StatusCode, string(b))
	assert.Contains(t, string(b), `"images"`)
	resp, _ = f.send(t, http.MethodPut, queue+"/requests/"+q.RequestID+"/cancel", "")
	assert.Equal(t, 400, resp.StatusCode, "too late: fal's answer, passed through")

	// Upstream saw the server's key, the spec's x-fal headers, and none of
	// the browser's credentials.
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	require.Len(t, f.rec.reqs, 5)
	for _, r := range f.rec.reqs {
		assert.Equal(t, "Bearer "+serverKey, r.Header.Get("Authorization"))
		assert.Empty(t, r.Header.Get("Cookie"))
	}
	assert.Equal(t, "low", f.rec.reqs[0].Header.Get("X-Fal-Queue-Priority"))
	st := f.h.Stats()
	assert.EqualValues(t, 5, st.Forwarded)
	assert.Empty(t, st.Refused)
	assert.Contains(t, f.logs.String(), "operation=submit")
	assert.Contains(t, f.logs.String(), "request_id="+q.RequestID)
	assert.NotContains(t, f.logs.String(), serverKey)
}

func TestRefusals(t *testing.T) {
	f := start(t, proxy.AllowAnyone())
	for _, c := range []struct {
		method, target, body string
		code                 int
		hdr                  []string
	}{
		{"POST", "", input, 400, nil},
		{"POST", "http://queue.fal.run/fal-ai/flux-1/dev/image-to-image", input, 412, nil},
		{"POST", "https://evil.example.com/fal-ai/flux-1/dev/image-to-image", input, 412, nil},
		{"POST", "https://queue.fal.run.evil.com/fal-ai/flux-1/dev/image-to-image", input, 412, nil},
		{"POST", "https://queue.fal.run:8443/fal-ai/flux-1/dev/image-to-image", input, 412, nil},
		{"POST", "https://user@queue.fal.run/fal-ai/flux-1/dev/image-to-image", input, 412, nil},
		{"POST", "https://queue.fal.run/fal-ai/flux-pro/v1.1-ultra", input, 403, nil},
		{"POST", "https://queue.fal.run/fal-ai/flux-1/dev", input, 403, nil},
		{"POST", "https://fal.run/fal-ai/flux-1/dev/image-to-image", input, 403, nil},
		{"GET", "https://queue.fal.run/fal-ai/flux-pro/requests/r1/status", "", 403, nil},
		{"PUT", "https://queue.fal.run/fal-ai/flux-1/requests/r1/status", "", 403, nil},
		{"GET", "https://rest.alpha.fal.ai/storage/upload", "", 403, nil},
		{"GET", "https://queue.fal.run/fal-ai//flux-1/requests/r1/status", "", 403, nil},
		{"GET", "https://queue.fal.run/fal-ai/flux-1/requests/r1/../../../x/status", "", 403, nil},
		{"POST", queue + "/dev/image-to-image", `{"image_url":"https://example.com/a.png","prompt":"p","strength":2}`, 422, nil},
		{"POST", queue + "/dev/image-to-image", `{"prompt":`, 422, nil},
		{"POST", queue + "/dev/image-to-image", input, 400, []string{"X-Fal-Queue-Priority", "urgent"}},
		{"POST", queue + "/dev/image-to-image?fal_webhook=https%3A%2F%2Fevil.example%2Fhook", input, 400, nil},
		{"DELETE", queue + "/requests/r1", "", 405, nil},
	} {
		resp, b := f.send(t, c.method, c.target, c.body, c.hdr...)
		assert.Equal(t, c.code, resp.StatusCode, "%s %s: %s", c.method, c.target, b)
		assert.Contains(t, string(b), `"detail"`, "fal's error shape")
	}
	assert.Zero(t, f.up.Stats().Submits+f.up.Stats().StatusCalls, "nothing was forwarded")
	// Every refusal is logged, with its reason.
	assert.Equal(t, 19, strings.Count(f.logs.String(), "fluxi2i proxy: refused"), f.logs.String())
	assert.Equal(t, 19, strings.Count(f.logs.String(), " reason="))
	r := f.h.Stats().Refused
	assert.EqualValues(t, 6, r["target"])
	assert.EqualValues(t, 8, r["operation"])
	assert.EqualValues(t, 2, r["input"])
	assert.EqualValues(t, 2, r["parameter"])
}

func TestBodiesAreCapped(t *testing.T) {
	f := start(t, proxy.AllowAnyone(), proxy.MaxBodyBytes(1<<10))
	big := `{"prompt":"p","image_url":"data:image/png;base64,` + strings.Repeat("A", 4<<10) + `"}`
	resp, _ := f.send(t, http.MethodPost, queue+"/dev/image-to-image", big)
	assert.Equal(t, 413, resp.StatusCode)
	assert.Zero(t, f.up.Stats().Submits)
}

func TestAuthorization(t *testing.T) {
	c, err := wrapper.New(wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil))
	require.NoError(t, err)
	_, err = proxy.New(c)
	assert.ErrorContains(t, err, "AllowAnyone", "no check is an error, not a default")

	f := start(t, proxy.Authorize(func(r *http.Request) error {
		switch r.Header.Get("Authorization") {
		case "Bearer alice":
			return nil
		case "Bearer mallory":
			return fmt.Errorf("banned: %w", proxy.ErrForbidden)
		}
		return errors.New("sign in first")
	}))
	resp, _ := f.send(t, http.MethodPost, queue+"/dev/image-to-image", input)
	assert.Equal(t, 401, resp.StatusCode)
	resp, _ = f.send(t, http.MethodPost, queue+"/dev/image-to-image", input, "Authorization", "Bearer mallory")
	assert.Equal(t, 403, resp.StatusCode)
	assert.Zero(t, f.up.Stats().Submits)
	resp, b := f.send(t, http.MethodPost, queue+"/dev/image-to-image", input, "Authorization", "Bearer alice")
	assert.Equal(t, 200, resp.StatusCode, string(b))
	assert.EqualValues(t, 2, f.h.Stats().Refused["auth"])
}

func TestOneUserCannotReachAnothersJob(t *testing.T) {
	user := func(r *http.Request) string { return r.Header.Get("X-User") }
	f := start(t, proxy.AllowAnyone(), proxy.UserOf(user), proxy.JobsPerUser(1))
	resp, b := f.send(t, http.MethodPost, queue+"/dev/image-to-image", input, "X-User", "alice")
	require.Equal(t, 200, resp.StatusCode, string(b))
	var q struct {
		RequestID string `json:"request_id"`
	}
	require.NoError(t, json.Unmarshal(b, &q))
	for _, target := range []string{"/requests/" + q.RequestID + "/status", "/requests/" + q.RequestID} {
		resp, _ = f.send(t, http.MethodGet, queue+target, "", "X-User", "bob")
		assert.Equal(t, 403, resp.StatusCode, target)
	}
	resp, _ = f.send(t, http.MethodPut, queue+"/requests/"+q.RequestID+"/cancel", "", "X-User", "bob")
	assert.Equal(t, 403, resp.StatusCode)
	resp, _ = f.send(t, http.MethodGet, queue+"/requests/unknown-id/status", "", "X-User", "alice")
	assert.Equal(t, 403, resp.StatusCode, "a job the proxy did not submit")
	assert.Zero(t, f.up.Stats().StatusCalls+f.up.Stats().CancelCalls)

	resp, _ = f.send(t, http.MethodPost, queue+"/dev/image-to-image", input, "X-User", "alice")
	assert.Equal(t, 429, resp.StatusCode, "one job in flight per user")
	resp, _ = f.send(t, http.MethodPost, queue+"/dev/image-to-image", input, "X-User", "bob")
	assert.Equal(t, 200, resp.StatusCode, "per user")
	time.Sleep(300 * time.Millisecond)
	resp, _ = f.send(t, http.MethodGet, queue+"/requests/"+q.RequestID, "", "X-User", "alice")
	assert.Equal(t, 200, resp.StatusCode)
	resp, _ = f.send(t, http.MethodPost, queue+"/dev/image-to-image", input, "X-User", "alice")
	assert.Equal(t, 200, resp.StatusCode, "the fetched job is no longer in flight")
	assert.EqualValues(t, 4, f.h.Stats().Refused["owner"])
	assert.EqualValues(t, 1, f.h.Stats().Refused["limit"])
}

func TestCORSIsOffUnlessAsked(t *testing.T) {
	preflight := func(f *fixture, origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, f.proxy.URL, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	off := start(t, proxy.AllowAnyone())
	assert.Equal(t, 403, preflight(off, "https://app.example").StatusCode)
	on := start(t, proxy.AllowAnyone(), proxy.CORS("https://app.example"))
	resp := preflight(on, "https://app.example")
	assert.Equal(t, 204, resp.StatusCode)
	assert.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), proxy.TargetHeader)
	assert.Equal(t, 403, preflight(on, "https://evil.example").StatusCode)
	r, _ := on.send(t, http.MethodPost, queue+"/dev/image-to-image", input, "Origin", "https://app.example")
	assert.Equal(t, "https://app.example", r.Header.Get("Access-Control-Allow-Origin"))
}

// What goes upstream is the input as Submit sends it: the spec's fields,
// "default" left out, nothing else the browser added.
func TestTheSubmitBodyIsTheSpecsInput(t *testing.T) {
	f := start(t, proxy.AllowAnyone())
	resp, b := f.send(t, http.MethodPost, queue+"/dev/image-to-image",
		`{"image_url":"https://example.com/a.png","prompt":"p","output_format":"default","seed":9007199254740993,"extra":"x"}`)
	require.Equal(t, 200, resp.StatusCode, string(b))
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	body := f.rec.bodies[0]
	assert.NotContains(t, string(body), "output_format")
	assert.NotContains(t, string(body), "extra")
	assert.Contains(t, string(body), `"seed":9007199254740993`, "a 64-bit seed stays exact")
}
