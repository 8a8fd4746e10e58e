package wrapper

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
)

// TestEveryRequestIsBuiltFromTheSpec: submit, status, stream, result and
// cancel go where gen's request builders say, below the base URL's prefix,
// whatever job URLs the server returns (here: fal's host, another app, a
// gateway prefix), and the id is escaped as the spec's builders escape it.
func TestEveryRequestIsBuiltFromTheSpec(t *testing.T) {
	const id = "r1/x y"
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.EscapedPath()+"?"+r.URL.RawQuery)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		foreign := map[string]any{
			"status": "COMPLETED", "request_id": id,
			"status_url":   "https://queue.fal.run/fal-ai/flux-pro/requests/other/status",
			"response_url": "http://" + r.Host + "/gw/fal-ai/flux-1/requests/other",
			"cancel_url":   "https://queue.fal.run/fal-ai/flux-1/requests/other/cancel",
		}
		switch {
		case r.Method == http.MethodPost:
		case r.Method == http.MethodPut:
			w.WriteHeader(http.StatusAccepted)
			foreign = map[string]any{"status": "CANCELLATION_REQUESTED"}
		case r.Header.Get("Accept") == "text/event-stream":
			w.Header().Set("Content-Type", "text/event-stream")
			b, _ := json.Marshal(foreign)
			w.Write([]byte("data: " + string(b) + "\n\n"))
			return
		case r.URL.Path == "/base/fal-ai/flux-1/requests/r1%2Fx%20y" || r.URL.RawPath != "" && r.URL.Query().Get("logs") == "":
			foreign = map[string]any{"images": []any{}, "timings": map[string]any{}, "seed": 1, "has_nsfw_concepts": []any{}, "prompt": "p"}
		}
		json.NewEncoder(w).Encode(foreign)
	}))
	defer srv.Close()
	c, err := New(WithBaseURL(srv.URL+"/base"), WithBearerToken("t"), WithEnvironment(nil))
	require.NoError(t, err)
	ctx := context.Background()
	_, err = c.Submit(ctx, gen.Input{ImageURL: "https://example.com/a.png", Prompt: "p"})
	require.NoError(t, err)
	_, err = c.Wait(ctx, id)
	require.NoError(t, err)
	_, err = c.Status(ctx, id, true)
	require.NoError(t, err)
	require.NoError(t, c.Cancel(ctx, id))

	server := srv.URL + "/base/"
	want := func(r *http.Request, err error) string {
		require.NoError(t, err)
		return r.Method + " " + r.URL.EscapedPath() + "?" + r.URL.RawQuery
	}
	logs := gen.GetStatusParamsLogsN1
	assert.Equal(t, []string{
		want(gen.NewSubmitRequestWithBody(server, &gen.SubmitParams{}, "application/json", nil)),
		want(gen.NewStreamStatusRequest(server, id, &gen.StreamStatusParams{})),
		want(gen.NewGetResultRequest(server, id)),
		want(gen.NewGetStatusRequest(server, id, &gen.GetStatusParams{Logs: &logs})),
		want(gen.NewCancelRequest(server, id)),
	}, got)
	assert.Contains(t, got[1], "/base/fal-ai/flux-1/requests/r1%2Fx%20y/status/stream")
	assert.Equal(t, want(gen.NewGetResultRequest(server, id)), want(gen.NewGetResultRequest(srv.URL+"/base", id)),
		"one \"/\" joins the server and the path, whether the server ends in one or not")
}

// The request history lives at fal's Platform API for fal's queue, and on
// the base URL's own origin (not below its path) otherwise; WithHistoryURL
// overrides it. The key goes there, and the origin guard lets it.
func TestTheHistoryOrigin(t *testing.T) {
	for base, want := range map[string]string{
		FalURL:                              "https://api.fal.ai",
		AggregatorURL:                       "https://api.chainhub.tech",
		"http://127.0.0.1:8787/some/prefix": "http://127.0.0.1:8787",
	} {
		c, err := New(WithBaseURL(base), WithAPIKey("k"), WithEnvironment(nil))
		require.NoError(t, err)
		assert.Equal(t, want, c.histOrigin.String(), base)
		req, err := http.NewRequest(http.MethodGet, want+"/v1/models/requests/by-endpoint", nil)
		require.NoError(t, err)
		c.authorize(req)
		assert.NotEmpty(t, req.Header.Get("Authorization"), "the key goes to the history's origin")
	}
	c, err := New(WithBaseURL(FalURL), WithFalKey("k"), WithHistoryURL("https://history.example/x"), WithEnvironment(nil))
	require.NoError(t, err)
	assert.Equal(t, "https://history.example", c.histOrigin.String())
	req, err := http.NewRequest(http.MethodGet, "https://api.fal.ai/v1/models/requests/by-endpoint", nil)
	require.NoError(t, err)
	c.authorize(req)
	assert.Empty(t, req.Header.Get("Authorization"), "not to an origin the user did not configure")
}
