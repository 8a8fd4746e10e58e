// Package spectest checks a queuetest server's traffic, both ways, against
// the project's OpenAPI spec (openapi/openapi.yaml) with kin-openapi. It is
// test infrastructure: import it from tests only, so that kin-openapi stays
// out of production binaries (queuetest itself does not link it).
//
//	srv := spectest.NewServer(t)            // closed, and checked, when the test ends
//	c, _ := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"),
//		wrapper.WithHTTPClient(spectest.Client(t, srv)))
//
// A request that breaks the spec reaching the server, an answer of the
// server that breaks it, or one the client receives, fails the test.
package spectest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/fluxi2i/fluxi2i/internal/specvalidate"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// contract is queuetest.Contract backed by the spec.
type contract struct{ v *specvalidate.Validator }

// Contract returns the spec as a queuetest.Contract, for servers built
// with queuetest.New and mounted by hand.
func Contract() queuetest.Contract { return contract{specvalidate.MustLoad()} }

func (c contract) Request(r *http.Request, body []byte) (func(int, http.Header, []byte) error, error) {
	in, err := c.v.Request(r.Context(), r, body)
	if in == nil {
		return nil, err
	}
	ctx := r.Context()
	return func(code int, h http.Header, b []byte) error { return c.v.Response(ctx, in, code, h, b) }, err
}

func (c contract) Event(data []byte) error { return c.v.StatusEvent(data) }

// NewServer starts a queuetest server on loopback that checks its traffic
// against the spec; it is closed when the test ends, and any violation it
// saw fails the test.
func NewServer(t testing.TB, opts ...queuetest.Option) *queuetest.Server {
	t.Helper()
	return watch(t, queuetest.NewServer(append([]queuetest.Option{queuetest.WithContract(Contract())}, opts...)...))
}

// NewPipeServer is NewServer over in-memory pipes (see
// queuetest.NewPipeServer): call it inside a testing/synctest bubble for
// fake time.
func NewPipeServer(t testing.TB, opts ...queuetest.Option) *queuetest.Server {
	t.Helper()
	return watch(t, queuetest.NewPipeServer(append([]queuetest.Option{queuetest.WithContract(Contract())}, opts...)...))
}

func watch(t testing.TB, srv *queuetest.Server) *queuetest.Server {
	t.Cleanup(func() {
		t.Helper()
		if v := srv.Violations(); len(v) > 0 {
			t.Errorf("traffic that broke openapi/openapi.yaml reached the fake queue:\n%s", strings.Join(v, "\n"))
		}
	})
	t.Cleanup(srv.Close)
	return srv
}

// Client returns an *http.Client that reaches srv (and its foreign origin)
// and checks every request it sends and every response it receives
// against the spec, failing t on a violation.
func Client(t testing.TB, srv *queuetest.Server) *http.Client {
	return NewClient(t, srv.Client().Transport)
}

// NewClient returns an *http.Client over base (nil: a fresh transport)
// that checks its traffic against the spec, failing t on a violation: for
// a server that is not a queuetest one.
func NewClient(t testing.TB, base http.RoundTripper) *http.Client {
	return specvalidate.Client(t, base)
}
