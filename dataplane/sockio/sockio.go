// Package sockio reads and writes a connected socket through its raw file
// descriptor: one non-blocking system call per read or write, waiting in
// the runtime's poller only when the socket is not ready, honouring the
// connection's deadlines. On Linux the calls skip the runtime's
// blocking-call bookkeeping (they never block), which the request path of
// a proxy pays several times per request otherwise.
package sockio

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// Conn reads and writes one socket. Read and Write may be called
// concurrently with each other, but neither concurrently with itself.
type Conn struct {
	raw syscall.RawConn

	rp     []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool
	// pending is written by the next Read before it waits (see
	// WriteOnRead); sent counts its bytes written.
	pending []byte
	sent    int

	wp      []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// New returns a Conn for c's socket, or nil when c is not a socket.
func New(c net.Conn) *Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &Conn{raw: raw}
	s.readFn = s.read
	s.writeFn = s.write
	return s
}

// WriteOnRead makes the next Read write b first, then wait for the answer
// without the read attempt that would otherwise come first. That attempt
// exists because readiness already signalled before a wait would be missed;
// nothing can be signalled for an answer before its question is written,
// and Read writes b only after the poller's readiness for the socket was
// reset. (Bytes that were there before b was written are not missed
// either: a peer that sends unasked and then closes resets the connection
// when b arrives, which is signalled.) A write error is Read's error.
func (s *Conn) WriteOnRead(b []byte) {
	s.pending, s.sent = b, 0
}

// errPartial says the pending write did not fit the socket's buffer.
var errPartial = errors.New("sockio: pending write incomplete")

// Read implements io.Reader: it returns io.EOF when the peer closed, and
// the connection's error (timeout, closed) when waiting failed.
func (s *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rp, s.rn, s.rerr = p, 0, nil
	err := s.raw.Read(s.readFn)
	if err == nil && s.rerr == errPartial {
		// The socket's buffer is full: finish writing the usual way,
		// then read the usual way.
		rest := s.pending[s.sent:]
		s.pending = nil
		if _, err := s.Write(rest); err != nil {
			return 0, err
		}
		s.rerr = nil
		err = s.raw.Read(s.readFn)
	}
	s.rp = nil
	switch {
	case err != nil:
		s.pending = nil
		return 0, err
	case s.rerr != nil:
		return 0, s.rerr
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

func (s *Conn) read(fd uintptr) bool {
	if s.pending != nil {
		for s.sent < len(s.pending) {
			n, err := Write(fd, s.pending[s.sent:])
			s.sent += n
			if err == syscall.EAGAIN {
				s.rerr = errPartial
				return true
			}
			if err != nil {
				s.pending, s.rerr = nil, err
				return true
			}
		}
		s.pending = nil
		return false // wait for the answer
	}
	n, err := Read(fd, s.rp)
	if err == syscall.EAGAIN {
		return false
	}
	s.rn, s.rerr = n, err
	return true
}

// Write implements io.Writer: it writes all of p unless an error stops it.
func (s *Conn) Write(p []byte) (int, error) {
	s.wp, s.wn, s.werr = p, 0, nil
	err := s.raw.Write(s.writeFn)
	s.wp = nil
	if err == nil {
		err = s.werr
	}
	return s.wn, err
}

func (s *Conn) write(fd uintptr) bool {
	for s.wn < len(s.wp) {
		n, err := Write(fd, s.wp[s.wn:])
		if n > 0 {
			s.wn += n
		}
		if err == syscall.EAGAIN {
			return false
		}
		if err != nil {
			s.werr = err
			return true
		}
	}
	return true
}
