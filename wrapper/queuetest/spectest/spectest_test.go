package spectest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/internal/specvalidate"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// The fake queue marks broken answers with a header the validator knows.
func TestFaultHeadersAgree(t *testing.T) {
	assert.Equal(t, specvalidate.FaultHeader, queuetest.FaultHeader)
}

// A request that breaks the spec is counted by the server, refused, and
// would fail the test that made it (here a stand-in for the test).
func TestViolationsAreCaught(t *testing.T) {
	rec := &recordingT{TB: t}
	srv := spectest.NewServer(rec)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/fal-ai/flux-1/dev/image-to-image", strings.NewReader(`{"prompt":"p","image_url":"https://x/a.png","num_images":9}`))
	req.Header.Set("Authorization", "Key k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req) // the server's side only
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 422, resp.StatusCode)
	assert.EqualValues(t, 1, srv.Stats().Violations)
	srv.Close()
}

type recordingT struct {
	testing.TB
	errors []string
}

func (r *recordingT) Errorf(format string, args ...any) { r.errors = append(r.errors, format) }
