package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/batch"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/simulator"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// imagesDir makes a directory of n copies of the sample image, and a file
// that is not an image.
func imagesDir(t *testing.T, n int) string {
	dir := t.TempDir()
	data, err := os.ReadFile(sample)
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("cat%02d.png", i)), data, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an image"), 0o644))
	return dir
}

func TestBatchOfAFolderResumesAndSendsNothingWhenDone(t *testing.T) {
	q, base := simServer(t)
	in, out := imagesDir(t, 5), filepath.Join(t.TempDir(), "out")
	args := []string{"batch", "--base-url", base, "--api-key", "k", "--images", in, "--prompt", "a wizard", "--strength", "0.8", "--out", out}
	r := cli(t, context.Background(), nil, args...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "5 done, 0 failed")
	assert.Contains(t, r.stderr, "5 billable units in this run\n")
	for i := range 5 {
		_, err := os.Stat(filepath.Join(out, fmt.Sprintf("cat%02d-0.jpeg", i)))
		assert.NoError(t, err)
	}
	_, err := os.Stat(filepath.Join(out, batch.JournalName))
	require.NoError(t, err)
	job, _, ok := q.Job(strings.TrimSpace(firstRequestID(t, out)))
	require.True(t, ok)
	assert.Equal(t, 0.8, *job.Strength, "run's input flags apply")

	before := q.Stats()
	r = cli(t, context.Background(), nil, append(args, "--json")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "5 skipped")
	assert.Contains(t, r.stderr, "0 billable units in this run (and 5 in earlier runs)")
	after := q.Stats()
	assert.Equal(t, before, after, "a finished batch makes no request")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 6, "one line per job and the summary")
	var last map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[5]), &last))
	assert.Equal(t, true, last["summary"])
	assert.EqualValues(t, 5, last["skipped"])
	assert.EqualValues(t, 0, last["billable_units"])
	assert.EqualValues(t, 5, last["earlier_billable_units"])
}

func firstRequestID(t *testing.T, out string) string {
	b, err := os.ReadFile(filepath.Join(out, batch.JournalName))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		var rec struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.RequestID != "" {
			return rec.RequestID
		}
	}
	t.Fatal("no request id in the journal")
	return ""
}

func TestBatchManifestErrorsNameTheLine(t *testing.T) {
	q, base := simServer(t)
	dir := t.TempDir()
	data, err := os.ReadFile(sample)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.png"), data, 0o644))
	files := 0
	write := func(lines ...string) string {
		files++
		p := filepath.Join(dir, fmt.Sprintf("m%d.jsonl", files))
		require.NoError(t, os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644))
		return p
	}
	good := `{"image":"a.png","prompt":"p"}`
	for _, c := range []struct {
		manifest string
		want     []string
	}{
		{write(good, `{"image":"a.png"}`), []string{"line 2", "prompt"}},
		{write(good, `{"image":"a.png","prompt":"p","id":"b","strength":2}`), []string{"line 2", "strength", "0.01 to 1"}},
		{write(good, `{"image":"a.png","prompt":"q"}`), []string{"line 2", "already the id of job 1"}},
		{write(good, ``, `{"image":"missing.png","prompt":"p"}`), []string{"line 3", "image"}},
		{write(good, `{"image":"a.png","prompt":"p","id":"c","colour":"red"}`), []string{"line 2", "colour"}},
		{write(`{"prompt":"p"}`), []string{"line 1", "image"}},
		{write(`not json`), []string{"line 1"}},
		{filepath.Join(dir, "missing.jsonl"), []string{"--manifest"}},
	} {
		r := cli(t, context.Background(), nil, "batch", "--base-url", base, "--api-key", "k", "--manifest", c.manifest, "--out", filepath.Join(dir, "out"))
		assert.Equal(t, 2, r.code, r.stderr)
		for _, w := range c.want {
			assert.Contains(t, r.stderr, w)
		}
	}
	r := cli(t, context.Background(), nil, "batch", "--base-url", base, "--api-key", "k", "--manifest", write(good), "--out", filepath.Join(dir, "out"), "--strength", "0.5")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--strength")
	assert.Zero(t, q.Stats().Submits, "nothing was sent")

	r = cli(t, context.Background(), nil, "batch", "--base-url", base, "--api-key", "k", "--manifest",
		write(good, `{"image":"https://example.com/b.jpg","prompt":"p","seed":7,"num_images":2}`), "--out", filepath.Join(dir, "out"))
	require.Equal(t, 0, r.code, r.stderr)
	for _, f := range []string{"a-0.jpeg", "b-0.jpeg", "b-1.jpeg"} {
		_, err := os.Stat(filepath.Join(dir, "out", f))
		assert.NoError(t, err, f)
	}
}

