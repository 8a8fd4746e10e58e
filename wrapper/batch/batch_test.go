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
	"syscall"
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
		assert.Zero(t, sum.BillableUnits, "this run paid nothing")
		assert.Equal(t, 20.0, sum.EarlierBillableUnits, "what the earlier run paid, apart")
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
		assert.Zero(t, sum.BillableUnits, "fetched again, paid once, by the first run")
		assert.Equal(t, 20.0, sum.EarlierBillableUnits)
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
					assert.ErrorIs(t, sum.Failures[0].Err, wrapper.ErrOutcomeUnknown)
					onePrefix(t, sum.Failures[0].Err)
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
		assert.EqualValues(t, n, srv.Stats().Jobs, "none at all: a submit abandoned in the air is settled through the request history")
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

// One name rule, before anything is sent: ids SaveImages would refuse
// after the job ran (C1 controls, bidi and zero-width characters, a
// byte-order mark) are refused by Check, and ids one file system would
// take for the same file (case, Unicode normalisation) are duplicates.
func TestIDsFollowTheOneNameRule(t *testing.T) {
	srv, c := setup(t, nil)
	js := jobs(8)
	js[0].ID = "x\u0085y"
	js[1].ID = "x\u202egpj.exe"
	js[2].ID = "x\u200by"
	js[3].ID = "\ufeffcat"
	js[4].ID = "Cat"
	js[5].ID = "cat"
	js[6].ID = "caf\u00e9"
	js[7].ID = "cafe\u0301"
	_, err := batch.Run(context.Background(), c, js, batch.Config{Dir: t.TempDir()})
	var bad *batch.BadJobError
	require.ErrorAs(t, err, &bad)
	msg := err.Error()
	for _, want := range []string{"job 1", "control character", "job 2", "bidirectional", "job 3", "zero-width", "job 4", "byte-order mark",
		`job 6 ("cat"): id "cat" is the id of job 5 ("Cat") but for case`, "job 8", "normalisation"} {
		assert.Contains(t, msg, want)
	}
	assert.Len(t, strings.Split(msg, "\n"), 6, "the first of each pair is accepted")
	assert.Zero(t, srv.Stats().Submits)
}

// onePrefix checks that err reads with one prefix, at its start:
// "fluxi2i: " for the client's errors, "batch: " for the batch's own,
// which put what they wrap after their text without its prefix.
func onePrefix(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "fluxi2i: ") || strings.HasPrefix(msg, "batch: "), msg)
	assert.Equal(t, 1, strings.Count(msg, "fluxi2i:")+strings.Count(msg, "batch:"), msg)
}

// One ErrOutcomeUnknown: a submit whose answer was lost (at most once,
// with no request history to settle it, as at the aggregator) is counted
// unknown, not failed, in the run it happened in and in the next.
func TestAnUnknownOutcomeCountsTheSameInEveryRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, []queuetest.Option{queuetest.WithoutHistory()})
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter())
		dir := t.TempDir()
		for run := range 2 {
			sum, err := batch.Run(context.Background(), c, jobs(3), batch.Config{Dir: dir, AtMostOnce: true, Concurrency: 1})
			require.NoError(t, err)
			assert.Equal(t, 1, sum.Unknown, "run %d", run+1)
			assert.Zero(t, sum.Failed, "run %d", run+1)
			require.Len(t, sum.Failures, 1)
			assert.ErrorIs(t, sum.Failures[0].Err, wrapper.ErrOutcomeUnknown)
		}
		assert.EqualValues(t, 3, srv.Stats().Jobs, "the unknown one was never submitted again")
	})
}

