//go:build !unix

package batch

import (
	"fmt"
	"os"
)

// openNoFollow refuses a symbolic link, then opens path. (Without
// O_NOFOLLOW a link made between the two steps is followed.)
func openNoFollow(path string, flag int) (*os.File, error) {
	if isSymlink(path) {
		return nil, fmt.Errorf("%s is a symbolic link", path)
	}
	return os.OpenFile(path, flag, 0o644)
}

// tryLock is not available here: one run per directory is up to the
// caller.
func tryLock(*os.File) (bool, error) { return true, nil }
