package batch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockName is the lock file's name in Config.Dir: a run holds an
// exclusive lock on it from start to end, and writes its pid into it.
const LockName = ".lock"

// ErrRefused matches (errors.Is) every error Run returns before it sends
// anything because the batch cannot run as given: a bad job
// (*BadJobError), a directory another run holds (*LockedError), a job
// whose input changed since it was journaled (*ChangedError), a journal
// that is a symbolic link.
var ErrRefused = errors.New("batch: refused, nothing was sent")

// LockedError is a Config.Dir another run is using: one run per
// directory at a time, or two runs would submit the same jobs and write
// over each other's files.
type LockedError struct {
	Path string // the lock file
	PID  int    // the holder's pid, as it wrote it; 0 when unknown
}

// Error names the lock file and its holder.
func (e *LockedError) Error() string {
	holder := "another run"
	if e.PID > 0 {
		holder = "another run (pid " + strconv.Itoa(e.PID) + ")"
	}
	return fmt.Sprintf("batch: %s holds the lock %s: one run per directory at a time; wait for it to end, or use another directory", holder, e.Path)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *LockedError) Is(target error) bool { return target == ErrRefused }

// lock takes the run's exclusive lock on dir, at once or not at all.
func lock(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, LockName)
	f, err := openNoFollow(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		if isSymlink(path) {
			return nil, fmt.Errorf("%w: lock file %s is a symbolic link; it is never followed", ErrRefused, path)
		}
		return nil, fmt.Errorf("batch: lock: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("batch: lock %s: %w", path, err)
	}
	if !held {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
		f.Close()
		return nil, &LockedError{Path: path, PID: pid}
	}
	// Ours: say who holds it. (The pid is for people; the lock is the
	// flock, released by the kernel when the process ends however it
	// ends, so a crash leaves no stale lock.)
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
