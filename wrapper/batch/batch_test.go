package batch_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/batch"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

func setup(t *testing.T, sopts []queuetest.Option, copts ...wrapper.Option) (*queuetest.Server, *wrapper.Client) {
	t.Helper()
	srv := spectest.NewPipeServer(t, append([]queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(2 * time.Second)}, sopts...)...)
	c, err := wrapper.New(append([]wrapper.Option{wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(spectest.Client(t, srv)), wrapper.WithEnvironment(nil)}, copts...)...)
	require.NoError(t, err)
	return srv, c
}

func jobs(n int) []batch.Job {
	out := make([]batch.Job, n)
	for i := range out {
		out[i] = batch.Job{ID: fmt.Sprintf("img-%04d", i), Input: gen.Input{ImageURL: "https://example.com/" + fmt.Sprint(i) + ".png", Prompt: "a cat"}}
	}
	return out
}

func journalLines(t *testing.T, dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, batch.JournalName))
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestABatchRunsAndAFinishedOneSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		dir := t.TempDir()
		var outcomes atomic.Int32
		sum, err := batch.Run(context.Background(), c, jobs(20), batch.Config{Dir: dir, OnOutcome: func(o batch.Outcome) {
			outcomes.Add(1)
			assert.NoError(t, o.Err)
			assert.NotEmpty(t, o.RequestID)
			assert.Len(t, o.Files, 1)
		}})
		require.NoError(t, err)
		assert.Equal(t, 20, sum.Done)
		assert.Equal(t, 20.0, sum.BillableUnits, "the units the server reported, totalled")
		assert.EqualValues(t, 20, outcomes.Load())
		assert.Contains(t, journalLines(t, dir)[59], `"billable_units":1`, "and kept per job")
		assert.EqualValues(t, 20, srv.Stats().Jobs)
		assert.Len(t, journalLines(t, dir), 60, "intent, queued, done for each job")
		_, err = os.Stat(filepath.Join(dir, "img-0007-0.jpeg"))
		require.NoError(t, err)

		before := srv.Stats()
		sum, err = batch.Run(context.Background(), c, jobs(20), batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 20, sum.Skipped)
		after := srv.Stats()
		assert.Equal(t, before.Submits+before.StatusCalls+before.StreamCalls+before.ResultCalls+before.FileDownloads,
			after.Submits+after.StatusCalls+after.StreamCalls+after.ResultCalls+after.FileDownloads, "no request at all")

		// Files are checked, not trusted: a deleted image is fetched again by
		// its request id, not submitted again.
		require.NoError(t, os.Remove(filepath.Join(dir, "img-0003-0.jpeg")))
		sum, err = batch.Run(context.Background(), c, jobs(20), batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 19, sum.Skipped)
		assert.Equal(t, 1, sum.Done)
		assert.EqualValues(t, 20, srv.Stats().Jobs, "fetched by id, not submitted again")
		_, err = os.Stat(filepath.Join(dir, "img-0003-0.jpeg"))
		assert.NoError(t, err)
	})
}

// writeJournal writes raw journal lines.
func writeJournal(t *testing.T, dir string, lines ...string) {
	require.NoError(t, os.WriteFile(filepath.Join(dir, batch.JournalName), []byte(strings.Join(lines, "\n")), 0o644))
}

func TestResumeFollowsTheJournal(t *testing.T) {
	for _, atMostOnce := range []bool{false, true} {
		t.Run(fmt.Sprint("at-most-once=", atMostOnce), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv, c := setup(t, nil)
				js := jobs(4)
				queued, err := c.Submit(context.Background(), js[1].Input)
				require.NoError(t, err)
				dir := t.TempDir()
				writeJournal(t, dir,
					`{"id":"img-0000","state":"intent"}`,
					`{"id":"img-0001","state":"intent"}`,
					`{"id":"img-0001","state":"queued","request_id":"`+queued.RequestID+`"}`,
					`{"id":"img-0003","state":"failed","error":"422"}`,
					`{"id":"img-0002","state":"queu`) // torn by a crash
				sum, err := batch.Run(context.Background(), c, js, batch.Config{Dir: dir, AtMostOnce: atMostOnce})
				require.NoError(t, err)
				if atMostOnce {
					assert.Equal(t, 3, sum.Done)
					assert.Equal(t, 1, sum.Unknown)
					require.Len(t, sum.Failures, 1)
					assert.ErrorIs(t, sum.Failures[0].Err, batch.ErrOutcomeUnknown)
					assert.EqualValues(t, 3, srv.Stats().Jobs, "job 1 waited on by its id; 0 left alone")
				} else {
					assert.Equal(t, 4, sum.Done)
					assert.Equal(t, 1, sum.PossibleDuplicates)
					assert.EqualValues(t, 4, srv.Stats().Jobs, "job 1 waited on by its id, never submitted again")
				}
				lines := journalLines(t, dir)
				assert.Contains(t, lines[5], `"id":"img-`, "a record of its own after the torn line")
			})
		})
	}
}

