package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/proxy"
	"github.com/lb-project/lb/internal/poolspec"
)

// Behaviour the proxy's own HTTP/1.1 server (H1Server) must get right: what
// it serves itself (framing, fields, retries, shutdown), and where it hands
// a connection over to net/http. Most tests run against both servers, so
// that they also prove both answer the same way; in h1server mode they
// check how many connections went to net/http.

// rawBackend is a backend written on bare TCP, for answers net/http would
// not give (no Date, informational responses, close-delimited bodies, a
// close instead of an answer). serve runs on its own goroutine for each
// connection, numbered from 1, and the connection is closed when it
// returns. In cleanup, the listener and every connection are closed and
// serve calls waited for.
func rawBackend(t testing.TB, serve func(n int, c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		conns    = make(map[net.Conn]struct{})
		accepted sync.WaitGroup // the accept loop
		served   sync.WaitGroup // serve calls
	)
	accepted.Go(func() {
		for n := 1; ; n++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(reqTimeout))
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			served.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					_ = c.Close()
				}()
				serve(n, c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		accepted.Wait()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		served.Wait()
	})
	return l.Addr().String()
}

// readHead reads a request head from br; the requests the tests send
// through the proxy to raw backends have no body.
func readHead(br *bufio.Reader) (*http.Request, error) {
	return http.ReadRequest(br)
}

// answerEach answers every request on a connection with resp, as it is.
func answerEach(resp string) func(int, net.Conn, *bufio.Reader) {
	return func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	}
}

// proxyConn is a client connection to the proxy, written and read raw.
type proxyConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// dialProxy opens a connection to e, closed in cleanup; every read and
// write on it is bounded by reqTimeout.
func dialProxy(t testing.TB, e *proxyEnv) *proxyConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.addr(), reqTimeout)
	if err != nil {
		t.Fatalf("dial the proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetDeadline(time.Now().Add(reqTimeout)); err != nil {
		t.Fatal(err)
	}
	return &proxyConn{t: t, c: c, br: bufio.NewReader(c)}
}

// send writes raw in one write.
func (p *proxyConn) send(raw string) {
	p.t.Helper()
	if _, err := io.WriteString(p.c, raw); err != nil {
		p.t.Fatalf("write to the proxy: %v", err)
	}
}

// read reads one response to a request of method, body included.
func (p *proxyConn) read(method string) (*http.Response, []byte) {
	p.t.Helper()
	resp, err := http.ReadResponse(p.br, &http.Request{Method: method})
	if err != nil {
		p.t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("read response body: %v", err)
	}
	return resp, body
}

// get sends GET path and reads the answer.
func (p *proxyConn) get(path string) (*http.Response, []byte) {
	p.t.Helper()
	p.send("GET " + path + " HTTP/1.1\r\nHost: example.com\r\n\r\n")
	return p.read(http.MethodGet)
}

// wantClosed checks that the proxy closes the connection, with nothing
// more to read, within a second.
func (p *proxyConn) wantClosed() {
	p.t.Helper()
	_ = p.c.SetReadDeadline(time.Now().Add(time.Second))
	b, err := io.ReadAll(p.br)
	if err != nil || len(b) > 0 {
		p.t.Errorf("after the response: read %q, %v; want the connection closed (EOF)", b, err)
	}
}

// wantLast reads the last response on the connection, to a request of
// method: 200 with body want and Connection: close; then the close.
func (p *proxyConn) wantLast(method, want string) {
	p.t.Helper()
	resp, body := p.read(method)
	if resp.StatusCode != http.StatusOK || string(body) != want {
		p.t.Errorf("status %d body %q; want 200 %q", resp.StatusCode, body, want)
	}
	if !resp.Close {
		p.t.Errorf("response without Connection: close (header %v): it must say the connection ends", resp.Header)
	}
	p.wantClosed()
}

// wantOpen checks that the proxy kept the connection open: it serves
// another GET on it.
func (p *proxyConn) wantOpen(wantBody string) {
	p.t.Helper()
	resp, body := p.get("/again")
	if resp.StatusCode != http.StatusOK || string(body) != wantBody {
		p.t.Errorf("GET on the same connection: status %d body %q; want 200 %q", resp.StatusCode, body, wantBody)
	}
}

// pathBackend answers every request with its path.
func pathBackend(t testing.TB) string {
	return backendAddr(newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}))
}

// TestH1ServerLargeBodySlowReader relays 8 MiB bodies to a client that
// reads only after a pause: the proxy's writes find the socket full (the
// kernel buffers far less) and wait for room.
func TestH1ServerLargeBodySlowReader(t *testing.T) {
	const size = 8 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte('a' + i%26 + i/4096%7)
	}
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/again":
			_, _ = io.WriteString(w, "again")
			return
		case "/chunked":
			for b := payload; len(b) > 0; b = b[min(len(b), 100<<10):] {
				_, _ = w.Write(b[:min(len(b), 100<<10)])
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(payload)
	})
	forEachServer(t, func(t *testing.T, kind serverKind) {
		e := newProxyEnv(t, kind)
		e.store(t, poolOf("web", nil, "", backendAddr(backend)))
		for _, path := range []string{"/length", "/chunked"} {
			p := dialProxy(t, e)
			p.send("GET " + path + " HTTP/1.1\r\nHost: example.com\r\n\r\n")
			time.Sleep(200 * time.Millisecond) // the proxy fills the socket
			resp, body := p.read(http.MethodGet)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, payload) {
				t.Errorf("GET %s: status %d, %d body bytes (equal: %v); want 200 and the %d bytes sent",
					path, resp.StatusCode, len(body), bytes.Equal(body, payload), size)
			}
			p.wantOpen("again")
		}
		e.wantFallbacks(t, 0)
	})
}

func TestH1ServerPipelining(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		e := newProxyEnv(t, kind)
		e.store(t, poolOf("web", nil, "", pathBackend(t)))
		const reqs = "GET /one HTTP/1.1\r\nHost: example.com\r\n\r\n" +
			"GET /two HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n" +
			"GET /three?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
		want := []string{"/one", "/two", "/three"}
		check := func(t *testing.T, p *proxyConn) {
			for i, w := range want {
				resp, body := p.read(http.MethodGet)
				if resp.StatusCode != http.StatusOK || string(body) != w {
					t.Errorf("response %d: status %d body %q; want 200 %q", i+1, resp.StatusCode, body, w)
				}
			}
			p.wantOpen("/again")
		}
		t.Run("one write", func(t *testing.T) {
			p := dialProxy(t, e)
			p.send(reqs)
			check(t, p)
		})
		t.Run("split across writes", func(t *testing.T) {
			// Heads cut anywhere, CRLF CRLF included.
			p := dialProxy(t, e)
			for i := 0; i < len(reqs); i += 7 {
				p.send(reqs[i:min(i+7, len(reqs))])
				time.Sleep(time.Millisecond)
			}
			check(t, p)
		})
		e.wantFallbacks(t, 0)
	})
}

