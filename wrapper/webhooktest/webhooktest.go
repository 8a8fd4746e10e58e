// Package webhooktest signs webhook deliveries the way fal does and
// serves the signing key as a JWKS, so that a webhook handler (for
// instance wrapper.WebhookVerifier.Handler) can be tested without the network.
//
// fal's deliveries carry four headers: X-Fal-Webhook-Request-Id,
// X-Fal-Webhook-User-Id, X-Fal-Webhook-Timestamp (unix seconds) and
// X-Fal-Webhook-Signature, the ED25519 signature in hex of
//
//	request_id + "\n" + user_id + "\n" + timestamp + "\n" + hex(sha256(body))
//
// and the keys are published as a JWKS of OKP keys:
//
//	{"keys":[{"kty":"OKP","crv":"Ed25519","x":"<base64url of the 32-byte public key, no padding>"}]}
//
// Point wrapper.WebhookVerifier.JWKSURL at a server running Signer.JWKS to
// verify what Signer signs; queuetest.Webhooks delivers with a Signer.
package webhooktest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/fluxi2i/fluxi2i/wrapper/internal/webhookhdr"
)

// DefaultUserID is the user id a NewSigner signs for.
const DefaultUserID = "webhooktest-user"

// Signer signs deliveries with one ED25519 key. Set its fields before
// first use; it is then safe for concurrent use.
type Signer struct {
	// UserID is the fal user id deliveries are signed for (DefaultUserID
	// from NewSigner).
	UserID string
	// Now is the clock of the timestamps (default time.Now).
	Now func() time.Time
	// HTTPClient sends Deliver's requests (default http.DefaultClient).
	HTTPClient *http.Client

	key ed25519.PrivateKey
}

// NewSigner returns a Signer with a fresh random key.
func NewSigner() *Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return &Signer{UserID: DefaultUserID, key: priv}
}

// PublicKey is the key that verifies the Signer's signatures.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign returns the four signature headers fal sends with body, a delivery
// for requestID signed for userID at the Signer's now.
func (s *Signer) Sign(requestID, userID string, body []byte) http.Header {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ts := strconv.FormatInt(now().Unix(), 10)
	sum := sha256.Sum256(body)
	msg := requestID + "\n" + userID + "\n" + ts + "\n" + hex.EncodeToString(sum[:])
	h := http.Header{}
	h.Set(webhookhdr.RequestID, requestID)
	h.Set(webhookhdr.UserID, userID)
	h.Set(webhookhdr.Timestamp, ts)
	h.Set(webhookhdr.Signature, hex.EncodeToString(ed25519.Sign(s.key, []byte(msg))))
	return h
}

// JWKS serves the Signer's public key as fal serves its own (GET, JSON).
func (s *Signer) JWKS() http.Handler { return JWKS(s.PublicKey()) }

// JWKS serves keys as a JSON Web Key Set of Ed25519 (OKP) keys.
func JWKS(keys ...ed25519.PublicKey) http.Handler {
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
	}
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k)})
	}
	body, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "GET the key set", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
}

// Deliver POSTs payload to url as fal delivers a webhook, signed for the
// request_id payload names and the Signer's UserID. payload is sent as is
// when it is a []byte or json.RawMessage, and JSON-encoded otherwise (a
// gen.WebhookPayload, or a struct of your own). It returns the receiver's
// status code; err is set when the request could not be made or its
// answer not read (the status code is then 0).
func (s *Signer) Deliver(ctx context.Context, url string, payload any) (status int, err error) {
	var body []byte
	switch p := payload.(type) {
	case []byte:
		body = p
	case json.RawMessage:
		body = p
	default:
		if body, err = json.Marshal(payload); err != nil {
			return 0, fmt.Errorf("webhooktest: encoding the payload: %w", err)
		}
	}
	var named struct {
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &named); err != nil || named.RequestID == "" {
		return 0, errors.New("webhooktest: the payload is not a JSON object with a request_id")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range s.Sign(named.RequestID, s.UserID, body) {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	hc := s.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}
