package wrapper

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestClassify is the retry decision as a table: whether another attempt
// may help, and whether the server may have acted on this one.
func TestClassify(t *testing.T) {
	api := func(code int, h http.Header) error {
		if h == nil {
			h = http.Header{}
		}
		return apiError("submit", "", &http.Response{StatusCode: code, Header: h}, nil)
	}
	dial := &sendError{op: "submit", sent: !notSent(&net.OpError{Op: "dial", Err: errors.New("refused")}), err: errors.New("refused")}
	for _, c := range []struct {
		name             string
		o                outcome
		retry, ambiguous bool
	}{
		{"success", outcome{}, false, false},
		{"connection refused", outcome{err: dial}, true, false},
		{"reset after sending", outcome{err: &sendError{sent: true, err: io.ErrUnexpectedEOF}}, true, true},
		{"idle timeout", outcome{err: &sendError{sent: true, err: errIdle}}, true, true},
		{"body over the limit", outcome{err: &sendError{sent: true, err: &tooLargeError{10}}, status: 200}, false, true},
		{"408", outcome{err: api(408, nil), status: 408}, true, true},
		{"429", outcome{err: api(429, nil), status: 429}, true, false},
		{"500", outcome{err: api(500, nil), status: 500}, true, true},
		{"502", outcome{err: api(502, nil), status: 502}, true, true},
		{"503", outcome{err: api(503, nil), status: 503}, true, false},
		{"504", outcome{err: api(504, nil), status: 504}, true, true},
		{"504 of the caller's start deadline", outcome{err: api(504, http.Header{"X-Fal-Request-Timeout-Type": {"user"}}), status: 504}, false, false},
		{"503 marked not retryable", outcome{err: api(503, http.Header{"X-Fal-Retryable": {"false"}}), status: 503}, false, false},
		{"400 marked retryable", outcome{err: api(400, http.Header{"X-Fal-Retryable": {"true"}}), status: 400}, true, true},
		{"400", outcome{err: api(400, nil), status: 400}, false, false},
		{"401", outcome{err: api(401, nil), status: 401}, false, false},
		{"404", outcome{err: api(404, nil), status: 404}, false, false},
		{"422", outcome{err: api(422, nil), status: 422}, false, false},
		{"undecodable 200", outcome{err: errors.New("unexpected end of JSON input"), status: 200}, true, true},
		{"not built", outcome{err: errors.New("bad URL")}, false, false},
	} {
		retry, ambiguous := classify(c.o)
		assert.Equal(t, c.retry, retry, "%s: retry", c.name)
		assert.Equal(t, c.ambiguous, ambiguous, "%s: ambiguous", c.name)
	}
}

// TestRetryDelay: Retry-After wins over the backoff, is capped, and never
// goes below the floor (a "Retry-After: 0" or a past date is no busy loop).
func TestRetryDelay(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	fixed := Backoff(func(int) time.Duration { return 7 * time.Second })
	floor := 100 * time.Millisecond
	h := func(v string) outcome { return outcome{header: http.Header{"Retry-After": {v}}} }
	for _, c := range []struct {
		o    outcome
		want time.Duration
	}{
		{outcome{}, 7 * time.Second},
		{h("3"), 3 * time.Second},
		{h("0.5"), 500 * time.Millisecond},
		{h("0"), floor},
		{h(now.Add(-time.Hour).Format(http.TimeFormat)), floor},
		{h(now.Add(30 * time.Second).Format(http.TimeFormat)), 30 * time.Second},
		{h("86400"), maxRetryAfter},
		{h("soon"), 7 * time.Second},
		{h("-1"), 7 * time.Second},
	} {
		assert.Equal(t, c.want, retryDelay(c.o, 1, fixed, floor, now), "%v", c.o.header)
	}
}

// TestPersistence: a status poll keeps trying every retryable failure; a
// finished job's result call keeps trying only what got no answer or was
// told to come back.
func TestPersistence(t *testing.T) {
	noAnswer := outcome{err: &sendError{sent: true, err: io.ErrUnexpectedEOF}}
	busy := outcome{err: &APIError{StatusCode: 429, Retryable: true}, status: 429}
	crashed := outcome{err: &APIError{StatusCode: 500, Retryable: true}, status: 500}
	assert.True(t, persistRetryable.keepsTrying(crashed))
	assert.True(t, persistUnanswered.keepsTrying(noAnswer))
	assert.True(t, persistUnanswered.keepsTrying(busy))
	assert.False(t, persistUnanswered.keepsTrying(crashed))
	assert.True(t, persistUnanswered.keepsTrying(outcome{err: &APIError{StatusCode: 502, Retryable: true}, status: 502}))
	assert.True(t, persistUnanswered.keepsTrying(outcome{err: errors.New("unexpected end of JSON input"), status: 200}), "a 2xx broken in transit")
	platform := outcome{err: &APIError{StatusCode: 500, Retryable: true}, status: 500, header: http.Header{"X-Fal-Error-Type": {"internal_error"}}}
	assert.True(t, persistUnanswered.keepsTrying(platform), "the platform's 500, not the model's")
	assert.False(t, persistNone.keepsTrying(noAnswer))
}

// TestTheKeyIsAttachedOnlyForTheOrigin checks the editor that attaches the
// credential by itself, without the guards around it (no redirect policy,
// no URL building): another scheme, host or port gets no key, and a key
// already on such a request is removed.
func TestTheKeyIsAttachedOnlyForTheOrigin(t *testing.T) {
	c, err := New(WithBaseURL("https://api.example.com/gw"), WithBearerToken("sk-secret"), WithEnvironment(nil))
	if err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]string{
		"https://api.example.com/gw/fal-ai/x":     "Bearer sk-secret",
		"https://API.example.com/other":           "Bearer sk-secret",
		"http://api.example.com/gw/fal-ai/x":      "",
		"https://api.example.com:8443/gw/fal-ai/": "",
		"https://evil.example.com/gw/fal-ai/x":    "",
		"https://api.example.com.evil.com/gw":     "",
	} {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("Authorization", "Bearer planted")
		c.authorize(req)
		assert.Equal(t, want, req.Header.Get("Authorization"), target)
	}
}
