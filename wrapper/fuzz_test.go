package wrapper

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/inputcheck"
	"github.com/fluxi2i/fluxi2i/internal/media"
)

func FuzzDecodeStatus(f *testing.F) {
	f.Add([]byte(`{"status":"IN_QUEUE","queue_position":3}`))
	f.Add([]byte(`{"status":"COMPLETED","logs":[{"message":"m","level":"INFO"}],"metrics":{"inference_time":1.5}}`))
	f.Add([]byte(`{"status":"FAILED","new":{"a":[1]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := decodeStatus(body)
		if err != nil {
			return
		}
		if st.Status == "" {
			t.Fatal("decoded a status without one")
		}
		if !bytes.Equal(st.Raw, body) {
			t.Fatal("Raw is not the body")
		}
	})
}

// decodeOutput decodes a result body as the client does: gen's parser.
func decodeOutput(body []byte) (*gen.Output, error) {
	r, err := gen.ParseGetResultResponse(&http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body))})
	if err != nil {
		return nil, err
	}
	return r.JSON200, nil
}

func FuzzDecodeOutput(f *testing.F) {
	f.Add([]byte(`{"images":[{"url":"https://x/a.png"}],"timings":{},"seed":9223372036854775807,"has_nsfw_concepts":[false],"prompt":"p"}`))
	f.Add([]byte(`{"images":null}`))
	f.Add([]byte(`{"seed":1.5e300}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := decodeOutput(body)
		if err != nil || out == nil || out.Images == nil {
			return
		}
		if out.Images == nil {
			t.Fatal("an output without images decoded")
		}
		// A decoded output encodes back and decodes to the same seed.
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeOutput(b)
		if err != nil || again == nil || again.Seed != out.Seed {
			t.Fatalf("round trip changed the output: %v", err)
		}
	})
}

func FuzzAPIError(f *testing.F) {
	f.Add(422, []byte(`{"detail":[{"loc":["body","strength"],"msg":"too big","type":"v"}]}`), "")
	f.Add(503, []byte(`{"detail":"busy","error_type":"runner_scheduling_failure"}`), "true")
	f.Add(400, []byte(`{"status":"ALREADY_COMPLETED"}`), "")
	f.Add(502, []byte(`<html>bad gateway</html>`), "false")
	f.Fuzz(func(t *testing.T, code int, body []byte, retryable string) {
		if code < 100 || code > 999 {
			return
		}
		h := http.Header{}
		h.Set("X-Fal-Retryable", retryable)
		e := apiError("result", "r-1", &http.Response{StatusCode: code, Header: h}, body)
		msg := e.Error()
		if !strings.Contains(msg, "r-1") || !strings.Contains(msg, "HTTP") {
			t.Fatalf("error does not name the request and status: %q", msg)
		}
		if e.Retryable && !retryableStatus(code) && !strings.EqualFold(retryable, "true") {
			t.Fatal("retryable without cause")
		}
	})
}

func FuzzDataURI(f *testing.F) {
	f.Add("data:image/png;base64,iVBORw0KGgo=", []byte("\x89PNG"))
	f.Add("data:image/jpeg;base64,/9j/4AAQ", []byte{0xff, 0xd8})
	f.Add("data:image/png;base64,@@", []byte{})
	f.Add("data:text/plain,hi", []byte("hi"))
	f.Add("https://example.com/a.png", []byte(nil))
	f.Fuzz(func(t *testing.T, s string, payload []byte) {
		// Whatever comes in: no panic, and only data URIs decode.
		if d, err := media.ParseDataURI(s); err == nil {
			if b, err := d.Decode(); err == nil {
				media.Sniff(b)
			}
			if !media.IsDataURI(s) {
				t.Fatal("parsed something that is not a data URI")
			}
		}
		inputcheck.ImageURL(s)
		// Any bytes made into an image data URI pass validation and
		// decode back to themselves.
		for _, typ := range media.ImageTypes {
			uri := "data:image/" + typ + ";base64," + base64.StdEncoding.EncodeToString(payload)
			if msg := inputcheck.ImageURL(uri); msg != "" {
				t.Fatalf("%s rejected: %s", typ, msg)
			}
			d, err := media.ParseDataURI(uri)
			if err != nil {
				t.Fatal(err)
			}
			b, err := d.Decode()
			if err != nil || !bytes.Equal(b, payload) {
				t.Fatalf("round trip failed: %v", err)
			}
		}
	})
}

func FuzzWebhookVerify(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(pub)}}})
	}))
	f.Cleanup(jwks.Close)
	now := time.Unix(1_800_000_000, 0)
	v := &WebhookVerifier{JWKSURL: jwks.URL, Now: func() time.Time { return now }}
	orig := []byte(`{"request_id":"r-1","status":"OK","payload":{"images":[],"timings":{},"seed":1,"has_nsfw_concepts":[],"prompt":"p"}}`)
	sum := sha256.Sum256(orig)
	ts := "1800000000"
	sig := hex.EncodeToString(ed25519.Sign(priv, []byte("r-1\nu-1\n"+ts+"\n"+hex.EncodeToString(sum[:]))))

	f.Add(orig, "r-1", ts, sig)
	f.Add([]byte(`{}`), "r-1", ts, sig)
	f.Add(orig, "r-2", "1800000001", sig)
	f.Add(orig, "r-1", ts, strings.Repeat("0", 128))
	f.Fuzz(func(t *testing.T, body []byte, reqID, stamp, signature string) {
		h := http.Header{}
		h.Set("X-Fal-Webhook-Request-Id", reqID)
		h.Set("X-Fal-Webhook-User-Id", "u-1")
		h.Set("X-Fal-Webhook-Timestamp", stamp)
		h.Set("X-Fal-Webhook-Signature", signature)
		err := v.Verify(context.Background(), h, body)
		genuine := bytes.Equal(body, orig) && reqID == "r-1" && stamp == ts && strings.EqualFold(signature, sig)
		if err == nil && !genuine {
			t.Fatalf("accepted a delivery that was not signed: %q %q %q", body, reqID, stamp)
		}
		if genuine && err != nil {
			t.Fatalf("rejected the genuine delivery: %v", err)
		}
		DecodeWebhook(body)
	})
}
