package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/routing"
)

// blockingBackend returns the address of a backend whose handler blocks until
// the test ends, so it never sends response headers.
func blockingBackend(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	s := newBackend(t, func(http.ResponseWriter, *http.Request) { <-release })
	// Registered after newBackend's Close, so it runs before it: Close waits
	// for the blocked handler.
	t.Cleanup(func() { close(release) })
	return backendAddr(s)
}

// hangupBackend returns the address of a server that reads one request per
// connection and closes the connection without answering.
func hangupBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(reqTimeout))
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	return l.Addr().String()
}

func TestErrorResponses(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the pools to store (nil: store no table at all) and
		// the exact body the proxy must answer.
		setup      func(t *testing.T) ([]routing.PoolConfig, string)
		host       string
		wantStatus int
		// handedOver: H1Server leaves the request to net/http (it serves
		// only requests it can route).
		handedOver bool
	}{
		{
			name: "no table stored",
			setup: func(*testing.T) ([]routing.PoolConfig, string) {
				return nil, "not ready: no configuration received from the control plane yet\n"
			},
			wantStatus: http.StatusServiceUnavailable,
			handedOver: true,
		},
		{
			name: "no pool matches host",
			setup: func(t *testing.T) ([]routing.PoolConfig, string) {
				return []routing.PoolConfig{poolOf("api", []string{"api.example.com"}, "", backendAddr(echoBackend(t)))},
					"no route: no pool matches this host and path\n"
			},
			host:       "www.example.com",
			wantStatus: http.StatusNotFound,
			handedOver: true,
		},
		{
			name: "no pool matches path",
			setup: func(t *testing.T) ([]routing.PoolConfig, string) {
				return []routing.PoolConfig{poolOf("api", nil, "/api/", backendAddr(echoBackend(t)))},
					"no route: no pool matches this host and path\n"
			},
			wantStatus: http.StatusNotFound,
			handedOver: true,
		},
		{
			name: "pool without backends",
			setup: func(*testing.T) ([]routing.PoolConfig, string) {
				return []routing.PoolConfig{poolOf("empty-pool", nil, "")},
					"no backend: pool empty-pool has no backends\n"
			},
			wantStatus: http.StatusServiceUnavailable,
		},
		{
			name: "backend refuses connections",
			setup: func(t *testing.T) ([]routing.PoolConfig, string) {
				addr := closedAddr(t)
				return []routing.PoolConfig{poolOf("web", nil, "", addr)},
					"bad gateway: backend " + addr + " unreachable: connection refused\n"
			},
			wantStatus: http.StatusBadGateway,
		},
		{
			name: "backend closes the connection without answering",
			setup: func(t *testing.T) ([]routing.PoolConfig, string) {
				addr := hangupBackend(t)
				return []routing.PoolConfig{poolOf("web", nil, "", addr)},
					"bad gateway: backend " + addr + " unreachable: EOF\n"
			},
			wantStatus: http.StatusBadGateway,
		},
		{
			name: "backend sends no headers in time",
			setup: func(t *testing.T) ([]routing.PoolConfig, string) {
				addr := blockingBackend(t)
				p := poolOf("slow", nil, "", addr)
				p.Upstream.ResponseHeaderTimeout = 200 * time.Millisecond
				return []routing.PoolConfig{p},
					"gateway timeout: backend " + addr + " did not answer in time\n"
			},
			wantStatus: http.StatusGatewayTimeout,
		},
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newProxyEnv(t, kind)
				pools, wantBody := tc.setup(t)
				if pools != nil {
					e.store(t, pools...)
				}
				resp, body := e.get(t, tc.host, "/some/path")
				if resp.StatusCode != tc.wantStatus {
					t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
				}
				if string(body) != wantBody {
					t.Errorf("body = %q, want %q", body, wantBody)
				}
				if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
					t.Errorf("Content-Type = %q, want %q", got, "text/plain; charset=utf-8")
				}
				if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options = %q, want %q", got, "nosniff")
				}
				if got := resp.Header.Get("Date"); got == "" {
					t.Errorf("no Date in %v", resp.Header)
				}
				var want int64
				if tc.handedOver {
					want = 1
				}
				e.wantFallbacks(t, want)
			})
		}
	})
}

// nameBackend answers every request with its name.
func nameBackend(t *testing.T, name string) *httptest.Server {
	return newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, name)
	})
}

