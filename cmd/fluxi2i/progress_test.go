package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hostileQueue queues a job whose status, polled or streamed, never ends
// and carries an endless supply of log lines.
func hostileQueue(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var sent atomic.Int64
	logs := func(n int) []map[string]any {
		out := make([]map[string]any, n)
		for i := range out {
			k := sent.Add(1)
			out[i] = map[string]any{"message": fmt.Sprintf("line %d %s", k, strings.Repeat("x", 100)), "level": "INFO"}
		}
		return out
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost:
			w.Header().Set("X-Fal-Request-Id", "r1")
			json.NewEncoder(w).Encode(map[string]any{"status": "IN_QUEUE", "request_id": "r1", "queue_position": 0})
		case strings.HasSuffix(r.URL.Path, "/status/stream"):
			w.Header().Set("Content-Type", "text/event-stream")
			fl := w.(http.Flusher)
			for r.Context().Err() == nil {
				b, _ := json.Marshal(map[string]any{"status": "IN_PROGRESS", "request_id": "r1", "logs": logs(50)})
				if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
					return
				}
				fl.Flush()
			}
		case strings.HasSuffix(r.URL.Path, "/status"):
			w.WriteHeader(http.StatusAccepted)
			json.NewEncoder(w).Encode(map[string]any{"status": "IN_PROGRESS", "request_id": "r1", "logs": logs(int(sent.Load()) + 500)})
		case r.Method == http.MethodPut:
			w.WriteHeader(http.StatusAccepted)
			json.NewEncoder(w).Encode(map[string]any{"status": "CANCELLATION_REQUESTED"})
		default:
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"detail": "Request is still in progress"})
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &sent
}

// A status stream of endless log events prints at most what a job may
// print, says so once, and counts what it dropped.
func TestRunCapsTheLogLinesOfAJob(t *testing.T) {
	srv, sent := hostileQueue(t)
	r := cli(t, context.Background(), nil, "run", "--base-url", srv.URL, "--api-key", "k", "--image", sample, "--prompt", "p", "--timeout", "2s", "--out", t.TempDir())
	assert.NotEqual(t, 0, r.code)
	require.Greater(t, sent.Load(), int64(10*maxLogLines), "the server did send endless logs")
	shown := strings.Count(r.stderr, "  | line ")
	assert.LessOrEqual(t, shown, maxLogLines)
	assert.Greater(t, shown, 0)
	assert.Less(t, len(r.stderr), maxLogBytes+8<<10, "what reached the terminal")
	assert.Equal(t, 1, strings.Count(r.stderr, "dropping the rest"), "said once")
	assert.Regexp(t, `fluxi2i: \d+ log lines dropped`, r.stderr)
}

// Within the caps every line is shown, and a line too long is cut.
func TestProgressShowsLogsWithinTheCaps(t *testing.T) {
	var b strings.Builder
	p := &progress{w: &b}
	p.logLine("hello")
	p.logLine(strings.Repeat("y", 10*maxLogLineSize))
	p.finish()
	assert.Contains(t, b.String(), "  | hello\n")
	assert.Contains(t, b.String(), "[cut]")
	assert.Less(t, b.Len(), maxLogLineSize+100)
	assert.NotContains(t, b.String(), "dropped")
}

// `fluxi2i status --logs` against a server answering a huge log list
// prints the job's log lines within run's caps (lines, bytes, a line's
// size), each shown line whole, and says on stderr how many it dropped.
func TestStatusLogsAreCapped(t *testing.T) {
	srv, sent := hostileQueue(t)
	sent.Store(5000) // the status answer carries 5,500 lines, about 600 KiB
	r := cli(t, context.Background(), nil, "status", "r1", "--logs", "--base-url", srv.URL, "--api-key", "k")
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, "IN_PROGRESS\n"), r.stdout[:min(len(r.stdout), 100)])
	shown := strings.Count(r.stdout, "  line ")
	assert.Equal(t, maxLogLines, shown, "the first lines, up to the cap")
	assert.Less(t, len(r.stdout), maxLogBytes+1<<10, "what reached the terminal")
	assert.Contains(t, r.stdout, "  line 5001 ")
	assert.NotContains(t, r.stdout, fmt.Sprintf("  line %d ", 5001+maxLogLines))
	assert.Equal(t, 1, strings.Count(r.stderr, "dropping the rest"), "said once: %s", r.stderr)
	assert.Contains(t, r.stderr, fmt.Sprintf("fluxi2i: %d log lines dropped", 5500-maxLogLines))

	// A line too long is cut; a few short ones are all shown.
	long := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]any{"status": "IN_PROGRESS", "request_id": "r1", "logs": []map[string]any{
			{"message": "hello", "level": "INFO"}, {"message": strings.Repeat("y", 10*maxLogLineSize), "level": "INFO"}}})
	}))
	t.Cleanup(long.Close)
	r = cli(t, context.Background(), nil, "status", "r1", "--logs", "--base-url", long.URL, "--api-key", "k")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  hello\n")
	assert.Contains(t, r.stdout, "[cut]")
	assert.Less(t, len(r.stdout), maxLogLineSize+100)
	assert.NotContains(t, r.stderr, "dropped")
}
