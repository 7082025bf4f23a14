//go:build linux && !386

package sockio

import (
	"os"
	"syscall"
	"unsafe"
)

// Read reads from the non-blocking socket fd into p (not empty) with one
// system call, retried on EINTR; syscall.EAGAIN itself (unwrapped, so
// comparable with ==) says nothing is there. It is recvfrom, not read: a
// socket call goes straight to the socket, without the file layer's
// bookkeeping that read and write pay.
func Read(fd uintptr, p []byte) (int, error) {
	return rawIO(syscall.SYS_RECVFROM, "recvfrom", fd, p, 0)
}

// Write writes p (not empty) to the non-blocking socket fd with one system
// call (sendto, for the reason Read gives), retried on EINTR;
// syscall.EAGAIN itself says the socket's buffer is full. A peer that
// closed gives EPIPE, without a SIGPIPE signal.
func Write(fd uintptr, p []byte) (int, error) {
	return rawIO(syscall.SYS_SENDTO, "sendto", fd, p, syscall.MSG_NOSIGNAL)
}

// rawIO makes the recvfrom or sendto system call (no address) trap without
// the runtime's blocking-call bookkeeping: the socket is non-blocking, so
// it never blocks.
func rawIO(trap uintptr, name string, fd uintptr, p []byte, flags uintptr) (int, error) {
	for {
		n, _, errno := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), flags, 0, 0)
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