func TestH1ServerHandsOverAtRequestBoundary(t *testing.T) {
	const (
		get1    = "GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
		get2    = "GET /b?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
		payload = "the body of the post"
		post    = "POST /c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 20\r\n\r\n" + payload
	)
	check := func(t *testing.T, p *proxyConn, method, uri string, bodyLen int64) {
		t.Helper()
		resp, body := p.read(method)
		s := decodeSeen(t, resp, body)
		if s.Method != method || s.RequestURI != uri || s.BodyLen != bodyLen {
			t.Errorf("backend saw %s %s with %d body bytes; want %s %s with %d", s.Method, s.RequestURI, s.BodyLen, method, uri, bodyLen)
		}
		if bodyLen > 0 && s.BodySHA256 != sha256Hex([]byte(payload)) {
			t.Errorf("backend got body sha256 %s, want that of %q", s.BodySHA256, payload)
		}
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		for _, pipelined := range []bool{false, true} {
			t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
				e := newProxyEnv(t, kind)
				e.store(t, poolOf("web", nil, "", backendAddr(echoBackend(t))))
				p := dialProxy(t, e)
				if pipelined {
					p.send(get1 + get2 + post)
					check(t, p, http.MethodGet, "/a", 0)
					check(t, p, http.MethodGet, "/b?q=1", 0)
				} else {
					p.send(get1)
					check(t, p, http.MethodGet, "/a", 0)
					p.send(get2)
					check(t, p, http.MethodGet, "/b?q=1", 0)
					// The GETs were H1Server's own.
					e.wantFallbacks(t, 0)
					p.send(post)
				}
				check(t, p, http.MethodPost, "/c", int64(len(payload)))
				// net/http serves the connection from then on.
				p.send(get1)
				check(t, p, http.MethodGet, "/a", 0)
				e.wantFallbacks(t, 1)
			})
		}
	})
}

func TestH1ServerResponseFraming(t *testing.T) {
	payload := pattern(100 << 10)
	forEachServer(t, func(t *testing.T, kind serverKind) {
		t.Run("content-length", func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach(
				"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"))))
			p := dialProxy(t, e)
			for range 2 {
				resp, body := p.get("/")
				if resp.StatusCode != http.StatusOK || string(body) != "hello world" || resp.ContentLength != 11 || resp.TransferEncoding != nil {
					t.Errorf("status %d body %q ContentLength %d TransferEncoding %v; want 200 %q 11 none",
						resp.StatusCode, body, resp.ContentLength, resp.TransferEncoding, "hello world")
				}
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("chunked with trailers", func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach(
				"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
					"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"))))
			for i := range 2 {
				resp, body := e.get(t, "", "/")
				if resp.StatusCode != http.StatusOK || string(body) != "hello world" {
					t.Errorf("request %d: status %d body %q; want 200 %q", i, resp.StatusCode, body, "hello world")
				}
				if resp.ContentLength != -1 || !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) {
					t.Errorf("request %d: ContentLength %d TransferEncoding %v; want -1 [chunked]", i, resp.ContentLength, resp.TransferEncoding)
				}
				if want := (http.Header{"X-Sum": {"42"}}); !reflect.DeepEqual(resp.Trailer, want) {
					t.Errorf("request %d: trailers %v, want %v", i, resp.Trailer, want)
				}
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("no length", func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, func(_ int, c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				// The body ends when the connection does.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
				_, _ = c.Write(payload)
			})))
			p := dialProxy(t, e)
			resp, body := p.get("/")
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, payload) {
				t.Fatalf("status %d, %d body bytes (sha256 %s); want 200, the %d bytes sent", resp.StatusCode, len(body), sha256Hex(body), len(payload))
			}
			switch kind {
			case h1Server:
				// Relayed as it came: close-delimited, so the connection
				// ends with it.
				if resp.ContentLength != -1 || resp.TransferEncoding != nil || !resp.Close {
					t.Errorf("ContentLength %d TransferEncoding %v Close %v; want -1, none, true", resp.ContentLength, resp.TransferEncoding, resp.Close)
				}
				p.wantClosed()
			case netHTTP:
				// net/http frames it afresh and keeps the connection.
				if !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) || resp.Close {
					t.Errorf("TransferEncoding %v Close %v; want [chunked], false", resp.TransferEncoding, resp.Close)
				}
				p.send("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
				if resp, body := p.read(http.MethodGet); !bytes.Equal(body, payload) {
					t.Errorf("second request: status %d, %d body bytes", resp.StatusCode, len(body))
				}
			}
			e.wantFallbacks(t, 0)
		})

		// Responses without a body whatever their head says.
		bodyless := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/204":
				w.Header().Set("X-Kind", "no content")
				w.WriteHeader(http.StatusNoContent)
			case "/304":
				w.Header().Set("ETag", `"v1"`)
				w.WriteHeader(http.StatusNotModified)
			default:
				w.Header().Set("Content-Length", "11")
				_, _ = io.WriteString(w, "hello world") // dropped for HEAD
			}
		})
		// A 304 may give the length of what it stands for. (H1Server
		// relays that Content-Length, net/http drops it: both are right.)
		raw304 := rawBackend(t, answerEach("HTTP/1.1 304 Not Modified\r\nETag: \"v2\"\r\nContent-Length: 42\r\n\r\n"))
		tests := []struct {
			name, method, path, backend string
			wantStatus                  int
			wantHeader                  http.Header // fields that must be there, among others
		}{
			{"HEAD", http.MethodHead, "/h", backendAddr(bodyless), http.StatusOK, http.Header{"Content-Length": {"11"}}},
			{"204", http.MethodGet, "/204", backendAddr(bodyless), http.StatusNoContent, http.Header{"X-Kind": {"no content"}}},
			{"304", http.MethodGet, "/304", backendAddr(bodyless), http.StatusNotModified, http.Header{"Etag": {`"v1"`}}},
			{"304 with Content-Length", http.MethodGet, "/", raw304, http.StatusNotModified, http.Header{"Etag": {`"v2"`}}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newProxyEnv(t, kind)
				e.store(t, poolOf("web", []string{"example.com"}, "", tc.backend),
					poolOf("after", []string{"after.example.com"}, "", pathBackend(t)))
				p := dialProxy(t, e)
				for range 2 {
					p.send(tc.method + " " + tc.path + " HTTP/1.1\r\nHost: example.com\r\nIf-None-Match: \"v1\"\r\n\r\n")
					resp, body := p.read(tc.method)
					if resp.StatusCode != tc.wantStatus || len(body) != 0 {
						t.Errorf("status %d body %q; want %d and no body", resp.StatusCode, body, tc.wantStatus)
					}
					for k, v := range tc.wantHeader {
						if !reflect.DeepEqual(resp.Header[k], v) {
							t.Errorf("%s = %q, want %q (header %v)", k, resp.Header[k], v, resp.Header)
						}
					}
				}
				// Nothing stray follows: the next request on the connection
				// is answered as it should be.
				p.send("GET /next HTTP/1.1\r\nHost: after.example.com\r\n\r\n")
				if resp, body := p.read(http.MethodGet); resp.StatusCode != http.StatusOK || string(body) != "/next" {
					t.Errorf("next request: status %d body %q; want 200 %q", resp.StatusCode, body, "/next")
				}
				e.wantFallbacks(t, 0)
			})
		}
	})
}

