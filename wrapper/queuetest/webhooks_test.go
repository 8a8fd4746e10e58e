package queuetest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/webhooktest"
)

// End to end on loopback: a job submitted with a webhook is delivered,
// signed, to a handler that verifies it against the server's own JWKS;
// a failed model is delivered as ERROR with its error body.
func TestWebhookDeliveredAndVerified(t *testing.T) {
	signer := webhooktest.NewSigner()
	signer.UserID = "u-42"
	failing := func(ctx context.Context, id string, in gen.Input) ([]queuetest.Rendering, error) {
		if in.Prompt == "fail" {
			return nil, &queuetest.ModelError{StatusCode: 422, Field: "image_url", Detail: "could not download"}
		}
		return queuetest.PlaceholderModel(ctx, id, in)
	}
	srv := queuetest.NewServer(queuetest.Webhooks(signer), queuetest.WithModel(failing), queuetest.QueueTime(10*time.Millisecond), queuetest.RunTime(20*time.Millisecond))
	defer srv.Close()

	events := make(chan wrapper.WebhookEvent, 4)
	v := &wrapper.WebhookVerifier{JWKSURL: srv.URL + queuetest.JWKSPath, UserID: "u-42"}
	hook := httptest.NewServer(v.Handler(func(_ context.Context, ev wrapper.WebhookEvent) error {
		events <- ev
		return nil
	}))
	defer hook.Close()

	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithAPIKey("k"), wrapper.WithHTTPClient(srv.Client()))
	require.NoError(t, err)
	ctx := context.Background()
	ok, err := c.Submit(ctx, gen.Input{ImageURL: "https://example.com/a.png", Prompt: "a cat", NumImages: func() *int { n := 2; return &n }()}, wrapper.WithWebhook(hook.URL+"/hook"))
	require.NoError(t, err)
	bad, err := c.Submit(ctx, gen.Input{ImageURL: "https://example.com/a.png", Prompt: "fail"}, wrapper.WithWebhook(hook.URL+"/hook"))
	require.NoError(t, err)

	got := map[string]wrapper.WebhookEvent{}
	for range 2 {
		select {
		case ev := <-events:
			got[ev.RequestID] = ev
		case <-time.After(10 * time.Second):
			t.Fatalf("no delivery; attempts: %+v", srv.WebhookDeliveries())
		}
	}
	okEv, badEv := got[ok.RequestID], got[bad.RequestID]
	assert.Equal(t, "OK", okEv.Status)
	assert.Equal(t, "u-42", okEv.UserID)
	require.NotNil(t, okEv.Output)
	assert.Len(t, okEv.Output.Images, 2)
	assert.Equal(t, "a cat", okEv.Output.Prompt)
	// The delivered output is the result call's.
	res, err := c.Result(ctx, ok.RequestID)
	require.NoError(t, err)
	assert.Equal(t, res.Output.Images[0].URL, okEv.Output.Images[0].URL)
	assert.Equal(t, res.Output.Seed, okEv.Output.Seed)

	assert.Equal(t, "ERROR", badEv.Status)
	var apiErr *wrapper.APIError
	require.ErrorAs(t, badEv.Err, &apiErr)
	assert.Equal(t, 422, apiErr.StatusCode)
	require.Len(t, apiErr.Fields, 1)
	assert.Equal(t, "body.image_url", apiErr.Fields[0].Field)

	for _, d := range srv.WebhookDeliveries() {
		assert.Equal(t, 200, d.StatusCode)
		assert.Equal(t, 1, d.Attempt)
		assert.Equal(t, hook.URL+"/hook", d.URL)
	}
}

// handlerTransport serves requests with a handler in memory, so that
// deliveries run in a synctest bubble.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// submitWithHook submits one job on a pipe server with fal_webhook set.
func submitWithHook(t *testing.T, srv *queuetest.Server, hook string) string {
	t.Helper()
	u := srv.URL + "/fal-ai/flux-1/dev/image-to-image"
	if hook != "" {
		u += "?fal_webhook=" + url.QueryEscape(hook)
	}
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Key k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	return resp.Header.Get("X-Fal-Request-Id")
}

