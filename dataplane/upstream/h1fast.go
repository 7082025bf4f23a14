package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lb-project/lb/dataplane/h1wire"
	"github.com/lb-project/lb/dataplane/sockio"
)

// H1Pool keeps plain HTTP/1.1 connections per backend and sends the common
// request — plain HTTP/1.1, no body, no upgrade — on the calling goroutine:
// it writes the request and reads the response head itself. net/http's
// Transport would hand each request to two goroutines of the connection (a
// writer and a reader) and back, which costs more than the exchange on
// loopback; every other request still goes through it. Callers that speak
// HTTP/1.1 themselves (the proxy's own HTTP/1.1 server) take connections
// with Get and give them back with Put.
type H1Pool struct {
	dial              dialFunc
	maxIdle           int
	idleTimeout       time.Duration
	respHeaderTimeout time.Duration

	hosts sync.Map // backend address → *hostConns
}

// hostConns are the idle connections to one backend, most recent last.
type hostConns struct {
	mu   sync.Mutex
	idle []*H1Conn
	// sweep closes connections idle too long; nil while none is idle.
	sweep *time.Timer
}

// H1Conn is one upstream connection with its buffers. A caller that took it
// with Get writes to it directly and reads through Reader.
type H1Conn struct {
	net.Conn
	br *bufio.Reader
	bw *bufio.Writer
	// home holds the backend's idle connections, once c was put back.
	home *hostConns
	// idleSince is when c was last put back, as a reading of sinceStart.
	idleSince time.Duration

	// raw and peekFn peek at the socket without blocking (see quiet);
	// made once per connection so that the check allocates nothing.
	raw     syscall.RawConn
	peekFn  func(fd uintptr) bool
	peekN   int
	peekErr error

	// sock reads and writes the socket directly; nil when the
	// connection is not a socket.
	sock *sockio.Conn

	// head is the last response head read (see readResponse).
	head h1wire.Response

	// rd is the read deadline in force, as set through SetReadDeadline or
	// SetHeadDeadline (zero: none).
	rd time.Time
}

// SetReadDeadline sets the connection's read deadline.
func (c *H1Conn) SetReadDeadline(t time.Time) error {
	c.rd = t
	return c.Conn.SetReadDeadline(t)
}

// SetHeadDeadline bounds the wait for the next response head to d from now
// (a recent reading of the clock). A deadline left in force by the previous
// response is kept when it is due less than a sixteenth of d, at most a
// second, before the one asked for: a connection reused at once then sets
// no deadline (a timer update in the runtime) per request. Clear it with
// ClearHeadDeadline before reading anything but a head.
func (c *H1Conn) SetHeadDeadline(now time.Time, d time.Duration) {
	want := now.Add(d)
	if !c.rd.IsZero() && !c.rd.After(want) && want.Sub(c.rd) < min(d/16, time.Second) {
		return
	}
	_ = c.SetReadDeadline(want)
}

// ClearHeadDeadline removes the deadline SetHeadDeadline set, if any.
func (c *H1Conn) ClearHeadDeadline() {
	if !c.rd.IsZero() {
		_ = c.SetReadDeadline(time.Time{})
	}
}

// WriteOnRead arranges for b to be written by the next read from the
// connection, which then waits for the answer without a read attempt first
// (see sockio.Conn.WriteOnRead); it reports false, doing nothing, when the
// connection is not a socket: write b yourself then.
func (c *H1Conn) WriteOnRead(b []byte) bool {
	if c.sock == nil {
		return false
	}
	c.sock.WriteOnRead(b)
	return true
}

// Write writes p to the connection.
func (c *H1Conn) Write(p []byte) (int, error) {
	if c.sock != nil {
		return c.sock.Write(p)
	}
	return c.Conn.Write(p)
}

// eligible reports whether r can take the fast path.
func (f *H1Pool) eligible(r *http.Request) bool {
	return (r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 && r.URL.Scheme == "http" &&
		r.Method != http.MethodConnect && !isUpgrade(r) && len(r.Header["Expect"]) == 0
}

// RoundTrip sends r, which must be eligible. Before a kept connection is
// reused it is checked for having been closed, or having been sent
// something, while idle (a backend's 408 before it hangs up, say); such a
// connection is dropped. If a reused connection still gives nothing back,
// the request is sent once more on a new connection when its method is
// safe to repeat (GET, HEAD, OPTIONS, TRACE), as net/http's Transport does.
func (f *H1Pool) RoundTrip(r *http.Request) (*http.Response, error) {
	addr := r.URL.Host
	for attempt := 0; ; attempt++ {
		c, reused, err := f.Get(r.Context(), addr, SafeToRepeat(r.Method))
		if err != nil {
			return nil, err
		}
		resp, stale, err := f.exchange(c, r, addr)
		if err == nil {
			return resp, nil
		}
		c.Close()
		if !(reused && stale && attempt == 0 && r.Context().Err() == nil && SafeToRepeat(r.Method)) {
			return nil, err
		}
	}
}

// SafeToRepeat reports whether a request without a body may be sent again
// after it may have reached the backend.
func SafeToRepeat(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// start is a reading of the clock for sinceStart.
var start = time.Now()

// sinceStart reads the monotonic clock alone (time.Now reads the wall
// clock too), for the idle times of connections.
func sinceStart() time.Duration { return time.Since(start) }

// quietCheckAfter is how long a connection must have been idle before Get
// checks it for a close or a stray answer when the request may be repeated.
// A backend closes idle connections (perhaps with a 408 first) after its
// own idle timeout, seconds at least; a connection reused sooner skips the
// check, a system call per request under load, and if it was closed all
// the same, the request is repeated on a new one (see RoundTrip).
var quietCheckAfter = time.Second

// Get returns an idle connection to addr that is still sound (and true),
// or a new one. Connections idle for long, and every one when the request
// is not repeatable (a stale connection could not be recovered from), are
// checked first.
func (f *H1Pool) Get(ctx context.Context, addr string, repeatable bool) (*H1Conn, bool, error) {
	if hv, ok := f.hosts.Load(addr); ok {
		h := hv.(*hostConns)
		for {
			h.mu.Lock()
			n := len(h.idle)
			if n == 0 {
				h.mu.Unlock()
				break
			}
			c := h.idle[n-1]
			h.idle[n-1] = nil
			h.idle = h.idle[:n-1]
			h.mu.Unlock()
			idle := sinceStart() - c.idleSince
			if idle < f.idleTimeout && (repeatable && idle < quietCheckAfter || c.quiet()) {
				return c, true, nil
			}
			c.Close()
		}
	}
	nc, err := f.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return newH1Conn(nc), false, nil
}

// newH1Conn wraps a new connection.
func newH1Conn(nc net.Conn) *H1Conn {
	c := &H1Conn{Conn: nc, sock: sockio.New(nc)}
	var r io.Reader = nc
	if c.sock != nil {
		r = c.sock
	}
	c.br = bufio.NewReaderSize(r, 4096)
	c.bw = bufio.NewWriterSize(c, 4096)
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
			c.peekFn = func(fd uintptr) bool {
				var b [1]byte
				c.peekN, _, c.peekErr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				return true
			}
		}
	}
	return c
}

// Reader returns the connection's buffered reader; read responses only
// through it.
func (c *H1Conn) Reader() *bufio.Reader { return c.br }

// ResponseHeaderTimeout is how long to wait for a response head; 0: no
// limit.
func (f *H1Pool) ResponseHeaderTimeout() time.Duration { return f.respHeaderTimeout }

// quiet reports whether an idle connection is still open and has nothing
// waiting to be read: one non-blocking peek at the socket. Anything a
// backend sent while no request was out (or its FIN) cannot be the answer
// to the next request.
func (c *H1Conn) quiet() bool {
	if c.raw == nil {
		return true
	}
	c.ClearHeadDeadline() // the previous response's, perhaps past by now
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekN < 0 && errors.Is(c.peekErr, syscall.EAGAIN)
}

