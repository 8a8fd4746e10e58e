package wrapper

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
	"github.com/fluxi2i/fluxi2i/wrapper/internal/webhookhdr"
)

// defaultJWKSURL is where fal publishes its webhook signing keys.
const defaultJWKSURL = "https://rest.alpha.fal.ai/.well-known/jwks.json"

// WebhookError is a delivery that failed verification.
type WebhookError struct {
	Reason error  // one of the ErrWebhook... values
	Detail string // what exactly was wrong
}

// Error gives the reason and the detail.
func (e *WebhookError) Error() string {
	return "fluxi2i: webhook rejected: " + errprefix.Strip(e.Reason.Error()) + ": " + errprefix.Strip(e.Detail)
}

// Unwrap returns Reason, for errors.Is.
func (e *WebhookError) Unwrap() error { return e.Reason }

// WebhookVerifier checks fal's ED25519 signatures on webhook deliveries:
// the message request_id, user_id, timestamp and hex(sha256(body)), joined
// by newlines, must verify under a key of fal's JWKS, and the timestamp must
// be within Tolerance of now. The signature header is hex (64 bytes, 128
// digits); the JWKS is {"keys": [...]} with each key
// {"kty":"OKP","crv":"Ed25519","x":"<unpadded base64url of 32 bytes>"}
// (other keys are skipped). Package wrapper/webhooktest signs deliveries
// and serves such a JWKS for tests; queuetest.Webhooks delivers them. Keys are cached for CacheFor and fetched
// again when no cached key verifies a signature (fal rotated its keys).
// Fetches are shared by concurrent deliveries, bounded by FetchTimeout, and
// come at most once a minute, failed ones included, so forged deliveries
// cannot make it hammer the JWKS. Safe for concurrent use; the zero value
// is ready.
//
// A delivery replayed within Tolerance verifies again: fal itself delivers
// again on failure (about 10 times over 2 hours), so make the handler
// idempotent by request id in any case.
type WebhookVerifier struct {
	// JWKSURL is where the signing keys are fetched (default fal's,
	// https://rest.alpha.fal.ai/.well-known/jwks.json; fal is moving it to
	// rest.fal.ai: set it when fal does).
	JWKSURL    string
	HTTPClient *http.Client     // default http.DefaultClient; no credential is sent
	Tolerance  time.Duration    // default 300 s
	CacheFor   time.Duration    // default 24 h
	Now        func() time.Time // default time.Now
	// FetchTimeout bounds one JWKS fetch (default 10 s).
	FetchTimeout time.Duration
	// UserID, when set, is the only fal user id whose deliveries are
	// accepted (X-Fal-Webhook-User-Id): deliveries signed for another
	// account are refused.
	UserID string
	// MaxBodyBytes caps a delivery's body in Handler (default 4 MiB:
	// payloads with image URLs are a few KB; sync_mode payloads carry the
	// images as data URIs, which four JPEGs of about 750 KB fit; raise it
	// for sync_mode PNGs).
	MaxBodyBytes int64

	mu        sync.Mutex
	keys      []ed25519.PublicKey
	fetched   time.Time     // when keys were fetched
	attempted time.Time     // the last fetch, failed or not
	inflight  chan struct{} // closed when the fetch under way ends
	fetchErr  error         // the last fetch's error
}

// minRefetch is the least time between two JWKS fetches.
const minRefetch = time.Minute

func (v *WebhookVerifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify checks one delivery's headers against its raw body: the
// signature, the timestamp, the pinned UserID, and that the body's
// request_id is the signed one (ErrWebhookRequestID: the body must be a
// JSON object naming it).
func (v *WebhookVerifier) Verify(ctx context.Context, h http.Header, body []byte) error {
	if err := v.verifySignature(ctx, h, body); err != nil {
		return err
	}
	var named struct {
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &named); err != nil {
		return &WebhookError{Reason: ErrWebhookRequestID, Detail: "the body is not a JSON delivery: " + err.Error()}
	}
	if signed := h.Get(webhookhdr.RequestID); named.RequestID != signed {
		return &WebhookError{Reason: ErrWebhookRequestID, Detail: fmt.Sprintf("signed for %.80q, the body names %.80q", signed, named.RequestID)}
	}
	return nil
}

// Event verifies one delivery (Verify) and decodes it (DecodeWebhook),
// with the signed user id in UserID.
func (v *WebhookVerifier) Event(ctx context.Context, h http.Header, body []byte) (WebhookEvent, error) {
	if err := v.Verify(ctx, h, body); err != nil {
		return WebhookEvent{}, err
	}
	ev, err := DecodeWebhook(body)
	if err != nil {
		return WebhookEvent{}, err
	}
	ev.UserID = h.Get(webhookhdr.UserID)
	return ev, nil
}

// verifySignature checks the headers and the ED25519 signature.
func (v *WebhookVerifier) verifySignature(ctx context.Context, h http.Header, body []byte) error {
	if err := v.checkHeaders(h); err != nil {
		return err
	}
	reqID, userID, ts, sigHex := h.Get(webhookhdr.RequestID), h.Get(webhookhdr.UserID), h.Get(webhookhdr.Timestamp), h.Get(webhookhdr.Signature)
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return &WebhookError{Reason: ErrWebhookSignature, Detail: "signature is not 64 hex-encoded bytes"}
	}
	sum := sha256.Sum256(body)
	msg := []byte(reqID + "\n" + userID + "\n" + ts + "\n" + hex.EncodeToString(sum[:]))

	keys, fresh, err := v.keySet(ctx, false)
	if err != nil {
		return &WebhookError{Reason: ErrWebhookKeys, Detail: err.Error()}
	}
	if verifiesAny(keys, msg, sig) {
		return nil
	}
	if !fresh {
		// An unknown key signed: fal may have rotated. Fetch again.
		if keys, _, err = v.keySet(ctx, true); err == nil && verifiesAny(keys, msg, sig) {
			return nil
		}
	}
	return &WebhookError{Reason: ErrWebhookSignature, Detail: fmt.Sprintf("request %.80q: forged, altered or signed by an unknown key", reqID)}
}

