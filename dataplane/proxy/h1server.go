package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lb-project/lb/dataplane/coalesce"
	"github.com/lb-project/lb/dataplane/sockio"
	"github.com/lb-project/lb/dataplane/stats"
	"github.com/lb-project/lb/dataplane/upstream"
)

// H1Config configures an H1Server.
type H1Config struct {
	// Fallback takes over a connection the H1Server does not serve itself
	// (see H1Server), with its first bytes still to be read; it reports
	// false when it cannot (it is shutting down). Required.
	Fallback func(net.Conn) bool
	// H2, if set, takes over the connections that open with the HTTP/2
	// preface (h2c with prior knowledge) instead of Fallback, reading the
	// preface again through the connection it is given; it reports false
	// when it cannot.
	H2 func(net.Conn) bool
	// Last, if set, serves the request begun on a connection when the
	// server is draining and the request is one Fallback would have
	// served (a body, an upgrade...), with its first bytes still to be
	// read: it answers that one request, with Connection: close, and
	// returns once the connection is closed (Fallback, shutting down at
	// the same time, may no longer take it). ctx is cancelled when
	// Shutdown's deadline passes: the request is abandoned then. Without
	// Last such a connection is closed unanswered.
	Last func(ctx context.Context, c net.Conn)
	// IdleTimeout closes a keep-alive connection idle this long. Default
	// 120s.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request head from its first byte.
	// Default 10s.
	ReadHeaderTimeout time.Duration
}

// H1Server serves plain HTTP/1.1 connections itself: one goroutine per
// connection that reads a request head, forwards it as bytes over a kept
// upstream connection and relays the response, with no read-ahead and no
// buffer held while the connection is idle. It does so for the common
// request — HTTP/1.1 with a Host, no body, no upgrade or Expect, an
// origin-form target, routed to a pool whose backends speak plain HTTP/1.1.
// At the first request it does not serve that way (a body, an upgrade,
// HTTP/1.0, h2c, gRPC, a head h1guard refuses, a head over 4 KiB, no
// route, TLS or HTTP/2 backends), it hands the connection, with the bytes
// read so far, to Fallback — net/http with h1guard and the Handler — which
// serves it from then on. Both paths answer a request the same way.
type H1Server struct {
	h   *Handler
	cfg H1Config

	mu       sync.Mutex
	conns    map[*h1conn]struct{}
	lis      net.Listener
	draining atomic.Bool
	active   sync.WaitGroup
}

