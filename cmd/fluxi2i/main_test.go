package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/simulator"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

const sample = "testdata/sample.png"

func init() {
	// A lost submit of a batch cut short is looked for in the history for
	// 5 s, not ten minutes: longer than the simulator's jobs take to end
	// (a shorter window than that pays twice, as the library says).
	settleWindow = 5 * time.Second
	serveDrain, serveGrace = 100*time.Millisecond, time.Second
	simOptions = func() []queuetest.Option {
		return append(simulator.Options(simulator.Config{}), queuetest.QueueTime(30*time.Millisecond), queuetest.RunTime(60*time.Millisecond))
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type result struct {
	code           int
	stdout, stderr string
}

func cli(t *testing.T, ctx context.Context, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb syncBuffer
	code := Main(ctx, args, env, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// simServer serves the simulator for submit/wait/cancel tests.
func simServer(t *testing.T, opts ...queuetest.Option) (*queuetest.Server, string) {
	q := queuetest.New(append(append(simOptions(), queuetest.WithContract(spectest.Contract())), opts...)...)
	srv := httptest.NewServer(q)
	t.Cleanup(q.Close)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { assert.Empty(t, q.Violations(), "the CLI's traffic broke the spec") })
	return q, srv.URL
}

func decode(t *testing.T, path string) (string, image.Point) {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, format, err := image.Decode(f)
	require.NoError(t, err, path)
	return format, img.Bounds().Size()
}

func TestRunWithTheEmbeddedSimulator(t *testing.T) {
	dir := t.TempDir()
	r := cli(t, context.Background(), nil, "run", "--image", sample, "--prompt", "a wizard", "--num-images", "2", "--format", "png", "--seed", "7", "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "NOT the real model")
	assert.Contains(t, r.stderr, "request id: ")
	assert.Contains(t, r.stderr, "COMPLETED")
	paths := strings.Fields(r.stdout)
	require.Len(t, paths, 2)
	for _, p := range paths {
		assert.True(t, strings.HasSuffix(p, ".png"), p)
		format, size := decode(t, p)
		assert.Equal(t, "png", format)
		assert.Equal(t, image.Pt(128, 96), size, "at the input's size")
	}

	// Deterministic: the same prompt, seed and strength give the same pixels.
	dir2 := t.TempDir()
	r2 := cli(t, context.Background(), nil, "run", "--image", sample, "--prompt", "a wizard", "--format", "png", "--seed", "7", "--out", dir2)
	require.Equal(t, 0, r2.code, r2.stderr)
	a, _ := os.ReadFile(paths[0])
	b, _ := os.ReadFile(strings.TrimSpace(r2.stdout))
	assert.Equal(t, a, b)
}

func TestReportedSeedReproducesTheImage(t *testing.T) {
	run := func(extra ...string) (seed int64, data []byte) {
		r := cli(t, context.Background(), nil, append([]string{"run", "--image", sample, "--prompt", "p", "--json", "--format", "png", "--out", t.TempDir()}, extra...)...)
		require.Equal(t, 0, r.code, r.stderr)
		var out struct {
			Images []struct{ Path string } `json:"images"`
			Seed   int64                   `json:"seed"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
		data, err := os.ReadFile(out.Images[0].Path)
		require.NoError(t, err)
		return out.Seed, data
	}
	seed, first := run()
	_, again := run("--seed", strconv.FormatInt(seed, 10))
	assert.Equal(t, first, again, "the reported seed gives the same image")
	_, other := run("--seed", strconv.FormatInt(seed+1, 10))
	assert.NotEqual(t, first, other)
}

func TestRunJSONAndJPEG(t *testing.T) {
	dir := t.TempDir()
	r := cli(t, context.Background(), nil, "run", "--image", sample, "--prompt", "p", "--json", "--sync", "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		RequestID string `json:"request_id"`
		Images    []struct {
			Path        string `json:"path"`
			ContentType string `json:"content_type"`
			Width       int    `json:"width"`
		} `json:"images"`
		Seed int64 `json:"seed"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	assert.NotEmpty(t, out.RequestID)
	require.Len(t, out.Images, 1)
	assert.Equal(t, "image/jpeg", out.Images[0].ContentType)
	assert.Equal(t, 128, out.Images[0].Width)
	format, _ := decode(t, out.Images[0].Path)
	assert.Equal(t, "jpeg", format)
}

var idRE = regexp.MustCompile(`^[0-9a-f-]{36}$`)

func TestSubmitStatusWaitResult(t *testing.T) {
	q, base := simServer(t)
	env := map[string]string{"FLUXI2I_BASE_URL": base, "FLUXI2I_API_KEY": "k"}
	r := cli(t, context.Background(), env, "submit", "--image", sample, "--prompt", "p")
	require.Equal(t, 0, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)
	require.Regexp(t, idRE, id)

	r = cli(t, context.Background(), env, "status", id, "--logs")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `^(IN_QUEUE|IN_PROGRESS|COMPLETED)`, r.stdout)

	dir := t.TempDir()
	r = cli(t, context.Background(), env, "wait", id, "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, filepath.Join(dir, id+"-0.jpeg"), strings.TrimSpace(r.stdout))

	dir2 := t.TempDir()
	r = cli(t, context.Background(), env, "result", "--out", dir2, id)
	require.Equal(t, 0, r.code, r.stderr)
	_, size := decode(t, strings.TrimSpace(r.stdout))
	assert.Equal(t, image.Pt(128, 96), size)
	assert.EqualValues(t, 1, q.Stats().Jobs)

	r = cli(t, context.Background(), env, "status", "--json", id)
	require.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, `"status":"COMPLETED"`)
}

func TestCancel(t *testing.T) {
	q, base := simServer(t, queuetest.QueueTime(time.Hour))
	args := []string{"--base-url", base, "--api-key", "k"}
	r := cli(t, context.Background(), nil, append([]string{"submit", "--image", sample, "--prompt", "p"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)
	r = cli(t, context.Background(), nil, append([]string{"cancel", id}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "cancellation requested")
	assert.EqualValues(t, 1, q.Stats().Cancelled)
	r = cli(t, context.Background(), nil, append([]string{"cancel", id}, args...)...)
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stderr, "already completed")
	r = cli(t, context.Background(), nil, append([]string{"status", "no-such-id"}, args...)...)
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stderr, "404")
}

func TestBadInputExitsTwoNamingTheFlagAndSendsNothing(t *testing.T) {
	q, base := simServer(t)
	notImage := filepath.Join(t.TempDir(), "x.txt")
	require.NoError(t, os.WriteFile(notImage, []byte("hello"), 0o644))
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--strength", "2"}, "--strength"},
		{[]string{"--strength", "0"}, "--strength"},
		{[]string{"--steps", "9"}, "--steps"},
		{[]string{"--steps", "51"}, "--steps"},
		{[]string{"--guidance", "21"}, "--guidance"},
		{[]string{"--num-images", "5"}, "--num-images"},
		{[]string{"--format", "webp"}, "--format"},
		{[]string{"--acceleration", "warp"}, "--acceleration"},
		{[]string{"--prompt", ""}, "--prompt"},
		{[]string{"--image", notImage}, "--image"},
		{[]string{"--image", "missing.png"}, "--image"},
		{[]string{"--steps", "ten"}, "-steps"},
		{[]string{"--bogus"}, "-bogus"},
	} {
		args := append([]string{"run", "--base-url", base, "--api-key", "k", "--image", sample, "--prompt", "p"}, c.args...)
		r := cli(t, context.Background(), nil, args...)
		assert.Equal(t, 2, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.flag, c.args)
	}
	assert.Zero(t, q.Stats().Submits, "nothing was sent")

	r := cli(t, context.Background(), nil, "run", "--prompt", "p")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--image")
	assert.Equal(t, 2, cli(t, context.Background(), nil, "status").code)
	assert.Equal(t, 2, cli(t, context.Background(), nil, "frobnicate").code)
	assert.Equal(t, 2, cli(t, context.Background(), nil).code)
	r = cli(t, context.Background(), nil, "status", "some-id")
	assert.Equal(t, 2, r.code, "status needs a real endpoint")
}

func TestHelpOnEverySubcommand(t *testing.T) {
	for _, cmd := range []string{"run", "submit", "status", "result", "wait", "cancel", "simulate"} {
		r := cli(t, context.Background(), nil, cmd, "--help")
		assert.Equal(t, 0, r.code, cmd)
		assert.Contains(t, r.stdout, "Usage: fluxi2i "+cmd, cmd)
	}
	r := cli(t, context.Background(), nil, "--help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "Exit codes")
}

// pipeSim serves the simulator over in-memory pipes and points the CLI's
// HTTP client at it: call it inside synctest.Test, so waits take no time.
func pipeSim(t *testing.T, opts ...queuetest.Option) (*queuetest.Server, []string) {
	srv := spectest.NewPipeServer(t, append(simOptions(), opts...)...)
	saved := httpClient
	httpClient = srv.Client()
	t.Cleanup(func() { httpClient = saved })
	return srv, []string{"--base-url", srv.URL, "--api-key", "k"}
}

func TestTimeoutCancelsAndNamesTheRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, conn := pipeSim(t, queuetest.QueueTime(time.Hour))
		start := time.Now()
		r := cli(t, context.Background(), nil, append([]string{"run", "--image", sample, "--prompt", "p", "--timeout", "90s"}, conn...)...)
		assert.Equal(t, 4, r.code, r.stderr)
		assert.Equal(t, 90*time.Second, time.Since(start))
		assert.Regexp(t, `timed out: request [0-9a-f-]{36} was cancelled on the server`, r.stderr)
		assert.EqualValues(t, 1, q.Stats().Cancelled)
	})
}

func TestInterruptCancelsTheRemoteJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, conn := pipeSim(t, queuetest.QueueTime(time.Hour))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errb syncBuffer
		done := make(chan int)
		go func() {
			done <- Main(ctx, append([]string{"run", "--image", sample, "--prompt", "p"}, conn...), nil, &out, &errb)
		}()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		require.Contains(t, errb.String(), "request id:")
		cancel() // what Ctrl-C does through signal.NotifyContext
		code := <-done
		assert.Equal(t, 4, code)
		assert.Regexp(t, `interrupted: request [0-9a-f-]{36} was cancelled on the server`, errb.String())
		assert.EqualValues(t, 1, q.Stats().Cancelled)
	})
}

func TestWaitLeavesTheJobRunningWhenItGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, conn := pipeSim(t, queuetest.QueueTime(time.Hour))
		r := cli(t, context.Background(), nil, append([]string{"submit", "--image", sample, "--prompt", "p"}, conn...)...)
		require.Equal(t, 0, r.code, r.stderr)
		id := strings.TrimSpace(r.stdout)
		r = cli(t, context.Background(), nil, append([]string{"wait", id, "--timeout", "1m"}, conn...)...)
		assert.Equal(t, 4, r.code)
		assert.Contains(t, r.stderr, "resume with: fluxi2i wait "+id)
		assert.Zero(t, q.Stats().Cancelled, "a job started elsewhere is not cancelled by a watcher")
	})
}

func TestKeyIsNeverPrinted(t *testing.T) {
	_, base := simServer(t, queuetest.WithAPIKey("the-right-key"))
	const secret = "wrong-key-0123456789"
	r := cli(t, context.Background(), nil, "run", "--base-url", base, "--api-key", secret, "--image", sample, "--prompt", "p", "--json")
	assert.Equal(t, 3, r.code, r.stderr)
	assert.Contains(t, r.stderr, "401")
	assert.NotContains(t, r.stderr+r.stdout, secret)
}

func TestSimulateServesOtherClients(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"simulate", "--addr", "127.0.0.1:0", "--api-key", "sim-key", "--queue-time", "10ms", "--run-time", "10ms"}, nil, &out, &errb)
	}()
	addr := regexp.MustCompile(`at (http://127\.0\.0\.1:\d+)`)
	require.Eventually(t, func() bool { return addr.MatchString(errb.String()) }, 10*time.Second, 5*time.Millisecond)
	base := addr.FindStringSubmatch(errb.String())[1]
	assert.Contains(t, errb.String(), "NOT the real model")

	dir := t.TempDir()
	// fal's Key scheme, as fal's own clients send it.
	r := cli(t, context.Background(), map[string]string{"FAL_KEY": "sim-key", "FLUXI2I_BASE_URL": base}, "run", "--image", sample, "--prompt", "p", "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	// And the aggregator's Bearer scheme.
	r = cli(t, context.Background(), nil, "run", "--base-url", base, "--api-key", "sim-key", "--image", sample, "--prompt", "p", "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	r = cli(t, context.Background(), nil, "run", "--base-url", base, "--api-key", "other", "--image", sample, "--prompt", "p", "--out", dir)
	assert.Equal(t, 3, r.code, "a key other than --api-key is refused")

	cancel()
	assert.Equal(t, 0, <-done)
}
