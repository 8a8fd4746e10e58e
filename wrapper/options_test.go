package wrapper_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// TestAnOptionThatDoesNotApplyIsAnError: options are one type for the
// client and calls, so the compiler cannot tell a submit option given to
// Wait; the call refuses it, naming the option and where it applies, and
// sends nothing.
func TestAnOptionThatDoesNotApplyIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		im, err := wrapper.ImageBytes(pngBytes(t, 16))
		require.NoError(t, err)
		ctx := context.Background()
		for name, call := range map[string]func() error{
			"WithImage to Wait": func() error { _, err := c.Wait(ctx, "r1", wrapper.WithImage(im)); return err },
			"WithWebhook to Updates": func() error {
				for _, err := range c.Updates(ctx, "r1", wrapper.WithWebhook("https://example.com/hook")) {
					return err
				}
				return nil
			},
			"WithBaseURL to Run": func() error { _, err := c.Run(ctx, input(), wrapper.WithBaseURL("https://evil.example")); return err },
			"WithOnUpdate to Submit": func() error {
				_, err := c.Submit(ctx, input(), wrapper.WithOnUpdate(func(wrapper.Status) {}))
				return err
			},
			"WithHTTPClient to Submit": func() error { _, err := c.Submit(ctx, input(), wrapper.WithHTTPClient(nil)); return err },
			"WithAtMostOnce to Wait":   func() error { _, err := c.Wait(ctx, "r1", wrapper.WithAtMostOnce()); return err },
			"WithOnQueued to Submit": func() error {
				_, err := c.Submit(ctx, input(), wrapper.WithOnQueued(func(*wrapper.Queued) {}))
				return err
			},
			"the zero Option to Submit": func() error { _, err := c.Submit(ctx, input(), wrapper.Option{}); return err },
		} {
			err := call()
			require.Error(t, err, name)
			assert.Contains(t, err.Error(), "does not apply", name)
		}
		_, err = wrapper.New(wrapper.WithImage(im), wrapper.WithBearerToken("k"))
		assert.ErrorContains(t, err, "WithImage does not apply to New")
		st := srv.Stats()
		assert.Zero(t, st.Submits+st.StatusCalls+st.StreamCalls, "nothing was sent")

		// Options that apply at both levels do: per call, over the client's.
		_, err = c.Run(ctx, input(), wrapper.WithRetries(0), wrapper.WithStatusMode(wrapper.StatusPoll), wrapper.WithAtMostOnce())
		require.NoError(t, err)
	})
}

func TestWithAPIKeyFollowsTheBaseURL(t *testing.T) {
	for base, scheme := range map[string]string{wrapper.FalURL: "Key", wrapper.AggregatorURL: "Bearer", "https://queue.fal.run:443": "Key", "http://127.0.0.1:8080": "Bearer"} {
		c, err := wrapper.New(wrapper.WithEnvironment(nil), wrapper.WithAPIKey("k"), wrapper.WithBaseURL(base))
		require.NoError(t, err)
		assert.Contains(t, c.String(), "auth: "+scheme, base)
	}
	// From the environment, as the CLI reads it, and options still win.
	env := map[string]string{wrapper.EnvAPIKey: "env-key", wrapper.EnvBaseURL: wrapper.FalURL}
	c, err := wrapper.New(wrapper.WithEnvironment(func(k string) string { return env[k] }))
	require.NoError(t, err)
	assert.Equal(t, wrapper.FalURL, c.BaseURL())
	assert.Contains(t, c.String(), "auth: Key")
	c, err = wrapper.New(wrapper.WithEnvironment(func(k string) string { return env[k] }), wrapper.WithBaseURL("https://gw.example"))
	require.NoError(t, err)
	assert.Equal(t, "https://gw.example", c.BaseURL())
	assert.Contains(t, c.String(), "auth: Bearer")
	_, err = wrapper.New(wrapper.WithEnvironment(nil))
	assert.ErrorIs(t, err, wrapper.ErrNoCredentials)
}