// TestHelperBatchProcess is the CLI, re-executed by the kill test.
func TestHelperBatchProcess(t *testing.T) {
	if os.Getenv("FLUXI2I_HELPER") != "1" {
		t.Skip("a helper process")
	}
	if os.Getenv("FLUXI2I_SLOW_SIM") == "1" {
		simOptions = func() []queuetest.Option {
			return append(simulator.Options(simulator.Config{}), queuetest.QueueTime(time.Minute))
		}
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Main(context.Background(), args, nil, os.Stdout, os.Stderr))
}

// Kill -9 at random moments loses no paid result and pays for none twice:
// the next run fetches every job the server ran, by its journaled id or,
// for a job caught between intent and request id, by the request history.
func TestBatchSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the CLI")
	}
	// Faults on: submits slow (so kills land while one is in the air) or
	// answered after the server acted with the answer lost, results and
	// statuses failing now and then.
	faults := queuetest.Chaos(0.2, 11, map[queuetest.Op][]queuetest.Fault{
		queuetest.OpSubmit: {queuetest.Slow(300 * time.Millisecond), queuetest.DropAfter(), queuetest.Fail(503)},
		queuetest.OpResult: {queuetest.Fail(502)},
		queuetest.OpStatus: {queuetest.Fail(500)},
	})
	srv := spectest.NewServer(t, append(simOptions(), queuetest.QueueTime(150*time.Millisecond), queuetest.RunTime(250*time.Millisecond), faults)...)
	const n = 16
	in, out := imagesDir(t, n), filepath.Join(t.TempDir(), "out")
	// One prompt a job: the request history tells jobs apart by their
	// input (jobs with one input are never settled through it).
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"image":"cat%02d.png","prompt":"p %d"}`, i, i))
	}
	manifest := filepath.Join(in, "jobs.jsonl")
	require.NoError(t, os.WriteFile(manifest, []byte(strings.Join(lines, "\n")), 0o644))
	rng := rand.New(rand.NewPCG(5, 8))
	dupes, kills := 0, 0
	for run := 0; ; run++ {
		require.Less(t, run, 20, "the batch finishes")
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBatchProcess$", "--", "batch", "--base-url", srv.URL, "--api-key", "k",
			"--manifest", manifest, "--out", out, "--concurrency", "4", "--json")
		cmd.Env = append(os.Environ(), "FLUXI2I_HELPER=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var err error
		killAt := time.Duration(100+rng.IntN(1500)) * time.Millisecond
		if kills >= 8 {
			killAt = time.Hour // enough: let it finish
		}
		select {
		case err = <-exited:
		case <-time.After(killAt):
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			kills++
			continue
		}
		for _, line := range strings.Split(stdout.String(), "\n") {
			var rec struct {
				Summary            bool `json:"summary"`
				PossibleDuplicates int  `json:"possible_duplicates"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Summary {
				dupes += rec.PossibleDuplicates
			}
		}
		require.NoError(t, err, "%s", stderr.String())
		break
	}
	for i := range n {
		_, err := os.Stat(filepath.Join(out, fmt.Sprintf("cat%02d-0.jpeg", i)))
		assert.NoError(t, err, "image %d", i)
	}
	assert.Positive(t, kills, "the batch was killed")
	assert.LessOrEqual(t, srv.Stats().Jobs-n, int64(dupes), "resubmits only where a run died between intent and request id")
	assert.EqualValues(t, n, srv.Stats().Jobs, "no prompt submitted twice: a submit lost with its process is settled through the request history")
	t.Logf("%d jobs, %d kills, %d submitted in all, %d possible duplicates", n, kills, srv.Stats().Jobs, dupes)
}

