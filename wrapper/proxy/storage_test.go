package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

const initiate = "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3"

// A Blob input, as fal's JS client sends it through a proxy: the initiate
// goes through with the server's key, the bytes go to the upload URL
// directly with none, and the job that names the file reads it.
func TestAnUploadThroughTheProxy(t *testing.T) {
	f := start(t, proxy.AllowAnyone())
	resp, b := f.send(t, http.MethodPost, initiate, `{"content_type":"image/png","file_name":"cat.png"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	var target gen.UploadTarget
	require.NoError(t, json.Unmarshal(b, &target))
	assert.True(t, strings.HasPrefix(target.UploadURL, f.up.URL+"/storage/uploads/"), "the simulator's storage, on its origin: %s", target.UploadURL)

	put, err := http.NewRequest(http.MethodPut, target.UploadURL, bytes.NewReader(samplePNG(t)))
	require.NoError(t, err)
	put.Header.Set("Content-Type", "image/png")
	presp, err := http.DefaultClient.Do(put)
	require.NoError(t, err)
	presp.Body.Close()
	require.Equal(t, http.StatusOK, presp.StatusCode)

	in, _ := json.Marshal(gen.Input{ImageURL: target.FileURL, Prompt: "p"})
	resp, b = f.send(t, http.MethodPost, submitTarget, string(in))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	assert.Positive(t, f.up.Stats().StorageCalls)
}

func TestUploadRefusals(t *testing.T) {
	f := start(t, proxy.AllowAnyone())
	for _, c := range []struct {
		method, target string
		code           int
	}{
		{http.MethodPost, "https://rest.fal.ai/storage/upload/initiate?storage_type=other", http.StatusBadRequest},
		{http.MethodPut, "https://rest.fal.ai/storage/uploads/t1", http.StatusForbidden},                // the bytes never pass
		{http.MethodPost, "https://rest.fal.ai/storage/uploads/t1/complete", http.StatusForbidden},      // nor the completion
		{http.MethodPost, "https://rest.fal.ai/fal-ai/flux-1/dev/image-to-image", http.StatusForbidden}, // the queue's operations only on its host
		{http.MethodPost, "https://queue.fal.run/storage/upload/initiate?storage_type=fal-cdn-v3", http.StatusForbidden},
		{http.MethodGet, "https://rest.fal.ai/v1/models/requests/by-endpoint?endpoint_id=x", http.StatusForbidden},
	} {
		before := f.up.Stats().StorageCalls
		resp, b := f.send(t, c.method, c.target, `{"content_type":"image/png","file_name":"cat.png"}`)
		assert.Equal(t, c.code, resp.StatusCode, "%s %s: %s", c.method, c.target, b)
		assert.Equal(t, before, f.up.Stats().StorageCalls, "nothing forwarded for %s", c.target)
	}
}

// An upstream without storage (the aggregator) gets a refusal that says
// what works instead.
func TestUploadsWithoutStorageSayDataURIsWork(t *testing.T) {
	f := startWith(t, upstream{opts: []queuetest.Option{queuetest.WithoutStorage()}}, proxy.AllowAnyone())
	resp, b := f.send(t, http.MethodPost, initiate, `{"content_type":"image/png","file_name":"cat.png"}`)
	assert.Equal(t, http.StatusNotImplemented, resp.StatusCode)
	assert.Contains(t, string(b), "data URI")

	up := &seenUpstream{}
	c, err := wrapper.New(wrapper.WithBaseURL(wrapper.AggregatorURL), wrapper.WithBearerToken("server-key"),
		wrapper.WithHTTPClient(&http.Client{Transport: up}), wrapper.WithEnvironment(nil))
	require.NoError(t, err)
	h, err := proxy.New(c, proxy.AllowAnyone())
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "/api/fal/proxy", strings.NewReader(`{"content_type":"image/png","file_name":"cat.png"}`))
	require.NoError(t, err)
	req.Header.Set(proxy.TargetHeader, initiate)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	assert.Equal(t, http.StatusNotImplemented, w.Code)
	assert.Contains(t, w.Body.String(), "data URI")
	assert.Empty(t, up.reqs, "nothing sent to the aggregator")
}

func samplePNG(t *testing.T) []byte {
	var b bytes.Buffer
	require.NoError(t, png.Encode(&b, image.NewRGBA(image.Rect(0, 0, 8, 8))))
	return b.Bytes()
}
