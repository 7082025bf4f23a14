package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// maxHead bounds a request line or header line; longer ones get 431.
const maxHead = 8 << 10

// errHeadTooLong is returned for a request line or header longer than maxHead.
var errHeadTooLong = errors.New("request head line too long")

// response is a canned answer, prebuilt so that serving it costs two copies
// into the connection's write buffer and nothing else.
type response struct {
	head      []byte // status line and headers, keep-alive
	headClose []byte // the same with "Connection: close"
	body      []byte
}

func newResponse(status string, body []byte) response {
	h := fmt.Sprintf("HTTP/1.1 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n", status, len(body))
	return response{
		head:      []byte(h + "\r\n"),
		headClose: []byte(h + "Connection: close\r\n\r\n"),
		body:      body,
	}
}

// h1Server is a minimal HTTP/1.1 server answering fixed bodies by path. It
// keeps connections alive (HTTP/1.0 only on request), answers pipelined
// requests in order with one write per batch, reads and discards request
// bodies (Content-Length or chunked), and closes the connection after
// "Connection: close" or anything it cannot parse. It exists so that the
// benchmark's backends cost far less CPU than the proxies under test; it is
// not a general-purpose server.
type h1Server struct {
	routes   map[string]*response
	notFound response
	badReq   response
	tooLong  response

	// Requests and Conns count requests answered and connections accepted;
	// fastRequests the requests answered from the socket (see fastConn).
	Requests, Conns atomic.Int64
	fastRequests    atomic.Int64

	mu     sync.Mutex            // guards conns and closed
	conns  map[net.Conn]struct{} // open connections, closed by Close
	closed bool
	wg     sync.WaitGroup // one per connection goroutine
}

func newH1Server(routes map[string][]byte) *h1Server {
	s := &h1Server{
		routes:   make(map[string]*response, len(routes)),
		notFound: newResponse("404 Not Found", []byte("not found\n")),
		badReq:   newResponse("400 Bad Request", []byte("bad request\n")),
		tooLong:  newResponse("431 Request Header Fields Too Large", []byte("request head too long\n")),
		conns:    map[net.Conn]struct{}{},
	}
	for path, body := range routes {
		r := newResponse("200 OK", body)
		s.routes[path] = &r
	}
	return s
}

// Serve accepts connections on l until l is closed.
func (s *h1Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.Conns.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Close closes every open connection and waits for their goroutines.
func (s *h1Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *h1Server) serveConn(c net.Conn) {
	defer func() {
		_ = c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	rest, done := s.serveFast(c)
	if done {
		return
	}
	var r io.Reader = c
	if len(rest) > 0 {
		r = io.MultiReader(bytes.NewReader(rest), c)
	}
	br := bufio.NewReaderSize(r, maxHead)
	bw := bufio.NewWriterSize(c, 16<<10)
	for {
		resp, head, closeAfter, err := s.readRequest(br)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				return
			case errors.Is(err, errHeadTooLong):
				resp = &s.tooLong
			default:
				var ne net.Error
				if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
					return
				}
				resp = &s.badReq
			}
			_, _ = bw.Write(resp.headClose)
			_, _ = bw.Write(resp.body)
			_ = bw.Flush()
			return
		}
		s.Requests.Add(1)
		if closeAfter {
			_, _ = bw.Write(resp.headClose)
		} else {
			_, _ = bw.Write(resp.head)
		}
		if !head {
			_, _ = bw.Write(resp.body)
		}
		if closeAfter {
			_ = bw.Flush()
			return
		}
		// Answer a pipelined batch with one write.
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

// readRequest reads one request head, discards its body and returns the
// response for its path, whether it is a HEAD request and whether the
// connection closes after it.
func (s *h1Server) readRequest(br *bufio.Reader) (resp *response, head, closeAfter bool, err error) {
	var line []byte
	for len(line) == 0 { // RFC 9112 2.2: ignore empty lines before the request line
		if line, err = readLine(br); err != nil {
			return nil, false, false, err
		}
	}
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 {
		return nil, false, false, fmt.Errorf("malformed request line %q", line)
	}
	head = string(line[:sp1]) == "HEAD"
	target := line[sp1+1 : sp2]
	switch string(line[sp2+1:]) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		closeAfter = true
	default:
		return nil, false, false, fmt.Errorf("unsupported protocol %q", line[sp2+1:])
	}
	// The route is looked up now: the line is only valid until the next read.
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	if bytes.HasPrefix(target, []byte("http://")) || bytes.HasPrefix(target, []byte("https://")) {
		rest := target[bytes.Index(target, []byte("//"))+2:]
		if i := bytes.IndexByte(rest, '/'); i >= 0 {
			target = rest[i:]
		} else {
			target = []byte("/")
		}
	}
	resp = &s.notFound
	if r, ok := s.routes[string(target)]; ok {
		resp = r
	}

	var contentLength int64
	var chunked bool
	for {
		if line, err = readLine(br); err != nil {
			return nil, false, false, err
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, false, false, fmt.Errorf("malformed header line %q", line)
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if contentLength, err = strconv.ParseInt(string(value), 10, 64); err != nil || contentLength < 0 {
				return nil, false, false, fmt.Errorf("invalid Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = containsFold(value, "chunked")
		case bytes.EqualFold(name, []byte("Connection")):
			if containsFold(value, "close") {
				closeAfter = true
			} else if containsFold(value, "keep-alive") {
				closeAfter = false
			}
		}
	}
	if chunked {
		err = discardChunked(br)
	} else if contentLength > 0 {
		_, err = br.Discard(int(contentLength))
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return resp, head, closeAfter, err
}

// readLine returns the next line without its CRLF (or LF); the slice is valid
// until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errHeadTooLong
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// discardChunked reads a chunked body, its trailers included, and drops it.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("invalid chunk size %q", line)
		}
		if size == 0 {
			for { // trailers, up to the empty line
				if line, err = readLine(br); err != nil || len(line) == 0 {
					return err
				}
			}
		}
		if _, err := br.Discard(int(size)); err != nil {
			return err
		}
		if line, err = readLine(br); err != nil {
			return err
		}
		if len(line) != 0 {
			return errors.New("chunk not followed by CRLF")
		}
	}
}

// containsFold reports whether the comma-separated list v holds token,
// ignoring case.
func containsFold(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(item), []byte(token)) {
			return true
		}
	}
	return false
}
