package main

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/batch"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// fakeFailing is a failing source the test sets.
type fakeFailing struct {
	mu    sync.Mutex
	since time.Time
	what  string
}

func (f *fakeFailing) set(since time.Time, what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since, f.what = since, what
}

func (f *fakeFailing) get() (time.Time, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.since, f.what
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// The batch's plain progress line says when requests keep failing, what
// fails and since when, and drops the ETA meanwhile; a short failure is
// not worth a word; a success brings the ETA back. The bar's description
// does the same.
func TestBatchProgressSaysWhenTheServerIsGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var stderr syncBuffer
		a := &app{stderr: &stderr}
		var f fakeFailing
		p := newBatchProgress(a, 12, f.get)
		p.update(batch.Progress{Total: 12, Done: 4, InFlight: 4})
		time.Sleep(progressEvery + time.Millisecond)
		assert.Contains(t, lastLine(stderr.String()), "4/12 done, 4 in flight")
		assert.Contains(t, lastLine(stderr.String()), "ETA")

		since := time.Now().Add(-time.Millisecond) // at the last tick
		f.set(since, "connection refused")
		time.Sleep(progressEvery) // 5 s of failures at the next tick: said
		assert.Contains(t, lastLine(stderr.String()), "retrying: connection refused since "+since.Local().Format("15:04:05")+" (5 s)")
		time.Sleep(7 * progressEvery)
		line := lastLine(stderr.String())
		assert.Contains(t, line, "4/12 done, 4 in flight, 0 failed, 0 skipped, retrying: connection refused since "+since.Local().Format("15:04:05")+" (40 s)")
		assert.NotContains(t, line, "ETA", "no ETA as if all were well")
		bar := (&batchProgress{start: p.start, failing: f.get, last: batch.Progress{Total: 12, Done: 4, InFlight: 4}}).barText(time.Now())
		assert.Equal(t, "batch: 4 in flight, 0 failed, retrying: connection refused since "+since.Local().Format("15:04:05")+" (40 s)", bar)

		f.set(time.Now(), "HTTP 503") // failing anew: just under 5 s at the next tick
		time.Sleep(progressEvery)
		assert.Contains(t, lastLine(stderr.String()), "ETA", "a failure shorter than failingAfter is not reported")

		f.set(time.Time{}, "") // a request succeeded
		time.Sleep(progressEvery)
		assert.Contains(t, lastLine(stderr.String()), "ETA")
		bar = (&batchProgress{start: p.start, failing: f.get, last: batch.Progress{Total: 12, Done: 4, InFlight: 4}}).barText(time.Now())
		assert.Contains(t, bar, "ETA")
		p.finish()
	})
}

// run's progress, silent between status changes, says when requests keep
// failing.
func TestRunProgressSaysWhenTheServerIsGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var stderr syncBuffer
		var f fakeFailing
		p := newProgress(&stderr, f.get)
		p.update(wrapper.Status{QueueStatus: gen.QueueStatus{Status: wrapper.StatusInQueue}})
		time.Sleep(3 * progressEvery)
		assert.Equal(t, 1, strings.Count(stderr.String(), "\n"), "nothing new while all is well")
		since := time.Now()
		f.set(since, "timeout")
		time.Sleep(2*progressEvery + time.Millisecond)
		assert.Equal(t, "retrying: timeout since "+since.Local().Format("15:04:05")+" (10 s)", lastLine(stderr.String()))
		p.finish()
	})
}

// End to end: the server goes away in the middle of a batch; the plain
// progress says so.
func TestBatchSaysWhenTheServerGoesAway(t *testing.T) {
	savedAfter, savedEvery := failingAfter, progressEvery
	failingAfter, progressEvery = 300*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { failingAfter, progressEvery = savedAfter, savedEvery })
	q := queuetest.New(append(simOptions(), queuetest.WithContract(spectest.Contract()), queuetest.QueueTime(5*time.Second))...)
	srv := httptest.NewServer(q)
	time.AfterFunc(300*time.Millisecond, srv.Close)
	t.Cleanup(srv.Close)
	r := cli(t, context.Background(), nil, "batch", "--base-url", srv.URL, "--api-key", "k", "--images", imagesDir(t, 2), "--prompt", "p",
		"--out", filepath.Join(t.TempDir(), "out"), "--timeout", "1500ms")
	require.Equal(t, 4, r.code, r.stderr)
	assert.Regexp(t, `in flight, 0 failed, 0 skipped, retrying: [a-z0-9 ]+ since \d\d:\d\d:\d\d \(\d+ s\)\n`, r.stderr)
	assert.Empty(t, q.Violations())
}
