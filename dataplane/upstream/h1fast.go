package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// fastH1 sends the common request — plain HTTP/1.1, no body, no upgrade —
// on the calling goroutine: it writes the request and reads the response
// head itself, over connections kept per backend. net/http's Transport
// would hand each request to two goroutines of the connection (a writer
// and a reader) and back, which costs more than the exchange on loopback;
// every other request still goes through it.
type fastH1 struct {
	dial              func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle           int
	idleTimeout       time.Duration
	respHeaderTimeout time.Duration

	hosts sync.Map // backend address → *hostConns
}

// hostConns are the idle connections to one backend, most recent last.
type hostConns struct {
	mu   sync.Mutex
	idle []*fastConn
}

// fastConn is one upstream connection with its buffers.
type fastConn struct {
	net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// eligible reports whether r can take the fast path.
func (f *fastH1) eligible(r *http.Request) bool {
	return (r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 && r.URL.Scheme == "http" &&
		r.Method != http.MethodConnect && !isUpgrade(r) && len(r.Header["Expect"]) == 0
}

// RoundTrip sends r, which must be eligible. A reused connection that turns
// out to have been closed by the backend meanwhile (nothing came back) is
// replaced by a new one once, as net/http's Transport does: the request had
// no body, so sending it again is safe.
func (f *fastH1) RoundTrip(r *http.Request) (*http.Response, error) {
	addr := r.URL.Host
	for attempt := 0; ; attempt++ {
		c, reused, err := f.get(r.Context(), addr)
		if err != nil {
			return nil, err
		}
		resp, stale, err := f.exchange(c, r, addr)
		if err == nil {
			return resp, nil
		}
		c.Close()
		if !(reused && stale && attempt == 0 && r.Context().Err() == nil) {
			return nil, err
		}
	}
}

// get returns an idle connection to addr, or a new one.
func (f *fastH1) get(ctx context.Context, addr string) (*fastConn, bool, error) {
	if hv, ok := f.hosts.Load(addr); ok {
		h := hv.(*hostConns)
		now := time.Now()
		h.mu.Lock()
		for n := len(h.idle); n > 0; n = len(h.idle) {
			c := h.idle[n-1]
			h.idle[n-1] = nil
			h.idle = h.idle[:n-1]
			if now.Sub(c.idleSince) < f.idleTimeout {
				h.mu.Unlock()
				return c, true, nil
			}
			c.Close()
		}
		h.mu.Unlock()
	}
	nc, err := f.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &fastConn{Conn: nc, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 4096)}, false, nil
}

// put keeps c for reuse, or closes it when the backend has enough idle.
func (f *fastH1) put(addr string, c *fastConn) {
	hv, ok := f.hosts.Load(addr)
	if !ok {
		hv, _ = f.hosts.LoadOrStore(addr, new(hostConns))
	}
	h := hv.(*hostConns)
	c.idleSince = time.Now()
	h.mu.Lock()
	if len(h.idle) < f.maxIdle {
		h.idle = append(h.idle, c)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	c.Close()
}

// closeIdle closes every idle connection.
func (f *fastH1) closeIdle() {
	f.hosts.Range(func(_, hv any) bool {
		h := hv.(*hostConns)
		h.mu.Lock()
		idle := h.idle
		h.idle = nil
		h.mu.Unlock()
		for _, c := range idle {
			c.Close()
		}
		return true
	})
}

// errServerClosed says the backend closed a reused connection without
// answering.
var errServerClosed = errors.New("backend closed the connection before answering")

// exchange writes r on c and reads the response head. stale reports that
// nothing at all came back (the connection may have been closed while
// idle). The response body returns c to the pool when read to its end.
func (f *fastH1) exchange(c *fastConn, r *http.Request, addr string) (resp *http.Response, stale bool, err error) {
	// A client that goes away cuts the exchange short through the
	// connection's deadline.
	stop := context.AfterFunc(r.Context(), func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err := r.Write(c.bw); err != nil {
		return nil, true, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, true, err
	}
	if f.respHeaderTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(f.respHeaderTimeout))
	}
	for {
		if _, err := c.br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, true, fmt.Errorf("%w: %w", errServerClosed, io.EOF)
			}
			var ne net.Error
			return nil, !(errors.As(err, &ne) && ne.Timeout()), err
		}
		resp, err = http.ReadResponse(c.br, r)
		if err != nil {
			return nil, false, err
		}
		// 1xx informational answers (100 Continue, 103 Early Hints) precede
		// the real one; 101 is never asked for on this path.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue
		}
		break
	}
	if f.respHeaderTimeout > 0 {
		_ = c.SetReadDeadline(time.Time{})
	}
	resp.Body = &fastBody{rc: resp.Body, c: c, f: f, addr: addr, stop: stop, reusable: !resp.Close}
	return resp, false, nil
}

// fastBody returns its connection to the pool once the body was read to
// its end, and closes it otherwise.
type fastBody struct {
	rc       io.ReadCloser
	c        *fastConn
	f        *fastH1
	addr     string
	stop     func() bool
	reusable bool
	eof      bool
	done     atomic.Bool
}

func (b *fastBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close implements io.Closer.
func (b *fastBody) Close() error {
	if b.done.Swap(true) {
		return nil
	}
	if !b.stop() {
		// The client went away and the deadline was set: the connection
		// cannot be trusted any more.
		b.reusable = false
	}
	if b.eof && b.reusable && b.c.br.Buffered() == 0 {
		_ = b.c.SetDeadline(time.Time{})
		b.f.put(b.addr, b.c)
		return nil
	}
	return b.c.Close()
}
