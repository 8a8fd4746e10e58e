package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// Refused before anything is sent or paid for: exit 2, naming the flag.
func TestMoreBadInputIsRefusedBeforeAnythingIsPaid(t *testing.T) {
	q, base := simServer(t)
	file := filepath.Join(t.TempDir(), "a-file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--out", file}, "--out"},
		{[]string{"--out", filepath.Join(file, "sub")}, "--out"},
		{[]string{"--strength", "NaN"}, "--strength"},
		{[]string{"--guidance", "NaN"}, "--guidance"},
		{[]string{"--strength", "+Inf"}, "--strength"},
		{[]string{"--timeout", "-5s"}, "--timeout"},
	} {
		args := append([]string{"run", "--base-url", base, "--api-key", "k", "--image", sample, "--prompt", "p"}, c.args...)
		r := cli(t, context.Background(), nil, args...)
		assert.Equal(t, 2, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.flag, c.args)
		assert.NotContains(t, r.stdout, "{", "no JSON error for a flag")
	}
	r := cli(t, context.Background(), nil, "wait", "some-id", "--base-url", base, "--api-key", "k", "--out", file)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--out")
	r = cli(t, context.Background(), nil, "status", "some-id", "--base-url", base, "--api-key", "k", "--timeout", "-1m")
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Zero(t, q.Stats().Submits+q.Stats().StatusCalls+q.Stats().StreamCalls, "nothing was sent")
}

// Found by trying it as a person would.
func TestItReadsWellToAPerson(t *testing.T) {
	r := cli(t, context.Background(), nil, "help", "run")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stderr+r.stdout, "Usage: fluxi2i run")
	assert.Contains(t, r.stderr+r.stdout, "-prompt")

	r = cli(t, context.Background(), nil, "rnu")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "did you mean run?")
	r = cli(t, context.Background(), nil, "stat")
	assert.Contains(t, r.stderr, "did you mean status?")

	r = cli(t, context.Background(), nil, "version")
	assert.Equal(t, 0, r.code)
	assert.Regexp(t, `^fluxi2i .+ \(library \d+\.\d+\.\d+, go`, r.stdout)

	missing := filepath.Join(t.TempDir(), "missing.png")
	r = cli(t, context.Background(), nil, "run", "--image", missing, "--prompt", "p")
	assert.Equal(t, 2, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "fluxi2i:"), "one prefix: %s", r.stderr)
}

// --image - reads the image from standard input, as people who pipe
// expect.
func TestImageFromStandardInput(t *testing.T) {
	q, base := simServer(t)
	data, err := os.ReadFile(sample)
	require.NoError(t, err)
	saved := stdin
	stdin = bytes.NewReader(data)
	t.Cleanup(func() { stdin = saved })
	dir := t.TempDir()
	r := cli(t, context.Background(), nil, "run", "--base-url", base, "--api-key", "k", "--image", "-", "--prompt", "p", "--out", dir)
	require.Equal(t, 0, r.code, r.stderr)
	assert.EqualValues(t, 1, q.Stats().Jobs)
	stdin = strings.NewReader("not an image")
	r = cli(t, context.Background(), nil, "run", "--base-url", base, "--api-key", "k", "--image", "-", "--prompt", "p", "--out", dir)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--image: standard input")
}

// A cancelled job's status says so, and cancelling it again does not
// send the user looking for a result it cannot have.
func TestCancelledJobsReadAsSuch(t *testing.T) {
	_, base := simServer(t, queuetest.QueueTime(1<<40))
	args := []string{"--base-url", base, "--api-key", "k"}
	r := cli(t, context.Background(), nil, append([]string{"submit", "--image", sample, "--prompt", "p"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)
	require.Equal(t, 0, cli(t, context.Background(), nil, append([]string{"cancel", id}, args...)...).code)

	r = cli(t, context.Background(), nil, append([]string{"status", id}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "without a result")
	assert.Contains(t, r.stdout, "client_cancelled")

	r = cli(t, context.Background(), nil, append([]string{"cancel", id}, args...)...)
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stderr, "without a result")
	assert.NotContains(t, r.stderr, "fluxi2i result")
}

// Nothing from the wire is obeyed by the terminal: escape sequences in a
// request id, a status or a log line are shown escaped.
func TestWireTextIsEscapedBeforePrinting(t *testing.T) {
	evil := "r1\x1b]0;pwned\x07\x1b[31mFAKE WARNING\x1b[0m"
	got := printable(evil)
	assert.NotContains(t, got, "\x1b")
	assert.NotContains(t, got, "\x07")
	assert.Contains(t, got, `\x1b]0;pwned\a`)
	assert.Equal(t, "plain-id_42 ✓", printable("plain-id_42 ✓"))
	assert.NotContains(t, printable("a\u202eb"), "\u202e", "no bidi override either")
}

// Joined errors are one line each on stderr; control characters inside a
// message are still escaped, a newline among them; an error wrapping
// several with %w is one message.
func TestFailPrintsJoinedErrorsOneALine(t *testing.T) {
	var stderr bytes.Buffer
	a := &app{stderr: &stderr, stdout: io.Discard}
	err := errors.Join(errors.New("fluxi2i: first \x1b[31mred"), errors.Join(errors.New("second\nforged: line"), errors.New("third")))
	assert.Equal(t, exitFailure, a.fail(err))
	assert.Equal(t, "fluxi2i: first \\x1b[31mred\nfluxi2i: second\\nforged: line\nfluxi2i: third\n", stderr.String())

	stderr.Reset()
	a.fail(fmt.Errorf("%w: %w", errors.New("a"), errors.New("b\nc")))
	assert.Equal(t, "fluxi2i: a: b\\nc\n", stderr.String())
}
