package h1guard

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// The tests in this file fail against the current implementation; each
// documents a bug (see the comment on each test).

// BUG: MaxHeadBytes is enforced only while the head's terminating CRLF CRLF
// has not arrived yet (h1guard.go stepHead, lines 263-267). When a larger head
// reaches the guard in few reads, the buffer grows (fill doubles it) past
// MaxHeadBytes and the whole head is accepted; sent one byte at a time, the
// same head is refused. Whether a head is refused must not depend on TCP
// segmentation. (The same holds for maxChunkLine in stepChunkSize, line 299,
// and for a trailer line in stepTrailer, line 327.)
func TestBugMaxHeadBytesDependsOnSegmentation(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: a\r\nX: " + repeat("a", MaxHeadBytes+100) + "\r\n\r\n"
	for _, sp := range splitters {
		if sp.name == "random" {
			continue
		}
		t.Run(sp.name, func(t *testing.T) {
			out, g := pipeRun(t, sp.split([]byte(head)), nil)
			if string(out) != wantReject || !strings.Contains(g.Reason(), "request head larger than") {
				t.Fatalf("a %d-byte head: got %d bytes out, Reason() = %q; want the reject request and a \"request head larger than\" reason",
					len(head), len(out), g.Reason())
			}
		})
	}
}

// Same bug for a chunk-size line: a complete line longer than maxChunkLine
// that arrives in the same read as a large head is accepted.
func TestBugMaxChunkLineDependsOnSegmentation(t *testing.T) {
	head := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX: " + repeat("a", 40000) + "\r\n\r\n"
	in := head + "1;" + repeat("e", maxChunkLine+100) + "\r\nx\r\n0\r\n\r\n"
	out, g := pipeRun(t, [][]byte{[]byte(in)}, nil)
	if want := head + wantReject; string(out) != want || g.Reason() != "chunk-size line too long" {
		t.Fatalf("got %d bytes out (reject appended: %v), Reason() = %q; want the head, the reject request and \"chunk-size line too long\"",
			len(out), bytes.HasSuffix(out, []byte(wantReject)), g.Reason())
	}
}

// BUG: a head that never gets its CRLF CRLF is released unchecked at the end
// of the stream (h1guard.go Read, lines 144-152), and stepHead only looks at
// the first LF for a bare one (line 270). net/http accepts bare LF line
// endings, so for it such a "truncated" head is a complete request: here two
// requests with bare-LF heads reach net/http (and a handler) without being
// checked. Suggested fix: find a bare LF anywhere in c.in (not only the first
// LF), and at the end of the stream do not release an unchecked head: drop it
// (return io.EOF) or refuse it ("incomplete request head").
func TestBugUncheckedHeadReleasedAtEOF(t *testing.T) {
	for _, in := range []string{
		"GET / HTTP/1.1\r\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\nContent-Length: 5\n\nhelloGET /smuggled HTTP/1.1\nHost: a\n\n",
		getA + "GET /b HTTP/1.1\r\nHost: a\nX: b\n\n",
	} {
		out, g := pipeRun(t, [][]byte{[]byte(in)}, nil)
		// net/http must not be able to parse a request from bytes the guard
		// has not validated.
		var validated []byte
		if strings.HasPrefix(in, getA) {
			validated = []byte(getA)
		}
		rest := out[len(validated):]
		if string(rest) == wantReject {
			continue // refused: fine
		}
		br := bufio.NewReader(bytes.NewReader(rest))
		if req, err := http.ReadRequest(br); err == nil {
			t.Errorf("input %q: output %q (Reason() = %q) gives net/http the unchecked request %s %s",
				in, out, g.Reason(), req.Method, req.URL)
		}
	}
}

// The same through net/http: a client sends requests with bare-LF heads and
// half-closes; the handler sees both of them, although the guard promises that
// requests with bare LF line endings are refused.
func TestBugBareLFRequestsReachHandlerAtEOF(t *testing.T) {
	s := startServer(t, serverOpts{})
	c := s.dial(t)
	defer c.Close()
	in := "POST / HTTP/1.1\r\nHost: a\nContent-Length: 5\n\nhelloGET /smuggled HTTP/1.1\nHost: a\n\n"
	if _, err := c.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	resps := readResponses(t, c, -1)
	if paths := s.seen(); len(paths) != 0 {
		t.Errorf("the handler saw %q (responses: %v); want no request to reach it", paths, statuses(resps))
	}
}