// A receiver that fails is delivered to again, backing off 1 s, 2 s, 4 s
// ... (fake time), until it answers 2xx; one that never does gets
// WebhookAttempts attempts and no more.
func TestWebhookRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		failures := map[string]int{} // request id -> failures left (-1: always)
		var verified []wrapper.WebhookEvent
		signer := webhooktest.NewSigner()
		srv := queuetest.NewPipeServer(queuetest.Webhooks(signer), queuetest.QueueTime(time.Second), queuetest.RunTime(2*time.Second))
		defer srv.Close()
		v := &wrapper.WebhookVerifier{JWKSURL: "http://" + queuetest.PipeHost + queuetest.JWKSPath, HTTPClient: srv.Client()}
		receiver := v.Handler(func(_ context.Context, ev wrapper.WebhookEvent) error {
			mu.Lock()
			defer mu.Unlock()
			if n := failures[ev.RequestID]; n != 0 {
				failures[ev.RequestID] = n - 1
				return errors.New("not now")
			}
			verified = append(verified, ev)
			return nil
		})
		signer.HTTPClient = &http.Client{Transport: handlerTransport{receiver}}

		flaky := submitWithHook(t, srv, "http://hook.test/flaky")
		never := submitWithHook(t, srv, "http://hook.test/never")
		mu.Lock()
		failures[flaky], failures[never] = 3, -1
		mu.Unlock()
		start := time.Now()
		time.Sleep(10 * time.Minute)
		synctest.Wait()

		attempts := map[string][]queuetest.WebhookDelivery{}
		for _, d := range srv.WebhookDeliveries() {
			attempts[d.RequestID] = append(attempts[d.RequestID], d)
		}
		require.Len(t, attempts[flaky], 4, "three failures, then delivered")
		offsets := []time.Duration{3 * time.Second, 4 * time.Second, 6 * time.Second, 10 * time.Second}
		for i, d := range attempts[flaky] {
			assert.Equal(t, i+1, d.Attempt)
			assert.Equal(t, offsets[i], d.At.Sub(start), "attempt %d: at completion, then after 1 s, 2 s, 4 s", i+1)
		}
		assert.Equal(t, 500, attempts[flaky][2].StatusCode)
		assert.Equal(t, 200, attempts[flaky][3].StatusCode)
		require.Len(t, attempts[never], queuetest.WebhookAttempts, "bounded")
		last := attempts[never][queuetest.WebhookAttempts-1]
		assert.NotEmpty(t, last.Err)
		gap := last.At.Sub(attempts[never][queuetest.WebhookAttempts-2].At)
		assert.Equal(t, queuetest.WebhookMaxBackoff, gap, "the back-off is capped")
		require.Len(t, verified, 1)
		assert.Equal(t, flaky, verified[0].RequestID)
		assert.Equal(t, webhooktest.DefaultUserID, verified[0].UserID)
	})
}

// Close stops the deliveries under way; a cancelled job, a submit
// without fal_webhook and a server without Webhooks deliver nothing.
func TestWebhookStopsAndSkips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		calls := 0
		signer := webhooktest.NewSigner()
		signer.HTTPClient = &http.Client{Transport: handlerTransport{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			calls++
			mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
		})}}
		srv := queuetest.NewPipeServer(queuetest.Webhooks(signer), queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second))
		submitWithHook(t, srv, "http://hook.test/a")
		submitWithHook(t, srv, "") // no webhook
		doomed := submitWithHook(t, srv, "http://hook.test/b")
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/fal-ai/flux-1/requests/"+doomed+"/cancel", nil)
		req.Header.Set("Authorization", "Key k")
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 202, resp.StatusCode)

		time.Sleep(2*time.Second + 1500*time.Millisecond) // completion, and one retry
		synctest.Wait()
		mu.Lock()
		assert.Equal(t, 2, calls, "the first attempt and one retry, for the one job with a webhook")
		mu.Unlock()
		srv.Close() // returns once the retry loop has stopped
		time.Sleep(time.Hour)
		synctest.Wait()
		mu.Lock()
		assert.Equal(t, 2, calls, "nothing after Close")
		mu.Unlock()

		plain := queuetest.NewPipeServer(queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second))
		defer plain.Close()
		submitWithHook(t, plain, "http://hook.test/c")
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Empty(t, plain.WebhookDeliveries())
		resp, err = plain.Client().Get("http://" + queuetest.PipeHost + queuetest.JWKSPath)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 404, resp.StatusCode, "no JWKS without Webhooks")
	})
}

// A fal_webhook that is not an http(s) URL is not delivered, and says so.
func TestWebhookRefusesANonHTTPTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		signer := webhooktest.NewSigner()
		signer.HTTPClient = &http.Client{Transport: handlerTransport{http.NotFoundHandler()}}
		srv := queuetest.NewPipeServer(queuetest.Webhooks(signer))
		defer srv.Close()
		submitWithHook(t, srv, "file:///etc/passwd")
		time.Sleep(time.Minute)
		synctest.Wait()
		d := srv.WebhookDeliveries()
		require.Len(t, d, 1)
		assert.Zero(t, d[0].Attempt)
		assert.Contains(t, d[0].Err, "not an http(s) URL")
	})
}