// The first Ctrl-C stops submitting and waits for the jobs in flight; the
// second cancels them; either way the batch says how to resume.
func TestBatchInterrupts(t *testing.T) {
	for _, twice := range []bool{false, true} {
		t.Run(fmt.Sprint("twice=", twice), func(t *testing.T) {
			q, base := simServer(t, queuetest.QueueTime(300*time.Millisecond), queuetest.RunTime(700*time.Millisecond))
			second := make(chan os.Signal, 1)
			saved, savedEvery := secondInterrupt, progressEvery
			secondInterrupt = func() (<-chan os.Signal, func()) {
				if twice {
					second <- os.Interrupt
				}
				return second, func() {}
			}
			progressEvery = 50 * time.Millisecond
			t.Cleanup(func() { secondInterrupt, progressEvery = saved, savedEvery })
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			out := filepath.Join(t.TempDir(), "out")
			args := []string{"batch", "--base-url", base, "--api-key", "k", "--images", imagesDir(t, 10), "--prompt", "p", "--out", out, "--concurrency", "2"}
			r := cli(t, ctx, nil, args...)
			assert.Equal(t, 4, r.code, r.stderr)
			assert.Contains(t, r.stderr, "no more jobs are submitted")
			assert.Contains(t, r.stderr, "run the same command again to resume")
			assert.Contains(t, r.stderr, "in flight", "plain progress lines off a terminal")
			assert.EqualValues(t, 2, q.Stats().Jobs, "nothing submitted after the interrupt")
			if twice {
				assert.EqualValues(t, 2, q.Stats().Cancelled)
				// The cancelled jobs were journaled with their ids: the next
				// run looks at them, finds them cancelled, and makes them
				// again at once, instead of failing them with 499.
				r = cli(t, context.Background(), nil, args...)
				assert.Equal(t, 0, r.code, r.stderr)
				assert.Contains(t, r.stderr, "10 done")
				assert.EqualValues(t, 12, q.Stats().Jobs)
			} else {
				assert.Zero(t, q.Stats().Cancelled)
				assert.Contains(t, r.stderr, "2 done")
			}
		})
	}
}

// The folder scan names jobs by the one name rule: a file whose name
// cannot name a job, or two files one file system takes for one, are
// refused before anything is sent.
func TestBatchFolderNamesFollowTheRule(t *testing.T) {
	q, base := simServer(t)
	data, err := os.ReadFile(sample)
	require.NoError(t, err)
	for _, c := range []struct {
		files []string
		want  []string
	}{
		{[]string{"ok.png", "x\u0085y.png"}, []string{`"x\u0085y.png"`, "control character"}},
		{[]string{"ok.png", "x\u202egnp.png"}, []string{"bidirectional"}},
		{[]string{"Cat.png", "cat.png"}, []string{"job 1", "but for case"}},
	} {
		dir := t.TempDir()
		for _, f := range c.files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
		}
		// Not an image: not a job, whatever its name.
		require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("text"), 0o644))
		r := cli(t, context.Background(), nil, "batch", "--base-url", base, "--api-key", "k", "--images", dir, "--prompt", "p", "--out", filepath.Join(t.TempDir(), "out"))
		assert.Equal(t, 2, r.code, r.stderr)
		for _, w := range c.want {
			assert.Contains(t, r.stderr, w)
		}
		assert.NotContains(t, r.stderr, "\u0085", "names are printed escaped")
		assert.NotContains(t, r.stderr, "notes")
	}
	assert.Zero(t, q.Stats().Submits, "nothing was sent")
}

// A second batch on one --out exits 2 at once, naming the lock and its
// holder; a symlinked journal exits 2 as well.
func TestBatchRefusesABusyOrSymlinkedOut(t *testing.T) {
	q, base := simServer(t)
	in, out := imagesDir(t, 2), filepath.Join(t.TempDir(), "out")
	require.NoError(t, os.MkdirAll(out, 0o755))
	lock, err := os.OpenFile(filepath.Join(out, batch.LockName), os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	require.NoError(t, syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
	_, err = lock.WriteString("4242\n")
	require.NoError(t, err)
	args := []string{"batch", "--base-url", base, "--api-key", "k", "--images", in, "--prompt", "p", "--out", out}
	r := cli(t, context.Background(), nil, args...)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "pid 4242")
	assert.Contains(t, r.stderr, filepath.Join(out, batch.LockName))
	assert.Zero(t, q.Stats().Submits)
	lock.Close() // the holder ends

	journal := filepath.Join(out, batch.JournalName)
	require.NoError(t, os.Symlink(filepath.Join(t.TempDir(), "elsewhere"), journal))
	r = cli(t, context.Background(), nil, args...)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "symbolic link")
	assert.Zero(t, q.Stats().Submits)

	require.NoError(t, os.Remove(journal))
	r = cli(t, context.Background(), nil, args...)
	assert.Equal(t, 0, r.code, r.stderr)
}

