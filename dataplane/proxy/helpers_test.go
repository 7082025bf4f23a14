package proxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/connchan"
	"github.com/lb-project/lb/dataplane/h1guard"
	"github.com/lb-project/lb/dataplane/proxy"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/upstream"
)

// reqTimeout bounds every exchange a test makes, so a proxy that hangs fails
// the test instead of the whole run.
const reqTimeout = 10 * time.Second

// testCtx returns a context that ends after reqTimeout or with the test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	t.Cleanup(cancel)
	return ctx
}

// serverKind says which server fronts the Handler in a proxyEnv.
type serverKind int

const (
	// netHTTP is net/http's http.Server with the Handler, its connections
	// wrapped in h1guard: how the data plane serves HTTP/1.1 over TLS
	// (here without TLS).
	netHTTP serverKind = iota
	// h1Server is the proxy's own HTTP/1.1 server, handing the requests it
	// does not serve to net/http as above (the plain listener's path).
	h1Server
)

func (k serverKind) String() string {
	switch k {
	case netHTTP:
		return "net/http"
	case h1Server:
		return "h1server"
	}
	return fmt.Sprintf("serverKind(%d)", int(k))
}

// serverKinds are all the servers a test runs against.
var serverKinds = []serverKind{netHTTP, h1Server}

// forEachServer runs f as a subtest for each server kind, so that the same
// assertions hold for both paths.
func forEachServer(t *testing.T, f func(t *testing.T, kind serverKind)) {
	t.Helper()
	for _, kind := range serverKinds {
		t.Run(kind.String(), func(t *testing.T) { f(t, kind) })
	}
}

// proxyEnv is a proxy Handler served on loopback by a server of its kind,
// with tables whose pools take their transports from an upstream.Cache (as
// the data plane builds them), and a keep-alive client to talk to it.
type proxyEnv struct {
	kind    serverKind
	table   *routing.Current
	cache   *upstream.Cache // the pools' transports
	handler *proxy.Handler
	url     string // http://HOST:PORT of the proxy
	lis     net.Listener
	// srv is net/http's server: the only one (netHTTP) or the fallback of
	// h1 (h1Server).
	srv *http.Server
	h1  *proxy.H1Server // nil for netHTTP
	// fallbacks counts connections h1 handed over to net/http.
	fallbacks atomic.Int64
	// lasts counts connections h1 gave to Last while draining.
	lasts  atomic.Int64
	client *http.Client // test → proxy
	// served is closed when the servers' Serve calls have returned.
	served chan struct{}
}

// envOption adjusts the env's net/http server and H1Server configuration
// before they start.
type envOption func(*http.Server, *proxy.H1Config)

// newProxyEnv starts a proxy served by a server of kind, with an empty
// routing table holder. Everything is closed in cleanup.
func newProxyEnv(t testing.TB, kind serverKind, opts ...envOption) *proxyEnv {
	t.Helper()
	cache := upstream.NewCache(upstream.Options{})
	// The Handler's default transport serves only pools built without a
	// transport, which store never builds.
	def := proxy.NewTransport()
	e := &proxyEnv{kind: kind, table: &routing.Current{}, cache: cache, served: make(chan struct{})}
	e.handler = proxy.New(proxy.Config{Table: e.table, Transport: def})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.lis = lis
	e.url = "http://" + lis.Addr().String()
	// As the data plane configures its proxy servers.
	newServer := func() *http.Server {
		return &http.Server{
			Handler:           e.handler,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    h1guard.MaxHeadBytes,
			ConnContext:       h1guard.WithConn,
			ErrorLog:          log.New(io.Discard, "", 0),
		}
	}
	e.srv = newServer()
	h1cfg := proxy.H1Config{Last: func(ctx context.Context, c net.Conn) {
		e.lasts.Add(1)
		connchan.ServeOne(ctx, newServer(), h1guard.New(c))
	}}
	for _, o := range opts {
		o(e.srv, &h1cfg)
	}
	var wg sync.WaitGroup
	switch kind {
	case netHTTP:
		wg.Go(func() { _ = e.srv.Serve(h1guard.Listener{Listener: lis}) })
	case h1Server:
		fallback := connchan.New(lis.Addr())
		h1cfg.Fallback = func(c net.Conn) bool {
			e.fallbacks.Add(1)
			return fallback.Deliver(h1guard.New(c))
		}
		e.h1 = e.handler.NewH1Server(h1cfg)
		wg.Go(func() { _ = e.srv.Serve(fallback) })
		wg.Go(func() {
			if err := e.h1.Serve(lis); err != nil {
				t.Errorf("H1Server.Serve: %v", err)
			}
		})
	default:
		t.Fatalf("unknown server kind %v", kind)
	}
	go func() {
		wg.Wait()
		close(e.served)
	}()
	ct := &http.Transport{
		Proxy:               nil, // never an environment proxy
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
	}
	e.client = &http.Client{Transport: ct}
	t.Cleanup(func() {
		ct.CloseIdleConnections()
		if e.h1 != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := e.h1.Shutdown(ctx); err != nil {
				t.Errorf("H1Server.Shutdown: %v", err)
			}
			cancel()
		}
		_ = e.srv.Close()
		_ = lis.Close()
		select {
		case <-e.served:
		case <-time.After(reqTimeout):
			t.Errorf("the proxy's servers did not stop")
		}
		cache.CloseIdleConnections()
		def.CloseIdleConnections()
	})
	return e
}

