package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http2"

	"github.com/lb-project/lb/dataplane/connchan"
	"github.com/lb-project/lb/dataplane/h1guard"
	"github.com/lb-project/lb/dataplane/h2server"
	"github.com/lb-project/lb/dataplane/stats"
)

// tlsMux serves the TLS listener: it completes each handshake itself, hands
// HTTP/2 connections (ALPN "h2") to the HTTP/2 server and HTTP/1.1 ones,
// wrapped in h1guard, to the HTTP/1.1 server through conns. (net/http would
// serve HTTP/1.1 over TLS without the guard, since it only wraps *tls.Conn.)
type tlsMux struct {
	ln        net.Listener
	tlsConfig *tls.Config
	h1        *connchan.Listener
	h2        *h2server.Server
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
		state := tc.ConnectionState()
		// Requests outlive ctx, which ends when the drain begins.
		m.h2.ServeConn(context.WithoutCancel(ctx), tc, &state)
		return
	}
	if !m.h1.Deliver(h1guard.New(tc)) {
		tc.Close()
	}
}

// wait waits for handshakes and HTTP/2 connections to end.
func (m *tlsMux) wait() { m.wg.Wait() }
