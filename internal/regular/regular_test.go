//go:build unix

package regular

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openWithin is Open bounded in time: a FIFO that is waited on fails the
// test instead of hanging it (its writer end is opened to release it).
func openWithin(t *testing.T, path string) (*os.File, error) {
	t.Helper()
	type opened struct {
		f   *os.File
		err error
	}
	done := make(chan opened, 1)
	go func() {
		f, err := Open(path)
		done <- opened{f, err}
	}()
	select {
	case o := <-done:
		return o.f, o.err
	case <-time.After(5 * time.Second):
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatalf("Open(%s) waited", path)
		return nil, nil
	}
}

func TestOpenRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "a.png")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	for path, kind := range map[string]string{fifo: "a FIFO", dir: "a directory", os.DevNull: "a device"} {
		f, err := openWithin(t, path)
		assert.Nil(t, f)
		assert.ErrorIs(t, err, ErrNotRegular, path)
		assert.EqualError(t, err, path+" is "+kind+", not a regular file")
	}
}

func TestOpenReadsARegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.txt")
	require.NoError(t, os.WriteFile(path, []byte("hello"), 0o644))
	f, err := openWithin(t, path)
	require.NoError(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(b))

	_, err = Open(filepath.Join(t.TempDir(), "missing"))
	var pe *os.PathError
	assert.True(t, errors.As(err, &pe), "%v", err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.NotErrorIs(t, err, ErrNotRegular)
}
