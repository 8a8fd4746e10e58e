package queuetest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/fluxi2i/fluxi2i/wrapper/webhooktest"
)

// How a Server with Webhooks delivers: up to WebhookAttempts POSTs a job,
// the first when the job completes, then after WebhookBackoff doubling up
// to WebhookMaxBackoff (fal delivers about 10 times over 2 hours; a fake
// keeps it within minutes), each bounded by WebhookAttemptTimeout. Any
// answer but a 2xx is a failure.
const (
	WebhookAttempts       = 10
	WebhookBackoff        = time.Second
	WebhookMaxBackoff     = time.Minute
	WebhookAttemptTimeout = 15 * time.Second
)

// JWKSPath is where a Server with Webhooks serves its signing key, as fal
// serves its own at https://rest.alpha.fal.ai/.well-known/jwks.json.
const JWKSPath = "/.well-known/jwks.json"

// maxDeliveryLog bounds the attempts WebhookDeliveries remembers.
const maxDeliveryLog = 1000

// Webhooks makes the server deliver webhooks as fal does: when a job
// submitted with ?fal_webhook=URL completes, the server POSTs the
// WebhookPayload ({"request_id", "gateway_request_id", "status": "OK" or
// "ERROR", "payload", "error", "payload_error"}, the payload being the
// result call's body) to URL, with the four X-Fal-Webhook-* headers signed
// by signer, retrying on failure (see WebhookAttempts); it serves the
// signer's key at JWKSPath for wrapper.WebhookVerifier.JWKSURL. A job
// cancelled before it completed gets no delivery. Deliveries go through
// signer.HTTPClient, or Client() when it has none; Close stops them.
//
// It POSTs to whatever URL a client names: do not turn it on in a server
// strangers can reach unless that is meant.
func Webhooks(signer *webhooktest.Signer) Option {
	return func(c *config) { c.webhooks = signer }
}

// WebhookDelivery is one delivery attempt.
type WebhookDelivery struct {
	RequestID string
	URL       string
	Attempt   int       // from 1
	At        time.Time // when the attempt started
	// StatusCode is the receiver's answer, 0 when there was none (Err).
	StatusCode int
	Err        string
}

// WebhookDeliveries returns the delivery attempts so far (the latest
// 1000), oldest first.
func (s *Server) WebhookDeliveries() []WebhookDelivery {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	return append([]WebhookDelivery(nil), s.hooks.log...)
}

// webhookRunner owns the delivery goroutines: Close cancels them and waits.
type webhookRunner struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup
	log    []WebhookDelivery
}

// spawn runs fn in a goroutine owned by the runner, unless it is closed.
func (h *webhookRunner) spawn(fn func(ctx context.Context)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if h.ctx == nil {
		h.ctx, h.cancel = context.WithCancel(context.Background())
	}
	ctx := h.ctx
	h.wg.Go(func() { fn(ctx) })
}

func (h *webhookRunner) close() {
	h.mu.Lock()
	h.closed = true
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *webhookRunner) record(d WebhookDelivery) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.log) >= maxDeliveryLog {
		h.log = append(h.log[:0], h.log[1:]...)
	}
	h.log = append(h.log, d)
}

// routeWebhooks serves the JWKS when webhooks are on.
func (s *Server) routeWebhooks(m *http.ServeMux) {
	if s.cfg.webhooks != nil {
		m.Handle("GET "+JWKSPath, s.cfg.webhooks.JWKS())
	}
}

// scheduleWebhook arranges the delivery of job j, submitted by r, when
// webhooks are on and r names a fal_webhook.
func (s *Server) scheduleWebhook(r *http.Request, j *job) {
	target := r.URL.Query().Get("fal_webhook")
	if s.cfg.webhooks == nil || target == "" {
		return
	}
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		s.hooks.record(WebhookDelivery{RequestID: j.id, URL: target, At: time.Now(), Err: "fal_webhook is not an http(s) URL: not delivered"})
		return
	}
	// What the result call needs of the submit: where its files are served.
	host, secure := r.Host, r.TLS != nil
	end := j.submitted.Add(s.cfg.queueTime + s.cfg.runTime)
	s.hooks.spawn(func(ctx context.Context) {
		t := time.NewTimer(time.Until(end))
		defer t.Stop()
		select {
		case <-t.C:
		case <-j.ctx.Done(): // cancelled or forgotten
			return
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		cancelled := j.cancelled.Load() != 0
		s.mu.Unlock()
		if cancelled {
			return
		}
		body := s.webhookBody(ctx, j, host, secure)
		s.deliver(ctx, j.id, target, body)
	})
}

// webhookBody is the WebhookPayload of j: the result call's answer,
// wrapped as fal wraps it.
func (s *Server) webhookBody(ctx context.Context, j *job, host string, secure bool) []byte {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
	req.Host = host
	if secure {
		req.TLS = nonNilTLS
	}
	req.SetPathValue("request_id", j.id)
	a := s.result(&exchange{s: s, r: req}, nil)
	p := struct {
		RequestID        string          `json:"request_id"`
		GatewayRequestID string          `json:"gateway_request_id"`
		Status           string          `json:"status"`
		Payload          json.RawMessage `json:"payload"`
		Error            *string         `json:"error"`
		PayloadError     *string         `json:"payload_error"`
	}{RequestID: j.id, GatewayRequestID: j.id, Status: "OK", Payload: a.body}
	if !json.Valid(p.Payload) {
		p.Payload = json.RawMessage("null")
		p.PayloadError = ptr("the output could not be serialised")
	}
	if a.code < 200 || a.code > 299 {
		p.Status = "ERROR"
		p.Error = ptr("Invalid status code: " + strconv.Itoa(a.code))
	}
	b, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return b
}

// deliver POSTs body to target until a 2xx, WebhookAttempts times at
// most, backing off between attempts.
func (s *Server) deliver(ctx context.Context, id, target string, body []byte) {
	signer := *s.cfg.webhooks
	if signer.HTTPClient == nil {
		signer.HTTPClient = s.client
	}
	wait := WebhookBackoff
	for attempt := 1; attempt <= WebhookAttempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, WebhookAttemptTimeout)
		d := WebhookDelivery{RequestID: id, URL: target, Attempt: attempt, At: time.Now()}
		code, err := signer.Deliver(actx, target, body)
		cancel()
		d.StatusCode = code
		if err != nil {
			d.Err = err.Error()
		} else if code < 200 || code > 299 {
			d.Err = fmt.Sprintf("the receiver answered %d", code)
		}
		s.hooks.record(d)
		if d.Err == "" || attempt == WebhookAttempts {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, WebhookMaxBackoff)
	}
}

// nonNilTLS marks a rebuilt request as having come over TLS.
var nonNilTLS = &tls.ConnectionState{}