func TestRoundRobinAlternates(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		e := newProxyEnv(t, kind)
		a, b := nameBackend(t, "a"), nameBackend(t, "b")
		e.store(t, poolOf("web", nil, "", backendAddr(a), backendAddr(b)))

		var got []string
		for range 10 {
			resp, body := e.get(t, "", "/")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, body %q", resp.StatusCode, body)
			}
			got = append(got, string(body))
		}
		want := []string{"a", "b", "a", "b", "a", "b", "a", "b", "a", "b"}
		if !slices.Equal(got, want) {
			t.Errorf("backends = %v, want %v", got, want)
		}
		e.wantFallbacks(t, 0)
	})
}

func TestHostRouting(t *testing.T) {
	forEachServer(t, testHostRouting)
}

func testHostRouting(t *testing.T, kind serverKind) {
	e := newProxyEnv(t, kind)
	e.store(t,
		poolOf("api", []string{"api.example.com"}, "", backendAddr(nameBackend(t, "api"))),
		poolOf("v6", []string{"::1"}, "", backendAddr(nameBackend(t, "v6"))),
		poolOf("wild", []string{"*.example.org"}, "", backendAddr(nameBackend(t, "wild"))),
		poolOf("default", nil, "", backendAddr(nameBackend(t, "default"))),
	)
	tests := []struct {
		host string
		want string
	}{
		{"api.example.com", "api"},
		{"API.Example.com:8080", "api"},
		{"api.example.com.", "api"},
		{"Api.Example.Com.:443", "api"},
		{"[::1]:80", "v6"},
		{"[::1]", "v6"},
		{"www.Example.ORG:8443", "wild"},
		{"www.example.org.", "wild"},
		{"example.com", "default"},
		{"api.example.com.evil", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			resp, body := e.get(t, tc.host, "/")
			if resp.StatusCode != http.StatusOK || string(body) != tc.want {
				t.Errorf("Host %q: status %d, pool %q; want 200, %q", tc.host, resp.StatusCode, body, tc.want)
			}
		})
	}
	e.wantFallbacks(t, 0)
}

func TestRequestHeaders(t *testing.T) {
	forEachServer(t, testRequestHeaders)
}

