package wrapper_test

import (
	"context"
	"flag"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// inflightConns is the connection pool of TestJobsInFlight's client.
const inflightConns = 64

var inflightJobs = flag.Int("inflight.jobs", 0, "jobs in flight at once in TestJobsInFlight (default 500; make soak runs 10000)")

// TestJobsInFlight runs many jobs at once in one process, all queued
// together and all in flight at the same time, and reports the peak live
// heap (sampled after a GC every 2 s of the jobs' 30; client and fake
// server together, over what the process held before) and the peak
// goroutine count, per status mode. The client is what a client of
// thousands of jobs configures (as in BenchmarkJobsInFlight): a bounded
// pool of connections, 64, so that in StatusAuto the default stream cap is
// 32 streams at once (half the pool), the rest polling.
func TestJobsInFlight(t *testing.T) {
	n := 500
	if *inflightJobs > 0 {
		n = *inflightJobs
	}
	for _, mode := range []wrapper.StatusMode{wrapper.StatusPoll, wrapper.StatusAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			base := liveHeap()
			baseG := runtime.NumGoroutine()
			var peakHeap uint64
			peakG := 0
			synctest.Test(t, func(t *testing.T) {
				srv := spectest.NewPipeServer(t, queuetest.QueueTime(20*time.Second), queuetest.RunTime(10*time.Second), queuetest.LogLines(2))
				hc := srv.Client() // the server checks every request and answer against the spec
				hc.Transport.(*http.Transport).MaxConnsPerHost = inflightConns
				c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(hc),
					wrapper.WithEnvironment(nil), wrapper.WithStatusMode(mode))
				require.NoError(t, err)
				ctx, stop := context.WithCancel(context.Background())
				sampled := make(chan struct{})
				go func() { // samples in fake time, while every job waits
					defer close(sampled)
					for {
						select {
						case <-ctx.Done():
							return
						case <-time.After(2 * time.Second):
						}
						peakHeap = max(peakHeap, liveHeap())
						peakG = max(peakG, runtime.NumGoroutine())
					}
				}()
				var wg sync.WaitGroup
				errs := make([]error, n)
				for i := range n {
					wg.Go(func() { _, errs[i] = c.Run(context.Background(), input()) })
				}
				wg.Wait()
				stop()
				<-sampled
				for i, err := range errs {
					require.NoError(t, err, "job %d", i)
				}
				assert.EqualValues(t, n, srv.Stats().Jobs)
			})
			heapMB := float64(peakHeap-min(peakHeap, base)) / (1 << 20)
			t.Logf("%d jobs in flight (%s): peak live heap %.1f MB above the baseline, peak goroutines %d (baseline %d)", n, mode, heapMB, peakG, baseG)
			// The goal is under 100 MB for 10,000 jobs. At every size: a fixed
			// 8 MB (client, fake server, test), 9 KB per polled job and 36 KB
			// per streamed one (a connection each, both ends; at most 32).
			streams := 0
			if mode == wrapper.StatusAuto {
				streams = min(n, inflightConns/2)
			}
			limit := min(100, 8+(36*float64(streams)+9*float64(n-streams))/1024)
			assert.Less(t, heapMB, limit, "%d jobs in flight (%s): at most %.1f MB", n, mode, limit)
		})
	}
}