func TestH1ServerHopByHopFields(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		e := newProxyEnv(t, kind)
		backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Connection", "X-Foo")
			h.Set("X-Foo", "connection-specific")
			h.Set("Keep-Alive", "timeout=5, max=100")
			h.Set("Proxy-Connection", "keep-alive")
			h.Set("Proxy-Authenticate", `Basic realm="x"`)
			h.Set("Upgrade", "h2c")
			h.Set("X-Kept", "yes")
			h.Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(seen{Method: r.Method, Host: r.Host, RequestURI: r.RequestURI, Header: r.Header})
		})
		e.store(t, poolOf("web", nil, "", backendAddr(backend)))
		tests := []struct {
			name    string
			headers string
			want    http.Header
			close   bool
		}{
			{
				name: "connection close with a named field",
				headers: "Connection: close, X-Secret\r\n" +
					"X-Secret: s3cret\r\n" +
					"Keep-Alive: timeout=5\r\n" +
					"Proxy-Connection: keep-alive\r\n" +
					"TE: trailers\r\n" +
					"X-Forwarded-For: 1.2.3.4\r\n" +
					"X-Forwarded-Proto: https\r\n" +
					"X-Forwarded-Host: evil.example\r\n" +
					"X-Keep: kept\r\n",
				want: http.Header{
					"Te":                {"trailers"},
					"X-Forwarded-For":   {"1.2.3.4, 127.0.0.1"},
					"X-Forwarded-Proto": {"http"},
					"X-Forwarded-Host":  {"app.example.com"},
					"X-Keep":            {"kept"},
				},
				close: true,
			},
			{
				name:    "TE without trailers",
				headers: "TE: gzip, deflate\r\nKeep-Alive: timeout=5\r\nX-Keep: kept\r\n",
				want: http.Header{
					"X-Forwarded-For":   {"127.0.0.1"},
					"X-Forwarded-Proto": {"http"},
					"X-Forwarded-Host":  {"app.example.com"},
					"X-Keep":            {"kept"},
				},
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				p := dialProxy(t, e)
				p.send("GET /hop HTTP/1.1\r\nHost: app.example.com\r\n" + tc.headers + "\r\n")
				resp, body := p.read(http.MethodGet)
				s := decodeSeen(t, resp, body)
				if s.Host != "app.example.com" || s.RequestURI != "/hop" {
					t.Errorf("backend saw Host %q target %q, want app.example.com /hop", s.Host, s.RequestURI)
				}
				if !reflect.DeepEqual(s.Header, tc.want) {
					t.Errorf("backend header:\n got %v\nwant %v", s.Header, tc.want)
				}
				for _, k := range []string{"X-Foo", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Upgrade", "Transfer-Encoding", "Trailer"} {
					if v, ok := resp.Header[k]; ok {
						t.Errorf("response field %s: %q relayed (header %v)", k, v, resp.Header)
					}
				}
				if got := resp.Header.Get("X-Kept"); got != "yes" {
					t.Errorf("X-Kept = %q, want yes", got)
				}
				// (http.ReadResponse takes Connection: close out of the
				// header into Close.)
				if resp.Close != tc.close {
					t.Errorf("Close = %v, want %v: Connection: close must be there when, and only when, the client asked", resp.Close, tc.close)
				}
				if v, ok := resp.Header["Connection"]; ok {
					t.Errorf("Connection: %q relayed", v)
				}
				if tc.close {
					p.wantClosed()
				} else {
					p.send("GET /hop HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
					if resp, _ := p.read(http.MethodGet); resp.StatusCode != http.StatusOK {
						t.Errorf("next request on the connection: status %d", resp.StatusCode)
					}
				}
			})
		}
		e.wantFallbacks(t, 0)
	})
}

func TestH1ServerDate(t *testing.T) {
	const fixed = "Mon, 02 Jan 2006 15:04:05 GMT"
	forEachServer(t, func(t *testing.T, kind serverKind) {
		t.Run("added when the backend sends none", func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))))
			before := time.Now().Add(-time.Second)
			resp, body := dialProxy(t, e).get("/")
			after := time.Now().Add(time.Second)
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			dates := resp.Header["Date"]
			if len(dates) != 1 {
				t.Fatalf("Date fields %q, want one", dates)
			}
			d, err := http.ParseTime(dates[0])
			if err != nil || !strings.HasSuffix(dates[0], " GMT") || d.Before(before) || d.After(after) {
				t.Errorf("Date %q (%v, %v); want now, as an HTTP date", dates[0], d, err)
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("kept as the backend sent it", func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach("HTTP/1.1 200 OK\r\nDate: "+fixed+"\r\nContent-Length: 2\r\n\r\nok"))))
			resp, body := dialProxy(t, e).get("/")
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if got := resp.Header["Date"]; !reflect.DeepEqual(got, []string{fixed}) {
				t.Errorf("Date = %q, want [%q]", got, fixed)
			}
			e.wantFallbacks(t, 0)
		})
	})
}

