package wrapper_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// jwks serves a JWKS of the given keys and counts fetches.
type jwks struct {
	mu      sync.Mutex
	keys    []ed25519.PublicKey
	fetches atomic.Int32
	srv     *httptest.Server
}

func newJWKS(t *testing.T, keys ...ed25519.PublicKey) *jwks {
	j := &jwks{keys: keys}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		defer j.mu.Unlock()
		var out struct {
			Keys []map[string]string `json:"keys"`
		}
		out.Keys = append(out.Keys, map[string]string{"kty": "RSA", "n": "ignored"})
		for i, k := range j.keys {
			out.Keys = append(out.Keys, map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": strconv.Itoa(i), "x": base64.RawURLEncoding.EncodeToString(k)})
		}
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwks) set(keys ...ed25519.PublicKey) { j.mu.Lock(); j.keys = keys; j.mu.Unlock() }

func keypair(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return pub, priv
}

// sign builds the headers fal sends for body.
func sign(priv ed25519.PrivateKey, reqID, userID string, ts time.Time, body []byte) http.Header {
	sum := sha256.Sum256(body)
	tss := strconv.FormatInt(ts.Unix(), 10)
	msg := reqID + "\n" + userID + "\n" + tss + "\n" + hex.EncodeToString(sum[:])
	h := http.Header{}
	h.Set("X-Fal-Webhook-Request-Id", reqID)
	h.Set("X-Fal-Webhook-User-Id", userID)
	h.Set("X-Fal-Webhook-Timestamp", tss)
	h.Set("X-Fal-Webhook-Signature", hex.EncodeToString(ed25519.Sign(priv, []byte(msg))))
	return h
}

const okBody = `{"request_id":"r-1","gateway_request_id":"g-1","status":"OK","payload":{"images":[{"url":"https://fal.media/a.jpeg","content_type":"image/jpeg"}],"timings":{"inference":1.1},"seed":9007199254740993,"has_nsfw_concepts":[false],"prompt":"p"}}`

func deliver(t *testing.T, h http.Handler, hdr http.Header, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestWebhookAcceptsAValidDelivery(t *testing.T) {
	pub, priv := keypair(t)
	keys := newJWKS(t, pub)
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL}
	var got []wrapper.WebhookEvent
	h := v.Handler(func(_ context.Context, ev wrapper.WebhookEvent) error { got = append(got, ev); return nil })

	rec := deliver(t, h, sign(priv, "r-1", "u-1", time.Now(), []byte(okBody)), okBody)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Len(t, got, 1)
	assert.Equal(t, "r-1", got[0].RequestID)
	assert.Equal(t, "g-1", got[0].GatewayRequestID)
	assert.Equal(t, "u-1", got[0].UserID, "the signed user id reaches the handler")
	require.NotNil(t, got[0].Output)
	assert.Equal(t, int64(9007199254740993), got[0].Output.Seed)
	assert.NoError(t, got[0].Err)

	rec = deliver(t, h, sign(priv, "r-1", "u-1", time.Now(), []byte(okBody)), okBody)
	assert.Equal(t, 200, rec.Code)
	assert.EqualValues(t, 1, keys.fetches.Load(), "keys are cached")
}

func TestWebhookRejections(t *testing.T) {
	pub, priv := keypair(t)
	_, other := keypair(t)
	keys := newJWKS(t, pub)
	now := time.Now()
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL, Now: func() time.Time { return now }}
	called := 0
	h := v.Handler(func(context.Context, wrapper.WebhookEvent) error { called++; return nil })

	forged := sign(priv, "r-1", "u-1", now, []byte(okBody))
	sig := []byte(forged.Get("X-Fal-Webhook-Signature"))
	sig[0] ^= 1
	if sig[0] > 'f' || (sig[0] > '9' && sig[0] < 'a') {
		sig[0] = '0'
	}
	forged.Set("X-Fal-Webhook-Signature", string(sig))
	missing := sign(priv, "r-1", "u-1", now, []byte(okBody))
	missing.Del("X-Fal-Webhook-User-Id")
	badHex := sign(priv, "r-1", "u-1", now, []byte(okBody))
	badHex.Set("X-Fal-Webhook-Signature", "zz")
	otherUser := sign(priv, "r-1", "u-1", now, []byte(okBody))
	otherUser.Set("X-Fal-Webhook-User-Id", "u-2")

	for name, c := range map[string]struct {
		hdr    http.Header
		body   string
		code   int
		reason error
	}{
		"forged signature": {forged, okBody, 401, wrapper.ErrWebhookSignature},
		"altered body":     {sign(priv, "r-1", "u-1", now, []byte(okBody)), strings.Replace(okBody, "a.jpeg", "b.jpeg", 1), 401, wrapper.ErrWebhookSignature},
		"altered header":   {otherUser, okBody, 401, wrapper.ErrWebhookSignature},
		"stale":            {sign(priv, "r-1", "u-1", now.Add(-301*time.Second), []byte(okBody)), okBody, 401, wrapper.ErrWebhookTimestamp},
		"future":           {sign(priv, "r-1", "u-1", now.Add(301*time.Second), []byte(okBody)), okBody, 401, wrapper.ErrWebhookTimestamp},
		"unknown key":      {sign(other, "r-1", "u-1", now, []byte(okBody)), okBody, 401, wrapper.ErrWebhookSignature},
		"missing header":   {missing, okBody, 400, wrapper.ErrWebhookMissingHeader},
		"no headers":       {http.Header{}, okBody, 400, wrapper.ErrWebhookMissingHeader},
		"bad hex":          {badHex, okBody, 401, wrapper.ErrWebhookSignature},
	} {
		t.Run(name, func(t *testing.T) {
			rec := deliver(t, h, c.hdr, c.body)
			assert.Equal(t, c.code, rec.Code, rec.Body.String())
			err := v.Verify(context.Background(), c.hdr, []byte(c.body))
			assert.ErrorIs(t, err, c.reason)
			var we *wrapper.WebhookError
			require.ErrorAs(t, err, &we)
			assert.Contains(t, rec.Body.String(), c.reason.Error(), "the answer gives the reason")
		})
	}
	assert.Zero(t, called)
	// Within tolerance passes.
	assert.NoError(t, v.Verify(context.Background(), sign(priv, "r-1", "u-1", now.Add(-299*time.Second), []byte(okBody)), []byte(okBody)))
}

