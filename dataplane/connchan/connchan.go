// Package connchan is a net.Listener fed with connections by their
// producer rather than by a socket: the data plane hands connections
// accepted elsewhere (HTTP/1.1 after a TLS handshake, or handed over by the
// proxy's own HTTP/1.1 server) to a net/http server through it.
package connchan

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// Listener is a net.Listener whose connections come from Deliver.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// New returns a Listener reporting addr as its address.
func New(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Deliver hands c to Accept, waiting for it; it reports false once the
// listener is closed (c is then the caller's to close).
func (l *Listener) Deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; Deliver and Accept then fail.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.addr }

// ServeOne serves c, and nothing else, with srv, whose keep-alives it turns
// off: srv answers one request, saying Connection: close, and closes c.
// The request's context is ctx's child: cancelling ctx abandons it. It
// returns once c is closed, or hijacked (its new owner then closes it).
// srv must be new, and serves nothing else; ServeOne sets its ConnState
// and BaseContext.
func ServeOne(ctx context.Context, srv *http.Server, c net.Conn) {
	l := &Listener{addr: c.LocalAddr(), conns: make(chan net.Conn, 1), done: make(chan struct{})}
	l.conns <- c
	srv.SetKeepAlivesEnabled(false)
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			l.Close() // Serve returns: it has no other connection
		}
	}
	_ = srv.Serve(l)
}
