package webhooktest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/webhooktest"
)

const okBody = `{"request_id":"r-1","status":"OK","payload":{"images":[{"url":"https://fal.media/a.jpeg"}],"timings":{},"seed":9007199254740993,"has_nsfw_concepts":[false],"prompt":"p"}}`

// The signature is fal's: hex ED25519 over id, user, timestamp and the
// body's hex SHA-256, joined by newlines, verifiable with the public key.
func TestSignIsFalsFormat(t *testing.T) {
	s := webhooktest.NewSigner()
	s.Now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	h := s.Sign("r-1", "u-1", []byte(okBody))
	assert.Equal(t, "r-1", h.Get("X-Fal-Webhook-Request-Id"))
	assert.Equal(t, "u-1", h.Get("X-Fal-Webhook-User-Id"))
	assert.Equal(t, "1800000000", h.Get("X-Fal-Webhook-Timestamp"))
	sig, err := hex.DecodeString(h.Get("X-Fal-Webhook-Signature"))
	require.NoError(t, err, "hex")
	sum := sha256.Sum256([]byte(okBody))
	msg := "r-1\nu-1\n1800000000\n" + hex.EncodeToString(sum[:])
	assert.True(t, ed25519.Verify(s.PublicKey(), []byte(msg), sig))
}

// The JWKS is fal's shape: OKP, Ed25519, x in unpadded base64url.
func TestJWKSShape(t *testing.T) {
	s := webhooktest.NewSigner()
	rec := httptest.NewRecorder()
	s.JWKS().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &set))
	require.Len(t, set.Keys, 1)
	assert.Equal(t, "OKP", set.Keys[0]["kty"])
	assert.Equal(t, "Ed25519", set.Keys[0]["crv"])
	assert.Equal(t, base64.RawURLEncoding.EncodeToString(s.PublicKey()), set.Keys[0]["x"])

	rec = httptest.NewRecorder()
	s.JWKS().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	assert.Equal(t, 405, rec.Code)
}

// End to end: Deliver, signed by the kit, verified by WebhookVerifier.Handler
// against the kit's JWKS; another signer's deliveries are refused.
func TestDeliverVerifiesAgainstTheJWKS(t *testing.T) {
	s := webhooktest.NewSigner()
	keys := httptest.NewServer(s.JWKS())
	defer keys.Close()
	v := &wrapper.WebhookVerifier{JWKSURL: keys.URL}
	var got []wrapper.WebhookEvent
	hook := httptest.NewServer(v.Handler(func(_ context.Context, ev wrapper.WebhookEvent) error {
		got = append(got, ev)
		return nil
	}))
	defer hook.Close()
	ctx := context.Background()

	code, err := s.Deliver(ctx, hook.URL, []byte(okBody))
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	msg := "Invalid status code: 422"
	code, err = s.Deliver(ctx, hook.URL, gen.WebhookPayload{RequestID: "r-2", Status: "ERROR", Error: &msg})
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	require.Len(t, got, 2)
	assert.Equal(t, "r-1", got[0].RequestID)
	assert.Equal(t, webhooktest.DefaultUserID, got[0].UserID)
	require.NotNil(t, got[0].Output)
	assert.Equal(t, int64(9007199254740993), got[0].Output.Seed, "a raw body keeps 64-bit seeds")
	var apiErr *wrapper.APIError
	require.ErrorAs(t, got[1].Err, &apiErr)
	assert.Equal(t, 422, apiErr.StatusCode)

	other := webhooktest.NewSigner()
	code, err = other.Deliver(ctx, hook.URL, []byte(okBody))
	require.NoError(t, err)
	assert.Equal(t, 401, code, "a key the JWKS does not hold")
	assert.Len(t, got, 2)

	_, err = s.Deliver(ctx, hook.URL, []byte(`{"status":"OK"}`))
	assert.Error(t, err, "a payload without a request id is not a delivery")
}

func ExampleSigner_Deliver() {
	signer := webhooktest.NewSigner()
	keys := httptest.NewServer(signer.JWKS())
	defer keys.Close()
	v := &wrapper.WebhookVerifier{JWKSURL: keys.URL}
	hook := httptest.NewServer(v.Handler(func(_ context.Context, ev wrapper.WebhookEvent) error {
		fmt.Println(ev.RequestID, ev.Status, ev.UserID)
		return nil
	}))
	defer hook.Close()

	code, err := signer.Deliver(context.Background(), hook.URL, []byte(okBody))
	fmt.Println(code, err)
	// Output:
	// r-1 OK webhooktest-user
	// 200 <nil>
}
