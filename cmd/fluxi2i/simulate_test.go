package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// The exposed simulator drops connections that dribble their headers or
// sit idle, instead of holding them forever.
func TestSimulatorServerDropsSlowConnections(t *testing.T) {
	srv := newServer(http.NotFoundHandler())
	assert.Equal(t, 10*time.Second, srv.ReadHeaderTimeout)
	assert.Equal(t, 2*time.Minute, srv.ReadTimeout)
	assert.Equal(t, 60*time.Second, srv.IdleTimeout)
	assert.Equal(t, 64<<10, srv.MaxHeaderBytes)

	srv.ReadHeaderTimeout = 200 * time.Millisecond // the same server, in test time
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	require.NoError(t, err)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	require.NoError(t, err, "the server closed the connection")
	assert.Less(t, time.Since(start), 3*time.Second)
}

// `fluxi2i proxy` lets anyone in only on a loopback address, unless told.
func TestProxyRefusesAnOpenAddressUnlessTold(t *testing.T) {
	r := cli(t, context.Background(), nil, "proxy", "--addr", "0.0.0.0:0", "--api-key", "k")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--allow-anyone")
	r = cli(t, context.Background(), nil, "proxy", "--addr", "127.0.0.1:0", "--cors", "not an origin")
	assert.Equal(t, 2, r.code, r.stderr)
}

// `fluxi2i proxy` with no key fronts the built-in simulator and says so.
func TestProxyCommandServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int)
	go func() { done <- Main(ctx, []string{"proxy", "--addr", "127.0.0.1:0"}, nil, &out, &errb) }()
	re := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/api/fal/proxy`)
	var addr string
	for range 100 {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			addr = m[1]
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NotEmpty(t, addr, errb.String())
	assert.Contains(t, errb.String(), "NOT the real model")
	assert.Contains(t, errb.String(), "anyone who can reach this loopback address")
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/fal/proxy", strings.NewReader(`{"image_url":"https://example.com/input.jpg","prompt":"p"}`))
	req.Header.Set("X-Fal-Target-Url", "https://queue.fal.run/fal-ai/flux-1/dev/image-to-image")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode, string(b))
	assert.Contains(t, string(b), `"request_id"`)
	cancel()
	assert.Equal(t, 0, <-done)
	assert.Contains(t, errb.String(), "operation=submit")
}

// startCommand runs a serving subcommand until the test ends and returns
// the http://HOST:PORT it names on stderr, and its stderr.
func startCommand(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int)
	go func() { done <- Main(ctx, args, nil, &out, &errb) }()
	t.Cleanup(func() {
		cancel()
		assert.Equal(t, 0, <-done, errb.String())
	})
	return waitFor(t, &errb), &errb
}

// `fluxi2i simulate --webhooks` delivers signed webhooks that verify
// against its own JWKS, and says at start that it will; without the flag
// it serves no JWKS and says nothing of webhooks.
func TestSimulateDeliversWebhooksWhenTold(t *testing.T) {
	sim, errb := startCommand(t, "simulate", "--addr", "127.0.0.1:0", "--webhooks", "--queue-time", "10ms", "--run-time", "20ms")
	assert.Contains(t, errb.String(), "POSTed to any fal_webhook URL")
	assert.Contains(t, errb.String(), sim+"/.well-known/jwks.json")

	events := make(chan wrapper.WebhookEvent, 1)
	v := &wrapper.WebhookVerifier{JWKSURL: sim + "/.well-known/jwks.json"}
	hook := httptest.NewServer(v.Handler(func(_ context.Context, ev wrapper.WebhookEvent) error { events <- ev; return nil }))
	defer hook.Close()
	r := cli(t, context.Background(), nil, "submit", "--base-url", sim, "--image", sample, "--prompt", "p", "--webhook", hook.URL)
	require.Equal(t, 0, r.code, r.stderr)
	select {
	case ev := <-events:
		assert.Equal(t, strings.TrimSpace(r.stdout), ev.RequestID)
		assert.Equal(t, "OK", ev.Status)
		require.NotNil(t, ev.Output)
		assert.Len(t, ev.Output.Images, 1)
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook delivered")
	}

	plain, errb := startCommand(t, "simulate", "--addr", "127.0.0.1:0")
	assert.NotContains(t, errb.String(), "webhook")
	resp, err := http.Get(plain + "/.well-known/jwks.json")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 404, resp.StatusCode, "off by default")
}

// startSimulate runs `fluxi2i simulate` with args on a loopback port and
// returns its address; the command stops with the test.
func startSimulate(t *testing.T, args ...string) string {
	t.Helper()
	addr, _ := startSimulateLog(t, args...)
	return addr
}

// startSimulateLog is startSimulate that also returns the command's stderr.
func startSimulateLog(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	t.Setenv("GOMEMLIMIT", "off") // the test process keeps its own memory limit
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, append([]string{"simulate", "--addr", "127.0.0.1:0"}, args...), nil, &out, &errb)
	}()
	t.Cleanup(func() { cancel(); <-done })
	re := regexp.MustCompile(`at http://(127\.0\.0\.1:\d+)`)
	for range 200 {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			return m[1], &errb
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("simulate did not start: %s", errb.String())
	return "", nil
}

