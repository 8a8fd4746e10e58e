package queuetest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

const body = `{"image_url":"https://example.com/a.png","prompt":"a cat","num_images":2}`

type tc struct {
	t   *testing.T
	srv *queuetest.Server
	hc  *http.Client
}

// start serves a pipe server; every exchange is validated against the spec
// unless raw is used.
func start(t *testing.T, opts ...queuetest.Option) *tc {
	srv := queuetest.NewPipeServer(append([]queuetest.Option{queuetest.WithContract(spectest.Contract())}, opts...)...)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		for _, v := range srv.Violations() {
			if strings.HasPrefix(v, "queuetest ") { // requests may be broken on purpose, answers never
				t.Errorf("%s", v)
			}
		}
	})
	return &tc{t: t, srv: srv, hc: spectest.Client(t, srv)}
}

func (c *tc) do(hc *http.Client, method, path, auth, payload string) (*http.Response, []byte) {
	c.t.Helper()
	var r io.Reader
	if payload != "" {
		r = strings.NewReader(payload)
	}
	url := path
	if !strings.HasPrefix(path, "http") {
		url = c.srv.URL + path
	}
	req, err := http.NewRequest(method, url, r)
	require.NoError(c.t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if payload != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (c *tc) call(method, path, payload string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do(c.hc, method, path, "Key k", payload)
}

func (c *tc) raw(method, path, auth, payload string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do(c.srv.Client(), method, path, auth, payload)
}

func (c *tc) submit() gen.Enqueued {
	c.t.Helper()
	resp, b := c.call(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", body)
	require.Equal(c.t, 200, resp.StatusCode, string(b))
	var q gen.Enqueued
	require.NoError(c.t, json.Unmarshal(b, &q))
	assert.Equal(c.t, q.RequestID, resp.Header.Get("X-Fal-Request-Id"))
	return q
}

func status(t *testing.T, b []byte) gen.QueueStatus {
	var s gen.QueueStatus
	require.NoError(t, json.Unmarshal(b, &s))
	return s
}

func TestLifecycleFollowsTheProtocol(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(3*time.Second), queuetest.RunTime(4*time.Second), queuetest.LogLines(4))
		q := c.submit()
		assert.Equal(t, "IN_QUEUE", *q.Status)
		assert.Equal(t, 2, *q.QueuePosition)
		assert.Equal(t, c.srv.URL+"/fal-ai/flux-1/requests/"+q.RequestID+"/status", *q.StatusURL, "owner/app only")
		statusPath := "/fal-ai/flux-1/requests/" + q.RequestID + "/status"

		resp, b := c.call(http.MethodGet, statusPath, "")
		assert.Equal(t, 202, resp.StatusCode)
		s := status(t, b)
		assert.Equal(t, "IN_QUEUE", s.Status)
		assert.Equal(t, 2, *s.QueuePosition)
		assert.Nil(t, s.Logs, "no logs unless asked")

		time.Sleep(2 * time.Second)
		_, b = c.call(http.MethodGet, statusPath, "")
		assert.Equal(t, 0, *status(t, b).QueuePosition, "0 means next")

		time.Sleep(2 * time.Second) // 1 s into the run
		resp, b = c.call(http.MethodGet, statusPath+"?logs=1", "")
		assert.Equal(t, 202, resp.StatusCode)
		s = status(t, b)
		assert.Equal(t, "IN_PROGRESS", s.Status)
		require.NotNil(t, s.Logs)
		assert.Len(t, *s.Logs, 2)
		assert.Equal(t, "step 1/4", (*s.Logs)[0].Message)

		resp, b = c.call(http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "")
		assert.Equal(t, 400, resp.StatusCode, "result before completion")
		assert.Contains(t, string(b), "still in progress")

		time.Sleep(4 * time.Second)
		resp, b = c.call(http.MethodGet, statusPath+"?logs=1", "")
		assert.Equal(t, 200, resp.StatusCode)
		s = status(t, b)
		assert.Equal(t, "COMPLETED", s.Status)
		assert.Len(t, *s.Logs, 4)
		assert.Equal(t, 4.0, *s.Metrics.InferenceTime)

		resp, b = c.call(http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "")
		require.Equal(t, 200, resp.StatusCode)
		var out gen.Output
		require.NoError(t, json.Unmarshal(b, &out))
		assert.Len(t, out.Images, 2)
		assert.Len(t, out.HasNsfwConcepts, 2)
		assert.Equal(t, "a cat", out.Prompt)

		img, data := c.raw(http.MethodGet, out.Images[0].URL, "", "")
		assert.Equal(t, 200, img.StatusCode)
		assert.Equal(t, "image/jpeg", img.Header.Get("Content-Type"))
		assert.Equal(t, []byte{0xff, 0xd8}, data[:2])
		assert.True(t, strings.HasPrefix(out.Images[0].URL, c.srv.ForeignURL), "media is served from another origin")
	})
}

func TestCancelAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(time.Minute))
		q := c.submit()
		p := "/fal-ai/flux-1/requests/" + q.RequestID
		resp, b := c.call(http.MethodPut, p+"/cancel", "")
		assert.Equal(t, 202, resp.StatusCode)
		assert.JSONEq(t, `{"status":"CANCELLATION_REQUESTED"}`, string(b))
		resp, b = c.call(http.MethodPut, p+"/cancel", "")
		assert.Equal(t, 400, resp.StatusCode)
		assert.JSONEq(t, `{"status":"ALREADY_COMPLETED"}`, string(b))
		resp, b = c.call(http.MethodPut, "/fal-ai/flux-1/requests/unknown/cancel", "")
		assert.Equal(t, 404, resp.StatusCode)
		assert.JSONEq(t, `{"status":"NOT_FOUND"}`, string(b))

		_, b = c.call(http.MethodGet, p+"/status", "")
		s := status(t, b)
		assert.Equal(t, "COMPLETED", s.Status, "a cancelled job ends COMPLETED with an error")
		assert.Equal(t, "client_cancelled", *s.ErrorType)
		resp, _ = c.call(http.MethodGet, p, "")
		assert.Equal(t, 499, resp.StatusCode)
		assert.EqualValues(t, 1, c.srv.Stats().Cancelled)
	})
}

func TestUnknownRequestIs404(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t)
		resp, _ := c.call(http.MethodGet, "/fal-ai/flux-1/requests/nope/status", "")
		assert.Equal(t, 404, resp.StatusCode)
		resp, _ = c.call(http.MethodGet, "/fal-ai/flux-1/requests/nope", "")
		assert.Equal(t, 404, resp.StatusCode)
	})
}

func TestCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.WithAPIKey("right"))
		for auth, want := range map[string]int{"": 401, "Bearer wrong": 401, "Token right": 401, "Bearer right": 404, "Key right": 404} {
			resp, _ := c.raw(http.MethodGet, "/fal-ai/flux-1/requests/x/status", auth, "")
			assert.Equal(t, want, resp.StatusCode, auth)
		}
		assert.EqualValues(t, 3, c.srv.Stats().Unauthorized)
	})
}

func TestInvalidRequestsAreRefusedAndCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t)
		resp, b := c.raw(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", "Bearer t", `{"image_url":"https://e.com/a.png","prompt":"p","strength":7}`)
		assert.Equal(t, 422, resp.StatusCode)
		var ve gen.ValidationError
		require.NoError(t, json.Unmarshal(b, &ve))
		items, err := ve.Detail.AsValidationDetail0()
		require.NoError(t, err)
		require.Len(t, items, 1)
		loc0, _ := (*items[0].Loc)[1].AsValidationErrorItemLoc0()
		assert.Equal(t, "strength", loc0)
		resp, _ = c.raw(http.MethodGet, "/fal-ai/flux-1/requests/x/status?logs=7", "Bearer t", "")
		assert.Equal(t, 400, resp.StatusCode)
		assert.EqualValues(t, 2, c.srv.Stats().Violations)
		assert.Len(t, c.srv.Violations(), 2)
		assert.Zero(t, c.srv.Stats().Jobs)
	})
}

