package tests

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// TestWebhookPayloadShapes: the three delivery shapes of PROTOCOL.md fit the
// spec's WebhookPayload (the submit operation's callback) and decode.
func TestWebhookPayloadShapes(t *testing.T) {
	schema := spec(t).Components.Schemas["WebhookPayload"].Value
	cb := spec(t).Paths.Value("/fal-ai/flux-1/dev/image-to-image").Post.Callbacks["jobDone"]
	require.NotNil(t, cb, "the webhook is documented as the submit's callback")

	for name, body := range map[string]string{
		"OK":            `{"request_id":"r-1","gateway_request_id":"g-1","status":"OK","payload":{"images":[{"url":"https://fal.media/a.jpeg"}],"timings":{"inference":1},"seed":12345678901234567,"has_nsfw_concepts":[false],"prompt":"p"},"error":null,"payload_error":null}`,
		"ERROR":         `{"request_id":"r-1","gateway_request_id":"g-1","status":"ERROR","payload":{"detail":[{"loc":["body","image_url"],"msg":"could not download","type":"value_error"}]},"error":"Invalid status code: 422"}`,
		"payload_error": `{"request_id":"r-1","status":"OK","payload":null,"payload_error":"Output could not be serialised"}`,
	} {
		var v any
		require.NoError(t, json.Unmarshal([]byte(body), &v))
		assert.NoError(t, schema.VisitJSON(v), name)
		ev, err := wrapper.DecodeWebhook([]byte(body))
		require.NoError(t, err, name)
		assert.Equal(t, "r-1", ev.RequestID)
		if name == "OK" {
			require.NotNil(t, ev.Output)
			assert.Equal(t, int64(12345678901234567), ev.Output.Seed)
			assert.NoError(t, ev.Err)
		} else {
			assert.Error(t, ev.Err, name)
		}
	}
}
