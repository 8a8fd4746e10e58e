package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// withHost sends a request through the proxy with the given Host header.
func (f *fixture) withHost(t *testing.T, host string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.proxy.URL, strings.NewReader(input))
	require.NoError(t, err)
	req.Host = host
	req.Header.Set(proxy.TargetHeader, submitTarget)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// DNS rebinding: a page whose name is rebound to 127.0.0.1 reaches a
// loopback proxy with its own name as Host. LoopbackOnly refuses it,
// before anything is forwarded.
func TestLoopbackOnlyRefusesARebindingHost(t *testing.T) {
	f := start(t, proxy.AllowAnyone(), proxy.LoopbackOnly())
	for _, host := range []string{"evil.example:8787", "evil.example", "127.0.0.1.evil.example:8787", "10.0.0.1:8787", "localhost.evil.example"} {
		assert.Equal(t, 403, f.withHost(t, host).StatusCode, host)
	}
	assert.Zero(t, f.up.Stats().Submits, "nothing was forwarded")
	assert.EqualValues(t, 5, f.h.Stats().Refused["host"])
	assert.Contains(t, f.logs.String(), "evil.example:8787")
	for _, host := range []string{"localhost:8787", "LOCALHOST", "127.0.0.1:1", "127.5.6.7", "[::1]:8787"} {
		assert.Equal(t, 200, f.withHost(t, host).StatusCode, host)
	}
	// Without the option, the Host is the app's business.
	g := start(t, proxy.AllowAnyone())
	assert.Equal(t, 200, g.withHost(t, "app.example").StatusCode)
}

// With CORS, a foreign Origin is refused on every request, a simple POST
// too, and the refusal names the origin and how to allow it.
func TestCORSRefusesAForeignOriginOnAnyRequest(t *testing.T) {
	f := start(t, proxy.AllowAnyone(), proxy.CORS("https://app.example"))
	resp, b := f.send(t, http.MethodPost, submitTarget, input, "Origin", "https://evil.example")
	assert.Equal(t, 403, resp.StatusCode, string(b))
	assert.Contains(t, string(b), `"detail"`)
	assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Zero(t, f.up.Stats().Submits)
	assert.Contains(t, f.logs.String(), "https://evil.example")
	assert.Contains(t, f.logs.String(), "--cors https://evil.example")
	assert.Contains(t, f.logs.String(), "CORS option")
	assert.EqualValues(t, 1, f.h.Stats().Refused["origin"])

	resp, b = f.send(t, http.MethodPost, submitTarget, input, "Origin", "https://app.example")
	assert.Equal(t, 200, resp.StatusCode, string(b))
	resp, b = f.send(t, http.MethodPost, submitTarget, input, "Origin", f.proxy.URL)
	assert.Equal(t, 200, resp.StatusCode, "the handler's own page: %s", b)
	resp, _ = f.send(t, http.MethodPost, submitTarget, input)
	assert.Equal(t, 200, resp.StatusCode, "no Origin: not a browser's cross-origin call")
}

// The proxy's headers are the proxy's: an upstream's CORS and Vary headers
// never reach the browser, and the ones a cross-origin page needs are
// there.
func TestTheUpstreamsHeadersNeverOverwriteTheProxys(t *testing.T) {
	f := startWith(t, upstream{mangle: func(resp *http.Response) {
		resp.Header.Set("Access-Control-Allow-Origin", "*")
		resp.Header.Set("Access-Control-Allow-Credentials", "true")
		resp.Header.Set("Access-Control-Expose-Headers", "Authorization")
		resp.Header.Set("Vary", "Accept-Encoding")
		resp.Header.Set("X-Content-Type-Options", "sniff")
		resp.Header.Set("X-Fal-Billable-Units", "1")
	}}, proxy.AllowAnyone(), proxy.CORS("https://app.example"))
	resp, b := f.send(t, http.MethodPost, submitTarget, input, "Origin", "https://app.example")
	require.Equal(t, 200, resp.StatusCode, string(b))
	assert.Equal(t, []string{"https://app.example"}, resp.Header.Values("Access-Control-Allow-Origin"))
	assert.Empty(t, resp.Header.Values("Access-Control-Allow-Credentials"))
	assert.Equal(t, []string{"Origin"}, resp.Header.Values("Vary"))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	exposed := strings.ToLower(resp.Header.Get("Access-Control-Expose-Headers"))
	for _, h := range []string{"x-fal-request-id", "x-fal-request-timeout-type", "x-fal-billable-units"} {
		assert.Contains(t, exposed, h)
	}
	assert.NotContains(t, exposed, "authorization")
	assert.NotEmpty(t, resp.Header.Get("X-Fal-Request-Id"), "the request id fal's client reads")
	assert.Equal(t, "1", resp.Header.Get("X-Fal-Billable-Units"))

	// A refusal carries them too.
	resp, _ = f.send(t, http.MethodPost, queue+"/v2/other", input, "Origin", "https://app.example")
	assert.Equal(t, 403, resp.StatusCode)
	assert.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, resp.Header.Get("Access-Control-Expose-Headers"), "X-Fal-Request-Id")
}

