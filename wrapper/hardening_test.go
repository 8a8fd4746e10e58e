package wrapper_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// A paid result is not lost to a flaky CDN: each image is downloaded
// again, from its first byte, after a 5xx, a reset, a body cut short or a
// 503 with Retry-After.
func TestDownloadsAreRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(0)})
		in := input()
		in.NumImages = ptr(2)
		res, err := c.Run(context.Background(), in)
		require.NoError(t, err)
		srv.Inject(queuetest.OpFile, queuetest.Fail(500), queuetest.DropBefore(), queuetest.Truncate(), queuetest.Fail(503).RetryAfter(1), queuetest.Fail(502))
		dir := t.TempDir()
		paths, err := c.SaveImages(context.Background(), &res.Output, dir, res.RequestID)
		require.NoError(t, err)
		require.Len(t, paths, 2)
		for _, p := range paths {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			_, ok := media.Sniff(b)
			assert.True(t, ok, "%s is a whole image", p)
		}
		entries, _ := os.ReadDir(dir)
		assert.Len(t, entries, 2, "no temporary file is left behind")
		assert.EqualValues(t, 5, srv.FaultCounts()["file:500"]+srv.FaultCounts()["file:drop-before"]+srv.FaultCounts()["file:truncate"]+srv.FaultCounts()["file:503"]+srv.FaultCounts()["file:502"])
	})
}

// With 5 % of CDN answers failing (5xx, resets, bodies cut short), every
// paid image of 40 jobs is saved.
func TestEveryImageIsSavedFromAFlakyCDN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		menus := map[queuetest.Op][]queuetest.Fault{queuetest.OpFile: queuetest.Recoverable()[queuetest.OpFile]}
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(time.Second), queuetest.Chaos(0.05, 11, menus)})
		in := input()
		in.NumImages = ptr(4)
		for range 40 {
			res, err := c.Run(context.Background(), in)
			require.NoError(t, err)
			paths, err := c.SaveImages(context.Background(), &res.Output, t.TempDir(), res.RequestID)
			require.NoError(t, err)
			assert.Len(t, paths, 4)
		}
		assert.Positive(t, srv.Stats().FaultsInjected, "the CDN did fail")
	})
}

// A download that never arrives whole leaves nothing under the final name.
func TestSaveImagesNeverLeavesAPartialFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(0)}, wrapper.WithRetries(2))
		res, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpFile, queuetest.Truncate(), queuetest.Truncate(), queuetest.Truncate())
		dir := t.TempDir()
		_, err = c.SaveImages(context.Background(), &res.Output, dir, res.RequestID)
		require.Error(t, err)
		entries, _ := os.ReadDir(dir)
		assert.Empty(t, entries, "neither the image nor a temporary file")
	})
}

// A job that exists is never abandoned for a transient failure: status
// and result calls that fail past the retry budget are retried until the
// job ends, in polling and in the default mode.
func TestWaitNeverAbandonsAJobThatExists(t *testing.T) {
	for _, mode := range []wrapper.StatusMode{wrapper.StatusPoll, wrapper.StatusAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second)},
					wrapper.WithRetries(1), wrapper.WithStatusMode(mode))
				q, err := c.Submit(context.Background(), input())
				require.NoError(t, err)
				srv.Inject(queuetest.OpStream, queuetest.Fail(502))
				for range 8 {
					srv.Inject(queuetest.OpStatus, queuetest.Fail(503))
					srv.Inject(queuetest.OpResult, queuetest.DropBefore())
				}
				res, err := c.Wait(context.Background(), q.RequestID)
				require.NoError(t, err)
				assert.NotEmpty(t, res.Images)
				assert.Equal(t, q.RequestID, res.RequestID)
			})
		})
	}
}

// Under a heavy transient fault mix (about 40 % of status, stream and
// result requests), every job is fetched.
func TestEveryJobIsFetchedUnderHeavyFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		menus := queuetest.Recoverable()
		delete(menus, queuetest.OpSubmit)
		delete(menus, queuetest.OpCancel)
		delete(menus, queuetest.OpFile)
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second), queuetest.Chaos(0.4, 7, menus)})
		const n = 150
		errs := make(chan error, n)
		for range n {
			go func() {
				res, err := c.Run(context.Background(), input())
				if err == nil {
					_, err = c.SaveImages(context.Background(), &res.Output, t.TempDir(), res.RequestID)
				}
				errs <- err
			}()
		}
		for range n {
			assert.NoError(t, <-errs)
		}
		assert.Greater(t, srv.Stats().FaultsInjected, int64(n), "the faults did strike")
	})
}