// NewH1Server returns an H1Server forwarding with h.
func (h *Handler) NewH1Server(cfg H1Config) *H1Server {
	if cfg.Fallback == nil {
		panic("proxy: H1Config.Fallback is required")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	return &H1Server{h: h, cfg: cfg, conns: make(map[*h1conn]struct{})}
}

// Serve accepts connections from l and serves them until l is closed (or
// Shutdown closes it); it returns nil then.
func (s *H1Server) Serve(l net.Listener) error {
	s.mu.Lock()
	s.lis = l
	draining := s.draining.Load()
	s.mu.Unlock()
	if draining {
		l.Close()
	}
	ctx, stop := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		s.watch(ctx)
	}()
	defer func() {
		stop()
		<-watched
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.draining.Load() {
				return nil
			}
			// Out of file descriptors, say: wait and try again, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.h.log.Warn("accept failed; retrying", "error", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.track(nc)
		if c == nil {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// track registers a new connection, or returns nil when draining.
func (s *H1Server) track(nc net.Conn) *h1conn {
	c := newH1Conn(s, nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	s.active.Add(1)
	return c
}

// untrack forgets a connection that was closed or handed over.
func (s *H1Server) untrack(c *h1conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.active.Done()
}

// Shutdown stops accepting, closes idle connections, and waits for the
// others to finish their request in flight (answered with Connection:
// close) until ctx is done; then it closes them and returns ctx's error.
// A request in flight that Fallback would serve goes to Last (see
// H1Config), and counts as in flight. Connections already handed to
// Fallback are Fallback's to drain.
func (s *H1Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	if s.lis != nil {
		s.lis.Close()
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	left := make([]*h1conn, 0, len(s.conns))
	for c := range s.conns {
		left = append(left, c)
	}
	s.mu.Unlock()
	for _, c := range left {
		c.abort() // outside s.mu: closing a wrapped connection may block
	}
	<-done
	return ctx.Err()
}

// Connection states.
const (
	connIdle   int32 = iota // waiting for a request
	connActive              // a request is being read or served
	connClosed              // closed by Shutdown
)

// h1BufSize is the size of a connection's read buffer: the largest request
// head served here (larger ones go to Fallback, up to h1guard's limit).
const h1BufSize = 4096

// h1work is what a connection holds while it is not idle: its read buffer
// and what serving a request takes, from one pool.
type h1work struct {
	buf [h1BufSize]byte
	x   h1exchange
}

// h1Works holds the h1work of connections that are idle.
var h1Works = sync.Pool{New: func() any {
	w := new(h1work)
	w.x.init()
	return w
}}

// h1conn is one client connection.
type h1conn struct {
	s  *H1Server
	nc net.Conn
	sc *stats.Conn // nil when the listener does not count connections
	// raw reads the socket directly, so that waiting for a request holds
	// no buffer; nil when nc is not a socket (then a buffer is held).
	raw     syscall.RawConn
	stepFn  func(fd uintptr) bool // step, as passed to raw.Read
	readN   int                   // bytes of the last read
	readErr error                 // error of the last read
	// drained says the last read took everything the socket held, the
	// kernel said (inq; TCP_INQ is asked for once a connection is kept).
	drained  bool
	inq      sockio.InqReader
	inqAsked bool
	err      error // why step ended the connection
	// w writes to the socket directly (nil: through nc).
	w *sockio.Conn
	// fd is the socket's descriptor while inStep: the read step holds the
	// descriptor open, so that a write can go straight to it.
	fd     uintptr
	inStep bool

	client   string // remote host:port
	clientIP string
	state    atomic.Int32
	aborted  atomic.Bool // by Shutdown: its deadlines stay in the past
	// last says the connection went to Last: Shutdown closes it at its
	// deadline, since Last's server sets deadlines of its own, and
	// cancels the request with lastCancel (set before last).
	last       atomic.Bool
	lastCancel context.CancelFunc
	deadline   time.Time // the read deadline in force
	headAt     time.Time // when the head being read began to arrive

	// inFlightSince is when the request being served began (Unix ns; 0:
	// none); the watcher looks at connections whose request takes long.
	inFlightSince atomic.Int64
	// mu guards upstream and gone, between the connection's goroutine and
	// the watcher.
	mu       sync.Mutex
	upstream *upstream.H1Conn // the connection a response is awaited on
	gone     bool             // the client closed (or half-closed) meanwhile

	work    *h1work // nil while idle; its buffer holds in
	in      []byte  // bytes read and not yet consumed
	scanned int     // bytes of in searched for the end of a head
	served  int     // requests served on this connection
}

func newH1Conn(s *H1Server, nc net.Conn) *h1conn {
	c := &h1conn{s: s, nc: nc, client: nc.RemoteAddr().String()}
	if host, _, err := net.SplitHostPort(c.client); err == nil {
		c.clientIP = host
	}
	inner := nc
	if sc, ok := nc.(*stats.Conn); ok {
		c.sc = sc
		inner = sc.Unwrap()
	}
	if sys, ok := inner.(syscall.Conn); ok {
		if raw, err := sys.SyscallConn(); err == nil {
			c.raw = raw
			c.stepFn = c.step
			c.w = sockio.New(inner)
		}
	}
	return c
}

// errHandOver says the connection goes to Fallback.
var errHandOver = errors.New("hand over to net/http")

// errDone says the connection is to be closed: the client asked, or the
// server is draining.
var errDone = errors.New("connection done")

// serve runs the connection until it is closed or handed over.
func (c *h1conn) serve() {
	defer c.s.untrack(c)
	var err error
	if c.raw != nil {
		if err = c.raw.Read(c.stepFn); err == nil {
			err = c.err
		}
		c.inStep = false // the descriptor is no longer held
	} else {
		err = c.loop()
	}
	if errors.Is(err, errHandOver) {
		c.handOver()
		return
	}
	c.release()
	c.nc.Close()
}

// step is the whole life of a connection on a socket, run as the function
// of a single RawRead: it serves the requests read, and returns false to
// wait for the socket's next bytes, true (with c.err set) when the
// connection ends. Being one RawRead keeps readiness: a RawRead clears the
// socket's readiness when it begins, so a new one per request would have to
// try a read before each wait, and after a response that read almost always
// finds nothing (the client waits for the response before it sends again).
// Here a read that left the socket empty is followed by the wait directly:
// bytes that arrive after it are signalled, whether they came while a
// request was served or later. Whether a read left the socket empty, the
// kernel says with the read (TCP_INQ): a read that returned less than it
// asked for may have stopped at the client's FIN, which nothing would
// signal again.
func (c *h1conn) step(fd uintptr) bool {
	c.fd, c.inStep = fd, true
	for {
		if err := c.serveBuffered(); err != nil {
			c.err = err
			return true
		}
		if err := c.setReadDeadline(); err != nil {
			c.err = err
			return true
		}
		if c.drained {
			c.drained = false
			return false
		}
		if c.served > 0 && !c.inqAsked {
			// A kept connection: from now on each read says whether it
			// left the socket empty. (Where the kernel cannot, a read is
			// tried before each wait.)
			c.inqAsked = true
			_ = sockio.EnableInq(fd)
		}
		wasIdle := len(c.in) == 0
		if !c.readSocket(fd) {
			return false // nothing there: wait
		}
		if err := c.received(wasIdle); err != nil {
			c.err = err
			return true
		}
	}
}

// loop is step for a connection that is not a socket: blocking reads.
func (c *h1conn) loop() error {
	for {
		if err := c.serveBuffered(); err != nil {
			return err
		}
		if err := c.setReadDeadline(); err != nil {
			return err
		}
		wasIdle := len(c.in) == 0
		c.compact()
		c.take()
		n, err := c.nc.Read(c.in[len(c.in):h1BufSize])
		c.in = c.in[:len(c.in)+n]
		if n == 0 {
			c.release()
			if err == nil {
				err = io.ErrNoProgress
			}
			return err
		}
		c.readN, c.readErr = n, nil
		if err := c.received(wasIdle); err != nil {
			return err
		}
	}
}

// serveBuffered serves the complete request heads in c.in, and returns nil
// when the next one needs more bytes.
func (c *h1conn) serveBuffered() error {
	for len(c.in) > 0 {
		n, err := c.headLength()
		if n == 0 || err != nil {
			return err
		}
		keep, err := c.serveRequest(c.in[:n])
		switch {
		case err != nil:
			return err
		case !keep:
			return errDone
		}
		c.served++
		c.consume(n)
		if !c.idle() {
			return errDone
		}
	}
	return nil
}

// consume drops the first n bytes of in (a request served).
func (c *h1conn) consume(n int) {
	c.in = c.in[n:]
	c.headAt = time.Time{} // the next head's timeout counts from its own start
	if len(c.in) == 0 {
		c.release()
	}
}

// release returns the read buffer (the connection's h1work) once nothing
// in it is needed.
func (c *h1conn) release() {
	if c.work != nil && len(c.in) == 0 {
		h1Works.Put(c.work)
		c.work, c.in = nil, nil
	}
}

// idle moves the connection to idle after a response, unless bytes of the
// next request are already here; it reports false when the connection is
// to be closed (the server is draining).
func (c *h1conn) idle() bool {
	if len(c.in) > 0 {
		return !c.s.draining.Load()
	}
	if !c.state.CompareAndSwap(connActive, connIdle) {
		return false
	}
	// Shutdown may have looked at this connection while it was active.
	return !c.s.draining.Load()
}

// abort ends the connection's request in flight, if any, at once: its
// socket's deadlines and the wait for its backend are moved to the past,
// and its goroutine closes it. (Closing it from here would wait for that
// goroutine: a socket's Close waits for reads in progress to return, and
// step is one read for the connection's whole life.)
func (c *h1conn) abort() {
	c.aborted.Store(true) // before the deadline: setReadDeadline must not undo it
	_ = c.nc.SetDeadline(time.Unix(1, 0))
	c.cutWait()
	last := c.last.Load()
	if c.raw == nil || last {
		c.nc.Close() // no read holds it (see loop and serveLast)
	}
	if last {
		// Closing the connection does not stop a handler whose backend
		// takes no more of the body; cancelling its request does.
		c.lastCancel()
	}
}

// errAborted ends a connection Shutdown aborted.
var errAborted = errors.New("connection aborted: the server's shutdown deadline passed")

// closeIfIdle closes the connection if it is waiting for a request.
func (c *h1conn) closeIfIdle() {
	if c.state.CompareAndSwap(connIdle, connClosed) {
		c.nc.Close()
	}
}

// handOver gives the connection, with what was read of it, to Fallback;
// while the server drains, the request begun on it goes to Last instead.
func (c *h1conn) handOver() {
	var prefix []byte
	if len(c.in) > 0 {
		prefix = bytes.Clone(c.in)
	}
	c.in = c.in[:0]
	c.release()
	if c.s.draining.Load() {
		c.serveLast(prefix)
		return
	}
	if len(prefix) > 0 && len(prefix) < len(h2Preface) && bytes.HasPrefix(h2Preface, prefix) {
		// The preface's first line reads as a whole head: read the rest
		// of the preface, so that the connection goes where h2c goes.
		rest := make([]byte, len(h2Preface)-len(prefix))
		_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.ReadHeaderTimeout))
		if c.aborted.Load() {
			c.nc.Close()
			return
		}
		n, _ := io.ReadFull(c.nc, rest)
		_ = c.nc.SetReadDeadline(time.Time{})
		prefix = append(prefix, rest[:n]...)
	}
	pc := &prefixConn{Conn: c.nc, prefix: prefix}
	take := c.s.cfg.Fallback
	h2 := bytes.HasPrefix(prefix, h2Preface)
	if h2 {
		pc.h2 = bufio.NewReaderSize(prefixReader{pc}, h2ReadBuffer)
		if c.s.cfg.H2 != nil {
			take = c.s.cfg.H2 // which gathers its writes itself
		} else {
			pc.Conn = coalesce.New(c.nc)
		}
	}
	if !c.s.draining.Load() && take(pc) {
		return
	}
	if h2 {
		pc.Close() // through the write gatherer, if any, which stops then
		return
	}
	c.serveLast(prefix) // the server began to drain meanwhile
}

// serveLast has Last answer the request whose first bytes are prefix, or
// closes the connection when there is no Last or no request. A new
// HTTP/2 connection (h2c) is closed: it has sent no request yet.
func (c *h1conn) serveLast(prefix []byte) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.lastCancel = cancel
	c.last.Store(true) // after lastCancel, before looking at aborted: see abort
	if c.s.cfg.Last == nil || len(prefix) == 0 || c.aborted.Load() ||
		bytes.HasPrefix(prefix, h2Preface[:min(len(prefix), len(h2Preface))]) {
		c.nc.Close()
		return
	}
	c.s.cfg.Last(ctx, &prefixConn{Conn: c.nc, prefix: prefix})
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	prefix []byte
	// h2 buffers the reads of an HTTP/2 connection (h2c); nil otherwise.
	// Go's HTTP/2 server reads each frame's 9-byte header and then its
	// payload straight from the connection: without a buffer that is two
	// system calls per frame, where one read can take many frames. Its
	// writes are gathered by a coalesce.Conn, which Conn then is: the
	// server flushes whenever its queue of frames is empty, which would
	// otherwise cost a system call per response.
	h2 *bufio.Reader
}

// h2ReadBuffer is the read buffer of an h2c connection: a frame of the
// default maximum size fits.
const h2ReadBuffer = 16<<10 + 9

// h2Preface starts an HTTP/2 connection with prior knowledge (h2c).
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Read implements net.Conn.
func (p *prefixConn) Read(b []byte) (int, error) {
	if p.h2 != nil {
		return p.h2.Read(b)
	}
	return p.readDirect(b)
}

// prefixReader reads a prefixConn without its buffer.
type prefixReader struct{ p *prefixConn }

func (r prefixReader) Read(b []byte) (int, error) { return r.p.readDirect(b) }

// readDirect reads the prefix, then the connection.
func (p *prefixConn) readDirect(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite half-closes the connection when the underlying one can.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Unwrap returns the underlying connection.
func (p *prefixConn) Unwrap() net.Conn { return p.Conn }

// headEnd is the end of a request head.
var headEnd = []byte("\r\n\r\n")

// headLength returns the length of the complete request head at the start
// of c.in, or 0 when it is not complete yet. errHandOver: the head does not
// fit the buffer, or the bytes are not HTTP/1.1 (the h2c preface, say,
// which reads as an invalid head).
func (c *h1conn) headLength() (int, error) {
	from := max(c.scanned-3, 0)
	if i := bytes.Index(c.in[from:], headEnd); i >= 0 {
		c.scanned = 0
		return from + i + 4, nil
	}
	if len(c.in) == h1BufSize || badLineEnd(c.in) {
		// Too long for this server, or a bare LF or CR that may never be
		// followed by CRLF CRLF: h1guard refuses such a head as soon as it
		// sees the line.
		return 0, errHandOver
	}
	c.scanned = len(c.in)
	return 0, nil
}

// received accounts for bytes just read (c.readN, or c.readErr): the end of
// the connection, or the start of a request when it was idle (wasIdle).
func (c *h1conn) received(wasIdle bool) error {
	switch {
	case c.readErr != nil:
		return c.readErr
	case c.readN == 0:
		return io.EOF
	}
	if wasIdle {
		c.headAt = time.Time{}
		if c.state.Load() == connIdle && !c.state.CompareAndSwap(connIdle, connActive) {
			return net.ErrClosed
		}
		if c.sc != nil && c.served == 0 {
			c.sc.Sniff(c.in)
		}
	}
	return nil
}

// clockStart anchors monotonicNow.
var clockStart = time.Now()

// monotonicNow is time.Now from one reading of the clock (time.Now takes
// two: the wall clock and the monotonic one), for deadlines and durations.
// Its wall clock is clockStart's advanced by the monotonic clock, so it
// is not for display: it misses any change to the system clock.
func monotonicNow() time.Time { return clockStart.Add(time.Since(clockStart)) }

// setReadDeadline keeps the read deadline at the idle timeout while no
// request is arriving and at the head timeout, counted from the head's
// first bytes, while one is. Deadlines move only when off by a second or
// more (and a head's never later than due), so that most requests set none.
func (c *h1conn) setReadDeadline() error {
	if c.aborted.Load() {
		return errAborted
	}
	now := monotonicNow()
	var want time.Time
	if len(c.in) == 0 {
		want = now.Add(c.s.cfg.IdleTimeout)
		if d := c.deadline.Sub(want); d > -time.Second && d < time.Second {
			return nil
		}
	} else {
		if c.headAt.IsZero() {
			c.headAt = now
		}
		want = c.headAt.Add(c.s.cfg.ReadHeaderTimeout)
		if d := c.deadline.Sub(want); d >= 0 && d < time.Second {
			return nil
		}
	}
	c.deadline = want
	if err := c.nc.SetReadDeadline(want); err != nil {
		return err
	}
	if c.aborted.Load() {
		return errAborted // abort's past deadline may just have been overwritten
	}
	return nil
}

// compact moves pipelined bytes after a served request to the front of the
// buffer, so that a read can append to them.
func (c *h1conn) compact() {
	if c.work != nil && len(c.in) > 0 && &c.in[0] != &c.work.buf[0] {
		c.in = c.work.buf[:copy(c.work.buf[:], c.in)]
		c.scanned = 0
	}
}

// take gets a read buffer (an h1work) if the connection holds none.
func (c *h1conn) take() {
	if c.work == nil {
		c.work = h1Works.Get().(*h1work)
		c.in = c.work.buf[:0]
	}
}

// readSocket reads what the socket holds into c.in (c.readN, c.readErr, and
// c.drained when the read left nothing behind, not even a FIN), or reports
// false when it holds nothing. It takes a buffer only when bytes are there,
// and gives it back when it holds nothing.
func (c *h1conn) readSocket(fd uintptr) bool {
	c.compact()
	c.take()
	n, left, err := c.inq.Read(fd, c.in[len(c.in):h1BufSize])
	c.readN, c.readErr = n, nil
	switch {
	case err == syscall.EAGAIN:
		c.release()
		return false
	case err == nil:
		c.in = c.in[:len(c.in)+n]
		c.drained = n > 0 && left == 0
		if n == 0 {
			c.release()
		}
	default:
		c.readErr = err
		c.release()
	}
	return true
}

// badLineEnd reports whether b (part of an incomplete head) holds an LF
// not preceded by CR, or a CR followed by something other than LF.
func badLineEnd(b []byte) bool {
	for i, ch := range b {
		switch {
		case ch == '\n' && (i == 0 || b[i-1] != '\r'):
			return true
		case ch == '\r' && i+1 < len(b) && b[i+1] != '\n':
			return true
		}
	}
	return false
}

// errClientGone says the client closed its connection while its request
// waited for the backend.
var errClientGone = errors.New("the client closed the connection")

// Err reports whether the client went away while its request waited for
// the backend (errClientGone), so that tryBackends does not blame the
// backend; it makes the connection an errSource.
func (c *h1conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return errClientGone
	}
	return nil
}

// waitingOn records the upstream connection a response is awaited on (nil
// when done waiting); it reports false when the client is gone.
func (c *h1conn) waitingOn(uc *upstream.H1Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.upstream = uc
	return !c.gone
}

// watchAfter is how long a request waits for its backend before the
// watcher starts checking whether its client is still there, and how often.
var watchAfter = time.Second

// watch notices clients that close their connection while their request
// waits for a backend (net/http notices them with a read in the
// background, which costs every request; this costs a look every second at
// the few that take that long), and cuts the wait short, until ctx is done.
func (s *H1Server) watch(ctx context.Context) {
	t := time.NewTicker(watchAfter)
	defer t.Stop()
	var slow []*h1conn
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			limit := now.Add(-watchAfter).UnixNano()
			slow = slow[:0]
			s.mu.Lock()
			for c := range s.conns {
				if at := c.inFlightSince.Load(); at != 0 && at <= limit {
					slow = append(slow, c)
				}
			}
			s.mu.Unlock()
			for _, c := range slow {
				c.checkClient()
			}
			clear(slow)
		}
	}
}

// checkClient peeks at the client's socket without reading from it: an end
// of stream or an error there means the client is gone, and the wait for
// the backend is cut short through its connection's deadline.
func (c *h1conn) checkClient() {
	if c.raw == nil {
		return
	}
	gone := false
	_ = c.raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = n == 0 && err == nil || err != nil && err != syscall.EAGAIN && err != syscall.EINTR
	})
	if gone {
		c.cutWait()
	}
}

// cutWait marks the client gone and cuts short the wait for its backend.
func (c *h1conn) cutWait() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gone = true
	if c.upstream != nil {
		_ = c.upstream.SetDeadline(time.Unix(1, 0))
	}
}
