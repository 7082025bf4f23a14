//go:build !linux || 386

package sockio

import (
	"os"
	"syscall"
)

// Read reads from the non-blocking socket fd into p with one system call,
// retried on EINTR; EAGAIN says nothing is there.
func Read(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return 0, err
		}
		if err != nil {
			return 0, os.NewSyscallError("read", err)
		}
		return n, nil
	}
}

// Write writes p to the non-blocking socket fd with one system call,
// retried on EINTR; EAGAIN says the socket's buffer is full.
func Write(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), p)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return 0, err
		}
		if err != nil {
			return max(n, 0), os.NewSyscallError("write", err)
		}
		return n, nil
	}
}