func TestWebhookKeysRefetchedOnRotationAndExpiry(t *testing.T) {
	oldPub, oldPriv := keypair(t)
	newPub, newPriv := keypair(t)
	keys := newJWKS(t, oldPub)
	now := time.Now()
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL, Now: func() time.Time { return now }}
	ctx := context.Background()
	require.NoError(t, v.Verify(ctx, sign(oldPriv, "r", "u", now, []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`)))

	keys.set(oldPub, newPub)
	now = now.Add(2 * time.Minute)
	require.NoError(t, v.Verify(ctx, sign(newPriv, "r", "u", now, []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`)), "an unknown key makes it fetch again")
	assert.EqualValues(t, 2, keys.fetches.Load())

	// A burst of forgeries does not hammer the JWKS: one refetch a minute.
	_, stranger := keypair(t)
	for range 5 {
		assert.Error(t, v.Verify(ctx, sign(stranger, "r", "u", now, []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`)))
	}
	assert.EqualValues(t, 2, keys.fetches.Load())

	now = now.Add(25 * time.Hour)
	require.NoError(t, v.Verify(ctx, sign(oldPriv, "r", "u", now, []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`)))
	assert.EqualValues(t, 3, keys.fetches.Load(), "cached for 24 h")
}

func TestWebhookKeysUnavailable(t *testing.T) {
	_, priv := keypair(t)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) }))
	defer down.Close()
	v := &wrapper.WebhookVerifier{JWKSURL: down.URL}
	h := v.Handler(func(context.Context, wrapper.WebhookEvent) error { return nil })
	rec := deliver(t, h, sign(priv, "r", "u", time.Now(), []byte(okBody)), okBody)
	assert.Equal(t, 503, rec.Code, "fal should deliver again later")
}

