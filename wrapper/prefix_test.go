package wrapper_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// Every error the package returns reads with one "fluxi2i: " prefix, at
// its start, however many of the package's errors it wraps: the wrapping
// types put what they wrap after their own text without its prefix.
func TestErrorsCarryOnePrefix(t *testing.T) {
	apiErr := &wrapper.APIError{Op: "status", RequestID: "r-1", StatusCode: 503, ErrorType: "runner_scheduling_failure", Detail: "busy"}
	submitErr := &wrapper.SubmitError{Attempts: 2, Err: &wrapper.APIError{Op: "submit", StatusCode: 500}}
	cases := map[string]error{
		"APIError":                    apiErr,
		"JobError of an APIError":     &wrapper.JobError{RequestID: "r-1", Status: wrapper.StatusInQueue, Err: apiErr},
		"JobError of a context error": &wrapper.JobError{RequestID: "r-1", Cancelled: true, Err: context.DeadlineExceeded},
		"JobError of a sentinel":      &wrapper.JobError{RequestID: "r-1", Err: wrapper.ErrNotFound},
		"JobError of a SubmitError":   &wrapper.JobError{RequestID: "r-1", Err: submitErr},
		"SubmitError":                 submitErr,
		"SubmitError, outcome unknown, with the history's answer": &wrapper.SubmitError{Attempts: 3, Unknown: true,
			Err: &wrapper.JobError{RequestID: "r-1", Err: apiErr}, History: wrapper.ErrHistoryUnavailable},
		"InputError holding a library error": &wrapper.InputError{Fields: []wrapper.FieldError{
			{Field: "--image", Message: wrapper.ErrNotAnImage.Error()}, {Field: "strength", Message: "must be at most 1"}}},
		"WebhookError": &wrapper.WebhookError{Reason: wrapper.ErrWebhookSignature, Detail: "forged"},
	}
	for _, sentinel := range []error{wrapper.ErrNotFound, wrapper.ErrOutcomeUnknown, wrapper.ErrNotInHistory, wrapper.ErrHistoryUnavailable,
		wrapper.ErrAlreadyCompleted, wrapper.ErrNoCredentials, wrapper.ErrNotAnImage} {
		cases[sentinel.Error()] = sentinel
	}

	// What the package itself returns.
	got := func(name string, err error) {
		t.Helper()
		require.Error(t, err, name)
		cases[name] = err
	}
	_, err := wrapper.New(wrapper.WithEnvironment(nil), wrapper.WithAPIKey("two\nlines"))
	got("New, a bad key", err)
	_, err = wrapper.New(wrapper.WithEnvironment(nil), wrapper.WithBaseURL("ftp://example.com"), wrapper.WithBearerToken("k"))
	got("New, a bad base URL", err)
	_, err = wrapper.New(wrapper.WithEnvironment(nil), wrapper.WithBearerToken("k"), wrapper.WithRetries(-1), wrapper.WithMaxStreams(0))
	got("New, two bad options", err)
	assert.Contains(t, err.Error(), "WithMaxStreams", "both are named")
	_, err = wrapper.ImageFile(filepath.Join(t.TempDir(), "missing.png"))
	got("ImageFile, no file", err)
	_, err = wrapper.ImageBytes([]byte("%PDF-1.7"))
	got("ImageBytes, not an image", err)
	_, err = wrapper.ImageReader(bytes.NewReader(make([]byte, 100)), 10)
	got("ImageReader, too large", err)
	_, err = wrapper.DecodeWebhook([]byte("{"))
	got("DecodeWebhook, not JSON", err)
	err = (&wrapper.WebhookVerifier{}).Verify(context.Background(), http.Header{}, nil)
	got("Verify, no headers", err)
	_, err = wrapper.New(wrapper.WithEnvironment(func(k string) string {
		return map[string]string{wrapper.EnvAPIKey: "two\nlines"}[k]
	}))
	got("New, a bad key in the environment", err)
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	bc, err := wrapper.New(wrapper.WithEnvironment(nil), wrapper.WithBaseURL(busy.URL))
	require.NoError(t, err)
	tctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = bc.Status(tctx, "r-1", false)
	got("Status, the context ends while retrying", err)
	_, err = bc.SaveImages(context.Background(), &gen.Output{Images: []gen.Image{{URL: "data:image/png;base64,AAAA"}}}, t.TempDir(), "x")
	got("SaveImages, not an image", err)
	small, err := wrapper.New(wrapper.WithEnvironment(nil), wrapper.WithBaseURL(busy.URL), wrapper.WithMaxResponseBytes(4))
	require.NoError(t, err)
	_, _, err = small.OpenImage(context.Background(), gen.Image{URL: "data:image/png;base64,AAAAAAAAAAAAAAAA"})
	got("OpenImage, a data URI over the size limit", err)
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err = bc.SaveImages(context.Background(), &gen.Output{Images: []gen.Image{{URL: "data:image/png;base64,AAAA"}}}, filepath.Join(file, "dir"), "x")
	got("SaveImages, a folder that cannot be made", err)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status": "IN_`))
	}))
	defer broken.Close()
	brc, err := wrapper.New(wrapper.WithEnvironment(nil), wrapper.WithBaseURL(broken.URL), wrapper.WithRetries(0))
	require.NoError(t, err)
	_, err = brc.Status(context.Background(), "r-1", false)
	got("Status, an undecodable answer", err)
	_, err = brc.Result(context.Background(), "r-1")
	got("Result, an undecodable answer", err)

	synctest.Test(t, func(t *testing.T) {
		model := func(context.Context, string, gen.Input) ([]queuetest.Rendering, error) {
			return nil, &queuetest.ModelError{StatusCode: 422, Field: "prompt", Detail: "refused"}
		}
		_, c := setup(t, []queuetest.Option{queuetest.WithModel(model)})
		ctx := context.Background()
		_, err := c.Wait(ctx, "nope")
		got("Wait, an unknown request", err)
		_, err = c.Result(ctx, "nope")
		got("Result, an unknown request", err)
		_, err = c.Run(ctx, input())
		got("Run, the model fails", err)
		_, c2 := setup(t, nil)
		q, err := c2.Submit(ctx, input())
		require.NoError(t, err)
		_, err = c2.Wait(ctx, q.RequestID)
		require.NoError(t, err)
		err = c2.Cancel(ctx, q.RequestID)
		require.ErrorIs(t, err, wrapper.ErrAlreadyCompleted)
		got("Cancel, already completed", err)
		_, err = c.Submit(ctx, input(), wrapper.WithBaseURL("http://example.com"))
		got("Submit, an option of New", err)
		path := filepath.Join(t.TempDir(), "gone.png")
		require.NoError(t, os.WriteFile(path, []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"), 0o644))
		im, err := wrapper.ImageFile(path)
		require.NoError(t, err)
		require.NoError(t, os.Remove(path))
		_, err = c.Submit(ctx, gen.Input{Prompt: "p"}, wrapper.WithImage(im))
		got("Submit, the image file gone since ImageFile", err)
	})

	for name, err := range cases {
		msg := err.Error()
		assert.True(t, strings.HasPrefix(msg, "fluxi2i: "), "%s: %q", name, msg)
		assert.Equal(t, 1, strings.Count(msg, "fluxi2i:"), "%s: %q", name, msg)
	}
}
