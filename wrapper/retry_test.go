package wrapper_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

var (
	instant = []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(0)}
	polling = wrapper.WithStatusMode(wrapper.StatusPoll)
)

func TestRetryAfterSecondsIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant, polling, wrapper.WithBackoff(func(int) time.Duration { return time.Millisecond }))
		srv.Inject(queuetest.OpStatus, queuetest.Fail(429).RetryAfter(7))
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		start := time.Now()
		_, err = c.Wait(context.Background(), q.RequestID)
		require.NoError(t, err)
		assert.Equal(t, 7*time.Second, time.Since(start), "waited exactly Retry-After, not the 1 ms backoff")
		assert.EqualValues(t, 2, srv.Stats().StatusCalls)
		assert.EqualValues(t, 1, c.Stats().Retries)
	})
}

func TestRetryAfterHTTPDateIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		srv.Inject(queuetest.OpResult, queuetest.Fail(503).RetryAfterValue(time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat)))
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		start := time.Now()
		_, err = c.Wait(context.Background(), q.RequestID)
		require.NoError(t, err)
		assert.Equal(t, 30*time.Second, time.Since(start))
	})
}

func TestEveryRetryableFaultIsRetried(t *testing.T) {
	faults := map[string]queuetest.Fault{
		"408": queuetest.Fail(408), "429": queuetest.Fail(429), "500": queuetest.Fail(500),
		"502": queuetest.Fail(502), "503": queuetest.Fail(503), "504": queuetest.Fail(504),
		"drop before": queuetest.DropBefore(), "drop after": queuetest.DropAfter(),
		"truncated": queuetest.Truncate(), "garbled": queuetest.Garble(),
	}
	for name, f := range faults {
		for _, op := range []queuetest.Op{queuetest.OpStatus, queuetest.OpResult} {
			t.Run(name+" on "+string(op), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					srv, c := setup(t, instant, polling)
					srv.Inject(op, f, f)
					out, err := c.Run(context.Background(), input())
					require.NoError(t, err)
					assert.NotEmpty(t, out.Images)
					calls := srv.Stats().StatusCalls
					if op == queuetest.OpResult {
						calls = srv.Stats().ResultCalls
					}
					assert.EqualValues(t, 3, calls, "two failures, then success")
					assert.EqualValues(t, 2, srv.Stats().FaultsInjected)
				})
			})
		}
	}
}

func TestCancelIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Hour)})
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpCancel, queuetest.Fail(502), queuetest.DropBefore())
		require.NoError(t, c.Cancel(context.Background(), q.RequestID))
		assert.EqualValues(t, 1, srv.Stats().Cancelled)
	})
}

func TestRetriesGiveUpWithTheLastError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant, wrapper.WithRetries(2))
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpResult, queuetest.Fail(500), queuetest.Fail(500), queuetest.Fail(502))
		time.Sleep(time.Second) // the job is done; Result is bounded by the retries (Wait would persist)
		_, err = c.Result(context.Background(), q.RequestID)
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 502, apiErr.StatusCode)
		assert.Equal(t, "runner_incomplete_response", apiErr.ErrorType)
		assert.True(t, apiErr.Retryable)
		assert.Equal(t, q.RequestID, apiErr.RequestID)
		assert.EqualValues(t, 3, srv.Stats().ResultCalls)
	})
}

func TestRetryableFalseHeaderStopsRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpResult, queuetest.Fail(503).Retryable(false))
		_, err = c.Wait(context.Background(), q.RequestID)
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.False(t, apiErr.Retryable)
		assert.EqualValues(t, 1, srv.Stats().ResultCalls)
	})
}

func TestContextCancelledDuringBackoffSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Hour)}, polling)
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpStatus, queuetest.Fail(503).RetryAfter(100))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err = c.Wait(ctx, q.RequestID)
		assert.Equal(t, 5*time.Second, time.Since(start), "the sleep ends with the context, not after Retry-After")
		var je *wrapper.JobError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, q.RequestID, je.RequestID)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.True(t, je.Cancelled, "best-effort cancel went out")
		assert.Empty(t, je.Status, "no status was ever seen")
	})
}

func TestUserStartTimeoutIsNeverRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		srv.Inject(queuetest.OpSubmit, queuetest.UserTimeout())
		_, err := c.Submit(context.Background(), input(), wrapper.WithStartTimeout(30*time.Second))
		var apiErr *wrapper.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.True(t, apiErr.UserTimeout)
		assert.False(t, apiErr.Retryable)
		assert.False(t, errors.Is(err, wrapper.ErrOutcomeUnknown))
		assert.EqualValues(t, 1, srv.Stats().Submits)

		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpResult, queuetest.UserTimeout())
		_, err = c.Wait(context.Background(), q.RequestID)
		require.ErrorAs(t, err, &apiErr)
		assert.EqualValues(t, 1, srv.Stats().ResultCalls)
	})
}

func TestAtMostOnceDoesNotRetryAnAmbiguousSubmit(t *testing.T) {
	for name, f := range map[string]queuetest.Fault{
		"dropped after acting":  queuetest.DropAfter(),
		"dropped before acting": queuetest.DropBefore(), // the client cannot tell
		"502":                   queuetest.Fail(502),
		"500":                   queuetest.Fail(500),
		"504":                   queuetest.Fail(504),
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, c := setup(t, append([]queuetest.Option{queuetest.WithoutHistory()}, instant...), wrapper.WithAtMostOnce())
				srv.Inject(queuetest.OpSubmit, f)
				_, err := c.Submit(context.Background(), input())
				require.ErrorIs(t, err, wrapper.ErrOutcomeUnknown)
				var se *wrapper.SubmitError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, 1, se.Attempts)
				assert.EqualValues(t, 1, srv.Stats().Submits)
				assert.Zero(t, c.Stats().SubmitRetries)
				assert.ErrorIs(t, err, wrapper.ErrHistoryUnavailable)
				assert.Contains(t, err.Error(), "HTTP 404", "the error says why the history could not settle it")
				assert.Contains(t, c.Stats().HistoryUnavailable, "HTTP 404")
			})
		})
	}
}

func TestAtMostOnceRetriesWhereTheJobCannotHaveStarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		srv.Inject(queuetest.OpSubmit, queuetest.Fail(429).RetryAfter(2), queuetest.Fail(503))
		q, err := c.Submit(context.Background(), input(), wrapper.WithAtMostOnce())
		require.NoError(t, err)
		assert.Equal(t, 3, q.Attempts)
		assert.EqualValues(t, 1, srv.Stats().Jobs)
	})
}

// refusingOnce fails the first dial the way a refused connection does.
type refusingOnce struct {
	next    http.RoundTripper
	refused atomic.Bool
}

func (r *refusingOnce) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.refused.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	}
	return r.next.RoundTrip(req)
}

func TestAtMostOnceRetriesARefusedConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.NewPipeServer(instant...)
		defer srv.Close()
		hc := &http.Client{Transport: &refusingOnce{next: spectest.Client(t, srv).Transport}}
		c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(hc), wrapper.WithAtMostOnce())
		require.NoError(t, err)
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.Equal(t, 2, q.Attempts)
		assert.EqualValues(t, 1, srv.Stats().Jobs)
	})
}

func TestSubmitAnswerWithoutBodyKeepsTheHeaderID(t *testing.T) {
	for _, f := range []queuetest.Fault{queuetest.Garble(), queuetest.Truncate()} {
		t.Run(f.String(), func(t *testing.T) { testSubmitKeepsHeaderID(t, f) })
	}
}

func testSubmitKeepsHeaderID(t *testing.T, f queuetest.Fault) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant, wrapper.WithAtMostOnce())
		srv.Inject(queuetest.OpSubmit, f)
		// The garbled body has no id but the X-Fal-Request-Id header does:
		// the job is known, not lost.
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.NotEmpty(t, q.RequestID)
		out, err := c.Wait(context.Background(), q.RequestID)
		require.NoError(t, err)
		assert.NotEmpty(t, out.Images)
		assert.EqualValues(t, 1, srv.Stats().Jobs)
	})
}

func TestPollingContextEndReportsTheLastStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Hour)}, polling)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Run(ctx, input())
		var je *wrapper.JobError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, wrapper.StatusInQueue, je.Status)
		assert.True(t, je.Cancelled)
	})
}

func TestSubmitContextEndedBeforeSendingIsNotUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Submit(ctx, input())
		assert.ErrorIs(t, err, context.Canceled)
		assert.NotErrorIs(t, err, wrapper.ErrOutcomeUnknown)
		assert.Zero(t, srv.Stats().Submits)
	})
}
