package wrapper_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// A submit whose answer is lost after the server queued the job is
// settled through the request history, in both modes: the job is found
// by its input, waited for and fetched, and nothing is submitted twice.
func TestALostSubmitIsSettledFromTheHistory(t *testing.T) {
	for name, mode := range map[string][]wrapper.Option{"default": nil, "at most once": {wrapper.WithAtMostOnce()}} {
		for fname, f := range map[string]queuetest.Fault{"reset after acting": queuetest.DropAfter(), "cut body without the id header": queuetest.Truncate().WithoutRequestID(), "garbled": queuetest.Garble().WithoutRequestID()} {
			t.Run(name+"/"+fname, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					srv, c := setup(t, nil, mode...)
					srv.Inject(queuetest.OpSubmit, f)
					q, err := c.Submit(context.Background(), input())
					require.NoError(t, err)
					assert.True(t, q.FromHistory)
					assert.Equal(t, 1, q.Attempts)
					res, err := c.Wait(context.Background(), q.RequestID)
					require.NoError(t, err)
					assert.Len(t, res.Images, 1)
					st := srv.Stats()
					assert.EqualValues(t, 1, st.Jobs, "paid once")
					assert.EqualValues(t, 1, st.Submits)
					assert.Positive(t, st.HistoryCalls)
					assert.EqualValues(t, 1, c.Stats().Settled)
					assert.Zero(t, c.Stats().SubmitRetries)
				})
			})
		}
	}
}

// When the lost submit created no job, the history is asked until the
// window has passed: then at-most-once says the outcome is unknown (no
// job the client can see exists), and the default submits again.
func TestALostSubmitWithoutAJobWaitsOutTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil, wrapper.WithAtMostOnce(), wrapper.WithSettleWindow(time.Minute))
		srv.Inject(queuetest.OpSubmit, queuetest.DropBefore())
		start := time.Now()
		_, err := c.Submit(context.Background(), input())
		require.ErrorIs(t, err, wrapper.ErrOutcomeUnknown)
		require.ErrorIs(t, err, wrapper.ErrNotInHistory)
		assert.GreaterOrEqual(t, time.Since(start), time.Minute)
		assert.Less(t, time.Since(start), time.Minute+20*time.Second)
		assert.Zero(t, srv.Stats().Jobs)
		assert.EqualValues(t, 1, c.Stats().Unsettled)

		srv2, c2 := setup(t, nil, wrapper.WithSettleWindow(time.Minute))
		srv2.Inject(queuetest.OpSubmit, queuetest.DropBefore())
		q, err := c2.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.Equal(t, 2, q.Attempts)
		assert.False(t, q.FromHistory)
		assert.EqualValues(t, 1, srv2.Stats().Jobs)
		assert.EqualValues(t, 1, c2.Stats().SubmitRetries, "counted as a possible duplicate")
	})
}

// The window follows the start timeout the caller sets: a job that has
// not started by then never will.
func TestTheSettleWindowFollowsTheStartTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil, wrapper.WithAtMostOnce(), wrapper.WithStartTimeout(30*time.Second))
		srv.Inject(queuetest.OpSubmit, queuetest.DropBefore())
		start := time.Now()
		_, err := c.Submit(context.Background(), input())
		require.ErrorIs(t, err, wrapper.ErrNotInHistory)
		took := time.Since(start)
		assert.GreaterOrEqual(t, took, 30*time.Second+2*time.Minute)
		assert.Less(t, took, 3*time.Minute)
	})
}

// Without a history (the aggregator answers 404), the client behaves as
// before: the default submits again at once, and says why it could not
// settle; once it knows, it does not ask again.
func TestWithoutAHistoryTheDefaultSubmitsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.WithoutHistory()})
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter(), queuetest.DropAfter())
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.Equal(t, 3, q.Attempts)
		assert.EqualValues(t, 3, srv.Stats().Jobs, "the lost answers' jobs ran too: nothing could tell")
		assert.EqualValues(t, 1, srv.Stats().HistoryCalls, "a 404 is remembered")
		assert.Contains(t, c.Stats().HistoryUnavailable, "404")
	})
}

// With X-Fal-Store-IO: 0 no payload is kept: the history is not asked.
func TestNoStoreIOCannotBeSettled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil, wrapper.WithAtMostOnce(), wrapper.WithNoStoreIO())
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter())
		_, err := c.Submit(context.Background(), input())
		require.ErrorIs(t, err, wrapper.ErrOutcomeUnknown)
		require.ErrorIs(t, err, wrapper.ErrHistoryUnavailable)
		assert.Contains(t, err.Error(), "X-Fal-Store-IO")
		assert.Zero(t, srv.Stats().HistoryCalls)
	})
}

// A job of the same input that this client already knows (it got its id)
// is never taken for the lost one.
func TestTheHistoryNeverHandsBackAKnownJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		first, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter())
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.True(t, q.FromHistory)
		assert.NotEqual(t, first.RequestID, q.RequestID)
		assert.EqualValues(t, 2, srv.Stats().Jobs)
	})
}

// Once an attempt may have queued the job, the default never gives up on
// a transient failure while the context lives: giving up would lose it.
func TestAnAmbiguousSubmitNeverGivesUpOnTransientFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.WithoutHistory()}, wrapper.WithRetries(2))
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter(),
			queuetest.Fail(503), queuetest.Fail(429), queuetest.Fail(503), queuetest.Fail(502), queuetest.Fail(503))
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.Equal(t, 7, q.Attempts)

		// Refused outright, every time, with nothing ambiguous: definitely
		// not queued, and the budget holds.
		srv.Inject(queuetest.OpSubmit, queuetest.Fail(503), queuetest.Fail(503), queuetest.Fail(503))
		_, err = c.Submit(context.Background(), input())
		require.Error(t, err)
		assert.NotErrorIs(t, err, wrapper.ErrOutcomeUnknown)
	})
}