func testRequestHeaders(t *testing.T, kind serverKind) {
	e := newProxyEnv(t, kind)
	e.store(t, poolOf("web", nil, "", backendAddr(echoBackend(t))))

	const host = "app.example.com:8080"
	// forwarded are the headers the proxy adds for a client on 127.0.0.1
	// that sent none of them.
	forwarded := func(extra http.Header) http.Header {
		h := http.Header{
			"X-Forwarded-For":   {"127.0.0.1"},
			"X-Forwarded-Proto": {"http"},
			"X-Forwarded-Host":  {host},
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	tests := []struct {
		name string
		// headers are raw header lines, each ending in CRLF, sent after Host.
		headers string
		// want is the backend's complete request header (Host aside).
		want http.Header
		// handedOver: H1Server leaves the request to net/http (an Upgrade
		// field, of any kind, does).
		handedOver bool
	}{
		{
			name:    "nothing added but forwarding headers, no invented User-Agent",
			headers: "",
			want:    forwarded(nil),
		},
		{
			name: "hop-by-hop headers removed",
			headers: "Connection: keep-alive, X-Secret\r\n" +
				"X-Secret: s3cret\r\n" +
				"Keep-Alive: timeout=5\r\n" +
				"Proxy-Connection: keep-alive\r\n" +
				"Upgrade: websocket\r\n" +
				"Te: gzip\r\n" +
				"Trailer: X-Checksum\r\n" +
				"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
				"X-Keep: kept\r\n",
			want:       forwarded(http.Header{"X-Keep": {"kept"}}),
			handedOver: true,
		},
		{
			name: "hop-by-hop headers removed without an upgrade",
			headers: "Connection: keep-alive, X-Secret\r\n" +
				"X-Secret: s3cret\r\n" +
				"Keep-Alive: timeout=5\r\n" +
				"Proxy-Connection: keep-alive\r\n" +
				"Te: gzip\r\n" +
				"Trailer: X-Checksum\r\n" +
				"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
				"X-Keep: kept\r\n",
			want: forwarded(http.Header{"X-Keep": {"kept"}}),
		},
		{
			name:    "several headers named in Connection removed",
			headers: "Connection: X-A, x-b\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n",
			want:    forwarded(http.Header{"X-C": {"3"}}),
		},
		{
			name:    "TE trailers forwarded",
			headers: "TE: trailers\r\n",
			want:    forwarded(http.Header{"Te": {"trailers"}}),
		},
		{
			// RFC 9110 section 10.1.4: a sender of TE MUST also send "TE" in
			// Connection, so this is how a conforming HTTP/1.1 client asks.
			name:    "TE trailers forwarded when Connection lists TE",
			headers: "Connection: TE\r\nTE: trailers\r\n",
			want:    forwarded(http.Header{"Te": {"trailers"}}),
		},
		{
			// Host is no hop-by-hop field: naming it in Connection does not
			// take it out of the request (net/http keeps it as r.Host).
			name:    "Host named in Connection still sent",
			headers: "Connection: Host\r\n",
			want:    forwarded(nil),
		},
		{
			name:    "TE trailers forwarded when listed with other codings",
			headers: "TE: deflate;q=0.5, trailers\r\n",
			want:    forwarded(http.Header{"Te": {"trailers"}}),
		},
		{
			name:    "User-Agent passes unchanged",
			headers: "User-Agent: curl/8.5.0\r\n",
			want:    forwarded(http.Header{"User-Agent": {"curl/8.5.0"}}),
		},
		{
			name:    "X-Forwarded-For appended",
			headers: "X-Forwarded-For: 1.2.3.4\r\n",
			want:    forwarded(http.Header{"X-Forwarded-For": {"1.2.3.4, 127.0.0.1"}}),
		},
		{
			name:    "X-Forwarded-For lines joined and appended",
			headers: "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n",
			want:    forwarded(http.Header{"X-Forwarded-For": {"1.2.3.4, 5.6.7.8, 127.0.0.1"}}),
		},
		{
			name:    "X-Forwarded-Proto from the client replaced",
			headers: "X-Forwarded-Proto: https\r\n",
			want:    forwarded(nil),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fallbacks.Load()
			raw := "GET /h HTTP/1.1\r\nHost: " + host + "\r\n" + tc.headers + "\r\n"
			resp, body := rawExchange(t, e.addr(), raw)
			if got := e.fallbacks.Load() - before; kind == h1Server && got != b2i(tc.handedOver) {
				t.Errorf("H1Server handed %d connections over to net/http, want %d", got, b2i(tc.handedOver))
			}
			s := decodeSeen(t, resp, body)
			if s.Host != host {
				t.Errorf("backend Host = %q, want %q", s.Host, host)
			}
			if s.Method != http.MethodGet || s.RequestURI != "/h" {
				t.Errorf("backend request = %s %s, want GET /h", s.Method, s.RequestURI)
			}
			if !reflect.DeepEqual(s.Header, tc.want) {
				t.Errorf("backend header:\n got %v\nwant %v", s.Header, tc.want)
			}
		})
	}
}

func TestHostHeaderViaClient(t *testing.T) {
	forEachServer(t, testHostHeaderViaClient)
}

func testHostHeaderViaClient(t *testing.T, kind serverKind) {
	// The same through a Go client, which sends its own User-Agent.
	e := newProxyEnv(t, kind)
	e.store(t, poolOf("web", nil, "", backendAddr(echoBackend(t))))
	req, err := http.NewRequest(http.MethodGet, e.url+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "Shop.Example.com:8443"
	req.Header.Set("User-Agent", "test-agent/1")
	resp, body := e.request(t, req)
	s := decodeSeen(t, resp, body)
	if s.Host != "Shop.Example.com:8443" {
		t.Errorf("backend Host = %q, want %q", s.Host, "Shop.Example.com:8443")
	}
	want := http.Header{
		"User-Agent":        {"test-agent/1"},
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Forwarded-Proto": {"http"},
		"X-Forwarded-Host":  {"Shop.Example.com:8443"},
	}
	if !reflect.DeepEqual(s.Header, want) {
		t.Errorf("backend header:\n got %v\nwant %v", s.Header, want)
	}
	e.wantFallbacks(t, 0)
}

func TestResponseHopByHopRemoved(t *testing.T) {
	forEachServer(t, testResponseHopByHopRemoved)
}

func testResponseHopByHopRemoved(t *testing.T, kind serverKind) {
	e := newProxyEnv(t, kind)
	backend := newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Connection", "X-Foo")
		h.Set("X-Foo", "connection-specific")
		h.Set("Keep-Alive", "timeout=5, max=100")
		h.Set("Proxy-Connection", "keep-alive")
		h.Set("Proxy-Authenticate", `Basic realm="x"`)
		h.Set("Upgrade", "h2c")
		h.Set("X-Kept", "yes")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	e.store(t, poolOf("web", nil, "", backendAddr(backend)))

	resp, body := rawExchange(t, e.addr(), "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("status %d body %q, want 200 %q", resp.StatusCode, body, "ok")
	}
	var keys []string
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := []string{"Content-Length", "Content-Type", "Date", "X-Kept"}; !slices.Equal(keys, want) {
		t.Errorf("response header keys = %v, want %v (header %v)", keys, want, resp.Header)
	}
	if got := resp.Header.Get("X-Kept"); got != "yes" {
		t.Errorf("X-Kept = %q, want %q", got, "yes")
	}
	if got := resp.Header.Get("Content-Length"); got != "2" {
		t.Errorf("Content-Length = %q, want %q", got, "2")
	}
	e.wantFallbacks(t, 0)
}

const bigBody = 5 << 20 // 5 MiB

func TestRequestBodyIntact(t *testing.T) {
	forEachServer(t, testRequestBodyIntact)
}

func testRequestBodyIntact(t *testing.T, kind serverKind) {
	payload := pattern(bigBody)

	tests := []struct {
		name      string
		body      func() io.Reader
		length    int64 // ContentLength of the client request; -1: chunked
		wantTE    []string
		wantCLHdr int64
	}{
		{"content-length", func() io.Reader { return bytes.NewReader(payload) }, bigBody, nil, bigBody},
		// Wrapping hides the length, so the client sends chunked.
		{"chunked", func() io.Reader { return struct{ io.Reader }{bytes.NewReader(payload)} }, -1, []string{"chunked"}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// An env per case: the request comes on a fresh connection.
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", backendAddr(echoBackend(t))))
			req, err := http.NewRequest(http.MethodPost, e.url+"/upload", tc.body())
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.length
			resp, body := e.request(t, req)
			s := decodeSeen(t, resp, body)
			if s.BodyLen != bigBody || s.BodySHA256 != sha256Hex(payload) {
				t.Errorf("backend got %d bytes sha256 %s; want %d bytes sha256 %s", s.BodyLen, s.BodySHA256, bigBody, sha256Hex(payload))
			}
			if s.ContentLength != tc.wantCLHdr || !slices.Equal(s.TransferEncoding, tc.wantTE) {
				t.Errorf("backend ContentLength %d TransferEncoding %v; want %d %v", s.ContentLength, s.TransferEncoding, tc.wantCLHdr, tc.wantTE)
			}
			// A request with a body is net/http's.
			e.wantFallbacks(t, 1)
		})
	}
}

func TestResponseBodyIntact(t *testing.T) {
	forEachServer(t, testResponseBodyIntact)
}

func testResponseBodyIntact(t *testing.T, kind serverKind) {
	payload := pattern(bigBody)
	tests := []struct {
		name    string
		setCL   bool
		wantCL  int64
		wantTEs []string
	}{
		{"content-length", true, bigBody, nil},
		{"chunked", false, -1, []string{"chunked"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newProxyEnv(t, kind)
			backend := newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				if tc.setCL {
					w.Header().Set("Content-Length", "5242880")
				}
				_, _ = w.Write(payload)
			})
			e.store(t, poolOf("web", nil, "", backendAddr(backend)))
			resp, body := e.get(t, "", "/download")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			if len(body) != bigBody || sha256Hex(body) != sha256Hex(payload) {
				t.Errorf("client got %d bytes sha256 %s; want %d bytes sha256 %s", len(body), sha256Hex(body), bigBody, sha256Hex(payload))
			}
			if resp.ContentLength != tc.wantCL || !slices.Equal(resp.TransferEncoding, tc.wantTEs) {
				t.Errorf("ContentLength %d TransferEncoding %v; want %d %v", resp.ContentLength, resp.TransferEncoding, tc.wantCL, tc.wantTEs)
			}
			e.wantFallbacks(t, 0)
		})
	}
}

