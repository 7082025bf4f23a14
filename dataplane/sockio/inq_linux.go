//go:build linux && !386

package sockio

import (
	"os"
	"syscall"
	"unsafe"
)

// tcpInq is Linux's TCP_INQ socket option (since 4.18), and the type of the
// control message it adds to each read (TCP_CM_INQ).
const tcpInq = 36

// EnableInq asks the kernel to report, with each InqReader read of the
// TCP socket fd, what is left to read (see InqReader).
func EnableInq(fd uintptr) error {
	if err := syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpInq, 1); err != nil {
		return os.NewSyscallError("setsockopt TCP_INQ", err)
	}
	return nil
}

// InqReader reads a socket with one recvmsg system call that also tells
// what the read left behind. Its zero value is ready; it allocates nothing.
// It is not safe for concurrent use.
type InqReader struct {
	msg syscall.Msghdr
	iov syscall.Iovec
	// ctrl holds one control message with a 4-byte value (24 bytes on
	// 64-bit Linux); uint64s, so that its header is aligned.
	ctrl [4]uint64
}

// Read reads from the non-blocking socket fd into p (not empty), like Read.
// left is what the kernel says is still to be read after it: the bytes
// waiting, plus one for the peer's FIN if it came (a read that returns
// bytes stops at a FIN without reporting it), and -1 when it did not say
// (EnableInq was not called, or failed). left == 0 means the socket is
// empty and open: anything that arrives later is signalled to the poller.
func (r *InqReader) Read(fd uintptr, p []byte) (n, left int, err error) {
	r.iov.Base = &p[0]
	r.iov.SetLen(len(p))
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	r.msg.Control = (*byte)(unsafe.Pointer(&r.ctrl[0]))
	r.msg.SetControllen(int(unsafe.Sizeof(r.ctrl)))
	r.msg.Flags = 0
	var m uintptr
	var errno syscall.Errno
	for {
		m, _, errno = syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), 0)
		if errno != syscall.EINTR {
			break
		}
	}
	r.iov.Base, r.msg.Iov, r.msg.Control = nil, nil, nil // keep no pointer to p
	switch errno {
	case 0:
		return int(m), r.left(), nil
	case syscall.EAGAIN:
		return 0, 0, syscall.EAGAIN
	}
	return 0, -1, os.NewSyscallError("recvmsg", errno)
}

// left returns the TCP_CM_INQ value of the last read, or -1.
func (r *InqReader) left() int {
	if int(r.msg.Controllen) < syscall.CmsgLen(4) || r.msg.Flags&syscall.MSG_CTRUNC != 0 {
		return -1
	}
	c := (*syscall.Cmsghdr)(unsafe.Pointer(&r.ctrl[0]))
	if c.Level != syscall.IPPROTO_TCP || c.Type != tcpInq || int(c.Len) < syscall.CmsgLen(4) {
		return -1
	}
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(&r.ctrl[0]), syscall.CmsgLen(0))))
}
