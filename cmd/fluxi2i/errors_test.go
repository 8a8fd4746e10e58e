package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A value wrapper.New refuses is reported as the flag or environment
// variable it came from, with the library's one prefix: a bad API key is
// the key's fault, not --base-url's.
func TestConfigErrorsNameTheirSource(t *testing.T) {
	const badKey = "two\nlines"
	for name, c := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"--api-key":                      {nil, []string{"--api-key", badKey}, "--api-key: API key contains a line break"},
		"--api-key beside a --base-url":  {nil, []string{"--base-url", "https://example.com", "--api-key", badKey}, "--api-key: API key contains a line break"},
		"FLUXI2I_API_KEY":                {map[string]string{"FLUXI2I_API_KEY": badKey}, nil, "FLUXI2I_API_KEY: API key contains a line break"},
		"FAL_KEY":                        {map[string]string{"FAL_KEY": badKey}, nil, "FAL_KEY: API key contains a line break"},
		"--base-url":                     {nil, []string{"--base-url", "ftp://example.com", "--api-key", "k"}, `--base-url: base URL "ftp://example.com": need http(s)://host`},
		"FLUXI2I_BASE_URL":               {map[string]string{"FLUXI2I_BASE_URL": "ftp://example.com"}, []string{"--api-key", "k"}, `FLUXI2I_BASE_URL: base URL "ftp://example.com": need http(s)://host`},
		"a good key, a bad FAL_KEY left": {map[string]string{"FAL_KEY": badKey}, []string{"--base-url", "ftp://example.com", "--api-key", "k"}, "--base-url: "},
	} {
		t.Run(name, func(t *testing.T) {
			r := cli(t, context.Background(), c.env, append([]string{"status"}, append(c.args, "r-1")...)...)
			assert.Equal(t, exitUsage, r.code, r.stderr)
			assert.Contains(t, r.stderr, "fluxi2i: invalid input: "+c.want)
			assert.Equal(t, 1, strings.Count(r.stderr, "fluxi2i:"), r.stderr)
			if !strings.Contains(c.want, "base") {
				assert.NotContains(t, r.stderr, "--base-url", "a bad key is not the base URL's fault")
			}
		})
	}
}

// The library's errors are printed as they are: one "fluxi2i: " a line,
// at its start, with nothing stripped from inside them.
func TestLibraryErrorsPrintWithOnePrefix(t *testing.T) {
	_, base := simServer(t)
	flags := []string{"--base-url", base, "--api-key", "k"}
	for _, args := range [][]string{
		{"status", "nope"},
		{"wait", "nope"},
		{"result", "nope"},
		{"run", "--image", filepath.Join(t.TempDir(), "missing.png"), "--prompt", "p"},
	} {
		r := cli(t, context.Background(), nil, append(args, flags...)...)
		assert.NotEqual(t, exitOK, r.code, r.stderr)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		for _, l := range lines {
			assert.True(t, strings.HasPrefix(l, "fluxi2i: "), "%v: %q", args, l)
			assert.Equal(t, 1, strings.Count(l, "fluxi2i:"), "%v: %q", args, l)
		}
	}
}
