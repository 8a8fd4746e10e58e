package queuetest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

func (c *tc) initiate(path, auth string) (int, gen.UploadTarget) {
	c.t.Helper()
	resp, b := c.do(c.hc, http.MethodPost, "http://queue.test"+path+"?storage_type=fal-cdn-v3", auth, `{"content_type":"image/png","file_name":"my cat.png"}`)
	var t gen.UploadTarget
	if resp.StatusCode == http.StatusOK {
		require.NoError(c.t, json.Unmarshal(b, &t))
	}
	return resp.StatusCode, t
}

func (c *tc) put(url, ctype string, data []byte) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(data))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", ctype)
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// fal's storage as fal's JS client uses it: initiate with the key, PUT the
// bytes with none, and the file is served (with CORS) and read by a job
// that names it.
func TestStorageUploadsAFileAJobReads(t *testing.T) {
	var mu sync.Mutex
	var seen string
	model := func(ctx context.Context, id string, in gen.Input) ([]queuetest.Rendering, error) {
		mu.Lock()
		seen = in.ImageURL
		mu.Unlock()
		return queuetest.PlaceholderModel(ctx, id, in)
	}
	c := start(t, queuetest.QueueTime(0), queuetest.RunTime(0), queuetest.WithModel(model))
	code, target := c.initiate("/storage/upload/initiate", "Key k")
	require.Equal(t, http.StatusOK, code)
	assert.True(t, strings.HasPrefix(target.UploadURL, "http://queue.test/storage/uploads/"), target.UploadURL)
	assert.True(t, strings.HasSuffix(target.FileURL, "/my_cat.png"), target.FileURL)

	png := []byte("\x89PNG\r\n\x1a\nfake image bytes")
	resp, _ := c.put(target.UploadURL, "image/png", png)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"), "a page PUTs cross-origin")

	resp, b := c.raw(http.MethodGet, target.FileURL, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, png, b)
	assert.Equal(t, "image/png", resp.Header.Get("Content-Type"))
	assert.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"))

	in, _ := json.Marshal(gen.Input{ImageURL: target.FileURL, Prompt: "p"})
	resp, b = c.call(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", string(in))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var q gen.Enqueued
	require.NoError(t, json.Unmarshal(b, &q))
	resp, _ = c.call(http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "data:image/png;base64,iVBORw0KGgpmYWtlIGltYWdlIGJ5dGVz", seen, "the model read the uploaded bytes")

	req, err := http.NewRequest(http.MethodOptions, target.UploadURL, nil)
	require.NoError(t, err)
	pre, err := c.srv.Client().Do(req)
	require.NoError(t, err)
	pre.Body.Close()
	assert.Equal(t, http.StatusNoContent, pre.StatusCode)
	assert.Contains(t, pre.Header.Get("Access-Control-Allow-Methods"), "PUT")
}

func TestStorageMultipart(t *testing.T) {
	c := start(t)
	code, target := c.initiate("/storage/upload/initiate-multipart", "Key k")
	require.Equal(t, http.StatusOK, code)
	var parts []gen.UploadPart
	for i, chunk := range []string{"first-", "second-", "third"} {
		resp, b := c.put(target.UploadURL+"/"+string(rune('1'+i)), "application/octet-stream", []byte(chunk))
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		var p gen.UploadPart
		require.NoError(t, json.Unmarshal(b, &p))
		parts = append(parts, p)
	}
	done, _ := json.Marshal(gen.UploadCompletion{Parts: []gen.UploadPart{parts[2], parts[0], parts[1]}})
	resp, b := c.do(c.hc, http.MethodPost, target.UploadURL+"/complete", "", string(done))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	resp, b = c.raw(http.MethodGet, target.FileURL, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "first-second-third", string(b))
}

func TestStorageIsBounded(t *testing.T) {
	c := start(t, queuetest.MaxBodyBytes(1000), queuetest.MaxUploadBytes(1500))
	resp, _ := c.raw(http.MethodPost, "http://queue.test/storage/upload/initiate?storage_type=fal-cdn-v3", "", `{"content_type":"image/png","file_name":"a.png"}`)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "initiate needs the key")

	_, a := c.initiate("/storage/upload/initiate", "Key k")
	resp, _ = c.put(a.UploadURL, "image/png", make([]byte, 1001))
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "a file is capped at the body cap")
	resp, _ = c.put(a.UploadURL, "image/png", make([]byte, 900))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, b := c.initiate("/storage/upload/initiate", "Key k")
	resp, _ = c.put(b.UploadURL, "image/png", make([]byte, 900))
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the uploads held are budgeted")
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))

	resp, _ = c.put("http://queue.test/storage/uploads/nosuch", "image/png", []byte("x"))
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestWithoutStorageAnswers404(t *testing.T) {
	c := start(t, queuetest.WithoutStorage())
	code, _ := c.initiate("/storage/upload/initiate", "Key k")
	assert.Equal(t, http.StatusNotFound, code)
}
