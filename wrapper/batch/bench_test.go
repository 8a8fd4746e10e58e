package batch_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/batch"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

var scaleJobs = flag.Int("batch.jobs", 1000, "jobs in TestBatchScale (make soak: 10000)")

// liveHeap forces a GC and returns the heap it found live.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestBatchScale runs one batch of many jobs against queuetest in fake
// time, then resumes it: the journal stays proportional to the jobs, the
// live heap stays flat (no image is kept after it is written), and
// resuming the finished batch takes well under a second and no request.
func TestBatchScale(t *testing.T) {
	n := *scaleJobs
	dir := t.TempDir()
	base := liveHeap()
	var peak uint64
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.NewPipeServer(queuetest.QueueTime(time.Second), queuetest.RunTime(2*time.Second), queuetest.LogLines(0))
		defer srv.Close()
		c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(srv.Client()), wrapper.WithEnvironment(nil))
		require.NoError(t, err)
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(30 * time.Second):
				}
				peak = max(peak, liveHeap())
			}
		})
		sum, err := batch.Run(context.Background(), c, jobs(n), batch.Config{Dir: dir, Concurrency: 40})
		stop()
		wg.Wait()
		require.NoError(t, err)
		require.Equal(t, n, sum.Done)
	})
	fi, err := os.Stat(filepath.Join(dir, batch.JournalName))
	require.NoError(t, err)
	perJob := float64(fi.Size()) / float64(n)
	heapMB := float64(peak-min(peak, base)) / (1 << 20)

	// Resume: a client that reaches nothing; any request would fail a job.
	c, err := wrapper.New(wrapper.WithBaseURL("http://127.0.0.1:1"), wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil), wrapper.WithRetries(0))
	require.NoError(t, err)
	start := time.Now()
	sum, err := batch.Run(context.Background(), c, jobs(n), batch.Config{Dir: dir})
	resume := time.Since(start)
	require.NoError(t, err)
	assert.Equal(t, n, sum.Skipped)
	t.Logf("%d jobs: journal %.0f bytes per job, peak live heap %.1f MB above the start, resume %v", n, perJob, heapMB, resume)
	assert.Less(t, perJob, 600.0, "three short records per job (the intent with the input's digests and its time)")
	// About 1.5 KB a job, the fake server's share included: the client
	// remembers each request id it learned (so that the request history
	// never hands one to a lost submit) and the fake keeps each input for
	// its history.
	assert.Less(t, heapMB, 4+1.5*float64(n)/1000, "flat: a few KB of bookkeeping per job at most, no image kept")
	assert.Less(t, resume, time.Second)
}

// BenchmarkBatch is the cost per job of a batch (journal synced at each
// state change, files checked) beside a plain loop of Run and SaveImages
// writing the same files, against queuetest over in-memory pipes.
func BenchmarkBatch(b *testing.B) {
	const n = 200
	setup := func(b *testing.B) (*queuetest.Server, *wrapper.Client) {
		srv := queuetest.NewPipeServer(queuetest.QueueTime(0), queuetest.RunTime(0), queuetest.LogLines(0))
		b.Cleanup(srv.Close)
		c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(srv.Client()), wrapper.WithEnvironment(nil), wrapper.WithStatusMode(wrapper.StatusPoll))
		if err != nil {
			b.Fatal(err)
		}
		return srv, c
	}
	b.Run("plain-loop-of-Run", func(b *testing.B) {
		_, c := setup(b)
		b.ReportAllocs()
		for b.Loop() {
			dir := b.TempDir()
			sem := make(chan struct{}, batch.DefaultConcurrency)
			var wg sync.WaitGroup
			for _, j := range jobs(n) {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					res, err := c.Run(context.Background(), j.Input)
					if err == nil {
						_, err = c.SaveImages(context.Background(), &res.Output, dir, j.ID)
					}
					if err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/job")
	})
	b.Run("batch", func(b *testing.B) {
		_, c := setup(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := batch.Run(context.Background(), c, jobs(n), batch.Config{Dir: b.TempDir()}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/job")
	})
}

// BenchmarkResume10k: resuming a finished 10,000-job batch (the journal
// read, every job's files checked, no request).
func BenchmarkResume10k(b *testing.B) {
	const n = 10000
	dir := b.TempDir()
	f, err := os.Create(filepath.Join(dir, batch.JournalName))
	if err != nil {
		b.Fatal(err)
	}
	for _, j := range jobs(n) {
		fmt.Fprintf(f, `{"id":%q,"state":"intent","t":"2026-11-23T00:00:00Z"}`+"\n", j.ID)
		fmt.Fprintf(f, `{"id":%q,"state":"queued","request_id":"r-%s","t":"2026-11-23T00:00:01Z"}`+"\n", j.ID, j.ID)
		fmt.Fprintf(f, `{"id":%q,"state":"done","request_id":"r-%s","files":["%s-0.jpeg"],"t":"2026-11-23T00:00:02Z"}`+"\n", j.ID, j.ID, j.ID)
		os.WriteFile(filepath.Join(dir, j.ID+"-0.jpeg"), []byte{0xff, 0xd8, 0xff}, 0o644)
	}
	f.Close()
	c, err := wrapper.New(wrapper.WithBaseURL("http://127.0.0.1:1"), wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil))
	if err != nil {
		b.Fatal(err)
	}
	js := jobs(n)
	b.ReportAllocs()
	for b.Loop() {
		sum, err := batch.Run(context.Background(), c, js, batch.Config{Dir: dir})
		if err != nil || sum.Skipped != n {
			b.Fatalf("%v %+v", err, sum)
		}
	}
}
