package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// getWithHost is a GET of path on addr naming host as the Host.
func getWithHost(t *testing.T, addr, path, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	require.NoError(t, err)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Bound to loopback, every path of `fluxi2i proxy` refuses a rebinding
// Host, /healthz, /metrics and the built-in simulator's media paths
// included, and logs each refusal with its reason; a loopback Host gets
// them. A path that is not the proxy's is a logged 404.
func TestProxyCommandRefusesARebindingHostOnEveryPath(t *testing.T) {
	addr, errb := startProxy(t)
	for _, p := range []string{"/healthz", "/metrics", "/files/x.jpg", "/storage/files/x", "/storage/uploads/x", "/api/fal/proxy", "/nope"} {
		code, body := getWithHost(t, addr, p, "evil.example")
		assert.Equal(t, http.StatusForbidden, code, p)
		assert.Contains(t, body, `"detail"`, p)
	}
	log := errb.String()
	assert.Contains(t, log, "reason=host")
	assert.Contains(t, log, "host=evil.example")
	assert.Contains(t, log, "path=/metrics")
	assert.Contains(t, log, "path=/files/x.jpg")

	code, body := getWithHost(t, addr, "/healthz", addr)
	assert.Equal(t, http.StatusOK, code, body)
	code, _ = getWithHost(t, addr, "/metrics", "localhost")
	assert.Equal(t, http.StatusOK, code)
	code, _ = getWithHost(t, addr, "/files/none.jpg", addr)
	assert.Equal(t, http.StatusNotFound, code, "the simulator's own answer")

	code, body = getWithHost(t, addr, "/elsewhere", addr)
	assert.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, body, `"detail"`, "fal's error shape")
	assert.Contains(t, errb.String(), "path=/elsewhere")
	assert.Contains(t, errb.String(), "reason=path")
}

// `fluxi2i simulate` on loopback: /healthz and /metrics refuse a
// rebinding Host like every other path, and each refusal is logged.
func TestSimulateRefusesARebindingHostOnEveryPath(t *testing.T) {
	addr, errb := startSimulateLog(t)
	for _, p := range []string{"/healthz", "/metrics", "/files/x.jpg", "/fal-ai/flux-1/requests/r/status"} {
		code, body := getWithHost(t, addr, p, "evil.example")
		assert.Equal(t, http.StatusForbidden, code, p)
		assert.Contains(t, body, `"detail"`, p)
	}
	log := errb.String()
	assert.Contains(t, log, "reason=host")
	assert.Contains(t, log, "host=evil.example")
	assert.Contains(t, log, "path=/healthz")
	assert.Equal(t, 4, strings.Count(log, "host=evil.example"), log)
	code, _ := getWithHost(t, addr, "/healthz", addr)
	assert.Equal(t, http.StatusOK, code)
}