// A finished batch run again with another prompt is refused (exit 2,
// naming the job and the field, nothing sent); --redo-changed makes the
// jobs again.
func TestBatchRefusesAChangedPrompt(t *testing.T) {
	q, base := simServer(t)
	in, out := imagesDir(t, 3), filepath.Join(t.TempDir(), "out")
	args := []string{"batch", "--base-url", base, "--api-key", "k", "--images", in, "--out", out}
	r := cli(t, context.Background(), nil, append(args, "--prompt", "a wizard")...)
	require.Equal(t, 0, r.code, r.stderr)
	before := q.Stats()

	r = cli(t, context.Background(), nil, append(args, "--prompt", "as a watercolour")...)
	assert.Equal(t, 2, r.code, r.stderr)
	for _, w := range []string{`job "cat00"`, `job "cat02"`, "(prompt)", "--redo-changed"} {
		assert.Contains(t, r.stderr, w)
	}
	assert.Equal(t, before, q.Stats(), "nothing was sent")

	r = cli(t, context.Background(), nil, append(args, "--prompt", "a wizard", "--seed", "3")...)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "(seed)")

	r = cli(t, context.Background(), nil, append(args, "--prompt", "as a watercolour", "--redo-changed")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "3 done")
	assert.EqualValues(t, before.Jobs+3, q.Stats().Jobs)
}

// An image that is a FIFO is refused at once (exit 2), not waited on.
func TestBatchRefusesAFIFOImage(t *testing.T) {
	q, base := simServer(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "a.png")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	manifest := filepath.Join(dir, "m.jsonl")
	require.NoError(t, os.WriteFile(manifest, []byte(`{"image":"a.png","prompt":"p"}`+"\n"), 0o644))
	done := make(chan result, 1)
	go func() {
		done <- cli(t, context.Background(), nil, "batch", "--base-url", base, "--api-key", "k", "--manifest", manifest, "--out", filepath.Join(dir, "out"))
	}()
	select {
	case r := <-done:
		assert.Equal(t, 2, r.code, r.stderr)
		assert.Contains(t, r.stderr, "a FIFO, not a regular file")
	case <-time.After(10 * time.Second):
		f, _ := os.OpenFile(fifo, os.O_WRONLY, 0)
		f.Close()
		<-done
		t.Fatal("batch waited on the FIFO")
	}
	assert.Zero(t, q.Stats().Submits)
}

// A batch on the built-in simulator that died with its process (kill -9,
// its jobs queued) resumes in the next run with a new simulator: the old
// request ids are unknown there (404), so those jobs are made again in
// that run, not failed.
func TestBatchOnTheBuiltInSimulatorResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the CLI")
	}
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"batch", "--images", imagesDir(t, 4), "--prompt", "p", "--out", out}
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperBatchProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "FLUXI2I_HELPER=1", "FLUXI2I_SLOW_SIM=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	journal := filepath.Join(out, batch.JournalName)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(journal)
		return strings.Count(string(b), `"state":"queued"`) == 4
	}, 20*time.Second, 10*time.Millisecond, "the four jobs queued: %s", &stderr)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	assert.Contains(t, stderr.String(), "NOT the real model")

	r := cli(t, context.Background(), nil, args...)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "4 done")
	assert.Contains(t, r.stderr, "0 possible duplicates")
}

// --out equal to --images, inside it, or reaching it through a symbolic
// link is refused before anything is sent.
func TestBatchRefusesOutInsideImages(t *testing.T) {
	q, base := simServer(t)
	in := imagesDir(t, 2)
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(in, link))
	for _, out := range []string{in, in + "/", filepath.Join(in, "out"), filepath.Join(in, "a", "b"), filepath.Join(in, "..out"), link, filepath.Join(link, "out")} {
		r := cli(t, context.Background(), nil, "batch", "--base-url", base, "--api-key", "k", "--images", in, "--prompt", "p", "--out", out)
		assert.Equal(t, 2, r.code, "%s: %s", out, r.stderr)
		assert.Contains(t, r.stderr, "--images", out)
		_, err := os.Stat(filepath.Join(in, "a"))
		assert.ErrorIs(t, err, os.ErrNotExist, "nothing made inside --images")
	}
	assert.Zero(t, q.Stats().Submits)
	r := cli(t, context.Background(), nil, "batch", "--base-url", base, "--api-key", "k", "--images", link, "--prompt", "p", "--out", filepath.Join(in+"-out"))
	assert.Equal(t, 0, r.code, r.stderr)
}

// endless is a manifest that never ends: head, then fill over and over.
type endless struct {
	head, fill []byte
	off        int
}