// "Retry-After: 0", or a date in the past, on a status answer is no licence
// to poll in a loop: never faster than the first poll interval.
func TestPollingNeverBusyLoops(t *testing.T) {
	for name, v := range map[string]string{"zero": "0", "past date": "Mon, 02 Jan 2006 15:04:05 GMT"} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(2 * time.Second)},
					wrapper.WithStatusMode(wrapper.StatusPoll), wrapper.WithPollInterval(100*time.Millisecond, 100*time.Millisecond))
				for range 1000 {
					srv.Inject(queuetest.OpStatus, queuetest.ComeBackAfter(v))
				}
				_, err := c.Run(context.Background(), input())
				require.NoError(t, err)
				assert.LessOrEqual(t, srv.Stats().StatusCalls, int64(32), "3 s at one poll per 100 ms")
			})
		})
	}
}

// A Retry-After on a 202 status answer paces the polls.
func TestPollingHonoursRetryAfterOnAStatusAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second)}, wrapper.WithStatusMode(wrapper.StatusPoll))
		srv.Inject(queuetest.OpStatus, queuetest.ComeBackAfter("3"))
		start := time.Now()
		_, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		assert.Equal(t, int64(2), srv.Stats().StatusCalls, "one poll, a 3 s pause, then the job is done")
		assert.GreaterOrEqual(t, time.Since(start), 3*time.Second)
	})
}

// A server that accepts and never answers does not hang a caller whose
// context has no deadline: the idle limit fails the attempt as a timeout,
// and it is retried like one.
func TestAServerThatNeverAnswersTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil, wrapper.WithAtMostOnce(), wrapper.WithSettleWindow(20*time.Second), wrapper.WithIdleTimeout(10*time.Second))
		srv.Inject(queuetest.OpSubmit, queuetest.Slow(time.Hour))
		start := time.Now()
		q, err := c.Submit(context.Background(), input())
		require.Error(t, err, "%+v after %v, %+v %v", q, time.Since(start), srv.Stats(), srv.FaultCounts())
		assert.ErrorIs(t, err, wrapper.ErrOutcomeUnknown, "a request that timed out may have been acted on")
		assert.ErrorIs(t, err, wrapper.ErrNotInHistory, "the history, asked until the window passed, has no such job")
		assert.Contains(t, err.Error(), "no progress")
		assert.Less(t, time.Since(start), time.Minute)
		assert.EqualValues(t, 1, srv.Stats().Submits)
	})
}

// The status stream keeps a job alive through its keepalive comments:
// every line resets the idle timer.
func TestKeepalivesKeepTheStreamAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(20 * time.Second), queuetest.LogLines(1), queuetest.KeepAlive(time.Second)},
			wrapper.WithIdleTimeout(3*time.Second))
		_, err := c.Run(context.Background(), input())
		require.NoError(t, err)
		assert.Zero(t, c.Stats().Fallbacks, "the stream was never silent past the limit")
		assert.EqualValues(t, 1, srv.Stats().StreamCalls)
		assert.Zero(t, srv.Stats().StatusCalls)
	})
}

// An event that never ends (data lines with no blank line) is capped: the
// stream fails and the job falls back to polling, instead of the client
// buffering without bound.
func TestAnEndlessStreamEventIsCapped(t *testing.T) {
	clearEnv(t)
	var sent atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost:
			io.WriteString(w, `{"request_id":"r1","status":"IN_QUEUE"}`)
		case strings.HasSuffix(r.URL.Path, "/stream"):
			w.Header().Set("Content-Type", "text/event-stream")
			line := "data: " + strings.Repeat("x", 64<<10) + "\n"
			for range 64 { // 4 MiB, never a blank line
				if _, err := io.WriteString(w, line); err != nil {
					return
				}
				sent.Add(int64(len(line)))
			}
		case strings.HasSuffix(r.URL.Path, "/status"):
			io.WriteString(w, `{"status":"COMPLETED"}`)
		default:
			io.WriteString(w, `{"images":[{"url":"https://example.com/a.png"}],"timings":{},"seed":1,"has_nsfw_concepts":[false],"prompt":"p"}`)
		}
	}))
	defer api.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(api.URL), wrapper.WithBearerToken("k"))
	require.NoError(t, err)
	res, err := c.Run(context.Background(), input())
	require.NoError(t, err)
	assert.Len(t, res.Images, 1)
	assert.EqualValues(t, 1, c.Stats().Fallbacks)
}

