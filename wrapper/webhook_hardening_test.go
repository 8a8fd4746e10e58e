package wrapper_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// countingBody counts the bytes a handler reads.
type countingBody struct {
	r io.Reader
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return nil }

// An unsigned, stale or foreign-user delivery is refused before a byte of
// its body is read; a signed one is read through the cap.
func TestWebhookChecksHeadersBeforeTheBody(t *testing.T) {
	pub, priv := keypair(t)
	keys := newJWKS(t, pub)
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL, UserID: "u-1", MaxBodyBytes: 1 << 20}
	called := 0
	h := v.Handler(func(context.Context, wrapper.WebhookEvent) error { called++; return nil })
	big := strings.Repeat("x", 60<<20)
	post := func(hdr http.Header, body string) (int, int64) {
		cb := &countingBody{r: strings.NewReader(body)}
		req := httptest.NewRequest(http.MethodPost, "/hook", nil)
		req.Body = cb
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, cb.n.Load()
	}
	code, read := post(http.Header{}, big)
	assert.Equal(t, 400, code)
	assert.Zero(t, read, "unsigned: nothing read")
	code, read = post(sign(priv, "r-1", "u-1", time.Now().Add(-time.Hour), []byte(big)), big)
	assert.Equal(t, 401, code)
	assert.Zero(t, read, "stale: nothing read")
	code, read = post(sign(priv, "r-1", "u-2", time.Now(), []byte(okBody)), okBody)
	assert.Equal(t, 401, code)
	assert.Zero(t, read, "another fal user: nothing read")
	code, read = post(sign(priv, "r-1", "u-1", time.Now(), []byte(big)), big)
	assert.Equal(t, 413, code)
	assert.LessOrEqual(t, read, int64(1<<20)+64<<10, "read through the cap only")
	code, _ = post(sign(priv, "r-1", "u-1", time.Now(), []byte(okBody)), okBody)
	assert.Equal(t, 200, code)
	assert.Equal(t, 1, called)
	assert.EqualValues(t, 1, keys.fetches.Load())
}

// With no keys cached and the JWKS down, forged deliveries, one after the
// other or all at once, cost one fetch a minute, not one each.
func TestForgedDeliveriesDoNotHammerTheJWKS(t *testing.T) {
	var fetches atomic.Int32
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		time.Sleep(20 * time.Millisecond)
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer down.Close()
	_, forger := keypair(t)
	v := &wrapper.WebhookVerifier{JWKSURL: down.URL}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			err := v.Verify(context.Background(), sign(forger, "r", "u", time.Now(), []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`))
			assert.ErrorIs(t, err, wrapper.ErrWebhookKeys)
		})
	}
	wg.Wait()
	for range 50 {
		assert.Error(t, v.Verify(context.Background(), sign(forger, "r", "u", time.Now(), []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`)))
	}
	assert.EqualValues(t, 1, fetches.Load())
}

// A JWKS that accepts and never answers costs a delivery FetchTimeout, not
// forever.
func TestJWKSFetchHasATimeout(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	_, priv := keypair(t)
	v := &wrapper.WebhookVerifier{JWKSURL: hang.URL, FetchTimeout: 100 * time.Millisecond}
	start := time.Now()
	err := v.Verify(context.Background(), sign(priv, "r", "u", time.Now(), []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`))
	assert.ErrorIs(t, err, wrapper.ErrWebhookKeys)
	assert.Less(t, time.Since(start), 5*time.Second)
	hang.CloseClientConnections()
}

// Deliveries signed for another fal account are refused when UserID is set.
func TestWebhookPinnedUser(t *testing.T) {
	pub, priv := keypair(t)
	keys := newJWKS(t, pub)
	v := &wrapper.WebhookVerifier{JWKSURL: keys.srv.URL, UserID: "u-1"}
	ctx := context.Background()
	require.NoError(t, v.Verify(ctx, sign(priv, "r", "u-1", time.Now(), []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`)))
	assert.ErrorIs(t, v.Verify(ctx, sign(priv, "r", "u-2", time.Now(), []byte(`{"request_id":"r"}`)), []byte(`{"request_id":"r"}`)), wrapper.ErrWebhookUser)
}
