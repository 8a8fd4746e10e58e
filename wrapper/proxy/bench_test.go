package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
)

// cannedUpstream answers like the queue, from memory.
type cannedUpstream struct{}

func (cannedUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	body, code := `{"status":"IN_PROGRESS","request_id":"r-1"}`, http.StatusAccepted
	if req.Method == http.MethodPost {
		body, code = `{"status":"IN_QUEUE","request_id":"r-1","queue_position":0}`, http.StatusOK
	}
	return &http.Response{StatusCode: code, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
}

// BenchmarkProxy is the proxy's cost per forwarded request (a submit,
// validated against the spec, then a status call) beside
// httputil.ReverseProxy forwarding the same requests to the same upstream
// in the same run, with no checks at all.
func BenchmarkProxy(b *testing.B) {
	const base = "http://queue.test"
	hc := &http.Client{Transport: cannedUpstream{}}
	submit := []byte(`{"image_url":"https://example.com/cat.png","prompt":"a cat dressed as a wizard","strength":0.9,"num_images":1}`)
	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		for b.Loop() {
			for _, c := range []struct{ method, target string }{
				{http.MethodPost, "https://queue.fal.run/fal-ai/flux-1/dev/image-to-image"},
				{http.MethodGet, "https://queue.fal.run/fal-ai/flux-1/requests/r-1/status"},
			} {
				var body io.Reader
				if c.method == http.MethodPost {
					body = bytes.NewReader(submit)
				}
				req := httptest.NewRequest(c.method, "/api/fal/proxy", body)
				req.Header.Set(proxy.TargetHeader, c.target)
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code >= 300 {
					b.Fatalf("%s: %d %s", c.target, w.Code, w.Body)
				}
			}
		}
	}
	b.Run("httputil-ReverseProxy", func(b *testing.B) {
		u, _ := url.Parse(base)
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				t, _ := url.Parse(pr.In.Header.Get(proxy.TargetHeader))
				pr.SetURL(u)
				pr.Out.URL.Path, pr.Out.URL.RawQuery = t.Path, t.RawQuery
				pr.Out.Header.Set("Authorization", "Key k")
			},
			Transport: cannedUpstream{},
		}
		run(b, rp)
	})
	b.Run("fluxi2i-proxy", func(b *testing.B) {
		c, err := wrapper.New(wrapper.WithBaseURL(base), wrapper.WithFalKey("k"), wrapper.WithHTTPClient(hc), wrapper.WithEnvironment(nil))
		if err != nil {
			b.Fatal(err)
		}
		h, err := proxy.New(c, proxy.AllowAnyone())
		if err != nil {
			b.Fatal(err)
		}
		run(b, h)
	})
}
