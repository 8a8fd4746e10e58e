// Package webhookhdr names the headers fal signs webhook deliveries with,
// for the verifier (wrapper.WebhookVerifier) and the kit that signs them
// in tests (wrapper/webhooktest), without exporting them from wrapper.
package webhookhdr

// The four headers of a signed delivery.
const (
	RequestID = "X-Fal-Webhook-Request-Id"
	UserID    = "X-Fal-Webhook-User-Id"
	Timestamp = "X-Fal-Webhook-Timestamp" // unix seconds
	Signature = "X-Fal-Webhook-Signature" // hex of the ED25519 signature
)
