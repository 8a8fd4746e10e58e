// Package webhookhdr names the headers fal signs webhook deliveries with,
// for the verifier (wrapper.WebhookVerifier) and the kit that signs them
// in tests (wrapper/webhooktest), without exporting them from wrapper.
package webhookhdr

import "github.com/fluxi2i/fluxi2i/gen"

// The four headers of a signed delivery (the spec's WebhookHeader).
const (
	RequestID = string(gen.WebhookHeaderRequestID)
	UserID    = string(gen.WebhookHeaderUserID)
	Timestamp = string(gen.WebhookHeaderTimestamp) // unix seconds
	Signature = string(gen.WebhookHeaderSignature) // hex of the ED25519 signature
)