// The fake's 422 names the fields, with the messages, that the client's
// own check (wrapper.Validate) names: both are gen's generated validation
// and image_url's form. It checks the body as sent: "default", which the
// client leaves out, is not in the spec's enum, so the fake names it.
func TestA422NamesWhatTheClientWould(t *testing.T) {
	fields := func(t *testing.T, b []byte) map[string]string {
		var ve gen.ValidationError
		require.NoError(t, json.Unmarshal(b, &ve), string(b))
		items, err := ve.Detail.AsValidationDetail0()
		require.NoError(t, err, string(b))
		got := map[string]string{}
		for _, it := range items {
			f, err := (*it.Loc)[1].AsValidationErrorItemLoc0()
			require.NoError(t, err)
			got[f] = it.Msg
		}
		return got
	}
	for _, in := range []string{
		`{"image_url":"ftp://e.com/a.png","prompt":"p","strength":7}`,
		`{"image_url":"data:text/plain;base64,aGk=","prompt":"","num_images":9,"acceleration":"turbo"}`,
		`{"image_url":"data:image/png,raw","prompt":"p","guidance_scale":0.5}`,
	} {
		synctest.Test(t, func(t *testing.T) {
			c := start(t)
			resp, b := c.raw(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", "Bearer t", in)
			require.Equal(t, 422, resp.StatusCode, in)
			var gi gen.Input
			require.NoError(t, json.Unmarshal([]byte(in), &gi))
			var ie *wrapper.InputError
			require.ErrorAs(t, wrapper.Validate(gi), &ie, in)
			want := map[string]string{}
			for _, fe := range ie.Fields {
				want[fe.Field] = fe.Message
			}
			assert.Equal(t, want, fields(t, b), in)
			assert.Contains(t, want, "image_url", "the form of image_url is checked: %s", in)
		})
	}
	synctest.Test(t, func(t *testing.T) {
		c := start(t)
		resp, b := c.raw(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", "Bearer t",
			`{"image_url":"https://e.com/a.png","prompt":"p","output_format":"default","acceleration":"default"}`)
		require.Equal(t, 422, resp.StatusCode)
		got := fields(t, b)
		assert.Contains(t, got, "output_format")
		assert.Contains(t, got, "acceleration")
	})
}

func TestFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(0), queuetest.RunTime(0))
		c.srv.Inject(queuetest.OpSubmit, queuetest.Fail(429).RetryAfter(3), queuetest.UserTimeout())
		resp, b := c.call(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", body)
		assert.Equal(t, 429, resp.StatusCode)
		assert.Equal(t, "3", resp.Header.Get("Retry-After"))
		assert.Contains(t, string(b), "error_type")
		resp, _ = c.call(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", body)
		assert.Equal(t, 504, resp.StatusCode)
		assert.Equal(t, "user", resp.Header.Get("X-Fal-Request-Timeout-Type"))
		assert.Zero(t, c.srv.Stats().Jobs, "refused submits queue nothing")

		send := func() error {
			req, _ := http.NewRequest(http.MethodPost, c.srv.URL+"/fal-ai/flux-1/dev/image-to-image", strings.NewReader(body))
			req.Header.Set("Authorization", "Key k")
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.srv.Client().Do(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			return err
		}
		c.srv.Inject(queuetest.OpSubmit, queuetest.DropBefore())
		assert.Error(t, send())
		assert.Zero(t, c.srv.Stats().Jobs, "dropped before acting")
		c.srv.Inject(queuetest.OpSubmit, queuetest.DropAfter())
		assert.Error(t, send())
		assert.EqualValues(t, 1, c.srv.Stats().Jobs, "dropped after acting: the job exists")
		c.srv.Inject(queuetest.OpSubmit, queuetest.Truncate())
		assert.Error(t, send(), "truncated body")
		assert.EqualValues(t, 2, c.srv.Stats().Jobs)

		c.srv.Inject(queuetest.OpSubmit, queuetest.Slow(10*time.Second))
		start := time.Now()
		require.NoError(t, send())
		assert.Equal(t, 10*time.Second, time.Since(start))
	})
}

func TestForeignURLsSwitch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t)
		c.srv.SetForeignURLs(true)
		q := c.submit()
		assert.True(t, strings.HasPrefix(*q.StatusURL, "http://"+queuetest.PipeForeignHost+"/"))
		resp, _ := c.raw(http.MethodGet, *q.StatusURL, "Bearer leaked", "")
		assert.Equal(t, 202, resp.StatusCode, "the foreign origin answers, so a leak goes unnoticed but for the counter")
		assert.EqualValues(t, 1, c.srv.Stats().ForeignAuthorized)
	})
}

