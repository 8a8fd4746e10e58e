package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// headerServer is simServer that also records the X-Fal-Request-Timeout
// of every submit it receives ("" when there was none).
func headerServer(t *testing.T) (*queuetest.Server, string, func() []string) {
	q := queuetest.New(append(simOptions(), queuetest.WithContract(spectest.Contract()))...)
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && !strings.Contains(r.URL.Path, "/requests/") {
			mu.Lock()
			seen = append(seen, r.Header.Get("X-Fal-Request-Timeout"))
			mu.Unlock()
		}
		q.ServeHTTP(w, r)
	}))
	t.Cleanup(q.Close)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { assert.Empty(t, q.Violations(), "the CLI's traffic broke the spec") })
	return q, srv.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// --start-timeout reaches the wire as X-Fal-Request-Timeout on every
// submit of run, submit and batch, checked against the spec; without it
// none is sent.
func TestStartTimeoutReachesTheWire(t *testing.T) {
	for _, c := range []struct {
		name string
		args func(base, dir string) []string
		jobs int
	}{
		{"run", func(base, dir string) []string {
			return []string{"run", "--base-url", base, "--api-key", "k", "--image", sample, "--prompt", "p", "--out", dir}
		}, 1},
		{"submit", func(base, dir string) []string {
			return []string{"submit", "--base-url", base, "--api-key", "k", "--image", sample, "--prompt", "p"}
		}, 1},
		{"batch", func(base, dir string) []string {
			return []string{"batch", "--base-url", base, "--api-key", "k", "--images", imagesDir(t, 3), "--prompt", "p", "--out", filepath.Join(dir, "out")}
		}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, base, seen := headerServer(t)
			r := cli(t, context.Background(), nil, append(c.args(base, t.TempDir()), "--start-timeout", "90s")...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Len(t, seen(), c.jobs)
			for _, h := range seen() {
				assert.Equal(t, "90", h)
			}
			assert.EqualValues(t, c.jobs, q.Stats().Submits)

			_, base, seen = headerServer(t)
			r = cli(t, context.Background(), nil, c.args(base, t.TempDir())...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Len(t, seen(), c.jobs)
			for _, h := range seen() {
				assert.Empty(t, h, "no --start-timeout, no header")
			}
		})
	}
}

// A --start-timeout of 1s or less (fal's minimum is more than 1s) is exit
// 2 before anything is sent, naming the flag; so is one that is not a
// duration.
func TestStartTimeoutOfOneSecondOrLessIsRefused(t *testing.T) {
	q, base, seen := headerServer(t)
	dir := t.TempDir()
	for _, v := range []string{"1s", "500ms", "0", "-5m", "soon"} {
		for _, args := range [][]string{
			{"run", "--image", sample, "--prompt", "p", "--out", dir},
			{"submit", "--image", sample, "--prompt", "p"},
			{"batch", "--images", imagesDir(t, 1), "--prompt", "p", "--out", filepath.Join(dir, "out")},
		} {
			r := cli(t, context.Background(), nil, append(append(args, "--base-url", base, "--api-key", "k"), "--start-timeout", v)...)
			assert.Equal(t, 2, r.code, "%s %s: %s", args[0], v, r.stderr)
			assert.Contains(t, r.stderr, "--start-timeout", "%s %s", args[0], v)
		}
	}
	assert.Empty(t, seen())
	assert.Zero(t, q.Stats().Submits)
}
