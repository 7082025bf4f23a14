package sockio

import (
	"os"
	"syscall"
	"unsafe"
)

// Read reads from the non-blocking socket fd into p (not empty) with one
// system call, retried on EINTR; syscall.EAGAIN itself (unwrapped, so
// comparable with ==) says nothing is there.
func Read(fd uintptr, p []byte) (int, error) {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, syscall.EAGAIN
		}
		return 0, os.NewSyscallError("read", errno)
	}
}

// Write writes p (not empty) to the non-blocking socket fd with one system
// call, retried on EINTR; syscall.EAGAIN itself says the socket's buffer
// is full.
func Write(fd uintptr, p []byte) (int, error) {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, syscall.EAGAIN
		}
		return 0, os.NewSyscallError("write", errno)
	}
}
