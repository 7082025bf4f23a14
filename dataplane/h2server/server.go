// Package h2server serves HTTP/2 connections to an http.Handler, built for
// a proxy's request path. Go's HTTP/2 server runs every connection through
// one goroutine that owns all state: a handler's response headers and its
// body each take a round trip through that goroutine (two channel hand-offs
// and, for headers, a goroutine of their own) before they reach the socket.
// Here a handler writes its frames itself, under the connection's lock, into
// a coalesce.Conn, which gathers the frames of every stream into one system
// call; the reading goroutine handles control frames and starts a goroutine
// per request.
//
// What it implements of RFC 9113: the connection preface and SETTINGS
// exchange, stream states and identifiers, HEADERS with CONTINUATION (HPACK
// through golang.org/x/net/http2's Framer, which bounds header lists and
// refuses CONTINUATION floods), request validation (pseudo-header fields,
// connection-specific fields, Content-Length against DATA), flow control in
// both directions, request and response trailers, RST_STREAM, PING,
// GOAWAY both ways, SETTINGS changes to window and frame sizes, idle
// timeout and graceful shutdown. It does not push, and ignores priorities
// (as Go's server does by default). A limit on running handlers, not only
// open streams, keeps a client that opens and resets streams in a loop
// (CVE-2023-44487) from running more handlers than the stream limit.
package h2server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults for the zero values of Server's fields.
const (
	// DefaultMaxConcurrentStreams is the stream limit advertised to clients.
	DefaultMaxConcurrentStreams = 250
	// DefaultMaxHeaderListSize bounds a request's header list.
	DefaultMaxHeaderListSize = 1 << 20
	// DefaultStallTimeout bounds how long a client may take none of the
	// bytes written to it.
	DefaultStallTimeout = 60 * time.Second
)

// Flow-control windows this server grants: per stream, and per connection
// (which bounds the request body bytes buffered for a connection).
const (
	streamWindow = 256 << 10
	connWindow   = 1 << 20
)

// prefaceTimeout bounds the wait for the client's connection preface and
// first SETTINGS frame.
const prefaceTimeout = 10 * time.Second

// Server serves HTTP/2 connections. Its fields are read at each ServeConn;
// set them before the first.
type Server struct {
	// Handler answers each request.
	Handler http.Handler
	// Logger logs protocol errors (debug) and handler panics (error).
	Logger hclog.Logger
	// IdleTimeout closes a connection with no open stream for this long
	// (with GOAWAY). Zero means never.
	IdleTimeout time.Duration
	// MaxConcurrentStreams is advertised to clients and bounds the handlers
	// running per connection. Zero means DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's header list (as HPACK counts
	// it); longer requests get 431. Zero means DefaultMaxHeaderListSize.
	MaxHeaderListSize uint32
	// StallTimeout closes a connection whose client takes none of the
	// bytes written to it for this long (nginx's send_timeout). Zero means
	// DefaultStallTimeout; negative, never.
	StallTimeout time.Duration

	mu           sync.Mutex
	conns        map[*conn]struct{}
	shuttingDown bool
}

// ServeConn serves c until the client closes it, a protocol error ends it,
// the idle timeout passes, or Shutdown drains it; it returns once every
// handler it started has returned. ctx is the parent of every request's
// context. state is the connection's TLS state (nil for h2c); requests
// carry it in r.TLS. If c reads through a buffer of its own (an h2c
// connection whose first bytes were read ahead), pass that as c.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, state *tls.ConnectionState) {
	cn, draining := s.register(ctx, c, state)
	if draining {
		cn.goAwayLater()
	}
	s.run(cn)
}

// Start serves c as ServeConn does, on a goroutine of its own that
// Shutdown waits for. Once Shutdown has begun it returns false and leaves
// c to the caller.
func (s *Server) Start(ctx context.Context, c net.Conn, state *tls.ConnectionState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown {
		return false
	}
	cn := s.registerLocked(ctx, c, state)
	go s.run(cn)
	return true
}

// register adds a connection for Shutdown to drain, and reports whether
// Shutdown has begun.
func (s *Server) register(ctx context.Context, c net.Conn, state *tls.ConnectionState) (*conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registerLocked(ctx, c, state), s.shuttingDown
}

func (s *Server) registerLocked(ctx context.Context, c net.Conn, state *tls.ConnectionState) *conn {
	cn := newConn(ctx, s, c, state)
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[cn] = struct{}{}
	return cn
}

// run serves cn until it ends and unregisters it.
func (s *Server) run(cn *conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, cn)
		s.mu.Unlock()
	}()
	cn.serve()
}

// Shutdown sends GOAWAY on every connection, lets the streams in flight
// finish and closes each connection when it has none left. It returns when
// all connections are closed, or closes those left when ctx ends and
// returns ctx's error. Connections served after Shutdown get GOAWAY at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shuttingDown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		// Not inline: a handler writing to a client that does not read
		// holds the connection's lock, and only closing releases it.
		go c.goAwayLater()
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.closeNow()
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (s *Server) logger() hclog.Logger {
	if s.Logger == nil {
		return hclog.NewNullLogger()
	}
	return s.Logger
}

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams == 0 {
		return DefaultMaxConcurrentStreams
	}
	return s.MaxConcurrentStreams
}

func (s *Server) stallTimeout() time.Duration {
	switch {
	case s.StallTimeout == 0:
		return DefaultStallTimeout
	case s.StallTimeout < 0:
		return 0
	}
	return s.StallTimeout
}

func (s *Server) maxHeaderListSize() uint32 {
	if s.MaxHeaderListSize == 0 {
		return DefaultMaxHeaderListSize
	}
	return s.MaxHeaderListSize
}
