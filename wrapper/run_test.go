package wrapper_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

func TestRunHappyPath(t *testing.T) {
	for _, mode := range []wrapper.StatusMode{wrapper.StatusAuto, wrapper.StatusPoll, wrapper.StatusStream} {
		t.Run(mode.String(), func(t *testing.T) { testRunHappyPath(t, mode) })
	}
}

func testRunHappyPath(t *testing.T, mode wrapper.StatusMode) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(3 * time.Second), queuetest.RunTime(2 * time.Second), queuetest.LogLines(4)}, wrapper.WithStatusMode(mode))
		var states []string
		var logs []string
		var queued *wrapper.Queued
		in := input()
		in.NumImages = ptr(2)
		in.OutputFormat = ptr(gen.InputOutputFormatPng)
		out, err := c.Run(context.Background(), in,
			wrapper.WithOnQueued(func(q *wrapper.Queued) { queued = q }),
			wrapper.WithOnUpdate(func(s wrapper.Status) {
				states = append(states, s.Status)
				for _, l := range s.NewLogs {
					logs = append(logs, l.Message)
				}
			}))
		require.NoError(t, err)
		require.Len(t, out.Images, 2)
		assert.Equal(t, "image/png", *out.Images[0].ContentType)
		assert.Equal(t, in.Prompt, out.Prompt)
		assert.Equal(t, []bool{false, false}, out.HasNsfwConcepts)
		require.NotNil(t, queued)
		assert.Equal(t, 1, queued.Attempts)

		assert.Equal(t, wrapper.StatusInQueue, states[0])
		assert.Equal(t, wrapper.StatusCompleted, states[len(states)-1])
		assert.Contains(t, states, wrapper.StatusInProgress)
		assert.Equal(t, []string{"step 1/4", "step 2/4", "step 3/4", "step 4/4"}, logs, "each log line once, in order")

		st := srv.Stats()
		assert.EqualValues(t, 1, st.Jobs)
		assert.EqualValues(t, 1, st.ResultCalls)
		assert.Zero(t, st.ForeignAuthorized)
	})
}

func TestFinishedJobReturnsWithNoSleep(t *testing.T) {
	for _, mode := range []wrapper.StatusMode{wrapper.StatusPoll, wrapper.StatusAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(0)}, wrapper.WithStatusMode(mode))
				q, err := c.Submit(context.Background(), input())
				require.NoError(t, err)
				start := time.Now()
				out, err := c.Wait(context.Background(), q.RequestID)
				require.NoError(t, err)
				assert.NotEmpty(t, out.Images)
				assert.Zero(t, time.Since(start), "no sleep before a finished job's result")
				st := srv.Stats()
				assert.EqualValues(t, 1, st.StatusCalls+st.StreamCalls, "one look")
			})
		})
	}
}

func TestPollingBacksOffToCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(60 * time.Second), queuetest.RunTime(0), queuetest.LogLines(0)},
			polling, wrapper.WithPollInterval(100*time.Millisecond, 2*time.Second))
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		_, err = c.Wait(context.Background(), q.RequestID)
		require.NoError(t, err)
		polls := srv.Stats().StatusCalls
		// Fixed 100 ms polling would take 600; a cap of 2 s bounds it near 40.
		assert.Less(t, polls, int64(45))
		assert.Greater(t, polls, int64(28))
	})
}

func TestContextEndCancelsTheJobAndNamesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Hour)})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var id string
		_, err := c.Run(ctx, input(), wrapper.WithOnQueued(func(q *wrapper.Queued) { id = q.RequestID }))
		var je *wrapper.JobError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, id, je.RequestID)
		assert.Contains(t, err.Error(), id)
		assert.True(t, je.Cancelled)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, wrapper.StatusInQueue, je.Status)
		_, cancelled, ok := srv.Job(id)
		assert.True(t, ok)
		assert.True(t, cancelled)
	})
}

func TestKeepRunningOnExitLeavesAResumableJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(30 * time.Second), queuetest.RunTime(time.Second)})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Run(ctx, input(), wrapper.WithCancelOnExit(0))
		var je *wrapper.JobError
		require.ErrorAs(t, err, &je)
		assert.False(t, je.Cancelled)
		assert.Zero(t, srv.Stats().CancelCalls)

		out, err := c.Wait(context.Background(), je.RequestID)
		require.NoError(t, err, "the job is resumed by its request id")
		assert.NotEmpty(t, out.Images)
	})
}

