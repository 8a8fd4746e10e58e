//go:build unix

package regular

import (
	"os"
	"syscall"
)

// openNonBlocking opens path for reading without waiting: a FIFO opens
// at once (and is then refused by its type), instead of blocking until a
// writer comes.
func openNonBlocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
}
