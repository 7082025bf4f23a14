package sockio

import (
	"os"
	"syscall"
	"unsafe"
)

// Read reads from the non-blocking socket fd into p (not empty) with one
// system call, retried on EINTR; syscall.EAGAIN itself (unwrapped, so
// comparable with ==) says nothing is there.
func Read(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_READ, "read", fd, p) }

// Write writes p (not empty) to the non-blocking socket fd with one system
// call, retried on EINTR; syscall.EAGAIN itself says the socket's buffer
// is full.
func Write(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_WRITE, "write", fd, p) }

// rawIO makes the read or write system call trap without the runtime's
// blocking-call bookkeeping: the socket is non-blocking, so it never blocks.
func rawIO(trap uintptr, name string, fd uintptr, p []byte) (int, error) {
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, syscall.EAGAIN
		}
		return 0, os.NewSyscallError(name, errno)
	}
}
