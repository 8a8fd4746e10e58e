//go:build !unix

package regular

import "os"

// openNonBlocking opens path for reading (systems without unix FIFOs).
func openNonBlocking(path string) (*os.File, error) { return os.Open(path) }
