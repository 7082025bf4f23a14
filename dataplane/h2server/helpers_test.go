package h2server_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/lb-project/lb/dataplane/h2server"
)

// testServer serves h2c (HTTP/2 with prior knowledge) on a loopback port.
type testServer struct {
	srv  *h2server.Server
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

// startServer starts srv on a loopback listener; cleanup shuts it down and
// waits for every connection.
func startServer(t testing.TB, srv *h2server.Server) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: ln.Addr().String(), ln: ln}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				srv.ServeConn(context.Background(), c, nil)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		ts.wg.Wait()
	})
	return ts
}

// serve starts a server with handler h and default settings.
func serve(t *testing.T, h http.HandlerFunc) *testServer {
	return startServer(t, &h2server.Server{Handler: h})
}

// client returns Go's HTTP/2 client speaking h2c to ts.
func (ts *testServer) client(t *testing.T) *http.Client {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }
