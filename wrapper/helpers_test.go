package wrapper_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

const testToken = "sk-test-0123456789-secret"

// setup starts a pipe queuetest server (call it inside synctest.Test so
// queue times pass in fake time) and a client whose every request and
// response is validated against the spec.
func setup(t *testing.T, sopts []queuetest.Option, copts ...wrapper.Option) (*queuetest.Server, *wrapper.Client) {
	t.Helper()
	srv := spectest.NewPipeServer(t, sopts...)
	base := []wrapper.Option{wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(spectest.Client(t, srv)), wrapper.WithEnvironment(nil)}
	c, err := wrapper.New(append(base, copts...)...)
	require.NoError(t, err)
	return srv, c
}

func input() gen.Input {
	return gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "a cat dressed as a wizard"}
}

func ptr[T any](v T) *T { return &v }
