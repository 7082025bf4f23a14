package main

import (
	"bytes"
	"net"
	"syscall"

	"github.com/lb-project/lb/dataplane/sockio"
)

// fastConn answers the common request — HTTP/1.1 GET or HEAD in origin
// form, no body — straight from the socket: the connection's goroutine
// runs inside one raw read of it, each read says whether it left the socket
// empty (TCP_INQ), so that it waits instead of trying a read that finds
// nothing, and answers go out with one sendto. That is two system calls per
// request where the bufio loop makes three (its next read comes back empty
// before each wait), on the core the benchmark's load generator shares:
// every one saved there leaves more of that core to the load, and the
// proxies, not their backends, set the pace. At the first request it does
// not serve, it leaves the bytes read so far to the bufio loop.
type fastConn struct {
	s   *h1Server
	c   net.Conn
	buf []byte // holds in
	in  []byte // read and not yet answered
	out []byte // answers to write

	inq      sockio.InqReader
	inqAsked bool
	drained  bool // the last read left the socket empty

	// What ended the raw read: closed, or handOver (the rest goes to the
	// bufio loop with in).
	closed, handOver bool
}

// serveFast serves c until it closes or a request needs the bufio loop;
// then it returns the bytes read and not yet answered, and false. It
// reports true when the connection is done (closed, or not a socket and
// nothing was read).
func (s *h1Server) serveFast(c net.Conn) (rest []byte, done bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	f := &fastConn{s: s, c: c, buf: make([]byte, maxHead), out: make([]byte, 0, 4096)}
	f.in = f.buf[:0]
	if err := rc.Read(f.step); err != nil || f.closed {
		return nil, true
	}
	return f.in, false
}

// step is the raw read's function: it answers what is buffered, reads
// more, and reports false to wait for the socket.
func (f *fastConn) step(fd uintptr) bool {
	for {
		if !f.answer(fd) {
			return true
		}
		if f.drained {
			f.drained = false
			return false
		}
		if !f.inqAsked {
			f.inqAsked = true
			_ = sockio.EnableInq(fd)
		}
		if len(f.in) > 0 && &f.in[0] != &f.buf[0] {
			f.in = f.buf[:copy(f.buf, f.in)]
		}
		if len(f.in) == len(f.buf) {
			f.handOver = true // a head this long: the bufio loop refuses it
			return true
		}
		n, left, err := f.inq.Read(fd, f.buf[len(f.in):])
		if err == syscall.EAGAIN {
			return false
		}
		if err != nil || n == 0 {
			f.closed = true
			return true
		}
		f.in = f.buf[:len(f.in)+n]
		f.drained = left == 0
	}
}

// answer answers the complete requests buffered, with one write; it reports
// false when the raw read is to end (closed, or the bufio loop takes over).
func (f *fastConn) answer(fd uintptr) bool {
	f.out = f.out[:0]
	closing := false
	for len(f.in) > 0 && !closing {
		n, resp, head, closeAfter, ok := f.s.fastRequest(f.in)
		if n == 0 {
			break // incomplete
		}
		if !ok {
			f.handOver = true
			break
		}
		f.s.Requests.Add(1)
		f.s.fastRequests.Add(1)
		if closeAfter {
			f.out = append(f.out, resp.headClose...)
			closing = true
		} else {
			f.out = append(f.out, resp.head...)
		}
		if !head {
			f.out = append(f.out, resp.body...)
		}
		f.in = f.in[n:]
		if len(f.out) >= maxOut && !closing {
			if !f.write(fd) {
				f.closed = true
				return false
			}
			f.out = f.out[:0]
		}
	}
	if len(f.out) > 0 && !f.write(fd) {
		f.closed = true
		return false
	}
	if closing {
		f.closed = true
	}
	if cap(f.out) > 2*maxOut {
		f.out = make([]byte, 0, 4096) // after a burst of pipelined large answers
	}
	return !f.closed && !f.handOver
}

// maxOut is how much of the answers to a pipelined batch gathers before
// it is written.
const maxOut = 64 << 10

// write sends f.out: with one sendto when the socket takes it all; the rest
// through the connection, which waits for room.
func (f *fastConn) write(fd uintptr) bool {
	n, err := sockio.Write(fd, f.out)
	if err != nil && err != syscall.EAGAIN {
		return false
	}
	if n == len(f.out) {
		return true
	}
	_, err = f.c.Write(f.out[n:])
	return err == nil
}

// fastRequest looks at the request at the start of b: n is the length of
// its head (0: incomplete), and ok says the fast path serves it — HTTP/1.1,
// an origin-form target, CRLF line ends, no body. A request it does not
// serve (ok false) is for the bufio loop, which also answers the malformed.
func (s *h1Server) fastRequest(b []byte) (n int, resp *response, head, closeAfter, ok bool) {
	end := bytes.Index(b, crlfCRLF)
	region := b // the head, or what there is of it
	if end >= 0 {
		region = b[:end+4]
	}
	for i := 0; i < len(region); i++ {
		j := bytes.IndexByte(region[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || region[i-1] != '\r' {
			return max(end+4, 1), nil, false, false, false // a bare LF: the bufio loop's
		}
	}
	if end < 0 {
		return 0, nil, false, false, false
	}
	n = end + 4
	lines := b[:end+2]
	eol := bytes.Index(lines, crlf)
	line := lines[:eol]
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 || string(line[sp2+1:]) != "HTTP/1.1" {
		return n, nil, false, false, false
	}
	switch string(line[:sp1]) {
	case "GET":
	case "HEAD":
		head = true
	default:
		return n, nil, false, false, false
	}
	target := line[sp1+1 : sp2]
	if len(target) == 0 || target[0] != '/' {
		return n, nil, false, false, false
	}
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	for rest := lines[eol+2:]; len(rest) > 0; {
		i := bytes.Index(rest, crlf)
		field := rest[:i]
		rest = rest[i+2:]
		colon := bytes.IndexByte(field, ':')
		if colon <= 0 || bytes.IndexByte(field, '\n') >= 0 {
			return n, nil, false, false, false
		}
		name, value := field[:colon], bytes.TrimSpace(field[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if string(value) != "0" {
				return n, nil, false, false, false
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return n, nil, false, false, false
		case bytes.EqualFold(name, []byte("Connection")):
			if containsFold(value, "close") {
				closeAfter = true
			}
		}
	}
	resp = &s.notFound
	if r, found := s.routes[string(target)]; found {
		resp = r
	}
	return n, resp, head, closeAfter, true
}

var (
	crlf     = []byte("\r\n")
	crlfCRLF = []byte("\r\n\r\n")
)