func TestStreamedResponseNotBuffered(t *testing.T) {
	forEachServer(t, testStreamedResponseNotBuffered)
}

func testStreamedResponseNotBuffered(t *testing.T, kind serverKind) {
	e := newProxyEnv(t, kind)
	release := make(chan struct{})
	var once sync.Once
	releaseBackend := func() { once.Do(func() { close(release) }) }
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first chunk\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second chunk\n")
	})
	t.Cleanup(releaseBackend) // before backend.Close, which waits for the handler
	e.store(t, poolOf("web", nil, "", backendAddr(backend)))

	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.url+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != -1 {
		t.Fatalf("status %d ContentLength %d; want 200, -1", resp.StatusCode, resp.ContentLength)
	}
	// The backend has not finished: this read only succeeds if the proxy
	// passed the first chunk on at once (otherwise it fails at the timeout).
	first := make([]byte, len("first chunk\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("reading the first chunk while the backend is still sending: %v", err)
	}
	if string(first) != "first chunk\n" {
		t.Fatalf("first chunk = %q", first)
	}
	releaseBackend()
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "second chunk\n" {
		t.Errorf("rest = %q, want %q", rest, "second chunk\n")
	}
	e.wantFallbacks(t, 0)
}

func TestTrailersForwarded(t *testing.T) {
	forEachServer(t, testTrailersForwarded)
}

