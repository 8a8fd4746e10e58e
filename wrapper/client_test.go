package wrapper_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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

func clearEnv(t *testing.T) {
	for _, k := range []string{wrapper.EnvAPIKey, wrapper.EnvBaseURL, wrapper.EnvFalKey} {
		t.Setenv(k, "")
	}
}

func TestNewRequiresAKey(t *testing.T) {
	clearEnv(t)
	_, err := wrapper.New()
	assert.ErrorIs(t, err, wrapper.ErrNoCredentials)
	_, err = wrapper.New(wrapper.WithBearerToken("  "))
	assert.ErrorIs(t, err, wrapper.ErrNoCredentials)
}

func TestNewRejectsBadOptions(t *testing.T) {
	clearEnv(t)
	for name, o := range map[string]wrapper.Option{
		"base url scheme":   wrapper.WithBaseURL("ftp://x"),
		"base url slash":    wrapper.WithBaseURL("https:/api.chainhub.tech"),
		"base url userinfo": wrapper.WithBaseURL("https://u:p@api.chainhub.tech"),
		"retries":           wrapper.WithRetries(-1),
		"poll":              wrapper.WithPollInterval(time.Second, time.Millisecond),
		"nil client":        wrapper.WithHTTPClient(nil),
	} {
		_, err := wrapper.New(wrapper.WithBearerToken("k"), o)
		assert.Error(t, err, name)
	}
}

func TestNewFromEnvironment(t *testing.T) {
	t.Run("aggregator token", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(wrapper.EnvAPIKey, "tok")
		c, err := wrapper.New()
		require.NoError(t, err)
		assert.Equal(t, wrapper.AggregatorURL, c.BaseURL())
		assert.Contains(t, c.String(), "Bearer")
	})
	t.Run("custom base", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(wrapper.EnvAPIKey, "tok")
		t.Setenv(wrapper.EnvBaseURL, "https://proxy.example.com/fal/")
		c, err := wrapper.New()
		require.NoError(t, err)
		assert.Equal(t, "https://proxy.example.com/fal", c.BaseURL())
	})
	t.Run("FAL_KEY means fal direct", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(wrapper.EnvFalKey, "fal-key")
		c, err := wrapper.New()
		require.NoError(t, err)
		assert.Equal(t, wrapper.FalURL, c.BaseURL())
		assert.Contains(t, c.String(), "Key")
	})
	t.Run("options win", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(wrapper.EnvFalKey, "fal-key")
		c, err := wrapper.New(wrapper.WithBearerToken("tok"), wrapper.WithBaseURL("https://x.example"))
		require.NoError(t, err)
		assert.Equal(t, "https://x.example", c.BaseURL())
		assert.Contains(t, c.String(), "Bearer")
	})
}

// recordingServer answers like the queue and records what it received.
func recordingServer(t *testing.T) (*httptest.Server, *[]*http.Request) {
	var got []*http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r = r.Clone(context.Background())
		r.Body = io.NopCloser(bytes.NewReader(body))
		got = append(got, r)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"IN_QUEUE","request_id":"r-1","queue_position":0}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

func TestSchemesAndHeadersOnTheWire(t *testing.T) {
	clearEnv(t)
	srv, got := recordingServer(t)
	hc := spectest.NewClient(t, nil)
	for _, c := range []struct {
		opt  wrapper.Option
		want string
	}{
		{wrapper.WithBearerToken("tok-1"), "Bearer tok-1"},
		{wrapper.WithFalKey("key-1"), "Key key-1"},
	} {
		cl, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithHTTPClient(hc), c.opt, wrapper.WithUserAgent("myapp/2"))
		require.NoError(t, err)
		_, err = cl.Submit(context.Background(), input())
		require.NoError(t, err)
		last := (*got)[len(*got)-1]
		assert.Equal(t, c.want, last.Header.Get("Authorization"))
		assert.True(t, strings.HasPrefix(last.Header.Get("User-Agent"), "myapp/2 fluxi2i-go/"+wrapper.Version))
	}
}