func TestH1ServerInformationalNotRelayed(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		e := newProxyEnv(t, kind)
		e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach(
			"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))))
		p := dialProxy(t, e)
		for i := range 2 {
			// http.ReadResponse would return a 103 if one came.
			resp, body := p.get("/")
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Errorf("request %d: status %d body %q; want 200 %q", i, resp.StatusCode, body, "ok")
			}
			if v, ok := resp.Header["Link"]; ok {
				t.Errorf("request %d: the 103's Link %q in the final response", i, v)
			}
		}
		e.wantFallbacks(t, 0)
	})
}

func TestH1ServerStaleUpstreamConnection(t *testing.T) {
	// answerThen answers one request per connection with the connection's
	// number, then does what after says.
	answerThen := func(after func(c net.Conn, br *bufio.Reader)) func(int, net.Conn, *bufio.Reader) {
		return func(n int, c net.Conn, br *bufio.Reader) {
			if _, err := readHead(br); err != nil {
				return
			}
			body := "conn " + strconv.Itoa(n)
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
			after(c, br)
		}
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		t.Run("closed while idle", func(t *testing.T) {
			closed := make(chan struct{}, 2)
			addr := rawBackend(t, answerThen(func(c net.Conn, _ *bufio.Reader) {
				_ = c.Close()
				closed <- struct{}{}
			}))
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", addr))
			if _, body := e.get(t, "", "/"); string(body) != "conn 1" {
				t.Fatalf("first GET: %q, want %q", body, "conn 1")
			}
			select {
			case <-closed:
			case <-time.After(reqTimeout):
				t.Fatal("the backend did not close its connection")
			}
			if resp, body := e.get(t, "", "/"); resp.StatusCode != http.StatusOK || string(body) != "conn 2" {
				t.Errorf("GET after the backend closed the kept connection: status %d body %q; want 200 %q", resp.StatusCode, body, "conn 2")
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("closed instead of answering on a kept connection", func(t *testing.T) {
			addr := rawBackend(t, answerThen(func(_ net.Conn, br *bufio.Reader) {
				_, _ = readHead(br) // and return, closing the connection
			}))
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", addr))
			if _, body := e.get(t, "", "/"); string(body) != "conn 1" {
				t.Fatalf("first GET: %q, want %q", body, "conn 1")
			}
			// Sent on the kept connection, which the backend closes: sent
			// again on a new one.
			if resp, body := e.get(t, "", "/"); resp.StatusCode != http.StatusOK || string(body) != "conn 2" {
				t.Errorf("second GET: status %d body %q; want 200 %q", resp.StatusCode, body, "conn 2")
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("closed instead of answering on a new connection", func(t *testing.T) {
			addr := hangupBackend(t)
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", addr))
			resp, body := e.get(t, "", "/")
			if want := "bad gateway: backend " + addr + " unreachable: EOF\n"; resp.StatusCode != http.StatusBadGateway || string(body) != want {
				t.Errorf("status %d body %q; want 502 %q", resp.StatusCode, body, want)
			}
			e.wantFallbacks(t, 0)
		})
	})
}

func TestH1ServerShutdown(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		t.Run("idle connection closed at once", func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", pathBackend(t)))
			p := dialProxy(t, e)
			if resp, body := p.get("/x"); resp.StatusCode != http.StatusOK || string(body) != "/x" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			if err := e.shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v, want nil", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Shutdown took %v with only an idle connection", d)
			}
			p.wantClosed()
			if c, err := net.DialTimeout("tcp", e.addr(), time.Second); err == nil {
				c.Close()
				t.Errorf("a new connection was accepted after Shutdown")
			}
		})
		t.Run("request in flight completes", func(t *testing.T) {
			e, p := requestAtBackend(t, kind, func(w http.ResponseWriter, _ *http.Request) {
				time.Sleep(300 * time.Millisecond)
				_, _ = io.WriteString(w, "slow answer")
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- e.shutdown(ctx) }()
			time.Sleep(50 * time.Millisecond)
			select {
			case err := <-done:
				t.Errorf("Shutdown returned %v while a request was in flight", err)
			default:
			}
			p.wantLast(http.MethodGet, "slow answer")
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Shutdown: %v, want nil", err)
				}
				if d := time.Since(start); d < 200*time.Millisecond {
					t.Errorf("Shutdown returned after %v, before the request in flight was done", d)
				}
			case <-time.After(reqTimeout):
				t.Fatal("Shutdown did not return")
			}
			e.wantFallbacks(t, 0)
		})
		if kind != h1Server {
			// net/http's Shutdown leaves connections still active at its
			// deadline to the caller (the data plane then closes them).
			return
		}
		t.Run("request in flight cut at the deadline", func(t *testing.T) {
			e, p := requestAtBackend(t, kind, func(w http.ResponseWriter, r *http.Request) {
				holdUntilCancelled(r)
			})
			shutdownAtDeadline(t, e)
			// The client gets the connection closed, at most after a 502.
			_ = p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			b, err := io.ReadAll(p.br)
			if err != nil || len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 502 ") {
				t.Errorf("after Shutdown's deadline: read %q, %v; want the connection closed", b, err)
			}
		})
		t.Run("body stalled at the backend cut at the deadline", func(t *testing.T) {
			e, p := requestAtBackend(t, kind, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100")
				_, _ = io.WriteString(w, "the first bytes")
				w.(http.Flusher).Flush()
				holdUntilCancelled(r)
			})
			resp, err := http.ReadResponse(p.br, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("response head: %v, %v; want 200", resp, err)
			}
			shutdownAtDeadline(t, e)
			_ = p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			body, err := io.ReadAll(resp.Body)
			if string(body) != "the first bytes" || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("body: %q, %v; want %q cut short (unexpected EOF)", body, err, "the first bytes")
			}
		})
		t.Run("request with a body begun before the drain is answered", func(t *testing.T) {
			e, p, done := bodyDuringDrain(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				_, _ = io.WriteString(w, "got "+string(b))
			}, 5*time.Second)
			p.wantLast(http.MethodPost, "got hello")
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Shutdown: %v, want nil", err)
				}
			case <-time.After(reqTimeout):
				t.Fatal("Shutdown did not return")
			}
			e.wantFallbacks(t, 0)
			if n := e.lasts.Load(); n != 1 {
				t.Errorf("%d connections went to Last, want 1", n)
			}
		})
		t.Run("request with a body begun before the drain cut at the deadline", func(t *testing.T) {
			start := time.Now()
			_, p, done := bodyDuringDrain(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost {
					_, _ = io.ReadAll(r.Body)
					holdUntilCancelled(r)
				}
			}, 300*time.Millisecond)
			wantCutAtDeadline(t, done, start)
			_ = p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			b, err := io.ReadAll(p.br)
			if err != nil || len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 502 ") {
				t.Errorf("after Shutdown's deadline: read %q, %v; want the connection closed", b, err)
			}
		})
		t.Run("upload the backend stops taking cut at the deadline", func(t *testing.T) {
			start := time.Now()
			release := make(chan struct{})
			_, p, done := drainWithRequestBegun(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost {
					<-release // reading none of the body
				}
			}, 300*time.Millisecond)
			t.Cleanup(func() { close(release) }) // before the backend's cleanup waits for it
			const size = 256 << 20               // far more than the sockets on the way buffer
			p.send("Content-Length: " + strconv.Itoa(size) + "\r\n\r\n")
			go func() {
				chunk := make([]byte, 1<<20)
				for range size / len(chunk) {
					if _, err := p.c.Write(chunk); err != nil {
						return // closed by the proxy, or by the test's cleanup
					}
				}
			}()
			wantCutAtDeadline(t, done, start)
		})
	})
}