func testTrailersForwarded(t *testing.T, kind serverKind) {
	e := newProxyEnv(t, kind)
	backend := newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc123")
		// An undeclared trailer too.
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	e.store(t, poolOf("grpcish", nil, "", backendAddr(backend)))

	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if want := (http.Header{"X-Checksum": nil}); !reflect.DeepEqual(resp.Trailer, want) {
		t.Errorf("announced trailers = %#v, want %#v", resp.Trailer, want)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "body" {
		t.Errorf("body = %q, want %q", body, "body")
	}
	want := http.Header{"X-Checksum": {"abc123"}, "X-Late": {"late"}}
	if !reflect.DeepEqual(resp.Trailer, want) {
		t.Errorf("trailers = %#v, want %#v", resp.Trailer, want)
	}
	e.wantFallbacks(t, 0)
}

func TestBackendDiesMidBody(t *testing.T) {
	forEachServer(t, testBackendDiesMidBody)
}

func testBackendDiesMidBody(t *testing.T, kind serverKind) {
	const declared = 1 << 20
	payload := pattern(declared)
	tests := []struct {
		name    string
		backend http.HandlerFunc
		// sent is how much the backend sends before it dies.
		sent   int
		wantCL int64
		// exact: the client must get every byte sent (the proxy flushes
		// streamed responses at once) before the error.
		exact bool
	}{
		{
			name: "content-length",
			backend: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "1048576")
				_, _ = w.Write(payload[:256<<10])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			},
			sent:   256 << 10,
			wantCL: declared,
		},
		{
			name: "chunked",
			backend: func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write(payload[:100])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			},
			sent:   100,
			wantCL: -1,
			exact:  true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", backendAddr(newBackend(t, tc.backend))))
			req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.url+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ContentLength != tc.wantCL {
				t.Fatalf("status %d ContentLength %d; want 200, %d", resp.StatusCode, resp.ContentLength, tc.wantCL)
			}
			got, err := io.ReadAll(resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("reading body: err = %v after %d bytes; want io.ErrUnexpectedEOF (a truncated body, not a clean end)", err, len(got))
			}
			if len(got) > tc.sent || !bytes.Equal(got, payload[:len(got)]) {
				t.Errorf("got %d bytes, not a prefix of the %d the backend sent", len(got), tc.sent)
			}
			if tc.exact && len(got) != tc.sent {
				t.Errorf("got %d bytes before the error, want all %d sent", len(got), tc.sent)
			}
			e.wantFallbacks(t, 0)
		})
	}
}

func TestPathAndQueryUnchanged(t *testing.T) {
	forEachServer(t, testPathAndQueryUnchanged)
}