// Bound to loopback, `fluxi2i simulate` answers only a loopback Host or
// localhost: a page whose DNS name was rebound to 127.0.0.1 gets 403 and
// no job is queued.
func TestSimulateRefusesARebindingHost(t *testing.T) {
	addr := startSimulate(t)
	_, port, _ := net.SplitHostPort(addr)
	submit := func(host string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/fal-ai/flux-1/dev/image-to-image", strings.NewReader(`{"image_url":"https://example.com/input.jpg","prompt":"p"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Key k")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for _, h := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port, "10.0.0.1:" + port, "0.0.0.0:" + port} {
		code, body := submit(h)
		assert.Equal(t, http.StatusForbidden, code, h)
		assert.Contains(t, body, `"detail"`, "fal's error shape")
		assert.NotContains(t, body, "request_id")
	}
	for _, h := range []string{addr, "localhost:" + port, "localhost", "[::1]:" + port} {
		code, body := submit(h)
		assert.Equal(t, http.StatusOK, code, h)
		assert.Contains(t, body, `"request_id"`)
	}
}

// `fluxi2i simulate` builds job and image URLs from its public URL (by
// default its own listen address), never from a request's Host, and its
// files answer CORS.
func TestSimulateBuildsURLsFromItsPublicURL(t *testing.T) {
	do := func(addr, host, method, path, body string) (*http.Response, string) {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, "http://"+addr+path, r)
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Key k")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	imageURL := func(addr, host string) string {
		_, b := do(addr, host, http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", `{"image_url":"https://example.com/input.jpg","prompt":"p"}`)
		var q struct {
			RequestID string `json:"request_id"`
			StatusURL string `json:"status_url"`
		}
		require.NoError(t, json.Unmarshal([]byte(b), &q), b)
		for range 100 {
			resp, b := do(addr, host, http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "")
			if resp.StatusCode == http.StatusOK {
				var out struct {
					Images []struct {
						URL string `json:"url"`
					} `json:"images"`
				}
				require.NoError(t, json.Unmarshal([]byte(b), &out))
				require.NotEmpty(t, out.Images)
				return out.Images[0].URL
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatal("the job did not complete")
		return ""
	}
	addr := startSimulate(t, "--queue-time", "10ms", "--run-time", "10ms")
	_, port, _ := net.SplitHostPort(addr)
	u := imageURL(addr, "localhost:"+port)
	assert.True(t, strings.HasPrefix(u, "http://"+addr+"/files/"), "the listen address, not the Host: %s", u)
	resp, _ := do(addr, addr, http.MethodGet, strings.TrimPrefix(u, "http://"+addr), "")
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"))

	addr = startSimulate(t, "--queue-time", "10ms", "--run-time", "10ms", "--public-url", "https://sim.example")
	u = imageURL(addr, addr)
	assert.True(t, strings.HasPrefix(u, "https://sim.example/files/"), u)

	r := cli(t, context.Background(), nil, "simulate", "--addr", "127.0.0.1:0", "--public-url", "ftp://x")
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--public-url")
}
