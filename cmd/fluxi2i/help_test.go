package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/specvalidate"
)

// help COMMAND prints the command's help on stdout, as help alone prints
// the usage, and so does COMMAND --help.
func TestHelpCommandIsOnStdout(t *testing.T) {
	for _, cmd := range helpTopics {
		for _, args := range [][]string{{"help", cmd}, {cmd, "--help"}} {
			if cmd == "version" && args[0] == "version" {
				continue // version --help prints the version
			}
			r := cli(t, context.Background(), nil, args...)
			assert.Equal(t, 0, r.code, "%v", args)
			assert.Contains(t, r.stdout, "Usage: fluxi2i "+cmd, "%v", args)
			assert.Empty(t, r.stderr, "%v", args)
		}
	}
	r := cli(t, context.Background(), nil, "help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "Exit codes")
}

// An unknown help topic is a usage error with a suggestion.
func TestHelpUnknownTopic(t *testing.T) {
	r := cli(t, context.Background(), nil, "help", "stauts")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "did you mean status?")
	assert.Empty(t, r.stdout)
	r = cli(t, context.Background(), nil, "help", "nosuch")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "did you mean one of run, submit,")
	assert.Empty(t, r.stdout)
}

// A mistyped flag gets the flag it most likely meant in two lines, not the
// whole usage.
func TestMistypedFlagGetsASuggestion(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--promt", "p", "--image", sample}, "unknown flag --promt; did you mean --prompt?"},
		{[]string{"submit", "-imgae", sample}, "did you mean --image?"},
		{[]string{"batch", "--image", "x"}, "did you mean --images?"},
		{[]string{"status", "id", "--lgos"}, "did you mean --logs?"},
		{[]string{"proxy", "--cros", "http://x"}, "did you mean --cors?"},
	} {
		r := cli(t, context.Background(), nil, c.args...)
		assert.Equal(t, 2, r.code, "%v", c.args)
		assert.Contains(t, r.stderr, c.want, "%v", c.args)
		assert.LessOrEqual(t, strings.Count(r.stderr, "\n"), 2, "%v: %s", c.args, r.stderr)
		assert.NotContains(t, r.stderr, "Flags:")
		assert.Empty(t, r.stdout)
	}
	r := cli(t, context.Background(), nil, "run", "--zzzzzzzz")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "unknown flag --zzzzzzzz")
	assert.NotContains(t, r.stderr, "did you mean")
	r = cli(t, context.Background(), nil, "run", "--steps", "many")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--steps")
	assert.Contains(t, r.stderr, "fluxi2i help run")
}

// helpFlags are the flags a command's help lists, with their text.
func helpFlags(t *testing.T, cmd string) map[string]string {
	t.Helper()
	r := cli(t, context.Background(), nil, "help", cmd)
	require.Equal(t, 0, r.code)
	flags := map[string]string{}
	lines := strings.Split(r.stdout, "\n")
	re := regexp.MustCompile(`^  --([a-z-]+)`)
	for i, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil && i+1 < len(lines) {
			flags[m[1]] = strings.TrimSpace(lines[i+1])
		}
	}
	return flags
}

// Each command lists its own flags, each with what it means; the ranges
// are the spec's (gen's constants).
func TestEachCommandListsItsOwnFlags(t *testing.T) {
	for _, cmd := range helpTopics {
		for name, text := range helpFlags(t, cmd) {
			assert.NotEmpty(t, text, "%s --%s says what it means", cmd, name)
		}
	}
	run := helpFlags(t, "run")
	for name, want := range map[string]string{
		"strength":   fmt.Sprintf("%v (barely) to %v", gen.InputStrengthMinimum, gen.InputStrengthMaximum),
		"steps":      fmt.Sprintf("%d to %d", gen.InputNumInferenceStepsMinimum, gen.InputNumInferenceStepsMaximum),
		"guidance":   fmt.Sprintf("%v to %v", gen.InputGuidanceScaleMinimum, gen.InputGuidanceScaleMaximum),
		"num-images": fmt.Sprintf("%d to %d", gen.InputNumImagesMinimum, gen.InputNumImagesMaximum),
		"format":     "jpeg (the default) or png",
		"image":      "(required)",
		"prompt":     "(required)",
	} {
		assert.Contains(t, run[name], want, name)
	}

	batch := helpFlags(t, "batch")
	assert.NotContains(t, batch, "image", "batch takes --images or --manifest")
	assert.NotContains(t, batch["prompt"], "(required)")
	assert.Contains(t, batch["out"], "(required)")

	proxy := helpFlags(t, "proxy")
	for _, unused := range []string{"json", "timeout", "prompt"} {
		assert.NotContains(t, proxy, unused, "proxy does not use --%s", unused)
	}
	for _, used := range []string{"addr", "base-url", "api-key", "cors", "allow-anyone"} {
		assert.Contains(t, proxy, used)
	}
	r := cli(t, context.Background(), nil, "help", "proxy")
	assert.Contains(t, r.stdout, proxyPath)
	assert.Equal(t, "/api/fal/proxy", proxyPath, "fal's server proxies' default route")

	sim := helpFlags(t, "simulate")
	assert.NotContains(t, sim, "base-url")
	assert.Contains(t, sim, "webhooks")
	status := helpFlags(t, "status")
	assert.NotContains(t, status, "prompt")
	assert.Contains(t, status, "logs")
}

// The defaults the help gives are the spec's: gen generates the ranges but
// not the defaults, so they are checked here.
func TestFlagDefaultsAreTheSpecs(t *testing.T) {
	v, err := specvalidate.Load()
	require.NoError(t, err)
	props := v.Doc().Components.Schemas["Input"].Value.Properties
	for field, want := range map[string]any{
		"strength": defaultStrength, "num_inference_steps": float64(defaultSteps),
		"guidance_scale": defaultGuidance, "num_images": float64(defaultNumImages),
		"output_format": string(gen.InputOutputFormatJpeg),
	} {
		require.Contains(t, props, field)
		assert.Equal(t, want, props[field].Value.Default, field)
	}
}

// run --json on the built-in simulator prints the saved files, not image
// URLs of a server that is gone once run exits; against a real endpoint
// the URLs are kept.
func TestRunJSONHasNoDeadURLs(t *testing.T) {
	type out struct {
		Images []map[string]any `json:"images"`
	}
	r := cli(t, context.Background(), nil, "run", "--image", sample, "--prompt", "p", "--json", "--out", t.TempDir())
	require.Equal(t, 0, r.code, r.stderr)
	var o out
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &o))
	require.Len(t, o.Images, 1)
	assert.NotContains(t, o.Images[0], "url")
	assert.NotEmpty(t, o.Images[0]["path"])

	_, base := simServer(t)
	r = cli(t, context.Background(), nil, "run", "--base-url", base, "--api-key", "k", "--image", sample, "--prompt", "p", "--json", "--out", t.TempDir())
	require.Equal(t, 0, r.code, r.stderr)
	o = out{}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &o))
	require.Len(t, o.Images, 1)
	assert.Contains(t, o.Images[0]["url"], base+"/files/")
}