// wantCutAtDeadline checks that Shutdown, begun at start with a 300 ms
// deadline, reports the deadline soon after it, on done.
func wantCutAtDeadline(t *testing.T, done chan error, start time.Time) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v; want %v", err, context.DeadlineExceeded)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Shutdown returned after %v; want soon after its 300ms deadline", d)
		}
	case <-time.After(reqTimeout):
		t.Fatal("Shutdown did not return")
	}
}

// bodyDuringDrain is drainWithRequestBegun, and then sends the rest of the
// request: a 5-byte body.
func bodyDuringDrain(t *testing.T, h http.HandlerFunc, wait time.Duration) (e *proxyEnv, p *proxyConn, done chan error) {
	t.Helper()
	e, p, done = drainWithRequestBegun(t, h, wait)
	p.send("Content-Length: 5\r\n\r\nhello")
	return e, p, done
}

// drainWithRequestBegun starts an H1Server in front of a backend answering
// with h, begins a POST on a kept connection (its request line and Host),
// and returns once Shutdown, with a deadline of wait, is draining the
// server; done receives Shutdown's result.
func drainWithRequestBegun(t *testing.T, h http.HandlerFunc, wait time.Duration) (e *proxyEnv, p *proxyConn, done chan error) {
	t.Helper()
	backend := newBackend(t, h)
	e = newProxyEnv(t, h1Server)
	e.store(t, poolOf("web", nil, "", backendAddr(backend)))
	p = dialProxy(t, e)
	if resp, _ := p.get("/first"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: status %d, want 200", resp.StatusCode)
	}
	p.send("POST /x HTTP/1.1\r\nHost: example.com\r\n")
	time.Sleep(100 * time.Millisecond) // the server reads the first bytes
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	done = make(chan error, 1)
	go func() { done <- e.shutdown(ctx) }()
	// Shutdown closes the listener once it drains: new connections fail.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", e.addr(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if i == 100 {
			t.Fatal("the listener still accepts 1s after Shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return e, p, done
}

// requestAtBackend starts a proxy of kind in front of a backend answering
// with h, sends it GET / and returns once the request reached the backend.
func requestAtBackend(t *testing.T, kind serverKind, h http.HandlerFunc) (*proxyEnv, *proxyConn) {
	t.Helper()
	got := make(chan struct{}, 1)
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		h(w, r)
	})
	e := newProxyEnv(t, kind)
	e.store(t, poolOf("web", nil, "", backendAddr(backend)))
	p := dialProxy(t, e)
	p.send("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	select {
	case <-got:
	case <-time.After(reqTimeout):
		t.Fatal("the request did not reach the backend")
	}
	return e, p
}

// holdUntilCancelled blocks a backend handler until its request is
// cancelled (the proxy gave up on it), 10 s at most.
func holdUntilCancelled(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// shutdownAtDeadline shuts e down with a 200 ms deadline while a request
// is stuck, and checks that Shutdown reports the deadline soon after it.
func shutdownAtDeadline(t *testing.T, e *proxyEnv) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v; want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown returned after %v; want soon after its 200ms deadline", d)
	}
}

// headOf returns a GET head of exactly n bytes, padded with an X-Big
// field, and the field's value.
func headOf(n int) (string, string) {
	const pre, post = "GET /big HTTP/1.1\r\nHost: example.com\r\nX-Big: ", "\r\n\r\n"
	pad := strings.Repeat("0123456789abcdef", n/16+1)[:n-len(pre)-len(post)]
	return pre + pad + post, pad
}

func TestH1ServerLargeHead(t *testing.T) {
	tests := []struct {
		size       int
		handedOver bool
	}{
		{4096, false}, // fits H1Server's buffer
		{4097, true},
		{6 << 10, true},
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		for _, tc := range tests {
			t.Run(strconv.Itoa(tc.size), func(t *testing.T) {
				e := newProxyEnv(t, kind)
				e.store(t, poolOf("web", nil, "", backendAddr(echoBackend(t))))
				head, value := headOf(tc.size)
				if len(head) != tc.size {
					t.Fatalf("head of %d bytes, want %d", len(head), tc.size)
				}
				p := dialProxy(t, e)
				p.send(head)
				resp, body := p.read(http.MethodGet)
				s := decodeSeen(t, resp, body)
				if got := s.Header["X-Big"]; len(got) != 1 || got[0] != value {
					t.Errorf("backend got X-Big of %d bytes, want the %d sent", len(strings.Join(got, "")), len(value))
				}
				p.send("GET /small HTTP/1.1\r\nHost: example.com\r\n\r\n")
				if resp, body := p.read(http.MethodGet); decodeSeen(t, resp, body).RequestURI != "/small" {
					t.Errorf("next request on the connection not served")
				}
				e.wantFallbacks(t, b2i(tc.handedOver))
			})
		}
	})
}