// publicJob is fal's own form of a job's URLs.
func publicJob(id string) map[string]string {
	base := "https://queue.fal.run/fal-ai/flux-1/requests/" + id
	return map[string]string{"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}
}

func assertPublicURLs(t *testing.T, body []byte, id string) {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m), string(body))
	for k, want := range publicJob(id) {
		if v, ok := m[k]; ok {
			assert.Equal(t, want, v, "%s in %s", k, body)
		}
	}
}

// Job URLs in submit and status answers, and in stream events, name fal's
// public queue, never the upstream.
func TestJobURLsAreFalsPublicOnes(t *testing.T) {
	// An upstream that hides the keys behind escapes gets no further.
	escape := func(resp *http.Response) {
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			b = bytes.ReplaceAll(b, []byte(`_url"`), []byte(`\u005furl"`))
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
	}
	for _, u := range []upstream{{}, {opts: []queuetest.Option{queuetest.ForeignURLs()}}, {mangle: escape}} {
		f := startWith(t, u, proxy.AllowAnyone())
		host := strings.TrimPrefix(f.up.URL, "http://")
		resp, b := f.send(t, http.MethodPost, submitTarget, input)
		require.Equal(t, 200, resp.StatusCode, string(b))
		id := requestID(t, string(b))
		assert.Contains(t, string(b), `"status_url"`, "rewritten, not dropped")
		assertPublicURLs(t, b, id)
		assert.NotContains(t, string(b), host)

		req, _ := http.NewRequest(http.MethodGet, f.proxy.URL, nil)
		req.Header.Set(proxy.TargetHeader, queue+"/requests/"+id+"/status/stream?logs=1")
		sresp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		stream, err := io.ReadAll(sresp.Body)
		sresp.Body.Close()
		require.NoError(t, err)
		assert.NotContains(t, string(stream), host)
		var events int
		sc := bufio.NewScanner(bytes.NewReader(stream))
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events++
				assertPublicURLs(t, []byte(d), id)
			}
		}
		assert.Greater(t, events, 1)
		assert.Contains(t, string(stream), `"COMPLETED"`)

		resp, b = f.send(t, http.MethodGet, queue+"/requests/"+id+"/status", "")
		require.Equal(t, 200, resp.StatusCode, string(b))
		assertPublicURLs(t, b, id)
		assert.NotContains(t, string(b), host)
	}
}

