package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTheSpecDrivesTheWire edits a copy of the project's spec (every path
// moved below another prefix, strength's maximum lowered, an Input enum
// added whose values collide with existing ones), regenerates with the
// project's own generate step, builds everything, and runs a test in the
// copy showing the moved paths on the wire (client and fake server alike),
// the new range refused before anything is sent, and no constant renamed.
func TestTheSpecDrivesTheWire(t *testing.T) {
	if testing.Short() {
		t.Skip("regenerates and builds a copy of the module")
	}
	dir := t.TempDir()
	files, err := exec.Command("git", "-C", "..", "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	for _, p := range strings.Fields(string(files)) {
		b, err := os.ReadFile(filepath.Join("..", p))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, p), b, 0o644))
	}

	specPath := filepath.Join(dir, "openapi/openapi.yaml")
	b, err := os.ReadFile(specPath)
	require.NoError(t, err)
	spec := string(b)
	edit := func(old, new string, n int) {
		t.Helper()
		require.Equal(t, n, strings.Count(spec, old), "the spec no longer has %q", old)
		spec = strings.ReplaceAll(spec, old, new)
	}
	edit("\n  /fal-ai/flux-1/", "\n  /api/v9/fal-ai/flux-1/", 5)
	edit("          minimum: 0.01\n          maximum: 1\n          default: 0.95\n", "          minimum: 0.01\n          maximum: 0.5\n          default: 0.5\n", 1)
	edit("        prompt:\n          type: string\n          minLength: 1\n",
		"        style:\n          type: string\n          enum: [none, jpeg, png, high, low, normal]\n        prompt:\n          type: string\n          minLength: 1\n", 1)
	spec = strings.ReplaceAll(spec, "strength: 0.95", "strength: 0.5") // the examples follow
	require.NoError(t, os.WriteFile(specPath, []byte(spec), 0o644))

	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s %v:\n%s", name, args, out)
	}
	run("go", "generate", "./...")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tests/zz_specchange_test.go"), []byte(changedSpecTest), 0o644))
	run("go", "build", "./...")
	run("go", "test", "-count=1", "-run", "^TestChangedSpec$", "./tests/")
}

// changedSpecTest runs inside the regenerated copy.
const changedSpecTest = `package tests

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// Every constant that existed keeps its name (this file would not build).
var _ = []any{
	gen.InputOutputFormatJpeg, gen.InputOutputFormatPng,
	gen.InputAccelerationNone, gen.InputAccelerationRegular, gen.InputAccelerationHigh,
	gen.SubmitParamsXFalQueuePriorityNormal, gen.SubmitParamsXFalQueuePriorityLow,
	gen.SubmitParamsXFalStoreION0, gen.SubmitParamsXFalNoRetryN1,
	wrapper.PriorityNormal, wrapper.PriorityLow,
	gen.InputStyleNone, gen.InputStyleJpeg, // and the new ones are prefixed too
}

type recorder struct {
	mu    sync.Mutex
	paths []string
	next  http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.paths = append(r.paths, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

func TestChangedSpec(t *testing.T) {
	srv := spectest.NewServer(t, queuetest.QueueTime(0), queuetest.RunTime(0))
	rec := &recorder{next: spectest.Client(t, srv).Transport}
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil),
		wrapper.WithHTTPClient(&http.Client{Transport: rec}))
	require.NoError(t, err)
	ctx := context.Background()

	in := gen.Input{ImageURL: "https://example.com/a.png", Prompt: "p"}
	res, err := c.Run(ctx, in)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Cancel(ctx, res.RequestID), wrapper.ErrAlreadyCompleted) // an answer all the same
	_, err = c.Status(ctx, res.RequestID, true)
	require.NoError(t, err)
	_, err = c.Run(ctx, in, wrapper.WithStatusMode(wrapper.StatusPoll))
	require.NoError(t, err)
	require.NotEmpty(t, rec.paths)
	ops := map[string]bool{}
	for _, p := range rec.paths {
		assert.True(t, strings.Contains(p, " /api/v9/fal-ai/flux-1/"), "every request below the new prefix: %s", p)
		switch method, path, _ := strings.Cut(p, " "); {
		case method == http.MethodPost:
			ops["submit"] = true
		case strings.HasSuffix(path, "/status/stream"):
			ops["stream"] = true
		case strings.HasSuffix(path, "/status"):
			ops["status"] = true
		case strings.HasSuffix(path, "/cancel"):
			ops["cancel"] = true
		default:
			ops["result"] = true
		}
	}
	assert.Len(t, ops, 5, "submit, stream, result, cancel and status all went out: %v", ops)

	// The lowered maximum is refused before anything is sent.
	before := srv.Stats().Submits
	s := 0.7
	in.Strength = &s
	_, err = c.Submit(ctx, in)
	var ie *wrapper.InputError
	require.True(t, errors.As(err, &ie), "%v", err)
	assert.Equal(t, "strength", ie.Fields[0].Field)
	assert.Contains(t, ie.Fields[0].Message, "0.01 to 0.5")
	assert.Equal(t, before, srv.Stats().Submits, "nothing was sent")
	s = 0.5
	_, err = c.Submit(ctx, in)
	require.NoError(t, err)
}
`