// Put keeps c, which Get returned for addr, for reuse, or closes it when
// the backend has enough idle. Connections idle longer than the idle
// timeout are closed by a timer.
func (f *H1Pool) Put(addr string, c *H1Conn) {
	h := c.home
	if h == nil {
		hv, ok := f.hosts.Load(addr)
		if !ok {
			hv, _ = f.hosts.LoadOrStore(addr, new(hostConns))
		}
		h = hv.(*hostConns)
		c.home = h
	}
	c.idleSince = sinceStart()
	h.mu.Lock()
	if len(h.idle) < f.maxIdle {
		h.idle = append(h.idle, c)
		if h.sweep == nil {
			h.sweep = time.AfterFunc(f.idleTimeout, func() { f.sweep(h) })
		}
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	c.Close()
}

// sweep closes h's connections that have been idle for the idle timeout,
// and comes back when the next one will have been.
func (f *H1Pool) sweep(h *hostConns) {
	now := sinceStart()
	h.mu.Lock()
	i := 0
	for i < len(h.idle) && now-h.idle[i].idleSince >= f.idleTimeout {
		i++
	}
	expired := slices.Clone(h.idle[:i])
	h.idle = slices.Delete(h.idle, 0, i)
	if len(h.idle) > 0 {
		h.sweep.Reset(f.idleTimeout - (now - h.idle[0].idleSince))
	} else {
		h.sweep = nil
	}
	h.mu.Unlock()
	for _, c := range expired {
		c.Close()
	}
}

// closeIdle closes every idle connection.
func (f *H1Pool) closeIdle() {
	f.hosts.Range(func(_, hv any) bool {
		h := hv.(*hostConns)
		h.mu.Lock()
		idle := h.idle
		h.idle = nil
		if h.sweep != nil {
			h.sweep.Stop()
			h.sweep = nil
		}
		h.mu.Unlock()
		for _, c := range idle {
			c.Close()
		}
		return true
	})
}

// appendRequestHead appends the head net/http's Request.Write would send
// for r (eligible: no body), without its formatting machinery, or reports
// false when r has something it would need that machinery for (a Host
// outside printable ASCII, an opaque URL, a line break in a value). Fields
// go in map order.
func appendRequestHead(b []byte, r *http.Request) ([]byte, bool) {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if !plainValue(host) || r.URL.Opaque != "" {
		return nil, false
	}
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, r.URL.RequestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for k, vv := range r.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // not sent from the map by Request.Write either
		case "User-Agent":
			if len(vv) > 1 {
				vv = vv[:1] // Request.Write sends the first only
			}
		}
		for _, v := range vv {
			v = strings.Trim(v, " \t")
			if k == "User-Agent" && v == "" {
				continue // an empty User-Agent means none
			}
			if strings.ContainsAny(v, "\r\n") {
				return nil, false
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		b = append(b, "User-Agent: Go-http-client/1.1\r\n"...)
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		b = append(b, "Content-Length: 0\r\n"...) // as Request.Write says an empty body
	}
	if r.Close {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...), true
}

// plainValue reports whether s is printable ASCII (spaces and tabs too).
// (A Host needing IDNA conversion is left to Request.Write.)
func plainValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c >= 0x7f {
			return false
		}
	}
	return true
}

// errServerClosed says the backend closed a reused connection without
// answering.
var errServerClosed = errors.New("backend closed the connection before answering")

// clientCheckAfter is how long an exchange waits for a response head
// before a client that goes away can cut it short. Watching the request's
// context (context.AfterFunc) costs more than a whole exchange with a fast
// backend spends in user space (6% of the CPU of an HTTP/2 request), so it
// starts only once the wait is this long, or when a body is still to be
// read. H1Server checks on its clients at the same pace.
var clientCheckAfter = time.Second