// checkHeaders checks what can be checked before the body is read: every
// signature header present, the timestamp within the tolerance, the user
// id the expected one.
func (v *WebhookVerifier) checkHeaders(h http.Header) error {
	userID, ts := h.Get(webhookhdr.UserID), h.Get(webhookhdr.Timestamp)
	var missing []string
	for _, name := range []string{webhookhdr.RequestID, webhookhdr.UserID, webhookhdr.Timestamp, webhookhdr.Signature} {
		val := h.Get(name)
		if val == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return &WebhookError{Reason: ErrWebhookMissingHeader, Detail: strings.Join(missing, ", ")}
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return &WebhookError{Reason: ErrWebhookTimestamp, Detail: fmt.Sprintf("%s %q is not unix seconds", webhookhdr.Timestamp, ts)}
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = 300 * time.Second
	}
	if skew := v.now().Sub(time.Unix(secs, 0)); skew > tol || skew < -tol {
		return &WebhookError{Reason: ErrWebhookTimestamp, Detail: fmt.Sprintf("%v from now, allowed %v", skew.Round(time.Second), tol)}
	}
	if v.UserID != "" && userID != v.UserID {
		return &WebhookError{Reason: ErrWebhookUser, Detail: fmt.Sprintf("signed for user %.80q, not the expected one", userID)}
	}
	return nil
}

func verifiesAny(keys []ed25519.PublicKey, msg, sig []byte) bool {
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return true
		}
	}
	return false
}

// keySet returns the cached keys, fetching when the cache is empty or
// expired, or when refresh is set; fresh tells that the keys were just
// fetched. One fetch runs at a time, shared by every caller that needs it,
// and none starts within minRefetch of the last attempt: meanwhile the
// cached keys (or the last fetch's error) are the answer. The lock is
// never held during a fetch.
func (v *WebhookVerifier) keySet(ctx context.Context, refresh bool) (keys []ed25519.PublicKey, fresh bool, err error) {
	cacheFor := v.CacheFor
	if cacheFor <= 0 {
		cacheFor = 24 * time.Hour
	}
	v.mu.Lock()
	for {
		valid := len(v.keys) > 0 && v.now().Sub(v.fetched) < cacheFor
		if valid && !refresh {
			keys = v.keys
			v.mu.Unlock()
			return keys, false, nil
		}
		if v.inflight == nil {
			break
		}
		wait := v.inflight // a fetch is under way: share it
		v.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		v.mu.Lock()
		if v.fetchErr == nil && len(v.keys) > 0 {
			keys = v.keys
			v.mu.Unlock()
			return keys, true, nil
		}
		refresh = false
	}
	valid := len(v.keys) > 0 && v.now().Sub(v.fetched) < cacheFor
	if !v.attempted.IsZero() && v.now().Sub(v.attempted) < minRefetch {
		keys, err = v.keys, v.fetchErr
		v.mu.Unlock()
		if valid {
			return keys, false, nil
		}
		if err == nil {
			err = errors.New("no valid key cached")
		}
		return nil, false, fmt.Errorf("%w (next JWKS fetch in under %v)", err, minRefetch)
	}
	done := make(chan struct{})
	v.inflight, v.attempted = done, v.now()
	v.mu.Unlock()

	timeout := v.FetchTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	fetched, ferr := v.fetch(fctx)
	cancel()

	v.mu.Lock()
	defer v.mu.Unlock()
	v.inflight, v.fetchErr = nil, ferr
	close(done)
	if ferr != nil {
		if valid {
			return v.keys, false, nil
		}
		return nil, false, ferr
	}
	v.keys, v.fetched = fetched, v.now()
	return fetched, true, nil
}