func (e *endless) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(e.head) > 0 {
			c := copy(p[n:], e.head)
			e.head = e.head[c:]
			n += c
			continue
		}
		c := copy(p[n:], e.fill[e.off:])
		e.off = (e.off + c) % len(e.fill)
		n += c
	}
	return n, nil
}

// readManifestWithin is readManifest bounded in time: a read that would
// go on for ever fails the test (its ctx is then cancelled).
func readManifestWithin(t *testing.T, ctx context.Context, r io.Reader) error {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := readManifest(ctx, r, "m.jsonl")
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("the manifest was read for ever")
		return nil
	}
}

// A manifest line over its cap is refused as soon as the cap is read, not
// once the whole line is in memory: here the line never ends.
func TestBatchRefusesAnOverlongManifestLineWhileReadingIt(t *testing.T) {
	saved := manifestLineMax
	manifestLineMax = 1 << 20
	t.Cleanup(func() { manifestLineMax = saved })
	err := readManifestWithin(t, context.Background(), &endless{head: []byte(`{"image":"a.png","prompt":"`), fill: bytes.Repeat([]byte("x"), 64<<10)})
	var ie *wrapper.InputError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, err.Error(), "line 1")
	assert.Contains(t, err.Error(), "longer than 1 MiB")
}

// Reading the manifest ends when the CLI's context does (SIGINT,
// SIGTERM): here a manifest of lines that never ends.
func TestBatchManifestReadEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := readManifestWithin(t, ctx, &endless{fill: []byte(`{"image":"a.png","prompt":"p"}` + "\n")})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// cliWithin is cli bounded in time: a command that waits on a FIFO fails
// the test instead of hanging it (the FIFO's writer end is opened, again
// and again, until the command ends).
func cliWithin(t *testing.T, fifo string, args ...string) result {
	t.Helper()
	done := make(chan result, 1)
	go func() { done <- cli(t, context.Background(), nil, args...) }()
	select {
	case r := <-done:
		return r
	case <-time.After(5 * time.Second):
	}
	for {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		select {
		case r := <-done:
			t.Fatalf("waited on the FIFO %s: %s", fifo, r.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A manifest that is a FIFO is refused at once (exit 2), naming it: not
// waited on until a writer comes, which no signal would end.
func TestBatchRefusesAFIFOManifestAtOnce(t *testing.T) {
	q, base := simServer(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "m.jsonl")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	r := cliWithin(t, fifo, "batch", "--base-url", base, "--api-key", "k", "--manifest", fifo, "--out", filepath.Join(dir, "out"))
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--manifest: "+fifo+" is a FIFO, not a regular file")
	assert.Zero(t, q.Stats().Submits)
}

// run --image FIFO is refused at once (exit 2), naming it.
func TestRunRefusesAFIFOImageAtOnce(t *testing.T) {
	q, base := simServer(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "in.png")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	r := cliWithin(t, fifo, "run", "--base-url", base, "--api-key", "k", "--image", fifo, "--prompt", "p", "--out", dir)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--image: image file: "+fifo+" is a FIFO, not a regular file")
	assert.Zero(t, q.Stats().Submits)
}

// Two changed jobs are two refusals, each on its own line of stderr
// naming its job and the field, not one line joined by a literal \n.
func TestBatchPrintsEachRefusalOnItsOwnLine(t *testing.T) {
	q, base := simServer(t)
	in, out := imagesDir(t, 2), filepath.Join(t.TempDir(), "out")
	args := []string{"batch", "--base-url", base, "--api-key", "k", "--images", in, "--out", out}
	r := cli(t, context.Background(), nil, append(args, "--prompt", "a wizard")...)
	require.Equal(t, 0, r.code, r.stderr)
	before := q.Stats()

	r = cli(t, context.Background(), nil, append(args, "--prompt", "as a watercolour")...)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Equal(t, before, q.Stats(), "nothing was sent")
	assert.NotContains(t, r.stderr, `\n`)
	var refusals []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.Contains(l, "input changed") {
			refusals = append(refusals, l)
		}
	}
	require.Len(t, refusals, 2, r.stderr)
	for i, l := range refusals {
		assert.True(t, strings.HasPrefix(l, "fluxi2i: "), l)
		assert.Contains(t, l, fmt.Sprintf(`job "cat%02d"`, i))
		assert.Contains(t, l, "(prompt)")
		assert.NotContains(t, l, fmt.Sprintf(`job "cat%02d"`, 1-i))
	}
}
