package wrapper_test

import (
	"context"
	"errors"
	"flag"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

var (
	soakJobs = flag.Int("soak.jobs", 0, "jobs in the fault soak (default 60; make soak runs 3000)")
	soakRate = flag.Float64("soak.rate", 0.25, "probability that a request meets a fault")
)

// TestFaultSoak runs many jobs at once through every recoverable fault
// (retryable codes with Retry-After, dropped connections before and after
// the server acts, truncated and garbled bodies, slow answers, broken,
// silent and early-ending streams) with job URLs on a foreign origin.
// synctest fails the test if a goroutine is left behind.
func TestFaultSoak(t *testing.T) {
	n := 60
	if *soakJobs > 0 {
		n = *soakJobs
	}
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{
			queuetest.QueueTime(2 * time.Second), queuetest.RunTime(3 * time.Second), queuetest.LogLines(3),
			queuetest.ForeignURLs(), queuetest.Chaos(*soakRate, 42, nil),
		}, wrapper.WithRetries(12), wrapper.WithIdleTimeout(5*time.Second))

		type outcome struct {
			id     string
			err    error
			logs   int
			images int
		}
		results := make([]outcome, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				o := &results[i]
				out, err := c.Run(context.Background(), input(),
					wrapper.WithOnQueued(func(q *wrapper.Queued) { o.id = q.RequestID }),
					wrapper.WithOnUpdate(func(s wrapper.Status) { o.logs += len(s.NewLogs) }))
				o.err = err
				if err == nil {
					o.images = len(out.Images)
					if i%10 == 0 {
						// Output images live on the foreign (media) origin.
						_, err := c.SaveImages(context.Background(), &out.Output, t.TempDir(), o.id)
						o.err = err
					}
				}
			})
		}
		wg.Wait()

		failed := 0
		for _, o := range results {
			if o.err != nil {
				failed++
				var je *wrapper.JobError
				var se *wrapper.SubmitError
				if errors.As(o.err, &je) {
					assert.Equal(t, o.id, je.RequestID, "the error names the job")
				} else {
					assert.True(t, errors.As(o.err, &se), "a submit error says so: %v", o.err)
				}
				t.Errorf("job %q failed for a recoverable fault: %v", o.id, o.err)
				continue
			}
			assert.Equal(t, 1, o.images)
			assert.Equal(t, 3, o.logs, "job %s: every log line once", o.id)
		}

		st, cs, fc := srv.Stats(), c.Stats(), srv.FaultCounts()
		duplicates := st.Jobs - int64(n)
		ambiguous := fc["submit:drop-after"] // the only submit fault after which the client cannot know the job exists
		assert.LessOrEqual(t, duplicates, ambiguous, "duplicates only after an ambiguous dropped submit")
		assert.GreaterOrEqual(t, cs.SubmitRetries, duplicates, "every duplicate was a counted retry")
		assert.Zero(t, st.ForeignAuthorized, "no credential at the foreign origin")
		assert.Positive(t, st.FileDownloads)

		keys := make([]string, 0, len(fc))
		for k := range fc {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(k)
			b.WriteString("=")
			b.WriteString(strconv.FormatInt(fc[k], 10))
			b.WriteString(" ")
		}
		t.Logf("soak: %d jobs, %d failed, %d faults (%s), %d duplicate jobs after %d ambiguous dropped submits, %d submit retries, %d retries, %d stream fallbacks, %d foreign requests, %d with a credential",
			n, failed, st.FaultsInjected, b.String(), duplicates, ambiguous, cs.SubmitRetries, cs.Retries, cs.Fallbacks, st.ForeignRequests, st.ForeignAuthorized)
		require.Zero(t, failed)
	})
}