func (v *WebhookVerifier) fetch(ctx context.Context) ([]ed25519.PublicKey, error) {
	u := v.JWKSURL
	if u == "" {
		u = defaultJWKSURL
	}
	hc := v.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, err := readLimited(resp.Body, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("reading JWKS: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS answered HTTP %d", resp.StatusCode)
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			X   string `json:"x"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %w", err)
	}
	var keys []ed25519.PublicKey
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.X, "="))
		if err != nil || len(raw) != ed25519.PublicKeySize {
			continue
		}
		keys = append(keys, ed25519.PublicKey(raw))
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no Ed25519 key")
	}
	return keys, nil
}

// WebhookEvent is one verified delivery.
type WebhookEvent struct {
	RequestID        string
	GatewayRequestID string
	// UserID is the fal user the delivery was signed for
	// (X-Fal-Webhook-User-Id): filter on it when one handler serves
	// several accounts and WebhookVerifier.UserID is not set. DecodeWebhook
	// alone leaves it empty; Event and Handler fill it.
	UserID string
	// Status is "OK" or "ERROR".
	Status string
	// Output is the model's output when Status is OK.
	Output *gen.Output
	// Err is the failure when Status is ERROR (an *APIError carrying the
	// model's error body and field errors), or when fal could not
	// serialise the output (payload_error).
	Err error
	// Raw is the delivery's body.
	Raw json.RawMessage
}

// Handler returns an http.Handler that verifies each delivery with v,
// decodes it and calls fn with its request id. The signature headers,
// the timestamp and the user id are checked before a byte of the body is
// read, and the body is read through v.MaxBodyBytes. A forged, stale or
// malformed delivery (or one whose body names another request than the
// signed header) is answered 401, 400 or 413 with the reason, and fn is
// not called; an error from fn is answered 500, so fal delivers again.
//
// fal retries deliveries (about 10 times over 2 hours) and may deliver one
// twice: make fn idempotent by keying what it does on RequestID (for
// instance an insert that ignores a request id already stored).
func (v *WebhookVerifier) Handler(fn func(ctx context.Context, ev WebhookEvent) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "webhook deliveries are POSTs", http.StatusMethodNotAllowed)
			return
		}
		refuse := func(err error) {
			code := http.StatusUnauthorized
			switch {
			case errors.Is(err, ErrWebhookMissingHeader), errors.Is(err, ErrWebhookRequestID):
				code = http.StatusBadRequest
			case errors.Is(err, ErrWebhookKeys):
				code = http.StatusServiceUnavailable // not the sender's fault: let fal retry
			}
			http.Error(w, err.Error(), code)
		}
		// Nothing is read before the headers pass.
		if err := v.checkHeaders(r.Header); err != nil {
			refuse(err)
			return
		}
		limit := v.MaxBodyBytes
		if limit <= 0 {
			limit = 4 << 20
		}
		if r.ContentLength > limit {
			http.Error(w, fmt.Sprintf("body larger than %d bytes", limit), http.StatusRequestEntityTooLarge)
			return
		}
		body, err := readLimited(http.MaxBytesReader(w, r.Body, limit+1), limit)
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		ev, err := v.Event(r.Context(), r.Header, body)
		var we *WebhookError
		if errors.As(err, &we) {
			refuse(err)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := fn(r.Context(), ev); err != nil {
			http.Error(w, "handler failed; deliver again", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// DecodeWebhook decodes a (verified) delivery body.
func DecodeWebhook(body []byte) (WebhookEvent, error) {
	// Payload stays raw: decoding it through a map would round a 64-bit
	// seed to a float.
	var p struct {
		gen.WebhookPayload
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return WebhookEvent{}, fmt.Errorf("fluxi2i: webhook payload: %w", err)
	}
	if p.RequestID == "" {
		return WebhookEvent{}, errors.New("fluxi2i: webhook payload: no request_id")
	}
	ev := WebhookEvent{RequestID: p.RequestID, GatewayRequestID: deref(p.GatewayRequestID), Status: p.Status, Raw: body}
	raw := p.Payload
	isNull := len(raw) == 0 || string(raw) == "null"
	switch {
	case p.PayloadError != nil && *p.PayloadError != "":
		ev.Err = fmt.Errorf("fluxi2i: request %s: fal could not serialise the output: %s", p.RequestID, *p.PayloadError)
	case p.Status == "OK":
		var out gen.Output
		if isNull || json.Unmarshal(raw, &out) != nil {
			return WebhookEvent{}, fmt.Errorf("fluxi2i: webhook payload of request %s is not an output", p.RequestID)
		}
		ev.Output = &out
	default:
		code := 0
		if msg := deref(p.Error); strings.HasPrefix(msg, "Invalid status code: ") {
			code, _ = strconv.Atoi(strings.TrimPrefix(msg, "Invalid status code: "))
		}
		resp := &http.Response{StatusCode: code, Header: http.Header{}}
		apiErr := apiError("webhook", p.RequestID, resp, raw)
		if apiErr.Detail == "" && len(apiErr.Fields) == 0 {
			apiErr.Detail = deref(p.Error)
		}
		ev.Err = apiErr
	}
	return ev, nil
}
