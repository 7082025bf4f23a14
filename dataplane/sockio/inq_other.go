//go:build !linux || 386

package sockio

import "errors"

// EnableInq reports that the kernel cannot tell what a read left behind
// here (Linux's TCP_INQ).
func EnableInq(fd uintptr) error { return errors.ErrUnsupported }

// InqReader reads a socket; here it never learns what a read left behind.
type InqReader struct{}

// Read reads from the non-blocking socket fd into p, like Read; left is
// always -1 (not known).
func (r *InqReader) Read(fd uintptr, p []byte) (n, left int, err error) {
	n, err = Read(fd, p)
	return n, -1, err
}