// exchange writes r on c and reads the response head. stale reports that
// nothing at all came back (the connection may have been closed while
// idle). The response body returns c to the pool when read to its end.
func (f *H1Pool) exchange(c *H1Conn, r *http.Request, addr string) (resp *http.Response, stale bool, err error) {
	ctx := r.Context()
	// stop ends the watch on the client (see watchClient); nil while there
	// is none.
	var stop func() bool
	defer func() {
		if err != nil && stop != nil {
			stop()
		}
	}()
	now := time.Now()
	var headDeadline time.Time // zero: no limit
	if f.respHeaderTimeout > 0 {
		headDeadline = now.Add(f.respHeaderTimeout)
	}
	if head, ok := appendRequestHead(c.bw.AvailableBuffer(), r); ok && c.WriteOnRead(head) {
		// Sent by the read below, which then waits for the answer without
		// a read attempt first. (head lives in bw's spare buffer; bw is not
		// written meanwhile.)
	} else {
		// A write that blocks can be cut short from the start.
		stop = watchClient(ctx, c)
		if err := r.Write(c.bw); err != nil {
			return nil, true, err
		}
		if err := c.bw.Flush(); err != nil {
			return nil, true, err
		}
	}
	// soft: the read deadline is clientCheckAfter away, not the head's.
	soft := stop == nil && (headDeadline.IsZero() || headDeadline.After(now.Add(clientCheckAfter)))
	deadline := headDeadline
	if soft {
		deadline = now.Add(clientCheckAfter)
	}
	if !deadline.IsZero() {
		_ = c.SetReadDeadline(deadline)
	}
	// watchFromNow starts the watch on the client and gives the wait the
	// head's own deadline.
	watchFromNow := func() error {
		soft = false
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("client gone: %w", err)
		}
		// The deadline first: a watch that fires at once must not have
		// its past deadline overwritten.
		_ = c.SetReadDeadline(headDeadline)
		stop = watchClient(ctx, c)
		return nil
	}
	for {
		_, err := c.br.Peek(1)
		var fast bool
		if err == nil {
			resp, fast, err = c.readResponse(r)
		}
		if err != nil {
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			if soft && timeout {
				if err := watchFromNow(); err != nil {
					return nil, false, err
				}
				continue
			}
			if errors.Is(err, io.EOF) && c.br.Buffered() == 0 {
				return nil, true, fmt.Errorf("%w: %w", errServerClosed, io.EOF)
			}
			return nil, !timeout && c.br.Buffered() == 0, err
		}
		if fast {
			break
		}
		// http.ReadResponse may read (a head larger than the buffer) and
		// cannot be retried: it reads under the head's deadline, watched.
		if soft {
			if err := watchFromNow(); err != nil {
				return nil, false, err
			}
		}
		if resp, err = http.ReadResponse(c.br, r); err != nil {
			return nil, false, err
		}
		// 1xx informational answers (100 Continue, 103 Early Hints) precede
		// the real one; 101 is never asked for on this path.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue
		}
		break
	}
	if !deadline.IsZero() {
		_ = c.SetReadDeadline(time.Time{})
		if stop != nil && ctx.Err() != nil {
			// The watch may have fired before the clear: the body
			// reads would not be cut short.
			return nil, false, fmt.Errorf("client gone: %w", ctx.Err())
		}
	}
	body := &fastBody{rc: resp.Body, c: c, f: f, addr: addr, stop: stop, reusable: !resp.Close}
	if resp.Body == nil {
		// Read here: a Content-Length body straight from the buffer.
		body.rc, body.left = nil, resp.ContentLength
	}
	if stop == nil && (body.rc != nil || int64(c.br.Buffered()) < body.left) {
		// Reading the body may wait: a client that leaves cuts it short.
		body.stop = watchClient(ctx, c)
	}
	resp.Body = body
	return resp, false, nil
}

// watchClient sets c's deadline in the past once ctx is done (the client
// went away), which ends any read or write waiting on c. The function
// returned stops the watch and reports whether it stopped it in time (the
// deadline is untouched).
func watchClient(ctx context.Context, c *H1Conn) func() bool {
	return context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
}

