package wrapper

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
)

func TestEndpointsUseOnlyReturnedURLsOnTheOriginForThisJob(t *testing.T) {
	c, err := New(WithBaseURL("https://api.chainhub.tech"), WithBearerToken("t"))
	require.NoError(t, err)
	built := c.endpointsFor("r1", nil)
	// The paths are the spec's, as the generated request builders make them.
	for _, id := range []string{"r1", "a/b c?"} {
		ep := c.endpointsFor(id, nil)
		st, err := gen.NewGetStatusRequest(c.server+"/", id, nil)
		require.NoError(t, err)
		res, err := gen.NewGetResultRequest(c.server+"/", id)
		require.NoError(t, err)
		cn, err := gen.NewCancelRequest(c.server+"/", id)
		require.NoError(t, err)
		assert.Equal(t, endpoints{status: st.URL.String(), result: res.URL.String(), cancel: cn.URL.String()}, ep, id)
	}
	assert.Equal(t, endpoints{
		status: "https://api.chainhub.tech/fal-ai/flux-1/requests/r1/status",
		result: "https://api.chainhub.tech/fal-ai/flux-1/requests/r1",
		cancel: "https://api.chainhub.tech/fal-ai/flux-1/requests/r1/cancel",
	}, built)

	for name, c2 := range map[string]struct {
		q    Queued
		want endpoints
	}{
		"fal's own host (the seed's example)": {Queued{
			StatusURL: "https://queue.fal.run/fal-ai/flux-1/requests/r1/status", ResponseURL: "https://queue.fal.run/fal-ai/flux-1/requests/r1", CancelURL: "https://queue.fal.run/fal-ai/flux-1/requests/r1/cancel",
		}, built},
		"another app on the origin": {Queued{StatusURL: "https://api.chainhub.tech/fal-ai/flux-pro/requests/r1/status"}, built},
		"another job on the origin": {Queued{StatusURL: "https://api.chainhub.tech/fal-ai/flux-1/requests/r2/status"}, built},
		"other scheme":              {Queued{StatusURL: "http://api.chainhub.tech/fal-ai/flux-1/requests/r1/status"}, built},
		"other port":                {Queued{StatusURL: "https://api.chainhub.tech:8443/fal-ai/flux-1/requests/r1/status"}, built},
		"user info":                 {Queued{StatusURL: "https://x@api.chainhub.tech/fal-ai/flux-1/requests/r1/status"}, built},
		"a gateway prefix on the origin": {Queued{
			StatusURL: "https://api.chainhub.tech/gw/v2/fal-ai/flux-1/requests/r1/status", ResponseURL: "https://api.chainhub.tech/gw/v2/fal-ai/flux-1/requests/r1", CancelURL: "https://api.chainhub.tech/gw/v2/fal-ai/flux-1/requests/r1/cancel",
		}, endpoints{
			status: "https://api.chainhub.tech/gw/v2/fal-ai/flux-1/requests/r1/status",
			result: "https://api.chainhub.tech/gw/v2/fal-ai/flux-1/requests/r1",
			cancel: "https://api.chainhub.tech/gw/v2/fal-ai/flux-1/requests/r1/cancel",
		}},
	} {
		assert.Equal(t, c2.want, c.endpointsFor("r1", &c2.q), name)
	}
}