func TestSyncModeReturnsDataURIs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(0), queuetest.RunTime(0))
		resp, b := c.call(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", `{"image_url":"https://e.com/a.png","prompt":"p","sync_mode":true,"output_format":"png","seed":9223372036854775807}`)
		require.Equal(t, 200, resp.StatusCode)
		var q gen.Enqueued
		require.NoError(t, json.Unmarshal(b, &q))
		_, b = c.call(http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "")
		var out gen.Output
		require.NoError(t, json.Unmarshal(b, &out))
		assert.True(t, strings.HasPrefix(out.Images[0].URL, "data:image/png;base64,"))
		assert.Equal(t, int64(9223372036854775807), out.Seed)
	})
}

func TestStatusStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(3*time.Second), queuetest.RunTime(3*time.Second), queuetest.LogLines(3))
		q := c.submit()
		req, _ := http.NewRequest(http.MethodGet, c.srv.URL+"/fal-ai/flux-1/requests/"+q.RequestID+"/status/stream?logs=1", nil)
		req.Header.Set("Authorization", "Key k")
		req.Header.Set("Accept", "text/event-stream")
		resp, err := c.hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		var states []string
		var logs []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			s := status(t, []byte(line))
			states = append(states, s.Status)
			if s.Logs != nil {
				for _, l := range *s.Logs {
					logs = append(logs, l.Message)
				}
			}
		}
		require.NoError(t, sc.Err())
		assert.Equal(t, "IN_QUEUE", states[0])
		assert.Equal(t, "COMPLETED", states[len(states)-1], "the stream closes after COMPLETED")
		assert.Equal(t, []string{"step 1/3", "step 2/3", "step 3/3"}, logs, "incremental: each line once")
	})
}

func TestItsOwnAnswersAreCheckedAgainstTheSpec(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		model := func(context.Context, string, gen.Input) ([]queuetest.Rendering, error) {
			return nil, &queuetest.ModelError{StatusCode: 418, Detail: "teapot"} // a code the spec does not document
		}
		srv := queuetest.NewPipeServer(queuetest.WithContract(spectest.Contract()), queuetest.QueueTime(0), queuetest.RunTime(0), queuetest.WithModel(model))
		defer srv.Close()
		c := &tc{t: t, srv: srv}
		resp, b := c.raw(http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", "Key k", body)
		require.Equal(t, 200, resp.StatusCode)
		var q gen.Enqueued
		require.NoError(t, json.Unmarshal(b, &q))
		resp, _ = c.raw(http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "Key k", "")
		assert.Equal(t, 418, resp.StatusCode)
		v := srv.Violations()
		require.Len(t, v, 1)
		assert.Contains(t, v[0], "answered off the spec")
	})
}

// Image URLs need no key, like fal's CDN, so they are unguessable (not
// derived from the request id) and serve completed jobs only.
func TestImageURLsAreUnguessableAndOnlyForCompletedJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second))
		q := c.submit()
		time.Sleep(3 * time.Second)
		resp, b := c.call(http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, "")
		require.Equal(t, 200, resp.StatusCode, string(b))
		var out gen.Output
		require.NoError(t, json.Unmarshal(b, &out))
		require.NotEmpty(t, out.Images)
		assert.NotContains(t, out.Images[0].URL, q.RequestID, "not derived from the request id")
		resp, _ = c.raw(http.MethodGet, out.Images[0].URL, "", "")
		assert.Equal(t, 200, resp.StatusCode, "no key needed")
		resp, _ = c.raw(http.MethodGet, strings.Replace(out.Images[0].URL, "/files/", "/files/0", 1), "", "")
		assert.Equal(t, 404, resp.StatusCode, "a guessed key finds nothing")

		// A cancelled job has no images, and its request id opens nothing.
		q2 := c.submit()
		resp, _ = c.call(http.MethodPut, "/fal-ai/flux-1/requests/"+q2.RequestID+"/cancel", "")
		require.Equal(t, 202, resp.StatusCode)
		resp, _ = c.raw(http.MethodGet, c.srv.ForeignURL+"/files/"+q2.RequestID+"/0.jpeg", "", "")
		assert.Equal(t, 404, resp.StatusCode)
	})
}