// BUG: any error from the wrapped conn's Read, a timeout included, is taken
// for the end of the stream (h1guard.go Read, line 144): a partial head that
// is waiting for more bytes is released unchecked and the Conn then returns
// io.EOF for good. A read deadline is not the end of a connection: net/http
// itself sets one (abortPendingRead, after every handler whose request had
// no body left) and expects to read on afterwards. Suggested fix: on an
// error that is a timeout (net.Error with Timeout()), return (0, err) and keep
// c.in and the state; release nothing unchecked on any error.
func TestBugReadTimeoutEndsStream(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	g := New(server)
	defer g.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := client.Write([]byte(getA + "GET /b HTTP/1.1\r\nHo"))
		errc <- err
	}()
	buf := make([]byte, 4096)
	g.SetReadDeadline(time.Now().Add(ioTimeout))
	n, err := g.Read(buf)
	if err != nil || string(buf[:n]) != getA {
		t.Fatalf("first Read = %q, %v; want the first request", buf[:n], err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Nothing complete is pending: a Read under a short deadline times out.
	g.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err = g.Read(buf)
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read under an expired deadline = %q, %v; want 0 bytes and a timeout", buf[:n], err)
	}
	// The client goes on; the rest of the request must come through.
	go func() {
		_, err := client.Write([]byte("st: a\r\n\r\n"))
		errc <- err
	}()
	g.SetReadDeadline(time.Now().Add(ioTimeout))
	var got []byte
	for len(got) < len("GET /b HTTP/1.1\r\nHost: a\r\n\r\n") {
		n, err = g.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if string(got) != "GET /b HTTP/1.1\r\nHost: a\r\n\r\n" {
		t.Errorf("after the timeout the guard gave %q, %v; want the second request", got, err)
	}
	client.Close()
	<-errc
}

// The same bug through net/http: while a handler runs, net/http keeps a
// background read going on the connection; when the handler returns it
// interrupts that read with a deadline. If part of the client's next request
// has arrived by then, the guard hands net/http the partial head and then
// io.EOF, and a well-behaved keep-alive client gets "400 Bad Request" and a
// closed connection instead of its response.
func TestBugKeepAliveBrokenByAbortedBackgroundRead(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	s := startServer(t, serverOpts{hook: func(r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
	}})
	c := s.dial(t)
	defer c.Close()
	if _, err := c.Write([]byte("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := c.Write([]byte("GET /next HTTP/1.1\r\nHo")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the guard's background read take it in
	close(release)
	time.Sleep(100 * time.Millisecond)
	if _, err := c.Write([]byte("st: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resps := readResponses(t, c, 2)
	if got := statuses(resps); len(got) != 2 || got[0] != 200 || got[1] != 200 {
		t.Errorf("responses %v; want [200 200]", got)
	}
	if got := s.seen(); len(got) != 2 || got[1] != "/next" {
		t.Errorf("handler saw %q; want [/slow /next]", got)
	}
}

// BUG: Conn.reason is one field per connection, written by whichever
// goroutine calls Read and read by handlers through Rejected with no
// synchronization (h1guard.go lines 70, 99, 251). net/http reads ahead in a
// background goroutine while a handler runs, so (1) Rejected races with
// reject (go test -race reports it), and (2) a request that was not refused
// is reported as refused when a later pipelined request is refused while it
// is being handled: a client's own request for RejectPath gets the 400 meant
// for the next request. Suggested fix: make the refusal belong to the
// synthetic request, not to the connection: e.g. keep the reason behind a
// mutex/atomic and let Rejected answer only for the request that was read
// from the synthetic bytes (count requests released vs. the index of the
// synthetic one, or mark the synthetic request with an unforgeable
// per-process token in its target that Rejected checks).
func TestBugRejectedIsPerConnectionAndRacy(t *testing.T) {
	s := startServer(t, serverOpts{rejectDelay: 100 * time.Millisecond})
	c := s.dial(t)
	defer c.Close()
	in := "GET /.lb-h1guard-rejected HTTP/1.1\r\nHost: a\r\n\r\n" + "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
	if _, err := c.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	resps := readResponses(t, c, -1)
	if got := statuses(resps); len(got) == 0 || got[0] != 200 {
		t.Errorf("responses %v (first body %q); want the client's own request for %s to be answered 200", got, firstBody(resps), "/.lb-h1guard-rejected")
	}
}

// BUG (minor): Conn does not forward CloseWrite. net/http half-closes a
// connection it is about to close while the client may still be sending
// (closeWriteAndWait: after a handler that left the request body unread, and
// after 431), through an interface check on the conn it serves; through the
// guard that check fails, net/http just closes, and the kernel may answer the
// client's unread data with a RST that destroys the response in flight.
// Suggested fix: add
//
//	func (c *Conn) CloseWrite() error {
//		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
//			return cw.CloseWrite()
//		}
//		return nil // or an error saying it is not supported
//	}
func TestBugCloseWriteNotForwarded(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := Listener{Listener: l}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, ok := sc.(interface{ CloseWrite() error }); !ok {
		t.Fatalf("%T wrapping a *net.TCPConn has no CloseWrite method; net/http cannot half-close it", sc)
	}
}
