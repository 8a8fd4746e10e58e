package specvalidate

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder collects what Transport reports instead of failing the test.
type recorder struct {
	mu   sync.Mutex
	errs []error
}

func (r *recorder) report(err error) { r.mu.Lock(); r.errs = append(r.errs, err); r.mu.Unlock() }

func newTransport(rec *recorder) *Transport {
	return &Transport{Validator: MustLoad(), Report: rec.report}
}

func serve(t *testing.T, status int, body string) (*httptest.Server, *int) {
	t.Helper()
	hits := new(int)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*hits++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, hits
}

const goodInput = `{"image_url":"https://example.com/a.png","prompt":"a cat"}`

func post(t *testing.T, tr *Transport, url, body string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url+"/fal-ai/flux-1/dev/image-to-image", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer tok")
	return tr.RoundTrip(req)
}

func TestTransportPassesConformingTraffic(t *testing.T) {
	srv, _ := serve(t, 200, `{"status":"IN_QUEUE","request_id":"r1","queue_position":0}`)
	rec := &recorder{}
	resp, err := post(t, newTransport(rec), srv.URL, goodInput)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	assert.JSONEq(t, `{"status":"IN_QUEUE","request_id":"r1","queue_position":0}`, string(b))
	assert.Empty(t, rec.errs)
}

func TestTransportCatchesBadRequestBeforeSending(t *testing.T) {
	srv, hits := serve(t, 200, `{"status":"IN_QUEUE","request_id":"r1"}`)
	rec := &recorder{}
	_, err := post(t, newTransport(rec), srv.URL, `{"image_url":"https://example.com/a.png","prompt":"a cat","strength":1.5}`)
	var v *Violation
	require.ErrorAs(t, err, &v)
	assert.Contains(t, err.Error(), "strength")
	assert.Zero(t, *hits, "a violating request must not reach the server")
	assert.Len(t, rec.errs, 1)
}

func TestTransportCatchesMissingCredential(t *testing.T) {
	srv, _ := serve(t, 200, `{"status":"IN_QUEUE","request_id":"r1"}`)
	rec := &recorder{}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/fal-ai/flux-1/requests/r1/status", nil)
	_, err := newTransport(rec).RoundTrip(req)
	require.Error(t, err)
	assert.Len(t, rec.errs, 1)
}

func TestTransportCatchesBadResponse(t *testing.T) {
	for name, c := range map[string]struct {
		status int
		body   string
	}{
		"request_id missing":       {200, `{"status":"IN_QUEUE"}`},
		"undocumented status code": {418, `{"detail":"teapot"}`},
		"wrong type":               {200, `{"status":"IN_QUEUE","request_id":"r1","queue_position":"first"}`},
		"422 without detail":       {422, `{"msg":"bad"}`},
		"not JSON":                 {200, `{"status":`},
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := serve(t, c.status, c.body)
			rec := &recorder{}
			_, err := post(t, newTransport(rec), srv.URL, goodInput)
			var v *Violation
			require.ErrorAs(t, err, &v)
			assert.Len(t, rec.errs, 1)
		})
	}
}

func TestTransportLetsDeliberateFaultsThrough(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(FaultHeader, "truncated")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"IN_QU`)
	}))
	defer srv.Close()
	rec := &recorder{}
	resp, err := post(t, newTransport(rec), srv.URL, goodInput)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, `{"status":"IN_QU`, string(b))
	assert.Empty(t, rec.errs)
}

func TestTransportKeepsTheBodyExact(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = string(b)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"request_id":"r1"}`)
	}))
	defer srv.Close()
	body := `{"image_url":"https://example.com/a.png","prompt":"a cat","seed":9007199254740993}`
	rec := &recorder{}
	_, err := post(t, newTransport(rec), srv.URL, body)
	require.NoError(t, err)
	assert.Equal(t, body, got, "no defaults written, no number rounded")
	assert.Empty(t, rec.errs)
}

func TestFieldErrorsNameTheField(t *testing.T) {
	v := MustLoad()
	req, _ := http.NewRequest(http.MethodPost, "http://x/fal-ai/flux-1/dev/image-to-image", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Key k")
	_, err := v.Request(req.Context(), req, []byte(`{"image_url":"","prompt":"p","num_images":9}`))
	require.Error(t, err)
	var locs []string
	for _, fe := range FieldErrors(err) {
		locs = append(locs, fe.Location)
	}
	assert.ElementsMatch(t, []string{"/image_url", "/num_images"}, locs)
	assert.False(t, errors.Is(err, io.EOF))
}

func TestTransportChecksStreamEvents(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": keepalive\r\ndata: {\"status\":\"IN_QUEUE\"}\r\n\r\ndata: {\"queue_position\":\"x\"}\n\n")
	}))
	defer srv.Close()
	rec := &recorder{}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/fal-ai/flux-1/requests/r1/status/stream", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := newTransport(rec).RoundTrip(req)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Len(t, rec.errs, 1, "the second event lacks status and has a string position")
	assert.Contains(t, rec.errs[0].Error(), "QueueStatus")
}