func TestH1ServerMalformedHead(t *testing.T) {
	tests := []struct {
		name, head, reason string
	}{
		{
			"both Content-Length and Transfer-Encoding",
			"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
			"both Content-Length and Transfer-Encoding",
		},
		{
			"obsolete line folding",
			"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n  continued\r\n\r\n",
			"obsolete line folding (a header line starting with whitespace)",
		},
		{
			"two Host fields",
			"GET / HTTP/1.1\r\nHost: example.com\r\nHost: other.example.com\r\n\r\n",
			"several Host headers",
		},
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		for _, tc := range tests {
			for _, afterGET := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/after a GET=%v", tc.name, afterGET), func(t *testing.T) {
					e := newProxyEnv(t, kind)
					e.store(t, poolOf("web", nil, "", pathBackend(t)))
					p := dialProxy(t, e)
					if afterGET {
						if resp, body := p.get("/first"); resp.StatusCode != http.StatusOK || string(body) != "/first" {
							t.Fatalf("first GET: status %d body %q", resp.StatusCode, body)
						}
					}
					p.send(tc.head + "hello")
					resp, body := p.read(http.MethodGet)
					if want := "bad request: " + tc.reason + "\n"; resp.StatusCode != http.StatusBadRequest || string(body) != want {
						t.Errorf("status %d body %q; want 400 %q", resp.StatusCode, body, want)
					}
					if !resp.Close {
						t.Errorf("response without Connection: close (header %v)", resp.Header)
					}
					p.wantClosed()
					e.wantFallbacks(t, 1)
				})
			}
		}
	})
}

func TestH1ServerWebSocketHandedOver(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
				http.Error(w, "not an upgrade", http.StatusBadRequest)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			_, _ = fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
				base64.StdEncoding.EncodeToString(sum[:]))
			_ = brw.Flush()
			_ = conn.SetDeadline(time.Now().Add(reqTimeout))
			_, _ = io.Copy(conn, brw) // echo until the tunnel closes
		})
		e := newProxyEnv(t, kind)
		e.store(t, poolOf("web", nil, "", backendAddr(backend)))
		p := dialProxy(t, e)
		p.send("GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		resp, _ := p.read(http.MethodGet)
		if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
			t.Fatalf("status %d header %v; want 101 with the accept key", resp.StatusCode, resp.Header)
		}
		// A masked text frame "ping", echoed back as it is.
		frame := []byte{0x81, 0x84, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4}
		if _, err := p.c.Write(frame); err != nil {
			t.Fatal(err)
		}
		echo := make([]byte, len(frame))
		if _, err := io.ReadFull(p.br, echo); err != nil || !bytes.Equal(echo, frame) {
			t.Errorf("echo %x, %v; want %x", echo, err, frame)
		}
		_ = p.c.Close()
		e.wantFallbacks(t, 1)
	})
}

func TestH1ServerFramingFieldsNamedByConnection(t *testing.T) {
	// A backend naming a framing field in Connection: whatever is done
	// with the field, the client must still be able to tell where the
	// response ends.
	tests := []struct{ name, resp string }{
		{"Content-Length", "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello"},
		{"Transfer-Encoding", "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newProxyEnv(t, kind)
				e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach(tc.resp))))
				p := dialProxy(t, e)
				// A response the client cannot delimit reads until the
				// deadline: keep it short.
				if err := p.c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
					t.Fatal(err)
				}
				p.send("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
				resp, err := http.ReadResponse(p.br, nil)
				if err != nil {
					t.Fatalf("read response: %v", err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != "hello" {
					t.Fatalf("body %q, %v (ContentLength %d, TransferEncoding %v, header %v); want %q",
						body, err, resp.ContentLength, resp.TransferEncoding, resp.Header, "hello")
				}
				if resp.Close {
					p.wantClosed()
				} else {
					p.wantOpen("hello")
				}
				e.wantFallbacks(t, 0)
			})
		}
	})
}

func TestH1ServerResponseHeads(t *testing.T) {
	big := strings.Repeat("v", 10<<10)
	forEachServer(t, func(t *testing.T, kind serverKind) {
		t.Run("larger than the upstream buffer", func(t *testing.T) {
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach(
				"HTTP/1.1 200 OK\r\nX-Big: "+big+"\r\nContent-Length: 5\r\n\r\nhello"))))
			p := dialProxy(t, e)
			for i := range 2 {
				resp, body := p.get("/")
				if resp.StatusCode != http.StatusOK || string(body) != "hello" || resp.Header.Get("X-Big") != big {
					t.Errorf("request %d: status %d body %q X-Big of %d bytes; want 200 %q and the %d bytes sent",
						i, resp.StatusCode, body, len(resp.Header.Get("X-Big")), "hello", len(big))
				}
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("bare LF line ends", func(t *testing.T) {
			// net/http reads such a head; H1Server refuses it (h1wire's
			// rule for backends) at once rather than at the header timeout.
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, answerEach("HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"))))
			p := dialProxy(t, e)
			start := time.Now()
			resp, body := p.get("/")
			want := http.StatusOK
			if kind == h1Server {
				want = http.StatusBadGateway
			}
			if resp.StatusCode != want || want == http.StatusOK && string(body) != "hi" {
				t.Errorf("status %d body %q; want %d", resp.StatusCode, body, want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("answered after %v; want at once", d)
			}
		})
		t.Run("in pieces", func(t *testing.T) {
			const resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
			e := newProxyEnv(t, kind)
			e.store(t, poolOf("web", nil, "", rawBackend(t, func(_ int, c net.Conn, br *bufio.Reader) {
				for {
					if _, err := readHead(br); err != nil {
						return
					}
					for i := 0; i < len(resp); i += 3 {
						if _, err := io.WriteString(c, resp[i:min(i+3, len(resp))]); err != nil {
							return
						}
						time.Sleep(200 * time.Microsecond)
					}
				}
			})))
			p := dialProxy(t, e)
			for i := range 2 {
				resp, body := p.get("/")
				if resp.StatusCode != http.StatusOK || string(body) != "hello" || resp.Header.Get("X-A") != "1" {
					t.Errorf("request %d: status %d body %q header %v", i, resp.StatusCode, body, resp.Header)
				}
			}
			e.wantFallbacks(t, 0)
		})
	})
}

func TestH1ServerHostHeaderRewrite(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		e := newProxyEnv(t, kind)
		p := poolOf("web", nil, "", backendAddr(echoBackend(t)))
		p.HostHeader = "internal.example:8080"
		e.store(t, p)
		resp, body := dialProxy(t, e).get("/r")
		s := decodeSeen(t, resp, body)
		if s.Host != "internal.example:8080" {
			t.Errorf("backend Host = %q, want %q", s.Host, "internal.example:8080")
		}
		want := http.Header{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"example.com"}}
		if !reflect.DeepEqual(s.Header, want) {
			t.Errorf("backend header:\n got %v\nwant %v", s.Header, want)
		}
		e.wantFallbacks(t, 0)
	})
}