// One run per directory: while a run holds Dir, a second one fails at
// once, naming the lock and the holder's pid, and sends nothing.
func TestOneRunPerDirectory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		dir := t.TempDir()
		started := make(chan struct{})
		var once atomic.Bool
		var first batch.Summary
		var firstErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			first, firstErr = batch.Run(context.Background(), c, jobs(4), batch.Config{Dir: dir, OnProgress: func(batch.Progress) {
				if once.CompareAndSwap(false, true) {
					close(started)
				}
			}})
		}()
		<-started
		other, c2 := setup(t, nil) // the second run's own server: it must see nothing
		_, err := batch.Run(context.Background(), c2, jobs(4), batch.Config{Dir: dir})
		var locked *batch.LockedError
		require.ErrorAs(t, err, &locked)
		assert.ErrorIs(t, err, batch.ErrRefused)
		assert.Equal(t, filepath.Join(dir, batch.LockName), locked.Path)
		assert.Equal(t, os.Getpid(), locked.PID)
		assert.Contains(t, err.Error(), "pid "+fmt.Sprint(os.Getpid()))
		assert.Contains(t, err.Error(), locked.Path)
		assert.Zero(t, other.Stats().Submits, "the second run sent nothing")
		<-done
		require.NoError(t, firstErr)
		assert.Equal(t, 4, first.Done)
		assert.EqualValues(t, 4, srv.Stats().Jobs)

		// Released at the end: the next run goes ahead.
		sum, err := batch.Run(context.Background(), c, jobs(4), batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 4, sum.Skipped)
	})
}

// The journal is never followed through a symbolic link.
func TestASymlinkedJournalIsRefused(t *testing.T) {
	srv, c := setup(t, nil)
	dir, elsewhere := t.TempDir(), filepath.Join(t.TempDir(), "precious")
	require.NoError(t, os.WriteFile(elsewhere, []byte("keep me\n"), 0o644))
	require.NoError(t, os.Symlink(elsewhere, filepath.Join(dir, batch.JournalName)))
	_, err := batch.Run(context.Background(), c, jobs(2), batch.Config{Dir: dir})
	assert.ErrorIs(t, err, batch.ErrRefused)
	assert.ErrorContains(t, err, "symbolic link")
	b, _ := os.ReadFile(elsewhere)
	assert.Equal(t, "keep me\n", string(b), "not written through")
	assert.Zero(t, srv.Stats().Submits)
}

// A torn last line is cut off, not turned into a broken middle line: the
// run after it and the run after that both go ahead, and every line of
// the journal is a record.
func TestATornLineSurvivesTwoRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, nil)
		dir := t.TempDir()
		writeJournal(t, dir, `{"id":"img-0000","state":"intent"}`, `{"id":"img-0001","state":"qu`)
		for run := range 2 {
			js := jobs(2 + run)
			sum, err := batch.Run(context.Background(), c, js, batch.Config{Dir: dir})
			require.NoError(t, err, "run %d", run+1)
			assert.Equal(t, 2+run, sum.Done+sum.Skipped, "run %d", run+1)
		}
		for i, line := range journalLines(t, dir) {
			assert.True(t, strings.HasPrefix(line, `{"id":"img-`) && strings.HasSuffix(line, "}"), "line %d: %q", i+1, line)
		}
	})
}

// A job whose input changed since the journal recorded it is refused
// before anything is sent, naming the job and the field; RedoChanged
// makes it again, as a new job.
func TestAChangedInputIsRefusedOrRedone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		dir := t.TempDir()
		img := filepath.Join(t.TempDir(), "cat.png")
		require.NoError(t, os.WriteFile(img, pngBytes(t), 0o644))
		base := func() []batch.Job {
			js := jobs(3)
			js[2].Input.ImageURL, js[2].ImageFile = "", img
			return js
		}
		_, err := batch.Run(context.Background(), c, base(), batch.Config{Dir: dir})
		require.NoError(t, err)
		requests := func() int64 {
			s := srv.Stats()
			return s.Submits + s.StatusCalls + s.StreamCalls + s.ResultCalls + s.FileDownloads
		}
		before := requests()

		seven, two := int64(7), 0.5
		for _, c2 := range []struct {
			change func([]batch.Job)
			id     string
			fields []string
		}{
			{func(js []batch.Job) { js[0].Input.Prompt = "as a watercolour" }, "img-0000", []string{"prompt"}},
			{func(js []batch.Job) { js[1].Input.Strength, js[1].Input.Seed = &two, &seven }, "img-0001", []string{"seed", "strength"}},
			{func(js []batch.Job) { js[1].Input.ImageURL = "https://example.com/other.png" }, "img-0001", []string{"image"}},
			{func(js []batch.Job) {
				b := pngBytes(t)
				require.NoError(t, os.WriteFile(img, append(b, 0), 0o644)) // the file's bytes changed
			}, "img-0002", []string{"image"}},
		} {
			js := base()
			c2.change(js)
			_, err := batch.Run(context.Background(), c, js, batch.Config{Dir: dir})
			var ch *batch.ChangedError
			require.ErrorAs(t, err, &ch)
			assert.ErrorIs(t, err, batch.ErrRefused)
			assert.Equal(t, c2.id, ch.ID)
			assert.Equal(t, c2.fields, ch.Fields)
			assert.Contains(t, err.Error(), c2.id)
			assert.Equal(t, before, requests(), "nothing was sent")
		}
		require.NoError(t, os.WriteFile(img, pngBytes(t), 0o644))

		// The "default" of output_format is leaving it out: not a change.
		js := base()
		def := gen.InputOutputFormat("default")
		js[0].Input.OutputFormat = &def
		sum, err := batch.Run(context.Background(), c, js, batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 3, sum.Skipped)

		js = base()
		js[0].Input.Prompt = "as a watercolour"
		sum, err = batch.Run(context.Background(), c, js, batch.Config{Dir: dir, RedoChanged: true})
		require.NoError(t, err)
		assert.Equal(t, 1, sum.Done)
		assert.Equal(t, 2, sum.Skipped)
		assert.EqualValues(t, 4, srv.Stats().Jobs, "made again, as a new job")
		sum, err = batch.Run(context.Background(), c, js, batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 3, sum.Skipped, "and journaled with its new input")
	})
}