func TestSubmitOptionsOnTheWire(t *testing.T) {
	clearEnv(t)
	srv, got := recordingServer(t)
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("tok"), wrapper.WithHTTPClient(spectest.NewClient(t, nil)))
	require.NoError(t, err)
	hook := "https://hooks.example.com/fal?user=a b&sig=x/y"
	_, err = c.Submit(context.Background(), input(),
		wrapper.WithWebhook(hook),
		wrapper.WithPriority(wrapper.PriorityLow),
		wrapper.WithRunnerHint("session-42"),
		wrapper.WithStartTimeout(90*time.Second),
		wrapper.WithNoStoreIO(),
		wrapper.WithMediaExpiry(time.Hour),
		wrapper.WithNoServerRetry(),
		wrapper.WithMaxQueueLength(5),
		wrapper.WithHeader("X-Custom-Trace", "t-1"),
	)
	require.NoError(t, err)
	r := (*got)[0]
	assert.Equal(t, hook, r.URL.Query().Get("fal_webhook"), "URL-encoded and decoded back intact")
	assert.NotContains(t, r.URL.RawQuery, " ")
	assert.Equal(t, "low", r.Header.Get("X-Fal-Queue-Priority"))
	assert.Equal(t, "session-42", r.Header.Get("X-Fal-Runner-Hint"))
	assert.Equal(t, "90", r.Header.Get("X-Fal-Request-Timeout"))
	assert.Equal(t, "0", r.Header.Get("X-Fal-Store-IO"))
	assert.JSONEq(t, `{"expiration_duration_seconds":3600}`, r.Header.Get("X-Fal-Object-Lifecycle-Preference"))
	assert.Equal(t, "1", r.Header.Get("X-Fal-No-Retry"))
	assert.Equal(t, "5", r.URL.Query().Get("fal_max_queue_length"))
	assert.Equal(t, "t-1", r.Header.Get("X-Custom-Trace"))
}

func TestBadCallOptionsSendNothing(t *testing.T) {
	clearEnv(t)
	srv, got := recordingServer(t)
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("tok"))
	require.NoError(t, err)
	for name, o := range map[string]wrapper.Option{
		"webhook":       wrapper.WithWebhook("not a url"),
		"priority":      wrapper.WithPriority("urgent"),
		"start timeout": wrapper.WithStartTimeout(time.Second),
		"media expiry":  wrapper.WithMediaExpiry(time.Millisecond),
		"auth header":   wrapper.WithHeader("authorization", "Bearer other"),
		"spec header":   wrapper.WithHeader("X-Fal-Queue-Priority", "urgent"),
		"queue length":  wrapper.WithMaxQueueLength(-1),
	} {
		_, err := c.Submit(context.Background(), input(), o)
		var ie *wrapper.InputError
		assert.ErrorAs(t, err, &ie, name)
	}
	assert.Empty(t, *got)
}

func TestInvalidInputSendsNothingAndNamesEveryField(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		in := gen.Input{
			ImageURL:          "ftp://example.com/a.png",
			Strength:          ptr(1.5),
			NumInferenceSteps: ptr(5),
			GuidanceScale:     ptr(25.0),
			NumImages:         ptr(0),
			OutputFormat:      ptr(gen.InputOutputFormat("webp")),
			Acceleration:      ptr(gen.InputAcceleration("ludicrous")),
		}
		_, err := c.Run(context.Background(), in)
		var ie *wrapper.InputError
		require.ErrorAs(t, err, &ie)
		var fields []string
		for _, f := range ie.Fields {
			fields = append(fields, f.Field)
		}
		assert.ElementsMatch(t, []string{"image_url", "prompt", "strength", "num_inference_steps", "guidance_scale", "num_images", "output_format", "acceleration"}, fields)
		assert.Contains(t, err.Error(), "strength: 1.5 is out of range: allowed 0.01 to 1")
		assert.Contains(t, err.Error(), "use jpeg or png")
		assert.Zero(t, srv.Stats().Submits, "nothing went on the wire")
	})
}

func TestDefaultEnumValueMeansOmit(t *testing.T) {
	clearEnv(t)
	srv, got := recordingServer(t)
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("tok"), wrapper.WithHTTPClient(spectest.NewClient(t, nil)))
	require.NoError(t, err)
	in := input()
	in.OutputFormat = ptr(gen.InputOutputFormat("default"))
	in.Acceleration = ptr(gen.InputAcceleration("default"))
	in.Seed = ptr(int64(9007199254740993))
	_, err = c.Submit(context.Background(), in)
	require.NoError(t, err)
	assert.Equal(t, "default", string(*in.OutputFormat), "the caller's input is not modified")
	body, _ := io.ReadAll((*got)[0].Body)
	var sent map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &sent))
	assert.NotContains(t, sent, "output_format")
	assert.NotContains(t, sent, "acceleration")
	assert.Equal(t, "9007199254740993", string(sent["seed"]), "a 64-bit seed is sent exactly")
	assert.NotContains(t, sent, "strength", "no defaults are filled in client-side")
}