// An upstream that echoes the request's Authorization (in a header, in
// the body, in a stream event, deep in a long result) never passes the
// server's key on: 502 in fal's shape, or the answer cut off, and logged
// without the key.
func TestAnAnswerCarryingTheKeyIsNeverPassedOn(t *testing.T) {
	echo := func(where string) func(*http.Response) {
		return func(resp *http.Response) {
			auth := resp.Request.Header.Get("Authorization")
			switch where {
			case "header":
				resp.Header.Set("X-Echo", auth)
			case "body", "stream", "long":
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch where {
				case "body":
					b = append(bytes.TrimSuffix(b, []byte("}")), []byte(`,"echo":"`+auth+`"}`)...)
				case "stream":
					b = append(b, []byte("data: {\"status\":\"IN_PROGRESS\",\"echo\":\""+auth+"\"}\n\n")...)
				case "long":
					pad := strings.Repeat("x", 3<<20)
					b = []byte(`{"pad":"` + pad + auth + `"}`)
				}
				resp.Body = io.NopCloser(bytes.NewReader(b))
				resp.ContentLength = int64(len(b))
				resp.Header.Del("Content-Length")
			}
		}
	}
	for _, where := range []string{"header", "body"} {
		f := startWith(t, upstream{mangle: echo(where)}, proxy.AllowAnyone())
		resp, b := f.send(t, http.MethodPost, submitTarget, input) // send asserts the key is absent
		assert.Equal(t, 502, resp.StatusCode, "%s: %s", where, b)
		assert.Contains(t, string(b), `"detail"`)
		assert.Contains(t, f.logs.String(), "credential", where)
		assert.NotContains(t, f.logs.String(), serverKey)
		assert.EqualValues(t, 1, f.h.Stats().Refused["upstream"])
	}

	// Answers already under way are cut off before the key.
	for _, where := range []string{"stream", "long"} {
		f := start(t, proxy.AllowAnyone())
		resp, b := f.send(t, http.MethodPost, submitTarget, input)
		require.Equal(t, 200, resp.StatusCode, string(b))
		id := requestID(t, string(b))
		time.Sleep(200 * time.Millisecond) // completed
		f.rec.mu.Lock()
		f.rec.mangle = echo(where)
		f.rec.mu.Unlock()
		target := queue + "/requests/" + id
		if where == "stream" {
			target += "/status/stream"
		}
		req, _ := http.NewRequest(http.MethodGet, f.proxy.URL, nil)
		req.Header.Set(proxy.TargetHeader, target)
		sresp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		got, _ := io.ReadAll(sresp.Body) // cut: an error, or fewer bytes
		sresp.Body.Close()
		assert.NotContains(t, string(got), serverKey, where)
		assert.Contains(t, f.logs.String(), "credential", where)
		assert.NotContains(t, f.logs.String(), serverKey)
	}
}

// Every refusal is logged with its reason, a 422 too.
func TestEveryRefusalIsLogged(t *testing.T) {
	f := start(t, proxy.AllowAnyone())
	resp, _ := f.send(t, http.MethodPost, submitTarget, `{"image_url":"https://example.com/a.png","prompt":"p","strength":2}`)
	require.Equal(t, 422, resp.StatusCode)
	assert.Contains(t, f.logs.String(), "status=422")
	assert.Contains(t, f.logs.String(), "reason=input")
	assert.Contains(t, f.logs.String(), "strength")
}

// A submit or status answer past 1 MiB (a status padded with logs) still
// has its job URLs rewritten, up to the bound held for them (8 MiB);
// past that it is refused with 502 in fal's error shape, and logged.
func TestBigJobAnswersAreRewrittenOrRefused(t *testing.T) {
	var pad atomic.Int64
	f := startWith(t, upstream{mangle: func(resp *http.Response) {
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.StatusCode/100 != 2 {
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m map[string]any
		if json.Unmarshal(b, &m) == nil && m["status_url"] != nil {
			line := strings.Repeat("x", 1000)
			var logs []map[string]any
			for range int(pad.Load() / 1000) {
				logs = append(logs, map[string]any{"message": line, "level": "INFO", "source": "user", "timestamp": "2026-01-01T00:00:00Z"})
			}
			m["logs"] = logs
			b, _ = json.Marshal(m)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Del("Content-Length")
	}}, proxy.AllowAnyone())
	host := strings.TrimPrefix(f.up.URL, "http://")
	pad.Store(2 << 20)
	resp, b := f.send(t, http.MethodPost, submitTarget, input)
	require.Equal(t, 200, resp.StatusCode, "%.200s", b)
	require.Greater(t, len(b), 2<<20)
	id := requestID(t, string(b))
	assert.NotContains(t, string(b), host)
	assertPublicURLs(t, b, id)

	resp, b = f.send(t, http.MethodGet, queue+"/requests/"+id+"/status?logs=1", "")
	assert.Contains(t, []int{200, 202}, resp.StatusCode, "%.200s", b)
	assert.Greater(t, len(b), 2<<20)
	assert.Contains(t, string(b), `"status_url"`)
	assert.NotContains(t, string(b), host, "a status answer past 1 MiB names fal's queue, not the upstream")
	assertPublicURLs(t, b, id)

	pad.Store(9 << 20)
	resp, b = f.send(t, http.MethodGet, queue+"/requests/"+id+"/status?logs=1", "")
	assert.Equal(t, 502, resp.StatusCode, "%.200s", b)
	assert.Contains(t, string(b), `"detail"`)
	assert.NotContains(t, string(b), host)
	assert.Contains(t, f.logs.String(), "too long")
}