func TestCancelOnExitCanBeTurnedOffPerClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Hour)}, wrapper.WithCancelOnExit(0))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Run(ctx, input())
		require.Error(t, err)
		assert.Zero(t, srv.Stats().CancelCalls)
	})
}

func TestCompletedJobWithFailedResultReturnsTheModelError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		model := func(context.Context, string, gen.Input) ([]queuetest.Rendering, error) {
			return nil, &queuetest.ModelError{StatusCode: 422, Field: "image_url", Detail: "could not download the image"}
		}
		_, c := setup(t, []queuetest.Option{queuetest.WithModel(model)})
		out, err := c.Run(context.Background(), input())
		assert.Nil(t, out, "never an empty output")
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 422, apiErr.StatusCode)
		assert.Equal(t, "result", apiErr.Op)
		require.Len(t, apiErr.Fields, 1)
		assert.Equal(t, "body.image_url", apiErr.Fields[0].Field)
		assert.Contains(t, err.Error(), "could not download the image")
		var je *wrapper.JobError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, apiErr.RequestID, je.RequestID)
	})
}

func TestModelErrorAsOneString(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		model := func(context.Context, string, gen.Input) ([]queuetest.Rendering, error) {
			return nil, &queuetest.ModelError{StatusCode: 422, Detail: "NSFW content detected"}
		}
		_, c := setup(t, []queuetest.Option{queuetest.WithModel(model)})
		_, err := c.Run(context.Background(), input())
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, "NSFW content detected", apiErr.Detail)
		assert.Empty(t, apiErr.Fields)
		assert.False(t, apiErr.Retryable)
	})
}

func TestUpdatesIterator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, []queuetest.Option{queuetest.QueueTime(3 * time.Second), queuetest.RunTime(3 * time.Second), queuetest.LogLines(3)})
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		var states []string
		var logs int
		for s, err := range c.Updates(context.Background(), q.RequestID) {
			require.NoError(t, err)
			states = append(states, s.Status)
			logs += len(s.NewLogs)
		}
		assert.Equal(t, wrapper.StatusCompleted, states[len(states)-1])
		assert.Equal(t, 3, logs)

		// Breaking out stops the polling.
		q2, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		n := 0
		for range c.Updates(context.Background(), q2.RequestID) {
			n++
			break
		}
		assert.Equal(t, 1, n)
	})
}

func TestUpdatesYieldsTheErrorNamingTheJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, nil)
		var last error
		for _, err := range c.Updates(context.Background(), "no-such-request") {
			last = err
		}
		var je *wrapper.JobError
		require.ErrorAs(t, last, &je)
		assert.Equal(t, "no-such-request", je.RequestID)
		assert.ErrorIs(t, last, wrapper.ErrNotFound)
	})
}

func TestStatusResultCancelDirectly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, []queuetest.Option{queuetest.QueueTime(10 * time.Second), queuetest.RunTime(time.Second)})
		ctx := context.Background()
		q, err := c.Submit(ctx, input())
		require.NoError(t, err)
		st, err := c.Status(ctx, q.RequestID, false)
		require.NoError(t, err)
		assert.Equal(t, wrapper.StatusInQueue, st.Status)
		require.NotNil(t, st.QueuePosition)

		_, err = c.Result(ctx, q.RequestID)
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr, "result before completion")
		assert.Equal(t, 400, apiErr.StatusCode)

		require.NoError(t, c.Cancel(ctx, q.RequestID))
		err = c.Cancel(ctx, q.RequestID)
		assert.ErrorIs(t, err, wrapper.ErrAlreadyCompleted)
		assert.ErrorIs(t, c.Cancel(ctx, "nope"), wrapper.ErrNotFound)

		_, err = c.Status(ctx, "nope", true)
		assert.ErrorIs(t, err, wrapper.ErrNotFound)
		assert.True(t, errors.As(err, &apiErr))
		assert.Equal(t, "nope", apiErr.RequestID)
	})
}

func TestBasePathMount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.WithBasePath("/proxy/v1"), queuetest.QueueTime(0), queuetest.RunTime(0)})
		assert.Equal(t, "http://queue.test/proxy/v1", c.BaseURL())
		out, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		assert.NotEmpty(t, out.Images)
		assert.EqualValues(t, 1, srv.Stats().Jobs)
	})
}