func TestNoCredentialReachesAForeignOrigin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.ForeignURLs(), queuetest.QueueTime(2 * time.Second), queuetest.RunTime(time.Second)})
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		var raw struct {
			StatusURL string `json:"status_url"`
		}
		require.NoError(t, json.Unmarshal(q.Raw, &raw))
		u, _ := url.Parse(raw.StatusURL)
		assert.Equal(t, queuetest.PipeForeignHost, u.Hostname(), "the server did hand out foreign URLs")
		out, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		assert.NotEmpty(t, out.Images)
		_, err = c.Wait(context.Background(), q.RequestID)
		require.NoError(t, err)
		assert.Zero(t, srv.Stats().ForeignRequests, "status, result and cancel stay on the configured origin")
		// The images live on the foreign origin (as fal's CDN): it is
		// contacted, and never with the key.
		paths, err := c.SaveImages(context.Background(), &out.Output, t.TempDir(), out.RequestID)
		require.NoError(t, err)
		assert.NotEmpty(t, paths)
		st := srv.Stats()
		assert.Equal(t, int64(len(paths)), st.ForeignRequests, "the foreign origin was contacted for the images")
		assert.Zero(t, st.ForeignAuthorized, "and received no key")
	})
}

func TestABasePathPrefixIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.WithBasePath("/gw")})
		out, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		assert.NotEmpty(t, out.Images)
		assert.Zero(t, srv.Stats().ForeignRequests)
	})
}

func TestRedirectOffOriginIsNotFollowed(t *testing.T) {
	clearEnv(t)
	var leaked []string
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = append(leaked, r.Header.Get("Authorization"))
	}))
	defer evil.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, evil.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer api.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(api.URL), wrapper.WithBearerToken(testToken), wrapper.WithRetries(0))
	require.NoError(t, err)
	_, err = c.Status(context.Background(), "r1", false)
	require.Error(t, err)
	assert.Empty(t, leaked)
}

func TestKeyNeverPrintedOrLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		srv, c := setup(t, instant, wrapper.WithLogger(logger))
		srv.Inject(queuetest.OpSubmit, queuetest.Fail(500))
		srv.Inject(queuetest.OpStatus, queuetest.Fail(429))
		_, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		_, err = c.Status(context.Background(), "missing", true)
		require.Error(t, err)

		for name, s := range map[string]string{
			"String": c.String(),
			"%v":     fmt.Sprintf("%v", c),
			"%+v":    fmt.Sprintf("%+v", c),
			"%#v":    fmt.Sprintf("%#v", c),
			"error":  err.Error(),
			"logs":   logs.String(),
		} {
			assert.NotContains(t, s, testToken, name)
			assert.NotContains(t, s, "0123456789", name)
		}
		assert.Contains(t, logs.String(), "retrying")
	})
}

func TestUnknownStatusAndExtraFieldsDecode(t *testing.T) {
	clearEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/status"):
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"status":"FAILED","brand_new":{"x":[1,2]},"logs":null}`)
		default:
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"detail":"runner crashed","error_type":"runner_server_error"}`)
		}
	}))
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("t"), wrapper.WithHTTPClient(spectest.NewClient(t, nil)), wrapper.WithRetries(0))
	require.NoError(t, err)
	st, err := c.Status(context.Background(), "r1", true)
	require.NoError(t, err)
	assert.Equal(t, "FAILED", st.Status)
	assert.Contains(t, string(st.Raw), `"brand_new":{"x":[1,2]}`)

	// A job that ends on an unknown terminal status returns the result's
	// error instead of polling forever.
	_, err = c.Wait(context.Background(), "r1")
	var apiErr *wrapper.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "runner_server_error", apiErr.ErrorType)
}

func TestResponseSizeLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, instant, wrapper.WithMaxResponseBytes(200))
		in := input()
		in.NumImages = ptr(4)
		in.SyncMode = ptr(true) // images come back inline, far above 200 bytes
		_, err := c.Run(context.Background(), in)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "200-byte limit")
	})
}

// A loopback base URL (a local simulator) needs no key, as in the CLI;
// any other still does.
func TestALoopbackBaseURLNeedsNoKey(t *testing.T) {
	for _, base := range []string{"http://127.0.0.1:8787", "http://localhost:8787", "http://[::1]:8787"} {
		c, err := wrapper.New(wrapper.WithBaseURL(base), wrapper.WithEnvironment(func(string) string { return "" }))
		require.NoError(t, err, base)
		assert.Contains(t, c.String(), "[REDACTED]", "the placeholder is redacted like a key")
	}
	_, err := wrapper.New(wrapper.WithBaseURL("https://example.com"), wrapper.WithEnvironment(func(string) string { return "" }))
	assert.ErrorIs(t, err, wrapper.ErrNoCredentials)

	srv := spectest.NewServer(t)
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithHTTPClient(spectest.Client(t, srv)), wrapper.WithEnvironment(func(string) string { return "" }))
	require.NoError(t, err)
	_, err = c.Run(context.Background(), input())
	require.NoError(t, err, "the simulator accepts the placeholder")
}
