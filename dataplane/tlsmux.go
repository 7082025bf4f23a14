package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http2"

	"github.com/lb-project/lb/dataplane/h1guard"
	"github.com/lb-project/lb/dataplane/stats"
)

// tlsMux serves the TLS listener: it completes each handshake itself, hands
// HTTP/2 connections (ALPN "h2") to the HTTP/2 server and HTTP/1.1 ones,
// wrapped in h1guard, to the HTTP/1.1 server through conns. (net/http would
// serve HTTP/1.1 over TLS without the guard, since it only wraps *tls.Conn.)
type tlsMux struct {
	ln        net.Listener
	tlsConfig *tls.Config
	h1        *chanListener
	h2        *http2.Server
	srv       *http.Server
	conns     *stats.Conns
	log       hclog.Logger

	// wg counts handshake goroutines and HTTP/2 connections.
	wg sync.WaitGroup
}

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 10 * time.Second

// serve accepts until the listener is closed.
func (m *tlsMux) serve(ctx context.Context) error {
	defer m.h1.Close()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handle(ctx, c)
		}()
	}
}

func (m *tlsMux) handle(ctx context.Context, c net.Conn) {
	counted := stats.Track(c, m.conns, stats.ListenerHTTPS)
	tc := tls.Server(counted, m.tlsConfig)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		m.log.Debug("TLS handshake failed", "client", c.RemoteAddr().String(), "error", err)
		counted.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
		counted.SetProto(stats.ProtoHTTP2)
		m.h2.ServeConn(yieldingConn{tc}, &http2.ServeConnOpts{Context: ctx, BaseConfig: m.srv, Handler: m.srv.Handler})
		return
	}
	if !m.h1.deliver(h1guard.New(tc)) {
		tc.Close()
	}
}

// wait waits for handshakes and HTTP/2 connections to end.
func (m *tlsMux) wait() { m.wg.Wait() }

// chanListener is a net.Listener fed with connections by deliver.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver hands c to Accept; it reports false once the listener is closed.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept implements net.Listener.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *chanListener) Addr() net.Addr { return l.addr }

// yieldingConn lets other goroutines run before each write: the HTTP/2
// server flushes whenever its queue of frames is empty, so yielding first
// lets handlers that are about to finish queue their responses, and one TLS
// record and one system call carry several.
type yieldingConn struct{ *tls.Conn }

func (c yieldingConn) Write(p []byte) (int, error) {
	runtime.Gosched()
	return c.Conn.Write(p)
}