// readResponse reads the common response head — a final answer whose body
// is framed by Content-Length — from c.br into an http.Response with a nil
// Body, consuming the head. For any other head it reports false and
// consumes nothing: http.ReadResponse reads it then. Reading it here takes
// one string for the whole head, of which the status, names and values are
// parts, where http.ReadResponse takes several per field.
func (c *H1Conn) readResponse(r *http.Request) (*http.Response, bool, error) {
	var head []byte
	for {
		buf, err := c.br.Peek(c.br.Buffered())
		n, bareLF := h1wire.HeadEnd(buf)
		if bareLF {
			return nil, false, nil // http.ReadResponse reads such heads
		}
		if n >= 0 {
			head = buf[:n]
			break
		}
		if err != nil {
			return nil, false, err
		}
		if len(buf) == c.br.Size() {
			return nil, false, nil // larger than the buffer
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, false, err
		}
	}
	hr := &c.head
	if hr.Parse(head) != nil {
		// What h1wire refuses (obsolete folding, say) is for
		// http.ReadResponse to judge, as before this path existed.
		return nil, false, nil
	}
	if hr.Status < 200 || hr.Chunked || hr.ContentLength < 0 || hr.Close || r.Method == http.MethodHead ||
		hr.Status == http.StatusNoContent || hr.Status == http.StatusNotModified {
		// Bodies framed otherwise, and the heads net/http edits (it drops
		// Connection: close), are read by http.ReadResponse.
		return nil, false, nil
	}
	s := string(head)
	part := func(b []byte) string {
		// b is head[i:i+len(b)]; i follows from the capacities.
		i := cap(head) - cap(b)
		if i < 0 || i+len(b) > len(head) || len(b) > 0 && &head[i] != &b[0] {
			return string(b)
		}
		return s[i : i+len(b)]
	}
	resp := &http.Response{
		Status:        s[9:bytes.IndexByte(head, '\r')],
		StatusCode:    hr.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, len(hr.Fields)),
		ContentLength: hr.ContentLength,
		Close:         hr.Close || r.Close,
		Request:       r,
	}
	if hr.HTTP10 {
		resp.Proto, resp.ProtoMinor = "HTTP/1.0", 0
	}
	values := make([]string, len(hr.Fields))
	for i, f := range hr.Fields {
		name := part(f.Name)
		if !canonical(f.Name) {
			name = http.CanonicalHeaderKey(name)
		}
		values[i] = part(f.Value)
		if vv, ok := resp.Header[name]; ok {
			resp.Header[name] = append(vv, values[i])
		} else {
			resp.Header[name] = values[i : i+1 : i+1]
		}
	}
	if len(resp.Header["Content-Length"]) > 1 {
		return nil, false, nil // equal ones, which net/http folds into one
	}
	_, _ = c.br.Discard(len(head))
	return resp, true, nil
}

// canonical reports whether a field name is in net/http's canonical form
// (Content-Length): upper case after a hyphen and at the start, lower case
// elsewhere.
func canonical(name []byte) bool {
	upper := true
	for _, b := range name {
		switch {
		case 'a' <= b && b <= 'z':
			if upper {
				return false
			}
		case 'A' <= b && b <= 'Z':
			if !upper {
				return false
			}
		case b == '-' || '0' <= b && b <= '9':
		default:
			return false // CanonicalHeaderKey leaves such names alone; it decides
		}
		upper = b == '-'
	}
	return true
}

// fastBody returns its connection to the pool once the body was read to
// its end, and closes it otherwise.
type fastBody struct {
	// rc is the body http.ReadResponse gave; nil when the body is the next
	// left bytes of c.br.
	rc       io.ReadCloser
	left     int64
	c        *H1Conn
	f        *H1Pool
	addr     string
	stop     func() bool // ends the watch on the client; nil: none
	reusable bool
	eof      bool
	done     atomic.Bool
}

// Read implements io.Reader, noting when the body has been read to its end.
func (b *fastBody) Read(p []byte) (int, error) {
	if b.rc == nil {
		return b.readLength(p)
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// readLength reads a body of b.left more bytes from the connection.
func (b *fastBody) readLength(p []byte) (int, error) {
	if b.left <= 0 {
		b.eof = true
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		b.eof = true
		if err == nil && n > 0 {
			return n, nil
		}
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close implements io.Closer.
func (b *fastBody) Close() error {
	if b.done.Swap(true) {
		return nil
	}
	if b.stop != nil && !b.stop() {
		// The client went away and the deadline was set: the connection
		// cannot be trusted any more.
		b.reusable = false
	}
	if b.eof && b.reusable && b.c.br.Buffered() == 0 {
		b.f.Put(b.addr, b.c)
		return nil
	}
	return b.c.Close()
}
