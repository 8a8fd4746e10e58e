package proxy_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
)

type seen struct {
	mu        sync.Mutex
	forwarded []proxy.Forwarded
	refused   []proxy.Refusal
	started   []string
}

func (s *seen) StartForward(ctx context.Context, up *http.Request, op string) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = append(s.started, op+" "+up.Header.Get("Traceparent"))
	return ctx
}

func (s *seen) EndForward(_ context.Context, f proxy.Forwarded) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forwarded = append(s.forwarded, f)
}

func (s *seen) Refused(_ context.Context, r proxy.Refusal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused = append(s.refused, r)
}

// The browser's W3C traceparent continues to the upstream; the observer
// sees every forwarded and refused request.
func TestTheProxyContinuesTheTraceAndReports(t *testing.T) {
	obs := &seen{}
	f := start(t, proxy.AllowAnyone(), proxy.WithObserver(obs))
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	resp, b := f.send(t, http.MethodPost, submitTarget, input, "Traceparent", tp, "Tracestate", "vendor=1")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	resp, _ = f.send(t, http.MethodPost, submitTarget, input, "Traceparent", "not-a-traceparent")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = f.send(t, http.MethodGet, "https://queue.fal.run/fal-ai/flux-pro/requests/x", "")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	f.rec.mu.Lock()
	reqs := f.rec.reqs
	f.rec.mu.Unlock()
	require.Len(t, reqs, 2)
	assert.Equal(t, tp, reqs[0].Header.Get("Traceparent"))
	assert.Equal(t, "vendor=1", reqs[0].Header.Get("Tracestate"))
	assert.Empty(t, reqs[1].Header.Get("Traceparent"), "a malformed one is dropped")

	obs.mu.Lock()
	defer obs.mu.Unlock()
	require.Len(t, obs.forwarded, 2)
	assert.Equal(t, "submit", obs.forwarded[0].Operation)
	assert.Equal(t, http.StatusOK, obs.forwarded[0].StatusCode)
	assert.NotEmpty(t, obs.forwarded[0].RequestID)
	assert.Equal(t, []string{"submit " + tp, "submit "}, obs.started)
	require.Len(t, obs.refused, 1)
	assert.Equal(t, "operation", obs.refused[0].Reason)
	assert.Equal(t, http.StatusForbidden, obs.refused[0].StatusCode)
}