// A clean run never asks the history.
func TestTheHistoryIsAskedOnlyWhenItMust(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		srv.Inject(queuetest.OpSubmit, queuetest.Fail(503), queuetest.Fail(429).RetryAfter(1))
		_, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		assert.Zero(t, srv.Stats().HistoryCalls)
	})
}

// Settle finds a job a crashed process submitted, by its input and time.
func TestSettleFindsAJobByItsInput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		sent := time.Now()
		time.Sleep(2 * time.Minute) // the crashed process's submit retried a while after its intent
		other, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(srv.Client()), wrapper.WithEnvironment(nil))
		require.NoError(t, err)
		q, err := other.Submit(context.Background(), input()) // the crashed process's
		require.NoError(t, err)
		time.Sleep(time.Hour) // long after: one look suffices

		found, err := c.Settle(context.Background(), input(), sent)
		require.NoError(t, err)
		assert.Equal(t, q.RequestID, found.RequestID)

		in := input()
		in.Prompt = "another prompt"
		_, err = c.Settle(context.Background(), in, sent)
		assert.ErrorIs(t, err, wrapper.ErrNotInHistory)
	})
}

// A finished job's result call counts a plain 5xx as the model's own
// answer only when it repeats, never because the budget ran out on other
// faults.
func TestAResultIsNotGivenUpOnAPlain500(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant, wrapper.WithRetries(1))
		srv.Inject(queuetest.OpResult, queuetest.Fail(502), queuetest.Fail(500).Plain(), queuetest.Fail(503),
			queuetest.Fail(500).Plain(), queuetest.Fail(504), queuetest.Fail(500).Plain())
		res, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		assert.Len(t, res.Images, 1)

		srv.Inject(queuetest.OpResult, queuetest.Fail(500).Plain(), queuetest.Fail(500).Plain(), queuetest.Fail(500).Plain(), queuetest.Fail(500).Plain())
		before := srv.Stats().ResultCalls
		_, err = c.Run(context.Background(), input())
		var ae *wrapper.APIError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, 500, ae.StatusCode)
		assert.EqualValues(t, 3, srv.Stats().ResultCalls-before, "the same answer three times is the model's")
	})
}

// Under a fault mix where submit answers are lost after the server acted
// (resets, cut and garbled bodies without the id header) beside the usual
// transient faults, in both modes: every job that was created comes back,
// no prompt is paid twice, and in the default mode every prompt is done.
func TestNoPromptIsPaidTwiceUnderFaults(t *testing.T) {
	for name, mode := range map[string][]wrapper.Option{"default": nil, "at most once": {wrapper.WithAtMostOnce()}} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				menus := queuetest.Recoverable()
				menus[queuetest.OpSubmit] = []queuetest.Fault{
					queuetest.DropAfter(), queuetest.Truncate().WithoutRequestID(), queuetest.Garble().WithoutRequestID(),
					queuetest.DropBefore(), queuetest.Fail(503), queuetest.Fail(429).RetryAfter(1), queuetest.Fail(502),
				}
				delete(menus, queuetest.OpCancel)
				srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second), queuetest.Chaos(0.25, 11, menus)},
					append(mode, wrapper.WithStatusMode(wrapper.StatusPoll), wrapper.WithSettleWindow(time.Minute))...)
				const n = 150
				type done struct {
					prompt string
					res    *wrapper.Result
					err    error
				}
				out := make(chan done, n)
				for i := range n {
					go func() {
						in := input()
						in.Prompt = fmt.Sprintf("prompt %d", i)
						res, err := c.Run(context.Background(), in)
						out <- done{in.Prompt, res, err}
					}()
				}
				ok, unknown := 0, 0
				for range n {
					d := <-out
					switch {
					case d.err == nil:
						ok++
						require.NotNil(t, d.res)
					case name == "at most once" && errors.Is(d.err, wrapper.ErrNotInHistory):
						unknown++ // no job exists for it: nothing paid, nothing lost
					default:
						t.Errorf("%s: %v", d.prompt, d.err)
					}
				}
				st := srv.Stats()
				assert.EqualValues(t, ok, st.Jobs, "every job created was fetched, none twice (%d outcomes unknown)", unknown)
				if name == "default" {
					assert.Equal(t, n, ok)
				}
				assert.Positive(t, c.Stats().Settled, "lost answers were settled")
				assert.Positive(t, st.FaultsInjected)
			})
		})
	}
}

// A key without the history's scope (401, 403) means the history is not
// there for this client: said in the error and Stats, and not asked again.
func TestAKeyWithoutTheHistorysScope(t *testing.T) {
	for _, code := range []int{401, 403} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, c := setup(t, nil, wrapper.WithAtMostOnce())
				srv.Inject(queuetest.OpHistory, queuetest.Fail(code))
				srv.Inject(queuetest.OpSubmit, queuetest.DropAfter(), queuetest.DropAfter())
				_, err := c.Submit(context.Background(), input())
				require.ErrorIs(t, err, wrapper.ErrOutcomeUnknown)
				require.ErrorIs(t, err, wrapper.ErrHistoryUnavailable)
				assert.Contains(t, err.Error(), fmt.Sprintf("HTTP %d", code))
				assert.Contains(t, c.Stats().HistoryUnavailable, fmt.Sprintf("HTTP %d", code))
				_, err = c.Submit(context.Background(), input())
				require.ErrorIs(t, err, wrapper.ErrHistoryUnavailable)
				assert.EqualValues(t, 1, srv.Stats().HistoryCalls, "remembered")
			})
		})
	}
}