func testPathAndQueryUnchanged(t *testing.T, kind serverKind) {
	e := newProxyEnv(t, kind)
	e.store(t, poolOf("web", nil, "", backendAddr(echoBackend(t))))
	tests := []struct {
		target       string
		wantRawPath  string
		wantEscPath  string
		wantRawQuery string
	}{
		{"/a%2Fb?x=1&y=2", "/a%2Fb", "/a%2Fb", "x=1&y=2"},
		{"/plain/path?q=a+b&r=%20&r=2", "", "/plain/path", "q=a+b&r=%20&r=2"},
		{"/%7Euser/file", "/%7Euser/file", "/%7Euser/file", ""},
		{"/sp%20ace/%E2%82%AC?k=%26v", "", "/sp%20ace/%E2%82%AC", "k=%26v"},
		{"//double//slash", "", "//double//slash", ""},
		{"/empty-query?", "", "/empty-query", ""},
		{"/a/b;p=1?flag", "", "/a/b;p=1", "flag"},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			before := e.fallbacks.Load()
			resp, body := rawExchange(t, e.addr(), "GET "+tc.target+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
			// H1Server leaves targets with percent-encoding to net/http.
			want := b2i(strings.Contains(tc.target, "%"))
			if got := e.fallbacks.Load() - before; kind == h1Server && got != want {
				t.Errorf("H1Server handed %d connections over to net/http, want %d", got, want)
			}
			s := decodeSeen(t, resp, body)
			if s.RequestURI != tc.target {
				t.Errorf("backend RequestURI = %q, want %q", s.RequestURI, tc.target)
			}
			if s.RawPath != tc.wantRawPath || s.EscapedPath != tc.wantEscPath || s.RawQuery != tc.wantRawQuery {
				t.Errorf("backend RawPath %q EscapedPath %q RawQuery %q; want %q %q %q",
					s.RawPath, s.EscapedPath, s.RawQuery, tc.wantRawPath, tc.wantEscPath, tc.wantRawQuery)
			}
		})
	}
}

// reuseCase is one case of TestUpstreamConnectionReuse.
type reuseCase struct {
	name    string
	method  string
	body    string
	chunked bool // backend streams its response without a length
	close   bool // client asks to close its connection each time
}

func TestUpstreamConnectionReuse(t *testing.T) {
	tests := []reuseCase{
		{name: "get", method: http.MethodGet},
		{name: "post with body", method: http.MethodPost, body: "some request payload"},
		{name: "chunked response", method: http.MethodGet, chunked: true},
		{name: "client connection close", method: http.MethodGet, close: true},
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) { testUpstreamConnectionReuse(t, kind, tc) })
		}
	})
}

// testUpstreamConnectionReuse sends requests of tc and checks that they
// share one upstream connection, counted on the backend's side (so that
// the count holds whichever transport carries them).
//
// In h1server mode, "client connection close" fails in most runs: H1Server
// puts the upstream connection back in the pool only after it has written
// the response to the client, so the client's next request, on a new
// connection, can find no idle upstream connection and open a second one.
// (net/http's path puts it back before the response leaves.)
func testUpstreamConnectionReuse(t *testing.T, kind serverKind, tc reuseCase) {
	const requests = 100
	var newConns atomic.Int64
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "part one, ")
		if tc.chunked {
			w.(http.Flusher).Flush()
		}
		_, _ = io.WriteString(w, "part two")
	}))
	backend.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	backend.Start()
	t.Cleanup(backend.Close)

	e := newProxyEnv(t, kind)
	e.store(t, poolOf("web", nil, "", backendAddr(backend)))
	for i := range requests {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, err := http.NewRequest(tc.method, e.url+"/", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Close = tc.close
		resp, got := e.request(t, req)
		if resp.StatusCode != http.StatusOK || string(got) != "part one, part two" {
			t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, got)
		}
	}
	if n := newConns.Load(); n != 1 {
		t.Errorf("%d requests opened %d upstream connections, want 1", requests, n)
	}
	// A body hands the first connection over; the client then keeps using
	// it. Every other request is H1Server's own.
	e.wantFallbacks(t, b2i(tc.body != ""))
}

func TestExpectContinue(t *testing.T) {
	forEachServer(t, testExpectContinue)
}

func testExpectContinue(t *testing.T, kind serverKind) {
	e := newProxyEnv(t, kind)
	e.store(t, poolOf("web", nil, "", backendAddr(echoBackend(t))))

	ctx := testCtx(t)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	const payload = "hello"
	if _, err := io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	// The body is sent only after the interim response, as a client that
	// honours Expect does.
	interim, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the interim response: %v", err)
	}
	if interim.StatusCode != http.StatusContinue {
		t.Fatalf("first response status = %d, want 100", interim.StatusCode)
	}
	if _, err := io.WriteString(conn, payload); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the final response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	s := decodeSeen(t, resp, body)
	if s.BodyLen != int64(len(payload)) || s.BodySHA256 != sha256Hex([]byte(payload)) {
		t.Errorf("backend got %d bytes sha256 %s, want %q", s.BodyLen, s.BodySHA256, payload)
	}
	// Expect (and the body) make it net/http's.
	e.wantFallbacks(t, 1)
}

// b2i is 1 for true, 0 for false.
func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