// A request id is never trusted as a file name, nor is a result allowed
// more images than the spec lets a job make.
func TestWireNamesAndCountsAreChecked(t *testing.T) {
	c, err := wrapper.New(wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil))
	require.NoError(t, err)
	png := "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
	out := &gen.Output{Images: []gen.Image{{URL: png}}}
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	for _, id := range []string{"../../escaped", "a/b", `a\b`, "..", "", "x\x1b]0;pwned\x07", "ok\nnot"} {
		_, err := c.SaveImages(context.Background(), out, dir, id)
		assert.Error(t, err, "%q", id)
	}
	entries, _ := os.ReadDir(parent)
	assert.Empty(t, entries, "nothing was written anywhere")

	five := &gen.Output{Images: make([]gen.Image, gen.InputNumImagesMaximum+1)}
	for i := range five.Images {
		five.Images[i] = gen.Image{URL: png}
	}
	_, err = c.SaveImages(context.Background(), five, dir, "r1")
	assert.ErrorContains(t, err, "more than 4 images")
	paths, err := c.SaveImages(context.Background(), out, dir, "r1")
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "r1-0.png")}, paths)
}

// Breaking out of Updates stops the watching: no status call follows.
func TestUpdatesStopsWhenTheLoopBreaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(2 * time.Second), queuetest.RunTime(2 * time.Second)}, wrapper.WithStatusMode(wrapper.StatusPoll))
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		for range c.Updates(context.Background(), q.RequestID) {
			break
		}
		calls := srv.Stats().StatusCalls
		time.Sleep(10 * time.Second)
		synctest.Wait()
		assert.Equal(t, calls, srv.Stats().StatusCalls, "no poll after the break")
		assert.EqualValues(t, 1, calls)
	})
}

var _ = json.Marshal
var _ = errors.Is

// A 429 is the account's limit: every submit of the client waits it out,
// not only the request that got it; other operations go on.
func TestA429SlowsTheWholeClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(0)})
		q0, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		srv.Inject(queuetest.OpSubmit, queuetest.Fail(429).RetryAfter(5))
		start := time.Now()
		done := make(chan time.Duration, 3)
		for i := range 3 {
			go func() {
				time.Sleep(time.Duration(i) * 100 * time.Millisecond) // the first one meets the 429
				_, err := c.Submit(context.Background(), input())
				assert.NoError(t, err)
				done <- time.Since(start)
			}()
		}
		// Meanwhile a queued job is still watched and fetched.
		polled := make(chan time.Duration, 1)
		go func() {
			time.Sleep(200 * time.Millisecond)
			_, err := c.Wait(context.Background(), q0.RequestID)
			assert.NoError(t, err)
			polled <- time.Since(start)
		}()
		for range 3 {
			assert.GreaterOrEqual(t, <-done, 5*time.Second, "every submit waited out the 429")
		}
		assert.Less(t, <-polled, 5*time.Second, "status and result calls did not wait")
		assert.EqualValues(t, 5, srv.Stats().Submits, "one before, one refused, three accepted, none sent during the pause")
	})
}

// The billed units the server reports reach the caller with the result.
func TestBillableUnitsComeWithTheResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, []queuetest.Option{queuetest.QueueTime(0), queuetest.RunTime(0)})
		in := input()
		in.NumImages = ptr(3)
		res, err := c.Run(context.Background(), in)
		require.NoError(t, err)
		assert.Equal(t, 3.0, res.BillableUnits)
		assert.NotEmpty(t, res.RequestID)
	})
}
