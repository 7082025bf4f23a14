package proxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/proxy"
	"github.com/lb-project/lb/dataplane/routing"
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

// proxyEnv is a proxy Handler served by a real HTTP server on loopback, with
// its own upstream transport and a keep-alive client to talk to it.
type proxyEnv struct {
	table     *routing.Current
	transport *http.Transport // proxy → backends
	server    *httptest.Server
	client    *http.Client // test → proxy
}

// newProxyEnv starts a proxy with transport tr (proxy.NewTransport() when
// nil) and an empty routing table holder. Everything is closed in cleanup.
func newProxyEnv(t testing.TB, tr *http.Transport) *proxyEnv {
	t.Helper()
	if tr == nil {
		tr = proxy.NewTransport()
	}
	e := &proxyEnv{table: &routing.Current{}, transport: tr}
	e.server = httptest.NewServer(proxy.New(proxy.Config{Table: e.table, Transport: tr}))
	ct := &http.Transport{
		Proxy:               nil, // never an environment proxy
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
	}
	e.client = &http.Client{Transport: ct}
	t.Cleanup(func() {
		e.server.Close()
		ct.CloseIdleConnections()
		tr.CloseIdleConnections()
	})
	return e
}

// addr is the proxy's HOST:PORT.
func (e *proxyEnv) addr() string { return e.server.Listener.Addr().String() }

// store builds a table of pools and publishes it.
func (e *proxyEnv) store(t testing.TB, pools ...routing.PoolConfig) {
	t.Helper()
	tab, err := routing.Build(nil, routing.Config{Version: 1, Pools: pools}, nil)
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
	req, err := http.NewRequest(http.MethodGet, e.server.URL+path, nil)
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