func TestWebhookErrorPayloads(t *testing.T) {
	pub, priv := keypair(t)
	keys := newJWKS(t, pub)
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL}
	var got wrapper.WebhookEvent
	fail := false
	h := v.Handler(func(_ context.Context, ev wrapper.WebhookEvent) error {
		got = ev
		if fail {
			return errors.New("database down")
		}
		return nil
	})
	send := func(body string) int {
		return deliver(t, h, sign(priv, "r-9", "u", time.Now(), []byte(body)), body).Code
	}

	require.Equal(t, 200, send(`{"request_id":"r-9","status":"ERROR","error":"Invalid status code: 422","payload":{"detail":[{"loc":["body","image_url"],"msg":"could not download","type":"value_error"}]}}`))
	var apiErr *wrapper.APIError
	require.ErrorAs(t, got.Err, &apiErr)
	assert.Equal(t, 422, apiErr.StatusCode)
	assert.Equal(t, "r-9", apiErr.RequestID)
	require.Len(t, apiErr.Fields, 1)
	assert.Equal(t, "body.image_url", apiErr.Fields[0].Field)
	assert.Nil(t, got.Output)

	require.Equal(t, 200, send(`{"request_id":"r-9","status":"OK","payload":null,"payload_error":"Output too large"}`))
	require.Error(t, got.Err)
	assert.Contains(t, got.Err.Error(), "Output too large")

	assert.Equal(t, 400, send(`{"request_id":"r-9","status":"OK","payload":null}`))
	assert.Equal(t, 400, send(`not json`))

	fail = true
	assert.Equal(t, 500, send(strings.Replace(okBody, `"r-1"`, `"r-9"`, 1)), "a failing handler asks fal to deliver again")

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/hook", io.NopCloser(strings.NewReader(""))))
	assert.Equal(t, 405, rec.Code)
}

// A signature covers the body, but a body naming another request than the
// signed header is refused: a handler keyed on the body's id would act on
// a request the signer never vouched for.
func TestWebhookBodyMustNameTheSignedRequest(t *testing.T) {
	pub, priv := keypair(t)
	keys := newJWKS(t, pub)
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL}
	called := 0
	h := v.Handler(func(context.Context, wrapper.WebhookEvent) error { called++; return nil })
	ctx := context.Background()
	for name, body := range map[string]string{
		"another id": okBody, // names r-1
		"no id":      `{"status":"OK","payload":null,"payload_error":"x"}`,
		"not json":   `not json`,
	} {
		t.Run(name, func(t *testing.T) {
			hdr := sign(priv, "r-2", "u-1", time.Now(), []byte(body))
			rec := deliver(t, h, hdr, body)
			assert.Equal(t, 400, rec.Code, rec.Body.String())
			assert.Contains(t, rec.Body.String(), wrapper.ErrWebhookRequestID.Error())
			assert.ErrorIs(t, v.Verify(ctx, hdr, []byte(body)), wrapper.ErrWebhookRequestID)
			_, err := v.Event(ctx, hdr, []byte(body))
			assert.ErrorIs(t, err, wrapper.ErrWebhookRequestID)
		})
	}
	assert.Zero(t, called)
	// A forged delivery is still a signature failure, whatever its body.
	_, stranger := keypair(t)
	assert.ErrorIs(t, v.Verify(ctx, sign(stranger, "r-2", "u-1", time.Now(), []byte(okBody)), []byte(okBody)), wrapper.ErrWebhookSignature)
}

// Event hands over the signed user id, so a handler serving several
// accounts can tell them apart without pinning UserID.
func TestWebhookEventCarriesTheSignedUser(t *testing.T) {
	pub, priv := keypair(t)
	keys := newJWKS(t, pub)
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL}
	for _, user := range []string{"u-1", "u-2"} {
		ev, err := v.Event(context.Background(), sign(priv, "r-1", user, time.Now(), []byte(okBody)), []byte(okBody))
		require.NoError(t, err)
		assert.Equal(t, user, ev.UserID)
		assert.Equal(t, "r-1", ev.RequestID)
		require.NotNil(t, ev.Output)
	}
	ev, err := wrapper.DecodeWebhook([]byte(okBody))
	require.NoError(t, err)
	assert.Empty(t, ev.UserID, "an unverified decode has no signed user")
}
