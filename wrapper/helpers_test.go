package wrapper_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/specvalidate"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

const testToken = "sk-test-0123456789-secret"

// setup starts a pipe queuetest server (call it inside synctest.Test so
// queue times pass in fake time) and a client whose every request and
// response is validated against the spec.
func setup(t *testing.T, sopts []queuetest.Option, copts ...wrapper.Option) (*queuetest.Server, *wrapper.Client) {
	t.Helper()
	srv := queuetest.NewPipeServer(sopts...)
	t.Cleanup(srv.Close)
	hc := specvalidate.Client(t, srv.Client().Transport)
	base := []wrapper.Option{wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(hc)}
	c, err := wrapper.New(append(base, copts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.Empty(t, srv.Violations(), "requests that broke the spec reached the server")
	})
	return srv, c
}

func input() gen.Input {
	return gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "a cat dressed as a wizard"}
}

func ptr[T any](v T) *T { return &v }
