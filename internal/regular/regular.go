// Package regular is the one way the module opens a file it was given by
// name to read (an input image, a batch manifest): only a regular file is
// read. A FIFO, a device or a socket is refused at once, never waited on:
// opening a FIFO for reading blocks until a writer comes (forever, if
// none does), and no context or signal ends that wait.
package regular

import (
	"errors"
	"fmt"
	"os"
)

// ErrNotRegular matches (errors.Is) the error Open returns for a path that
// is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// Open opens path for reading only if it is a regular file. It is opened
// without blocking (O_NONBLOCK where the system has it: a FIFO opens at
// once instead of waiting for a writer) and checked with fstat, on the
// file opened, before a byte is read; O_NONBLOCK changes nothing for a
// regular file's reads. A path that is not a regular file is an error
// matching ErrNotRegular that names it and says what it is ("x is a
// FIFO, not a regular file"); one that cannot be opened is the
// *os.PathError of the open.
func Open(path string) (*os.File, error) {
	f, err := openNonBlocking(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &notRegularError{path: path, mode: fi.Mode()}
	}
	return f, nil
}

type notRegularError struct {
	path string
	mode os.FileMode
}

func (e *notRegularError) Error() string {
	return fmt.Sprintf("%s is %s, not a regular file", e.path, Kind(e.mode))
}

func (e *notRegularError) Is(target error) bool { return target == ErrNotRegular }

// Kind names a file type that is not a regular file: "a FIFO", "a
// socket", "a device", "a directory", or "a special file".
func Kind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	}
	return "a special file"
}