func TestH1ServerSameBackendChoice(t *testing.T) {
	// Consistent hashing picks the backend from the request: both servers
	// must read the same key from it. The envs share their backends, so
	// that their hash rings are the same.
	var addrs []string
	for i := range 4 {
		addrs = append(addrs, backendAddr(nameBackend(t, "b"+strconv.Itoa(i))))
	}
	tests := []struct {
		name string
		key  poolspec.HashKey
		// fields returns the header lines of request i.
		fields func(i int) string
	}{
		{"header", poolspec.HashKey{Source: poolspec.HashHeader, Name: "X-User"},
			func(i int) string { return fmt.Sprintf("x-user: u%d\r\nX-User: other\r\n", i) }},
		{"cookie", poolspec.HashKey{Source: poolspec.HashCookie, Name: "sid"},
			func(i int) string { return fmt.Sprintf("Cookie: a=1\r\nCookie: b=2; sid=\"s%d\"\r\n", i) }},
		{"path", poolspec.HashKey{Source: poolspec.HashPath}, func(int) string { return "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(map[serverKind][]string)
			for _, kind := range serverKinds {
				e := newProxyEnv(t, kind)
				p := poolOf("web", nil, "", addrs...)
				p.LoadBalancing = poolspec.LoadBalancing{Algorithm: poolspec.AlgorithmConsistentHash, HashKey: tc.key}
				e.store(t, p)
				c := dialProxy(t, e)
				for i := range 24 {
					for range 2 { // the same request, the same backend
						c.send(fmt.Sprintf("GET /p%d HTTP/1.1\r\nHost: example.com\r\n%s\r\n", i, tc.fields(i)))
						resp, body := c.read(http.MethodGet)
						if resp.StatusCode != http.StatusOK {
							t.Fatalf("%v: status %d body %q", kind, resp.StatusCode, body)
						}
						got[kind] = append(got[kind], string(body))
					}
				}
				e.wantFallbacks(t, 0)
			}
			a, b := got[netHTTP], got[h1Server]
			if !reflect.DeepEqual(a, b) {
				t.Errorf("backends chosen:\nnet/http %v\nh1server %v", a, b)
			}
			for i := 0; i < len(a); i += 2 {
				if a[i] != a[i+1] {
					t.Errorf("request %d went to %s, then %s", i/2, a[i], a[i+1])
				}
			}
			if spread := len(slices.Compact(slices.Sorted(slices.Values(a)))); spread < 2 {
				t.Errorf("all requests went to one backend (%v): the key was not read", a)
			}
		})
	}
}

func TestH1ServerTimeouts(t *testing.T) {
	short := func(idle, head time.Duration) envOption {
		return func(s *http.Server, c *proxy.H1Config) {
			if idle > 0 {
				s.IdleTimeout, c.IdleTimeout = idle, idle
			}
			if head > 0 {
				s.ReadHeaderTimeout, c.ReadHeaderTimeout = head, head
			}
		}
	}
	forEachServer(t, func(t *testing.T, kind serverKind) {
		t.Run("idle", func(t *testing.T) {
			e := newProxyEnv(t, kind, short(300*time.Millisecond, 0))
			e.store(t, poolOf("web", nil, "", pathBackend(t)))
			p := dialProxy(t, e)
			if resp, body := p.get("/x"); resp.StatusCode != http.StatusOK || string(body) != "/x" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if err := p.c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(p.br); err != nil || len(b) > 0 {
				t.Errorf("idle connection: read %q, %v; want it closed (EOF) after the idle timeout", b, err)
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("head", func(t *testing.T) {
			e := newProxyEnv(t, kind, short(0, 300*time.Millisecond))
			e.store(t, poolOf("web", nil, "", pathBackend(t)))
			p := dialProxy(t, e)
			p.send("GET / HTTP/1.1\r\nHost: exa")
			if err := p.c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(p.br); err != nil || len(b) > 0 {
				t.Errorf("incomplete head: read %q, %v; want the connection closed (EOF) after the head timeout", b, err)
			}
			e.wantFallbacks(t, 0)
		})
		t.Run("head timeout counts from each head", func(t *testing.T) {
			// The first request's head comes in two pieces, the second of
			// them with the start of a pipelined second request; the first
			// request takes longer than the head timeout to answer. The
			// second request's head is complete right after: it must be
			// served, its head timeout counting from when it began.
			e := newProxyEnv(t, kind, short(0, 300*time.Millisecond))
			backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					time.Sleep(500 * time.Millisecond)
				}
				_, _ = io.WriteString(w, r.URL.Path)
			})
			e.store(t, poolOf("web", nil, "", backendAddr(backend)))
			p := dialProxy(t, e)
			p.send("GET /slow HTTP/1.1\r\nHo")
			time.Sleep(50 * time.Millisecond)
			p.send("st: example.com\r\n\r\nGET /next HTTP/1.1\r\nHo")
			resp, body := p.read(http.MethodGet)
			if resp.StatusCode != http.StatusOK || string(body) != "/slow" {
				t.Fatalf("first request: status %d body %q", resp.StatusCode, body)
			}
			p.send("st: example.com\r\n\r\n")
			resp, err := http.ReadResponse(p.br, nil)
			if err != nil {
				t.Fatalf("second request: %v; want it answered", err)
			}
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || string(body) != "/next" {
				t.Errorf("second request: status %d body %q, %v; want 200 %q", resp.StatusCode, body, err, "/next")
			}
			e.wantFallbacks(t, 0)
		})
	})
}

// A client that closes its connection while its request waits for the
// backend gets the backend's request cancelled (its connection closed), on
// both servers: net/http notices at once with its background read, H1Server
// within two of its client checks.
func TestClientGoneCancelsBackendRequest(t *testing.T) {
	t.Cleanup(proxy.SetWatchAfter(100 * time.Millisecond))
	forEachServer(t, func(t *testing.T, kind serverKind) {
		arrived := make(chan struct{}, 1)
		cancelled := make(chan struct{}, 1)
		backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(10 * time.Second):
				_, _ = io.WriteString(w, "too late")
			}
		})
		e := newProxyEnv(t, kind)
		e.store(t, poolOf("web", nil, "", backendAddr(backend)))
		p := dialProxy(t, e)
		p.send("GET /wait HTTP/1.1\r\nHost: example.com\r\n\r\n")
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the request did not reach the backend within 5s")
		}
		p.c.Close()
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the backend's request was not cancelled within 5s of the client closing")
		}
		e.wantFallbacks(t, 0)
	})
}

