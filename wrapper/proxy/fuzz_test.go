package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
)

// seenUpstream records what reached the upstream.
type seenUpstream struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seenUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	return cannedUpstream{}.RoundTrip(req)
}

// FuzzProxyTarget: whatever the browser sends, only this model's queue
// operations and fal storage's upload initiates reach the upstream, on the
// configured host, with the server's key and none of the browser's.
func FuzzProxyTarget(f *testing.F) {
	for _, s := range []string{
		"https://queue.fal.run/fal-ai/flux-1/dev/image-to-image",
		"https://queue.fal.run/fal-ai/flux-1/requests/r1/status?logs=1",
		"https://queue.fal.run/fal-ai/flux-1/requests/r1/status/stream",
		"https://queue.fal.run/fal-ai/flux-1/requests/r%2F1",
		"https://queue.fal.run/fal-ai/flux-pro/v1",
		"https://evil.com/fal-ai/flux-1/dev/image-to-image",
		"https://queue.fal.run/fal-ai/flux-1/requests/../../x",
		"https://queue.fal.run@evil.com/fal-ai/flux-1/requests/r1",
		"https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
		"https://rest.fal.ai/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
		"https://rest.fal.ai/storage/uploads/t1",
		"https://rest.fal.ai/fal-ai/flux-1/dev/image-to-image",
	} {
		f.Add("GET", s, "")
		f.Add("POST", s, `{"image_url":"https://e.com/a.png","prompt":"p"}`)
	}
	up := &seenUpstream{}
	c, err := wrapper.New(wrapper.WithBaseURL("https://gw.example/base"), wrapper.WithBearerToken("server-key"),
		wrapper.WithHTTPClient(&http.Client{Transport: up}), wrapper.WithEnvironment(nil))
	if err != nil {
		f.Fatal(err)
	}
	h, err := proxy.New(c, proxy.AllowAnyone())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, target, body string) {
		req := httptest.NewRequest(http.MethodGet, "/api/fal/proxy", strings.NewReader(body))
		req.Method = method
		req.Header.Set(proxy.TargetHeader, target)
		req.Header.Set("Authorization", "Bearer browser-key")
		req.Header.Set("Cookie", "session=1")
		w := httptest.NewRecorder()
		up.mu.Lock()
		up.reqs = nil
		up.mu.Unlock()
		h.ServeHTTP(w, req)
		if strings.Contains(w.Body.String(), "server-key") {
			t.Fatal("the server's key in an answer")
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		for _, r := range up.reqs {
			p := r.URL.EscapedPath()
			queueOp := strings.HasPrefix(p, "/base/fal-ai/flux-1/") &&
				(p == "/base/fal-ai/flux-1/dev/image-to-image" && r.Method == http.MethodPost ||
					strings.HasPrefix(p, "/base/fal-ai/flux-1/requests/") && (r.Method == http.MethodGet || r.Method == http.MethodPut))
			// fal storage's initiates, on the base URL's origin (its root).
			initiate := r.Method == http.MethodPost && (p == "/storage/upload/initiate" || p == "/storage/upload/initiate-multipart") &&
				r.URL.Query().Get("storage_type") == "fal-cdn-v3"
			ok := r.URL.Host == "gw.example" && (queueOp || initiate)
			if !ok {
				t.Fatalf("forwarded %s %s for target %q", r.Method, r.URL, target)
			}
			if r.Header.Get("Authorization") != "Bearer server-key" || r.Header.Get("Cookie") != "" {
				t.Fatalf("credentials: %q, cookie %q", r.Header.Get("Authorization"), r.Header.Get("Cookie"))
			}
			for _, seg := range strings.Split(p, "/") {
				if seg == ".." || seg == "." {
					t.Fatalf("a dot segment went upstream: %s", p)
				}
			}
		}
	})
}