func pngBytes(t *testing.T) []byte {
	b, err := os.ReadFile("../../cmd/fluxi2i/testdata/sample.png")
	require.NoError(t, err)
	return b
}

// An image that is not a regular file (a FIFO here) is refused at once,
// never waited on.
func TestAFIFOImageIsRefusedAtOnce(t *testing.T) {
	srv, c := setup(t, nil)
	fifo := filepath.Join(t.TempDir(), "cat.png")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	js := jobs(1)
	js[0].Input.ImageURL, js[0].ImageFile = "", fifo
	done := make(chan error, 1)
	go func() {
		_, err := batch.Run(context.Background(), c, js, batch.Config{Dir: t.TempDir()})
		done <- err
	}()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, batch.ErrRefused)
		assert.ErrorContains(t, err, "a FIFO, not a regular file")
	case <-time.After(10 * time.Second):
		// Unblock the open so the goroutine ends, then fail.
		f, _ := os.OpenFile(fifo, os.O_WRONLY, 0)
		f.Close()
		<-done
		t.Fatal("Run waited on the FIFO")
	}
	assert.Zero(t, srv.Stats().Submits)
}

// A paid result whose save failed keeps its request id: after a directory
// squatting an output name is gone, the next run fetches it by id and
// submits nothing.
func TestAFailedSaveIsFetchedByIDNotPaidAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		dir := t.TempDir()
		squat := filepath.Join(dir, "img-0001-0.jpeg")
		require.NoError(t, os.Mkdir(squat, 0o755))
		sum, err := batch.Run(context.Background(), c, jobs(3), batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 2, sum.Done)
		require.Len(t, sum.Failures, 1)
		assert.Equal(t, "img-0001", sum.Failures[0].ID)
		assert.NotEmpty(t, sum.Failures[0].RequestID)
		assert.Contains(t, strings.Join(journalLines(t, dir), "\n"), `"state":"fetch-failed","request_id":"`+sum.Failures[0].RequestID, "the id is kept")

		require.NoError(t, os.Remove(squat))
		sum, err = batch.Run(context.Background(), c, jobs(3), batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 1, sum.Done)
		assert.Equal(t, 2, sum.Skipped)
		assert.EqualValues(t, 3, srv.Stats().Jobs, "fetched by its id, not submitted again")
		_, err = os.Stat(squat)
		assert.NoError(t, err)
	})
}

// Jobs whose server forgot them (a simulator gone with its process:
// another server here) are made again in the same run, not failed with
// 404 for the run after to redo.
func TestJobsTheServerForgotAreMadeAgainInTheSameRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, nil, wrapper.WithCancelOnExit(0))
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		sum, err := batch.Run(ctx, c, jobs(4), batch.Config{Dir: dir, Concurrency: 4})
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, sum.Done, "abandoned while queued")

		srv2, c2 := setup(t, nil)
		sum, err = batch.Run(context.Background(), c2, jobs(4), batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 4, sum.Done, "%+v", sum.Failures)
		assert.Zero(t, sum.PossibleDuplicates)
		assert.EqualValues(t, 4, srv2.Stats().Jobs)
	})
}