func TestABrokenJournalIsAnError(t *testing.T) {
	_, c := setup(t, nil)
	dir := t.TempDir()
	writeJournal(t, dir, `{"id":"img-0000","state":"intent"}`, `garbage`, `{"id":"img-0001","state":"intent"}`, ``)
	_, err := batch.Run(context.Background(), c, jobs(2), batch.Config{Dir: dir})
	assert.ErrorContains(t, err, "line 2")
}

func TestBadJobsAreRefusedBeforeAnythingIsSent(t *testing.T) {
	srv, c := setup(t, nil)
	js := jobs(5)
	s := 2.0
	js[1].Input.Strength = &s
	js[2].ID = js[0].ID
	js[3].ImageFile = filepath.Join(t.TempDir(), "missing.png")
	js[4].ID = "../escape"
	_, err := batch.Run(context.Background(), c, js, batch.Config{Dir: t.TempDir()})
	var bad *batch.BadJobError
	require.ErrorAs(t, err, &bad)
	msg := err.Error()
	for _, want := range []string{"job 2", "strength", "job 3", "already the id of job 1", "job 4", "image", "job 5", "plain file name"} {
		assert.Contains(t, msg, want)
	}
	assert.Zero(t, srv.Stats().Submits)
}

// Under faults (submits dropped after the server acted, 429 with
// Retry-After, bodies cut short, failed downloads), every job ends with its
// images, and none is paid twice: the lost answers are settled through
// the request history.
func TestABatchUnderFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		menus := map[queuetest.Op][]queuetest.Fault{
			queuetest.OpSubmit: {queuetest.DropAfter(), queuetest.Fail(429).RetryAfter(2), queuetest.Truncate(), queuetest.Fail(503)},
			queuetest.OpResult: {queuetest.Truncate(), queuetest.Fail(502), queuetest.DropBefore()},
			queuetest.OpStatus: {queuetest.Fail(500), queuetest.DropBefore()},
			queuetest.OpStream: {queuetest.BreakStream(), queuetest.Fail(502)},
			queuetest.OpFile:   {queuetest.Fail(500), queuetest.Truncate(), queuetest.DropBefore()},
		}
		srv, c := setup(t, []queuetest.Option{queuetest.Chaos(0.1, 3, menus)})
		const n = 300
		sum, err := batch.Run(context.Background(), c, jobs(n), batch.Config{Dir: t.TempDir(), Concurrency: 16})
		require.NoError(t, err)
		assert.Equal(t, n, sum.Done, "%+v", sum.Failures)
		dropped := srv.FaultCounts()["submit:drop-after"]
		assert.Positive(t, dropped)
		assert.EqualValues(t, n, srv.Stats().Jobs, "no job paid twice")
		assert.EqualValues(t, dropped, c.Stats().Settled, "each lost answer settled from the history")
	})
}

// A crash at any moment loses no paid result: runs abandoned at random
// points (the context ends, the jobs left running as a killed process
// leaves them), then run again, end with every image, and with no more
// resubmits than jobs caught between intent and request id.
func TestAbandonedRunsLoseNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil, wrapper.WithCancelOnExit(0))
		dir := t.TempDir()
		const n = 60
		rng := rand.New(rand.NewPCG(1, 2))
		dupes, runs := 0, 0
		for run := 0; ; run++ {
			runs++
			require.Less(t, run, 50, "the batch finishes")
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(4000))*time.Millisecond)
			sum, err := batch.Run(ctx, c, jobs(n), batch.Config{Dir: dir, Concurrency: 8})
			cancel()
			dupes += sum.PossibleDuplicates
			if err == nil && sum.Done+sum.Skipped == n {
				break
			}
		}
		for i := range n {
			_, err := os.Stat(filepath.Join(dir, fmt.Sprintf("img-%04d-0.jpeg", i)))
			assert.NoError(t, err, "job %d", i)
		}
		assert.LessOrEqual(t, srv.Stats().Jobs-n, int64(dupes), "extra jobs only where a run died between intent and request id")
		assert.Greater(t, runs, 3, "the batch was cut short several times")
		t.Logf("%d jobs over %d runs, %d submitted in all, %d possible duplicates reported", n, runs, srv.Stats().Jobs, dupes)
	})
}

func TestStopLetsJobsInFlightFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		stop := make(chan struct{})
		var once atomic.Bool
		sum, err := batch.Run(context.Background(), c, jobs(10), batch.Config{Dir: t.TempDir(), Concurrency: 2, Stop: stop,
			OnOutcome: func(batch.Outcome) {
				if once.CompareAndSwap(false, true) {
					close(stop)
				}
			}})
		require.NoError(t, err)
		assert.Equal(t, 2, sum.Done, "the two in flight finished; no other started")
		assert.EqualValues(t, 2, srv.Stats().Jobs)
		assert.Zero(t, srv.Stats().Cancelled)
	})
}

var _ = errors.Is
