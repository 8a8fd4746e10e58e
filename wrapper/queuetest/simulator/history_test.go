package simulator

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// The simulator serves the request history on its own origin, so a lost
// submit is settled against it as against fal: one job, found by its input.
func TestTheSimulatorSettlesALostSubmit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := spectest.NewPipeServer(t, Options(Config{})...)
		c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithAPIKey("k"), wrapper.WithHTTPClient(spectest.Client(t, srv)), wrapper.WithEnvironment(nil))
		require.NoError(t, err)
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter())
		q, err := c.Submit(context.Background(), gen.Input{ImageURL: sampleURI(t, 16, 16), Prompt: "p"}, wrapper.WithAtMostOnce())
		require.NoError(t, err)
		assert.True(t, q.FromHistory)
		res, err := c.Wait(context.Background(), q.RequestID)
		require.NoError(t, err)
		assert.Len(t, res.Images, 1)
		assert.EqualValues(t, 1, srv.Stats().Jobs)
	})
}