// shutdown shuts the env's servers down gracefully, as the data plane does
// when it drains: both at once, bounded by ctx.
func (e *proxyEnv) shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	var h1Err error
	if e.h1 != nil {
		wg.Go(func() { h1Err = e.h1.Shutdown(ctx) })
	}
	err := e.srv.Shutdown(ctx)
	wg.Wait()
	return errors.Join(h1Err, err)
}

// wantFallbacks checks, for an h1Server env, that exactly n connections
// were handed over to net/http so far: that requests took the path they
// should. It checks nothing for netHTTP.
func (e *proxyEnv) wantFallbacks(t testing.TB, n int64) {
	t.Helper()
	if e.kind != h1Server {
		return
	}
	if got := e.fallbacks.Load(); got != n {
		t.Errorf("H1Server handed %d connections over to net/http, want %d", got, n)
	}
}

// addr is the proxy's HOST:PORT.
func (e *proxyEnv) addr() string { return e.lis.Addr().String() }

// store builds a table of pools, their transports from the env's cache,
// and publishes it.
func (e *proxyEnv) store(t testing.TB, pools ...routing.PoolConfig) {
	t.Helper()
	tab, err := routing.Build(nil, routing.Config{Version: 1, Pools: pools}, e.cache)
	if err != nil {
		t.Fatalf("routing.Build: %v", err)
	}
	e.table.Store(tab)
}

// poolOf returns a pool config with equal-weight backends at addrs.
func poolOf(name string, hosts []string, prefix string, addrs ...string) routing.PoolConfig {
	p := routing.PoolConfig{Name: name, Hosts: hosts, PathPrefix: prefix, Version: 1}
	for _, a := range addrs {
		p.Backends = append(p.Backends, routing.Backend{Address: a, Weight: 1})
	}
	return p
}

// request sends req (bound to a timeout) through the proxy and returns the
// response with its body read in full.
func (e *proxyEnv) request(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.client.Do(req.WithContext(testCtx(t)))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

// get sends GET path with Host host through the proxy.
func (e *proxyEnv) get(t testing.TB, host, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	return e.request(t, req)
}

// newBackend starts a backend server closed in cleanup.
func newBackend(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// backendAddr is a backend's HOST:PORT, as a pool names it.
func backendAddr(s *httptest.Server) string { return s.Listener.Addr().String() }

// rawExchange writes raw, byte for byte, on a new connection to addr and
// reads one response, body included.
func rawExchange(t testing.TB, addr, raw string) (*http.Response, []byte) {
	t.Helper()
	ctx := testCtx(t)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, body
}

// seen is what the echo backend reports about the request it received.
type seen struct {
	Method           string
	Host             string
	RequestURI       string
	RawPath          string
	EscapedPath      string
	RawQuery         string
	Header           http.Header
	ContentLength    int64
	TransferEncoding []string
	BodyLen          int64
	BodySHA256       string
}

// echoBackend answers every request with a JSON description of it.
func echoBackend(t testing.TB) *httptest.Server {
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		s := seen{
			Method:           r.Method,
			Host:             r.Host,
			RequestURI:       r.RequestURI,
			RawPath:          r.URL.RawPath,
			EscapedPath:      r.URL.EscapedPath(),
			RawQuery:         r.URL.RawQuery,
			Header:           r.Header,
			ContentLength:    r.ContentLength,
			TransferEncoding: r.TransferEncoding,
			BodyLen:          n,
			BodySHA256:       hex.EncodeToString(h.Sum(nil)),
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
}

// decodeSeen decodes an echo backend's answer.
func decodeSeen(t testing.TB, resp *http.Response, body []byte) seen {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200 from the echo backend", resp.StatusCode, body)
	}
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decoding echo %q: %v", body, err)
	}
	return s
}

// closedAddr returns the address of a loopback listener that has been closed,
// so connecting to it is refused.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// pattern returns n deterministic, non-repeating-looking bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	var x uint32 = 2463534242
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
