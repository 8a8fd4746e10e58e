package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckGeneratedCatchesAHandEdit runs `make check-generated` on a copy
// of the generation inputs: it passes as committed and fails once gen/ is
// edited by hand.
func TestCheckGeneratedCatchesAHandEdit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the code generator")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	dir := t.TempDir()
	for _, p := range []string{"go.mod", "go.sum", "Makefile", "generate.go", "tools.go", "openapi/openapi.yaml", "openapi/oapi-codegen.yaml", "openapi/templates/client.tmpl", "gen/fluxi2i.gen.go", "gen/validate.gen.go", "internal/cmd/genvalidate/main.go"} {
		b, err := os.ReadFile(filepath.Join("..", p))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, p), b, 0o644))
	}
	check := func() (string, error) {
		cmd := exec.Command("make", "-s", "check-generated")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := check()
	require.NoError(t, err, "committed gen/ matches the spec: %s", out)

	gen := filepath.Join(dir, "gen/fluxi2i.gen.go")
	b, err := os.ReadFile(gen)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(gen, append(b, []byte("\n// a hand edit\n")...), 0o644))
	out, err = check()
	assert.Error(t, err)
	assert.Contains(t, out, "a hand edit")
	assert.Contains(t, out, "make generate")

	// A generator that fails fails the check (it used to end in "gen/
	// matches", the status of its last echo).
	require.NoError(t, os.WriteFile(gen, b, 0o644))
	require.NoError(t, os.Remove(filepath.Join(dir, "openapi/templates/client.tmpl")))
	out, err = check()
	assert.Error(t, err)
	assert.Contains(t, out, "the generators failed")
	assert.NotContains(t, out, "gen/ matches")
}

// TestGeneratedCodeHasNoEmbeddedSpec: embedded-spec stays off, or every
// user's binary would carry kin-openapi and the spec.
func TestGeneratedCodeHasNoEmbeddedSpec(t *testing.T) {
	b, err := os.ReadFile("../gen/fluxi2i.gen.go")
	require.NoError(t, err)
	src := string(b)
	assert.NotContains(t, src, "getkin/kin-openapi")
	assert.NotContains(t, src, "GetSwagger")
	assert.NotContains(t, src, "float32", "type: number maps to float64")
	assert.Contains(t, src, "type ClientWithResponses struct")
	if _, err := exec.LookPath("go"); err == nil {
		// Neither the client, nor queuetest (which the CLI's simulator
		// uses), nor the CLI links the validator: only spectest does.
		for _, pkg := range []string{"../wrapper", "../wrapper/queuetest", "../cmd/fluxi2i"} {
			out, err := exec.Command("go", "list", "-deps", pkg).Output()
			require.NoError(t, err)
			assert.NotContains(t, string(out), "kin-openapi", "%s links test infrastructure", pkg)
		}
	}
}

// TestTheCoreLinksNoOpenTelemetry: the tracing hook is the client's own
// interface; OpenTelemetry lives in the otel module, which the root
// go.mod does not require, so a program importing wrapper (or the CLI)
// links none of it.
func TestTheCoreLinksNoOpenTelemetry(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	require.NoError(t, err)
	assert.NotContains(t, string(mod), "go.opentelemetry.io")
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	for _, pkg := range []string{"../wrapper", "../wrapper/batch", "../wrapper/proxy", "../cmd/fluxi2i"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		require.NoError(t, err)
		assert.NotContains(t, string(out), "go.opentelemetry.io", "%s links OpenTelemetry", pkg)
	}
	out, err := exec.Command("go", "list", "-C", "../otel", "-deps", ".").Output()
	require.NoError(t, err)
	assert.Contains(t, string(out), "go.opentelemetry.io/otel/trace", "the otel module does")
}

// TestTheFakeLinksNoClient: the fake fal queue and what it is built from
// (the simulator, spectest, webhooktest's signer) depend on gen and the
// spec, never on the client they test, so that a bug of the client's is
// not shared by its fake.
func TestTheFakeLinksNoClient(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	const client = "github.com/fluxi2i/fluxi2i/wrapper"
	for _, pkg := range []string{"../wrapper/queuetest", "../wrapper/queuetest/simulator", "../wrapper/queuetest/spectest", "../wrapper/webhooktest"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		require.NoError(t, err)
		deps := strings.Fields(string(out))
		assert.True(t, slices.Contains(deps, "github.com/fluxi2i/fluxi2i/gen"), "%s is built on gen", pkg)
		assert.False(t, slices.Contains(deps, client), "%s links the client (%s): go list -deps %s", pkg, client, pkg)
	}
}
