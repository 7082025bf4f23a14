package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// wsMaxMsg is the read limit on both ends: room for the 16 MiB messages.
const wsMaxMsg = 32 << 20

// wsServerCloseCode and wsServerCloseReason are what /close closes with.
const (
	wsServerCloseCode   websocket.StatusCode = 4001
	wsServerCloseReason                      = "server bye"
)

// wsBackend is a WebSocket server behind the proxy. Each connection reports
// how it ended under its ?id= query parameter.
//
//	/refuse  answers an upgrade with 403 and a body
//	/close   reads one message, then closes with 4001 "server bye" and
//	         reports Close's result (nil: the client completed the handshake)
//	other    echoes every message with its type until a read fails, and
//	         reports that read error
type wsBackend struct {
	addr    string
	srv     *http.Server
	refused atomic.Int64

	mu     sync.Mutex
	events map[string]chan error
}

func wsStartBackend(t *testing.T) *wsBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("websocket backend: %v", err)
	}
	b := &wsBackend{addr: l.Addr().String(), events: map[string]chan error{}}
	b.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(b.serve)}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// eventsFor returns the channel connection id's end is reported on.
func (b *wsBackend) eventsFor(id string) chan error {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.events[id]
	if !ok {
		ch = make(chan error, 4)
		b.events[id] = ch
	}
	return ch
}

func (b *wsBackend) report(id string, err error) {
	select {
	case b.eventsFor(id) <- err:
	default:
	}
}

// awaitEnd waits up to timeout for connection id to end on the backend and
// returns what it reported.
func (b *wsBackend) awaitEnd(t *testing.T, id string, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-b.eventsFor(id):
		return err
	case <-time.After(timeout):
		t.Fatalf("backend connection %q did not end within %v", id, timeout)
		return nil
	}
}

func (b *wsBackend) serve(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	if r.URL.Path == "/refuse" {
		b.refused.Add(1)
		w.Header().Set("X-Refused-By", "backend")
		http.Error(w, "upgrade refused by backend", http.StatusForbidden)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		b.report(id, err)
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(wsMaxMsg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if r.URL.Path == "/close" {
		if _, _, err := c.Read(ctx); err != nil {
			b.report(id, err)
			return
		}
		b.report(id, c.Close(wsServerCloseCode, wsServerCloseReason))
		return
	}
	for { // bounded by ctx
		typ, data, err := c.Read(ctx)
		if err != nil {
			b.report(id, err)
			return
		}
		if err := c.Write(ctx, typ, data); err != nil {
			b.report(id, err)
			return
		}
	}
}

// wsCase is one client transport to the data plane.
type wsCase struct {
	name    string
	baseURL string      // ws://host:port or wss://host:port
	tlsCfg  *tls.Config // nil for ws://
	addr    string
}

// wsSetup starts a control plane, a data plane with a TLS listener (for
// ws.test) and the extra flags, and a WebSocket backend in the catch-all
// pool, and returns the backend and the ws:// and wss:// client cases.
func wsSetup(t *testing.T, extra ...string) (*wsBackend, []wsCase) {
	t.Helper()
	ca := newTestCA(t, "ws e2e CA")
	cp, dp, tlsAddr := grpcTLSFrontend(t, ca, []string{"ws.test"}, extra...)
	be := wsStartBackend(t)
	grpcCreatePools(t, cp.addr, dp, &lbv1.Pool{Name: "ws", Backends: []*lbv1.Backend{{Address: be.addr}}})
	return be, []wsCase{
		{name: "ws", baseURL: "ws://" + dp.addr, addr: dp.addr},
		{name: "wss", baseURL: "wss://" + tlsAddr, addr: tlsAddr,
			tlsCfg: &tls.Config{ServerName: "ws.test", RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}},
	}
}

// wsHTTPClient returns an HTTP/1.1-only client trusting tlsCfg.
func wsHTTPClient(tlsCfg *tls.Config) *http.Client {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	tr := &http.Transport{Proxy: nil, Protocols: protos, DisableCompression: true}
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
	}
	return &http.Client{Transport: tr}
}

// dial dials path (with query) through the case's listener.
func (c wsCase) dial(ctx context.Context, path string) (*websocket.Conn, *http.Response, error) {
	conn, resp, err := websocket.Dial(ctx, c.baseURL+path, &websocket.DialOptions{HTTPClient: wsHTTPClient(c.tlsCfg)})
	if conn != nil {
		conn.SetReadLimit(wsMaxMsg)
	}
	return conn, resp, err
}

// mustDial dials path and fails the test on error; the connection is closed
// at the end of the test.
func (c wsCase) mustDial(t *testing.T, path string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := c.dial(ctx, path)
	if err != nil {
		t.Fatalf("dial %s%s: %v", c.baseURL, path, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

// wsRoundTrip writes msg and wants it echoed with its type.
func wsRoundTrip(t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg []byte, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Write(ctx, typ, msg); err != nil {
		t.Fatalf("write %v message of %d bytes: %v", typ, len(msg), err)
	}
	gotTyp, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read echo of %v message of %d bytes: %v", typ, len(msg), err)
	}
	if gotTyp != typ || len(got) != len(msg) || string(got) != string(msg) {
		t.Fatalf("echo of %v message of %d bytes: got %v message of %d bytes (equal: %v)",
			typ, len(msg), gotTyp, len(got), string(got) == string(msg))
	}
}