// Jobs cancelled when the context ends (the CLI's second Ctrl-C) are
// journaled cancelled with their request id; the next run looks at them by
// id and, finding them cancelled, makes them again in that run.
func TestCancelledJobsAreJournaledAndRedoneByTheNextRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		sum, err := batch.Run(ctx, c, jobs(3), batch.Config{Dir: dir, Concurrency: 3})
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, sum.Done)
		assert.EqualValues(t, 3, srv.Stats().Cancelled)
		cancelled := 0
		for _, l := range journalLines(t, dir) {
			if strings.Contains(l, `"state":"cancelled","request_id":"`) {
				cancelled++
			}
		}
		assert.Equal(t, 3, cancelled)

		sum, err = batch.Run(context.Background(), c, jobs(3), batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 3, sum.Done, "%+v", sum.Failures)
		assert.EqualValues(t, 6, srv.Stats().Jobs, "each looked at by id, then made again once")
	})
}

// An intent an earlier run journaled (with its time) but never learned
// the answer of is settled through the request history before anything
// is sent again: a job found there is fetched by its id; when the history
// shows no such job, the job is submitted, as no duplicate; where there is
// no history (the aggregator), the batch does as before: a possible
// duplicate, or, at most once, left unknown.
func TestResumedIntentsAreSettledThroughTheHistory(t *testing.T) {
	for _, c := range []struct {
		name       string
		history    bool
		atMostOnce bool
	}{{"history", true, false}, {"history,at-most-once", true, true}, {"no-history", false, false}, {"no-history,at-most-once", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var sopts []queuetest.Option
				if !c.history {
					sopts = append(sopts, queuetest.WithoutHistory())
				}
				srv, cl := setup(t, sopts)
				js := jobs(3)
				sent := time.Now().UTC().Format(time.RFC3339Nano)
				// The crashed run's own client submitted job 0 and lost the
				// answer with the process.
				crashed, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(spectest.Client(t, srv)), wrapper.WithEnvironment(nil))
				require.NoError(t, err)
				_, err = crashed.Submit(context.Background(), js[0].Input)
				require.NoError(t, err)
				dir := t.TempDir()
				writeJournal(t, dir,
					`{"id":"img-0000","state":"intent","sent":"`+sent+`"}`,
					`{"id":"img-0001","state":"intent","sent":"`+sent+`"}`, // never reached the server
					``)
				sum, err := batch.Run(context.Background(), cl, js, batch.Config{Dir: dir, AtMostOnce: c.atMostOnce})
				require.NoError(t, err)
				switch {
				case c.history:
					assert.Equal(t, 3, sum.Done, "%+v", sum.Failures)
					assert.Equal(t, 1, sum.Settled, "job 0 found in the history")
					assert.Zero(t, sum.PossibleDuplicates, "job 1 known not to exist")
					assert.EqualValues(t, 3, srv.Stats().Jobs, "job 0 never submitted again")
				case c.atMostOnce:
					assert.Equal(t, 1, sum.Done)
					assert.Equal(t, 2, sum.Unknown)
					require.Len(t, sum.Failures, 2)
					assert.ErrorIs(t, sum.Failures[0].Err, wrapper.ErrHistoryUnavailable, "and says why")
					assert.EqualValues(t, 2, srv.Stats().Jobs)
				default:
					assert.Equal(t, 3, sum.Done)
					assert.Equal(t, 2, sum.PossibleDuplicates)
					assert.Zero(t, sum.Settled)
					assert.EqualValues(t, 4, srv.Stats().Jobs, "job 0 paid twice: nothing could tell")
				}
			})
		})
	}
}

// Closing Stop ends a wait for the request history too: the job keeps its
// intent, nothing is submitted, and the next run settles it.
func TestStopEndsASettleWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		dir := t.TempDir()
		sent := time.Now().UTC().Format(time.RFC3339Nano)
		writeJournal(t, dir, `{"id":"img-0000","state":"intent","sent":"`+sent+`"}`, ``) // never reached the server
		stop := make(chan struct{})
		time.AfterFunc(30*time.Second, func() { close(stop) })
		start := time.Now()
		sum, err := batch.Run(context.Background(), c, jobs(1), batch.Config{Dir: dir, Stop: stop})
		require.NoError(t, err)
		assert.Less(t, time.Since(start), time.Minute, "not the ten-minute window")
		require.Len(t, sum.Failures, 1)
		assert.ErrorContains(t, sum.Failures[0].Err, "the next run looks again")
		assert.Zero(t, srv.Stats().Submits)
		assert.Contains(t, journalLines(t, dir)[0], `"state":"intent"`)
		assert.Len(t, journalLines(t, dir), 1, "the intent is left as it was")
	})
}

// A last record that is whole but lost its newline is kept (it may hold a
// request id): the job is waited on by that id, not submitted again.
func TestAWholeLastRecordWithoutItsNewlineIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		js := jobs(1)
		other, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(spectest.Client(t, srv)), wrapper.WithEnvironment(nil))
		require.NoError(t, err)
		q, err := other.Submit(context.Background(), js[0].Input)
		require.NoError(t, err)
		dir := t.TempDir()
		writeJournal(t, dir, `{"id":"img-0000","state":"intent"}`, `{"id":"img-0000","state":"queued","request_id":"`+q.RequestID+`"}`)
		sum, err := batch.Run(context.Background(), c, js, batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 1, sum.Done)
		assert.Zero(t, sum.PossibleDuplicates)
		assert.EqualValues(t, 1, srv.Stats().Jobs, "waited on by its id")
		lines := journalLines(t, dir)
		require.Len(t, lines, 3)
		assert.Contains(t, lines[1], q.RequestID)
		assert.Contains(t, lines[2], `"state":"done"`, "a line of its own")
	})
}

// Jobs of one batch with the same input cannot be told apart in the
// request history: their lost submits are not settled through it (one
// could claim the other's job), but resumed as before, as possible
// duplicates, each with a job of its own.
func TestTwinInputsAreNotSettledThroughTheHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		js := jobs(2)
		js[1].Input = js[0].Input
		crashed, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken("k"), wrapper.WithHTTPClient(spectest.Client(t, srv)), wrapper.WithEnvironment(nil))
		require.NoError(t, err)
		sent := time.Now().UTC().Format(time.RFC3339Nano)
		_, err = crashed.Submit(context.Background(), js[0].Input) // one of the two reached the server
		require.NoError(t, err)
		dir := t.TempDir()
		writeJournal(t, dir,
			`{"id":"img-0000","state":"intent","sent":"`+sent+`"}`,
			`{"id":"img-0001","state":"intent","sent":"`+sent+`"}`, ``)
		sum, err := batch.Run(context.Background(), c, js, batch.Config{Dir: dir})
		require.NoError(t, err)
		assert.Equal(t, 2, sum.Done)
		assert.Zero(t, sum.Settled)
		assert.Equal(t, 2, sum.PossibleDuplicates)
		assert.EqualValues(t, 3, srv.Stats().Jobs)
		ids := map[string]bool{}
		for _, l := range journalLines(t, dir) {
			if strings.Contains(l, `"state":"done"`) {
				ids[l[strings.Index(l, `"request_id":"`):][:40]] = true
			}
		}
		assert.Len(t, ids, 2, "each job its own request")
	})
}

// OnProgress reports done, failed, in flight and this run's billable
// units as they change, so that a service can export them.
func TestProgressReportsWhatABatchDid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := setup(t, nil)
		var seen []batch.Progress
		sum, err := batch.Run(context.Background(), c, jobs(3), batch.Config{Dir: t.TempDir(), OnProgress: func(p batch.Progress) { seen = append(seen, p) }})
		require.NoError(t, err)
		require.NotEmpty(t, seen)
		last := seen[len(seen)-1]
		assert.Equal(t, 3, last.Done)
		assert.Zero(t, last.InFlight)
		assert.Equal(t, sum.BillableUnits, last.BillableUnits)
		assert.EqualValues(t, 3, last.BillableUnits, "one unit an image")
		maxInFlight := 0
		for _, p := range seen {
			maxInFlight = max(maxInFlight, p.InFlight)
		}
		assert.Positive(t, maxInFlight)
	})
}
