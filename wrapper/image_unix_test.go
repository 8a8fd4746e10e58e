//go:build unix

package wrapper_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// within runs f, failing the test (not hanging it) when it takes more
// than five seconds: then release is called until f ends.
func within(t *testing.T, release func(), f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return
	case <-time.After(5 * time.Second):
	}
	for {
		release()
		select {
		case <-done:
			t.Fatal("waited on a FIFO")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// releaseFIFO opens the writer end of a FIFO, if a reader waits on it,
// and closes it: the reader blocked in its open gets through (and reads
// nothing).
func releaseFIFO(path string) func() {
	return func() {
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	}
}

// An image path that is a FIFO is refused at once, naming it: not waited
// on until a writer comes.
func TestImageFileRefusesAFIFOAtOnce(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "in.png")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	var err error
	within(t, releaseFIFO(fifo), func() { _, err = wrapper.ImageFile(fifo) })
	require.Error(t, err)
	assert.Contains(t, err.Error(), fifo+" is a FIFO, not a regular file")
}

// An image file replaced by a FIFO between ImageFile and the send fails
// the submit at once, and nothing reaches the server.
func TestImageFileThatBecameAFIFOFailsTheSubmitAtOnce(t *testing.T) {
	srv, c := setup(t, instant)
	path := filepath.Join(t.TempDir(), "in.png")
	require.NoError(t, os.WriteFile(path, pngBytes(t, 64), 0o644))
	im, err := wrapper.ImageFile(path)
	require.NoError(t, err)
	require.NoError(t, os.Remove(path))
	require.NoError(t, syscall.Mkfifo(path, 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	release := func() { cancel(); releaseFIFO(path)() }
	within(t, release, func() { _, err = c.Submit(ctx, input(), wrapper.WithImage(im)) })
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+" is a FIFO, not a regular file")
	assert.Zero(t, srv.Stats().Submits)
}
