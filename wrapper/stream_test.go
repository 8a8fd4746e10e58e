package wrapper_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

var slowJob = []queuetest.Option{queuetest.QueueTime(3 * time.Second), queuetest.RunTime(4 * time.Second), queuetest.LogLines(4)}

// runCollect runs one job and returns the states and log lines its updates
// carried.
func runCollect(t *testing.T, c *wrapper.Client, opts ...wrapper.Option) (states, logs []string) {
	t.Helper()
	opts = append(opts, wrapper.WithOnUpdate(func(s wrapper.Status) {
		states = append(states, s.Status)
		for _, l := range s.NewLogs {
			logs = append(logs, l.Message)
		}
	}))
	out, err := c.Run(context.Background(), input(), opts...)
	require.NoError(t, err)
	require.NotEmpty(t, out.Images)
	return states, logs
}

var allLogs = []string{"step 1/4", "step 2/4", "step 3/4", "step 4/4"}

func TestStreamingIsTheDefaultAndPollsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, slowJob)
		states, logs := runCollect(t, c)
		assert.Equal(t, allLogs, logs)
		assert.Equal(t, wrapper.StatusInQueue, states[0])
		assert.Equal(t, wrapper.StatusCompleted, states[len(states)-1])
		st := srv.Stats()
		assert.EqualValues(t, 1, st.StreamCalls, "one stream connection")
		assert.Zero(t, st.StatusCalls, "zero status polls")
		assert.Zero(t, c.Stats().Fallbacks)
	})
}

func TestResultIsFetchedTheMomentTheJobCompletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, slowJob)
		start := time.Now()
		_, _ = runCollect(t, c)
		assert.Equal(t, 7*time.Second, time.Since(start), "no polling delay after COMPLETED")
	})
}

func TestStreamFallsBackToPolling(t *testing.T) {
	for name, f := range map[string]queuetest.Fault{
		"refused 405":      queuetest.Fail(405),
		"refused 501":      queuetest.Fail(501),
		"refused 404":      queuetest.Fail(404),
		"server error":     queuetest.Fail(502),
		"breaks":           queuetest.BreakStream(),
		"silent":           queuetest.StallStream(),
		"ends before done": queuetest.EndStreamEarly(),
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logBuf bytes.Buffer
				logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
				srv, c := setup(t, slowJob, wrapper.WithIdleTimeout(2*time.Second), wrapper.WithLogger(logger))
				srv.Inject(queuetest.OpStream, f)
				states, logs := runCollect(t, c)
				assert.Equal(t, allLogs, logs, "every log line once, in order, across the fallback")
				assert.Equal(t, wrapper.StatusCompleted, states[len(states)-1])
				assert.EqualValues(t, 1, c.Stats().Fallbacks)
				assert.Positive(t, srv.Stats().StatusCalls, "polling took over")
				assert.Contains(t, logBuf.String(), "polling instead")
			})
		})
	}
}

func TestFallbackAfterLogsWereStreamed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(4 * time.Second), queuetest.LogLines(4)})
		srv.Inject(queuetest.OpStream, queuetest.BreakStream()) // after the first event, which carries step 1/4
		_, logs := runCollect(t, c)
		assert.Equal(t, allLogs, logs)
	})
}

func TestForcedStreamingReopensInsteadOfPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, slowJob, wrapper.WithStatusMode(wrapper.StatusStream))
		srv.Inject(queuetest.OpStream, queuetest.BreakStream(), queuetest.Fail(503))
		_, logs := runCollect(t, c)
		assert.Equal(t, allLogs, logs)
		st := srv.Stats()
		assert.EqualValues(t, 3, st.StreamCalls)
		assert.Zero(t, st.StatusCalls)
	})
}

func TestForcedStreamingGivesUpWhenRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, slowJob)
		srv.Inject(queuetest.OpStream, queuetest.Fail(405))
		_, err := c.Run(context.Background(), input(), wrapper.WithStatusMode(wrapper.StatusStream))
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 405, apiErr.StatusCode)
		var je *wrapper.JobError
		require.ErrorAs(t, err, &je)
		assert.NotEmpty(t, je.RequestID)
	})
}

func TestForcedPollingOpensNoStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, slowJob)
		_, logs := runCollect(t, c, wrapper.WithStatusMode(wrapper.StatusPoll))
		assert.Equal(t, allLogs, logs)
		assert.Zero(t, srv.Stats().StreamCalls)
	})
}

func TestStreamContextEndCancelsTheJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Hour)})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := c.Run(ctx, input())
		var je *wrapper.JobError
		require.ErrorAs(t, err, &je)
		assert.True(t, je.Cancelled)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.EqualValues(t, 1, srv.Stats().Cancelled)
	})
}

func TestStreamsAreCappedAndTheRestPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, slowJob, wrapper.WithMaxStreams(1))
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				_, logs := runCollect(t, c)
				assert.Equal(t, allLogs, logs)
			})
		}
		wg.Wait()
		st := srv.Stats()
		assert.EqualValues(t, 1, st.StreamCalls, "one stream at a time: the other jobs polled")
		assert.Positive(t, st.StatusCalls)
		assert.Zero(t, c.Stats().Fallbacks, "polling for want of a stream is not a fallback")
	})
}

func TestStreamWhoseHeadersNeverComeFallsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, slowJob, wrapper.WithIdleTimeout(2*time.Second))
		srv.Inject(queuetest.OpStream, queuetest.Slow(time.Hour))
		start := time.Now()
		_, logs := runCollect(t, c)
		assert.Equal(t, allLogs, logs)
		assert.EqualValues(t, 1, c.Stats().Fallbacks)
		assert.Less(t, time.Since(start), time.Minute, "the idle limit, not the hour, decided")
	})
}

func TestForcedStreamingCountsFailuresInARow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, slowJob, wrapper.WithStatusMode(wrapper.StatusStream), wrapper.WithRetries(2))
		// Five breaks, each after an event: more than the retry budget in
		// all, never more than one in a row.
		for range 5 {
			srv.Inject(queuetest.OpStream, queuetest.BreakStream())
		}
		_, logs := runCollect(t, c)
		assert.Equal(t, allLogs, logs)
		assert.EqualValues(t, 6, srv.Stats().StreamCalls)

		// Refusals in a row exhaust it.
		srv.Inject(queuetest.OpStream, queuetest.Fail(502), queuetest.Fail(502), queuetest.Fail(502))
		_, err := c.Run(context.Background(), input())
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 502, apiErr.StatusCode)
	})
}