// TestH1ServerHandsH2CToH2: a connection opening with the HTTP/2 preface
// goes to H1Config.H2, which reads it from the start, preface included,
// and not to Fallback; also when the preface's first line, which reads as
// a whole head, arrives alone.
func TestH1ServerHandsH2CToH2(t *testing.T) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	for _, tt := range []struct {
		name   string
		writes []string
	}{
		{"whole", []string{preface + "frames"}},
		{"first line alone", []string{"PRI * HTTP/2.0\r\n\r\n", "SM\r\n\r\nframes"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan string, 1)
			e := newProxyEnv(t, h1Server, func(_ *http.Server, c *proxy.H1Config) {
				c.H2 = func(nc net.Conn) bool {
					go func() {
						defer nc.Close()
						_ = nc.SetReadDeadline(time.Now().Add(reqTimeout))
						buf := make([]byte, len(preface)+len("frames"))
						n, err := io.ReadFull(nc, buf)
						got <- fmt.Sprintf("%q %v", buf[:n], err)
					}()
					return true
				}
			})
			c, err := net.Dial("tcp", e.lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, w := range tt.writes {
				if _, err := io.WriteString(c, w); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond) // separate reads
			}
			select {
			case g := <-got:
				if want := fmt.Sprintf("%q <nil>", preface+"frames"); g != want {
					t.Fatalf("H2 read %s, want %s", g, want)
				}
			case <-time.After(reqTimeout):
				t.Fatal("H2 was not given the connection")
			}
			if n := e.fallbacks.Load(); n != 0 {
				t.Fatalf("%d connections went to Fallback, want 0", n)
			}
		})
	}
}

// A request that arrives while the one before it on the connection is
// being served, in a write of its own, is served next: the server reads it
// although it last found the socket empty before it forwarded the first.
func TestH1ServerRequestDuringResponse(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		arrived := make(chan struct{}, 1)
		backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				arrived <- struct{}{}
				time.Sleep(200 * time.Millisecond)
			}
			_, _ = io.WriteString(w, r.URL.Path)
		})
		e := newProxyEnv(t, kind)
		e.store(t, poolOf("web", nil, "", backendAddr(backend)))
		p := dialProxy(t, e)
		for round := range 3 {
			p.send("GET /slow HTTP/1.1\r\nHost: example.com\r\n\r\n")
			select {
			case <-arrived:
			case <-time.After(reqTimeout):
				t.Fatalf("round %d: the first request did not reach the backend", round)
			}
			p.send("GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n")
			for _, want := range []string{"/slow", "/next"} {
				resp, body := p.read(http.MethodGet)
				if resp.StatusCode != http.StatusOK || string(body) != want {
					t.Fatalf("round %d: status %d body %q; want 200 %q", round, resp.StatusCode, body, want)
				}
			}
		}
		e.wantFallbacks(t, 0)
	})
}

// The response header timeout bounds each response head on a kept upstream
// connection, and only the head: a body slower than it is relayed whole, a
// connection idle past the deadline of its last response is reused, and a
// backend that then sends no head in time gets 504.
func TestH1ServerResponseHeaderTimeoutOnKeptConnection(t *testing.T) {
	const timeout = 200 * time.Millisecond
	forEachServer(t, func(t *testing.T, kind serverKind) {
		var (
			mu    sync.Mutex
			peers = map[string]bool{} // the proxy's connections, by address
		)
		backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/stall" {
				mu.Lock()
				peers[r.RemoteAddr] = true
				mu.Unlock()
			}
			switch r.URL.Path {
			case "/slow-body":
				w.Header().Set("Content-Length", "10")
				_, _ = io.WriteString(w, "first")
				w.(http.Flusher).Flush()
				time.Sleep(2 * timeout)
				_, _ = io.WriteString(w, "-last")
			case "/stall":
				time.Sleep(3 * timeout)
			default:
				_, _ = io.WriteString(w, r.URL.Path)
			}
		})
		e := newProxyEnv(t, kind)
		pool := poolOf("web", nil, "", backendAddr(backend))
		pool.Upstream.ResponseHeaderTimeout = timeout
		e.store(t, pool)
		p := dialProxy(t, e)
		steps := []struct {
			path, body string
			status     int
			sleepAfter time.Duration
		}{
			{"/fast", "/fast", http.StatusOK, 0},
			{"/slow-body", "first-last", http.StatusOK, 0},
			{"/fast", "/fast", http.StatusOK, timeout + 100*time.Millisecond},
			{"/after-idle", "/after-idle", http.StatusOK, 0},
			{"/stall", "gateway timeout: backend " + backendAddr(backend) + " did not answer in time\n", http.StatusGatewayTimeout, 0},
		}
		for _, s := range steps {
			resp, body := p.get(s.path)
			if resp.StatusCode != s.status || string(body) != s.body {
				t.Fatalf("GET %s: status %d body %q; want %d %q", s.path, resp.StatusCode, body, s.status, s.body)
			}
			time.Sleep(s.sleepAfter)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(peers) != 1 {
			t.Errorf("the backend saw %d connections from the proxy (%v); want 1, kept", len(peers), peers)
		}
		e.wantFallbacks(t, 0)
	})
}

// A client that half-closes after its request gets a response and then
// the connection closed at once, on the first request of a connection and
// on a later one (where the server reads with the kernel telling what a
// read left behind: the request's bytes and the FIN come in one read).
func TestH1ServerClientHalfClose(t *testing.T) {
	forEachServer(t, func(t *testing.T, kind serverKind) {
		e := newProxyEnv(t, kind)
		e.store(t, poolOf("web", nil, "", pathBackend(t)))
		for _, earlier := range []int{0, 1, 3} {
			t.Run(fmt.Sprintf("after %d requests", earlier), func(t *testing.T) {
				p := dialProxy(t, e)
				for i := range earlier {
					if resp, body := p.get("/kept"); resp.StatusCode != http.StatusOK || string(body) != "/kept" {
						t.Fatalf("request %d: status %d body %q", i+1, resp.StatusCode, body)
					}
				}
				p.send("GET /last HTTP/1.1\r\nHost: example.com\r\n\r\n")
				if err := p.c.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				// net/http takes the FIN for the client going away and
				// answers 502 (nginx, by default, 499); H1Server looks at
				// the client only once a request has taken a second, so
				// it serves a quick one (a slower one it cuts, likewise).
				resp, body := p.read(http.MethodGet)
				if kind == h1Server && (resp.StatusCode != http.StatusOK || string(body) != "/last") {
					t.Fatalf("last request: status %d body %q; want 200 %q", resp.StatusCode, body, "/last")
				}
				p.wantClosed()
			})
		}
		e.wantFallbacks(t, 0)
	})
}
