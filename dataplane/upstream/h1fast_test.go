package upstream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/upstream"
)

// These tests drive the plain HTTP/1.1 fast path through the public API
// with requests shaped like the proxy's, against real backends on loopback:
// net/http servers, and raw TCP listeners where the bytes on the wire matter.
// Raw backends name the connection that answered in an X-Conn header (1 for
// the first connection accepted), which is how a test tells reuse from a
// new connection.

func TestFastH1ReusesOneConnection(t *testing.T) {
	for _, p := range []upstream.Protocol{upstream.Auto, upstream.HTTP1} {
		t.Run(p.String(), func(t *testing.T) {
			var mu sync.Mutex
			var seen []seenRequest // guarded by mu
			b := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, seenRequest{
					line:   r.Method + " " + r.RequestURI + " " + r.Proto,
					host:   r.Host,
					header: r.Header.Clone(),
					remote: r.RemoteAddr,
				})
				mu.Unlock()
				fmt.Fprintf(w, "answer to %s", r.RequestURI)
			}))
			cache := newCache(t)
			tr := transport(t, cache, upstream.Settings{Protocol: p})
			ctx := testContext(t)

			const n = 20
			for i := range n {
				target := fmt.Sprintf("/items/%d?q=%d", i, i)
				req := proxyRequest(t, ctx, http.MethodGet, b.addr, target, nil)
				req.Host = "" // URL.Host goes on the wire
				if i%2 == 1 {
					req.Host = "app.example"
				}
				req.Header["X-Test"] = []string{fmt.Sprint("v", i)}
				req.Header["X-Multi"] = []string{"a", "b"}
				a, err := fetch(tr, req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if a.status != http.StatusOK || a.body != "answer to "+target {
					t.Fatalf("request %d: got %d %q, want 200 %q", i, a.status, a.body, "answer to "+target)
				}
			}

			if got := b.newConns.Load(); got != 1 {
				t.Errorf("backend accepted %d connections, want 1", got)
			}
			if got := attempts(cache, b.addr); got != 1 {
				t.Errorf("Dials().For(%s).Attempts = %d, want 1", b.addr, got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != n {
				t.Fatalf("backend saw %d requests, want %d", len(seen), n)
			}
			for i, s := range seen {
				wantLine := fmt.Sprintf("GET /items/%d?q=%d HTTP/1.1", i, i)
				wantHost := b.addr
				if i%2 == 1 {
					wantHost = "app.example"
				}
				// Exactly the headers sent: no Go User-Agent, no
				// Accept-Encoding, no Content-Length.
				wantHeader := http.Header{"X-Test": {fmt.Sprint("v", i)}, "X-Multi": {"a", "b"}}
				if s.line != wantLine {
					t.Errorf("request %d: request line %q, want %q", i, s.line, wantLine)
				}
				if s.host != wantHost {
					t.Errorf("request %d: Host %q, want %q", i, s.host, wantHost)
				}
				if !reflect.DeepEqual(s.header, wantHeader) {
					t.Errorf("request %d: header %v, want %v", i, s.header, wantHeader)
				}
				if s.remote != seen[0].remote {
					t.Errorf("request %d came from %s, request 0 from %s: want one connection", i, s.remote, seen[0].remote)
				}
			}
		})
	}
}

// seenRequest is what a backend saw of one request.
type seenRequest struct {
	line   string // method, request target, protocol
	host   string
	header http.Header
	remote string // the client's address: one per connection
}

// TestFastH1ConnectionReuse checks, response shape by response shape,
// whether the connection of a first request is used for the next one.
func TestFastH1ConnectionReuse(t *testing.T) {
	const readAll = -1
	tests := []struct {
		name   string
		method string
		// first is the backend's answer to the first request, byte for byte.
		first string
		// backendCloses: the backend closes the connection after first
		// (it ends the body); otherwise it keeps it open and would answer
		// the next request on it, so only the client decides about reuse.
		backendCloses bool
		// read is how many bytes of the first body the client reads before
		// closing it; readAll reads it to EOF.
		read        int
		wantStatus  int
		wantBody    string      // with readAll
		wantHeader  http.Header // fields that must be exactly so (nil: absent)
		wantTrailer http.Header // the whole trailer after the body, when set
		wantReused  bool
	}{
		{
			name:       "content-length body read to EOF",
			first:      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			read:       readAll,
			wantStatus: http.StatusOK, wantBody: "hello",
			wantReused: true,
		},
		{
			name:       "body closed unread",
			first:      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			read:       0,
			wantStatus: http.StatusOK,
			wantReused: false,
		},
		{
			name:       "body closed after one byte",
			first:      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			read:       1,
			wantStatus: http.StatusOK,
			wantReused: false,
		},
		{
			name: "chunked body with trailers read to EOF",
			first: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
			read:        readAll,
			wantStatus:  http.StatusOK,
			wantBody:    "hello world",
			wantTrailer: http.Header{"X-Checksum": {"abc"}},
			wantReused:  true,
		},
		{
			name:       "Connection: close",
			first:      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
			read:       readAll,
			wantStatus: http.StatusOK, wantBody: "hello",
			wantReused: false,
		},
		{
			name:       "HTTP/1.0 without keep-alive",
			first:      "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			read:       readAll,
			wantStatus: http.StatusOK, wantBody: "hello",
			wantReused: false,
		},
		{
			name:       "HTTP/1.0 with keep-alive",
			first:      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
			read:       readAll,
			wantStatus: http.StatusOK, wantBody: "hello",
			wantReused: true,
		},
		{
			name:          "no length: body until the backend closes",
			first:         "HTTP/1.1 200 OK\r\n\r\nhello",
			backendCloses: true,
			read:          readAll,
			wantStatus:    http.StatusOK, wantBody: "hello",
			wantReused: false,
		},
		{
			name:       "HEAD",
			method:     http.MethodHead,
			first:      "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
			read:       readAll,
			wantStatus: http.StatusOK, wantBody: "",
			wantHeader: http.Header{"Content-Length": {"1000"}},
			wantReused: true,
		},
		{
			name:       "204 No Content",
			first:      "HTTP/1.1 204 No Content\r\nX-Empty: 1\r\n\r\n",
			read:       readAll,
			wantStatus: http.StatusNoContent, wantBody: "",
			wantHeader: http.Header{"X-Empty": {"1"}},
			wantReused: true,
		},
		{
			name:       "304 Not Modified with the representation's length",
			first:      "HTTP/1.1 304 Not Modified\r\nEtag: \"v1\"\r\nContent-Length: 5\r\n\r\n",
			read:       readAll,
			wantStatus: http.StatusNotModified, wantBody: "",
			wantHeader: http.Header{"Etag": {`"v1"`}},
			wantReused: true,
		},
		{
			name: "103 Early Hints before the 200",
			first: "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello",
			read:       readAll,
			wantStatus: http.StatusOK, wantBody: "hello",
			wantHeader: http.Header{"X-Final": {"yes"}, "Link": nil},
			wantReused: true,
		},
		{
			name: "100 Continue and 103 Early Hints before the 200",
			first: "HTTP/1.1 100 Continue\r\n\r\n" +
				"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok",
			read:       readAll,
			wantStatus: http.StatusOK, wantBody: "ok",
			wantHeader: http.Header{"X-Final": {"yes"}, "Link": nil},
			wantReused: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newRawBackend(t, func(c *rawConn) {
				for i := 0; ; i++ {
					if _, _, ok := c.next(); !ok {
						return
					}
					if c.n == 1 && i == 0 {
						c.write(tt.first)
						if tt.backendCloses {
							return
						}
						continue
					}
					c.write(okResponse(c.n, "next"))
				}
			})
			cache := newCache(t)
			tr := transport(t, cache, upstream.Settings{})
			ctx := testContext(t)

			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			resp, err := tr.RoundTrip(proxyRequest(t, ctx, method, b.addr, "/first", nil))
			if err != nil {
				t.Fatalf("first request: %v", err)
			}
			var body []byte
			if tt.read == readAll {
				body, err = io.ReadAll(resp.Body)
			} else {
				body = make([]byte, tt.read)
				_, err = io.ReadFull(resp.Body, body)
			}
			resp.Body.Close()
			if err != nil {
				t.Fatalf("first body: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("first status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.read == readAll && string(body) != tt.wantBody {
				t.Errorf("first body %q, want %q", body, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header[k]; !reflect.DeepEqual(got, v) {
					t.Errorf("first header %s = %q, want %q", k, got, v)
				}
			}
			if tt.wantTrailer != nil && !reflect.DeepEqual(resp.Trailer, tt.wantTrailer) {
				t.Errorf("first trailer %v, want %v", resp.Trailer, tt.wantTrailer)
			}

			a, err := fetch(tr, proxyRequest(t, ctx, http.MethodGet, b.addr, "/next", nil))
			if err != nil {
				t.Fatalf("second request: %v", err)
			}
			wantConn, wantDials := "2", uint64(2)
			if tt.wantReused {
				wantConn, wantDials = "1", 1
			}
			if got := a.header.Get("X-Conn"); got != wantConn || a.body != "next" {
				t.Errorf("second request answered on connection %s with %q, want connection %s with %q (reused: %v)",
					got, a.body, wantConn, "next", tt.wantReused)
			}
			if got := attempts(cache, b.addr); got != wantDials {
				t.Errorf("Attempts = %d, want %d", got, wantDials)
			}
			if got := b.accepted.Load(); got != int64(wantDials) {
				t.Errorf("backend accepted %d connections, want %d", got, wantDials)
			}
			if !tt.wantReused && !tt.backendCloses {
				if e := recv(t, b.ended, "the client to close the first connection"); e.n != 1 {
					t.Errorf("connection %d ended (%v), want connection 1", e.n, e.err)
				}
			}
		})
	}
}

// TestFastH1StaleConnection: a backend closes an idle connection; the next
// request finds out only when nothing comes back, and is sent again, once,
// on a new connection.
func TestFastH1StaleConnection(t *testing.T) {
	tests := []struct {
		name string
		// reset closes the idle connection with a RST rather than a FIN.
		reset bool
		// farewell is what the backend writes on the idle connection
		// before closing it. Some servers send a 408 Request Timeout
		// there; it arrives before the next request is written, so it
		// cannot be that request's answer. (net/http's Transport drops
		// the connection as closed by the server when its reader sees
		// the 408 while the connection idles.)
		farewell string
		// retryAnswered: the backend answers on the new connection;
		// otherwise it closes that one too without answering.
		retryAnswered bool
	}{
		{name: "closed with FIN", retryAnswered: true},
		{name: "closed with RST", reset: true, retryAnswered: true},
		{
			name:          "closed after a 408 Request Timeout",
			farewell:      "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
			retryAnswered: true,
		},
		{name: "new connection closed without an answer too", retryAnswered: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.farewell != "" {
				// A backend answers 408 only after its idle timeout, by
				// when the connection is checked before reuse: check it
				// at once here.
				t.Cleanup(upstream.SetQuietCheckAfter(0))
			}
			closeIdle := make(chan struct{})
			idleClosed := make(chan struct{})
			b := newRawBackend(t, func(c *rawConn) {
				switch {
				case c.n == 1:
					if _, _, ok := c.next(); !ok {
						return
					}
					c.write(okResponse(1, "first"))
					// The connection is idle now; close it when told.
					select {
					case <-closeIdle:
					case <-c.b.done:
						return
					}
					if tt.farewell != "" {
						c.write(tt.farewell)
					}
					if tt.reset {
						if err := c.Conn.(*net.TCPConn).SetLinger(0); err != nil {
							c.b.t.Errorf("SetLinger: %v", err)
						}
					}
					c.Close()
					close(idleClosed)
				case tt.retryAnswered:
					c.serveKeepAlive()
				default:
					c.next() // read the request, then close without a word
				}
			})
			cache := newCache(t)
			tr := transport(t, cache, upstream.Settings{})
			ctx := testContext(t)

			a, err := fetch(tr, proxyRequest(t, ctx, http.MethodGet, b.addr, "/first", nil))
			if err != nil {
				t.Fatalf("first request: %v", err)
			}
			if got := a.header.Get("X-Conn"); got != "1" || a.body != "first" {
				t.Fatalf("first request answered on connection %s with %q, want 1 with %q", got, a.body, "first")
			}
			close(closeIdle)
			recv(t, idleClosed, "the backend to close the idle connection")

			a, err = fetch(tr, proxyRequest(t, ctx, http.MethodGet, b.addr, "/second", nil))
			if tt.retryAnswered {
				if err != nil {
					t.Fatalf("second request: %v, want it answered on a new connection", err)
				}
				if got := a.header.Get("X-Conn"); a.status != http.StatusOK || got != "2" || a.body != "GET /second " {
					t.Errorf("second request answered %d on connection %q with %q, want 200 on connection 2 with %q",
						a.status, got, a.body, "GET /second ")
				}
			} else if !errors.Is(err, io.EOF) {
				t.Errorf("second request: error %v, want one matching io.EOF", err)
			}
			if got := attempts(cache, b.addr); got != 2 {
				t.Errorf("Attempts = %d, want 2 (the first connection and one retry)", got)
			}
			if got := b.accepted.Load(); got != 2 {
				t.Errorf("backend accepted %d connections, want 2", got)
			}
		})
	}
}

// TestFastH1NewConnectionClosedWithoutAnswer: a new connection that the
// backend closes without answering is an error, not a retry.
func TestFastH1NewConnectionClosedWithoutAnswer(t *testing.T) {
	b := newRawBackend(t, func(c *rawConn) {
		c.next() // read the request, then close without a word
	})
	cache := newCache(t)
	tr := transport(t, cache, upstream.Settings{})

	a, err := fetch(tr, proxyRequest(t, testContext(t), http.MethodGet, b.addr, "/", nil))
	if err == nil {
		t.Fatalf("request answered %d %q, want an error", a.status, a.body)
	}
	if !errors.Is(err, io.EOF) {
		t.Errorf("error %v, want one matching io.EOF", err)
	}
	if got := attempts(cache, b.addr); got != 1 {
		t.Errorf("Attempts = %d, want 1 (no retry on a new connection)", got)
	}
	if got := b.accepted.Load(); got != 1 {
		t.Errorf("backend accepted %d connections, want 1", got)
	}
}

func TestFastH1ResponseHeaderTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	tests := []struct {
		name     string
		opts     upstream.Options
		settings upstream.Settings
	}{
		{name: "from the settings", settings: upstream.Settings{ResponseHeaderTimeout: timeout}},
		{name: "from the cache's options", opts: upstream.Options{ResponseHeaderTimeout: timeout}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newRawBackend(t, func(c *rawConn) {
				if _, _, ok := c.next(); !ok {
					return
				}
				c.next() // never answer; wait for the client to give up
			})
			cache := newCacheWith(t, tt.opts)
			tr := transport(t, cache, tt.settings)

			start := time.Now()
			a, err := fetch(tr, proxyRequest(t, testContext(t), http.MethodGet, b.addr, "/", nil))
			elapsed := time.Since(start)
			if err == nil {
				t.Fatalf("request answered %d %q, want a timeout", a.status, a.body)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("error %v (%T), want a net.Error whose Timeout() is true", err, err)
			}
			if elapsed < timeout || elapsed > 2*time.Second {
				t.Errorf("request failed after %v, want between %v and 2s", elapsed, timeout)
			}
			if got := attempts(cache, b.addr); got != 1 {
				t.Errorf("Attempts = %d, want 1 (a timeout is not retried)", got)
			}
			if e := recv(t, b.ended, "the client to close the timed-out connection"); e.n != 1 {
				t.Errorf("connection %d ended, want connection 1", e.n)
			}
		})
	}
}

// TestFastH1ResponseHeaderTimeoutSparesTheBody: the timeout bounds the wait
// for the head only; a body slower than it still arrives, and the
// connection stays usable.
func TestFastH1ResponseHeaderTimeoutSparesTheBody(t *testing.T) {
	const timeout = 200 * time.Millisecond
	b := newRawBackend(t, func(c *rawConn) {
		if _, _, ok := c.next(); !ok {
			return
		}
		c.write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Conn: %d\r\n\r\n", c.n))
		slow := time.NewTimer(3 * timeout)
		defer slow.Stop()
		select {
		case <-slow.C:
		case <-c.b.done:
			return
		}
		c.write("body")
		c.serveKeepAlive()
	})
	cache := newCache(t)
	tr := transport(t, cache, upstream.Settings{ResponseHeaderTimeout: timeout})
	ctx := testContext(t)

	for i, want := range []string{"body", "GET /again "} {
		a, err := fetch(tr, proxyRequest(t, ctx, http.MethodGet, b.addr, "/again", nil))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := a.header.Get("X-Conn"); got != "1" || a.body != want {
			t.Errorf("request %d answered on connection %s with %q, want 1 with %q", i, got, a.body, want)
		}
	}
	if got := attempts(cache, b.addr); got != 1 {
		t.Errorf("Attempts = %d, want 1", got)
	}
}

func TestFastH1ClientCancel(t *testing.T) {
	tests := []struct {
		name string
		// head: the backend sends the head and part of the body before
		// holding; otherwise it holds before answering anything.
		head bool
	}{
		{name: "waiting for the head", head: false},
		{name: "reading the body", head: true},
	}
	// The exchange watches the client only once it has waited this long
	// (or has a body to read); the cancel must still end it within 1 s.
	defer upstream.SetClientCheckAfter(50 * time.Millisecond)()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			holding := make(chan struct{})
			b := newRawBackend(t, func(c *rawConn) {
				if c.n != 1 {
					c.serveKeepAlive()
					return
				}
				if _, _, ok := c.next(); !ok {
					return
				}
				if tt.head {
					c.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Conn: 1\r\n\r\nfour")
				}
				close(holding)
				c.next() // hold until the client closes the connection
			})
			cache := newCache(t)
			tr := transport(t, cache, upstream.Settings{})
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			req := proxyRequest(t, ctx, http.MethodGet, b.addr, "/held", nil)

			var canceledAt time.Time
			var err error
			if !tt.head {
				done := make(chan error, 1)
				go func() {
					resp, err := tr.RoundTrip(req)
					if err == nil {
						resp.Body.Close()
					}
					done <- err
				}()
				recv(t, holding, "the backend to hold the request")
				cancel()
				canceledAt = time.Now()
				err = recv(t, done, "RoundTrip to return after the cancel")
			} else {
				resp, rerr := tr.RoundTrip(req)
				if rerr != nil {
					t.Fatalf("RoundTrip: %v", rerr)
				}
				defer resp.Body.Close()
				part := make([]byte, 4)
				if _, rerr := io.ReadFull(resp.Body, part); rerr != nil || string(part) != "four" {
					t.Fatalf("first body bytes %q, %v; want %q", part, rerr, "four")
				}
				recv(t, holding, "the backend to hold the rest of the body")
				done := make(chan error, 1)
				go func() {
					_, err := io.ReadAll(resp.Body)
					done <- err
				}()
				cancel()
				canceledAt = time.Now()
				err = recv(t, done, "the body read to return after the cancel")
				resp.Body.Close()
			}
			if d := time.Since(canceledAt); d > time.Second {
				t.Errorf("returned %v after the cancel, want within 1s", d)
			}
			if err == nil {
				t.Fatal("no error after the cancel")
			}
			t.Logf("error after the cancel: %v", err)
			if e := recv(t, b.ended, "the client to close the canceled connection"); e.n != 1 {
				t.Errorf("connection %d ended, want connection 1", e.n)
			}

			a, err := fetch(tr, proxyRequest(t, testContext(t), http.MethodGet, b.addr, "/next", nil))
			if err != nil {
				t.Fatalf("request after the cancel: %v", err)
			}
			if got := a.header.Get("X-Conn"); got != "2" {
				t.Errorf("request after the cancel answered on connection %s, want a new one (2)", got)
			}
			if got := attempts(cache, b.addr); got != 2 {
				t.Errorf("Attempts = %d, want 2", got)
			}
		})
	}
}

func TestFastH1IdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	b := newRawBackend(t, (*rawConn).serveKeepAlive)
	cache := newCache(t)
	tr := transport(t, cache, upstream.Settings{IdleTimeout: idle})
	ctx := testContext(t)

	steps := []struct {
		wait      time.Duration // idle time before the request
		wantConn  string
		wantDials uint64
	}{
		{0, "1", 1},
		{0, "1", 1},        // well within the idle timeout
		{3 * idle, "2", 2}, // past it: the idle connection is dropped
	}
	for i, s := range steps {
		// Time has to pass here; there is nothing to wait for instead.
		time.Sleep(s.wait)
		a, err := fetch(tr, proxyRequest(t, ctx, http.MethodGet, b.addr, "/", nil))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := a.header.Get("X-Conn"); got != s.wantConn {
			t.Errorf("request %d answered on connection %s, want %s", i, got, s.wantConn)
		}
		if got := attempts(cache, b.addr); got != s.wantDials {
			t.Errorf("after request %d: Attempts = %d, want %d", i, got, s.wantDials)
		}
	}
	if e := recv(t, b.ended, "the client to close the expired connection"); e.n != 1 {
		t.Errorf("connection %d ended, want connection 1", e.n)
	}
}

// TestFastH1IneligibleRequests: requests with a body or an Expect header go
// through net/http's transport, on connections of its own; bodyless ones
// share the fast path's. CloseIdleConnections closes both kinds.
func TestFastH1IneligibleRequests(t *testing.T) {
	b := newRawBackend(t, (*rawConn).serveKeepAlive)
	cache := newCache(t)
	tr := transport(t, cache, upstream.Settings{})
	ctx := testContext(t)

	steps := []struct {
		name          string
		method        string
		body          string
		unknownLength bool // send the body chunked
		header        http.Header
		wantConn      string
	}{
		{name: "GET: fast path", method: http.MethodGet, wantConn: "1"},
		{name: "POST with a body: net/http", method: http.MethodPost, body: "payload", wantConn: "2"},
		{name: "POST with a body of unknown length: net/http", method: http.MethodPost, body: "streamed", unknownLength: true, wantConn: "2"},
		{name: "GET with Expect: net/http", method: http.MethodGet, header: http.Header{"Expect": {"100-continue"}}, wantConn: "2"},
		{name: "POST without a body: fast path", method: http.MethodPost, wantConn: "1"},
		{name: "GET again: fast path", method: http.MethodGet, wantConn: "1"},
	}
	for _, s := range steps {
		var body io.Reader
		if s.body != "" {
			body = strings.NewReader(s.body)
			if s.unknownLength {
				body = io.MultiReader(body) // hides the length
			}
		}
		req := proxyRequest(t, ctx, s.method, b.addr, "/", body)
		for k, v := range s.header {
			req.Header[k] = v
		}
		a, err := fetch(tr, req)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want := s.method + " / " + s.body
		if got := a.header.Get("X-Conn"); got != s.wantConn || a.body != want {
			t.Errorf("%s: answered on connection %s with %q, want connection %s with %q", s.name, got, a.body, s.wantConn, want)
		}
	}
	if got := attempts(cache, b.addr); got != 2 {
		t.Errorf("Attempts = %d, want 2 (one connection per path)", got)
	}

	tr.CloseIdleConnections()
	var ended []int
	for range 2 {
		e := recv(t, b.ended, "the backend to see an idle connection closed")
		if !errors.Is(e.err, io.EOF) {
			t.Errorf("connection %d ended with %v, want EOF", e.n, e.err)
		}
		ended = append(ended, e.n)
	}
	slices.Sort(ended)
	if !slices.Equal(ended, []int{1, 2}) {
		t.Errorf("connections %v closed, want [1 2]", ended)
	}
}

func TestFastH1Concurrent(t *testing.T) {
	const workers, perWorker = 8, 50
	b := newHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	cache := newCache(t)
	tr := transport(t, cache, upstream.Settings{})
	ctx := testContext(t)

	reqs := make([][]*http.Request, workers)
	for w := range reqs {
		for i := range perWorker {
			reqs[w] = append(reqs[w], proxyRequest(t, ctx, http.MethodGet, b.addr, fmt.Sprintf("/w%d/r%d", w, i), nil))
		}
	}
	var wg sync.WaitGroup
	for _, mine := range reqs {
		wg.Go(func() {
			for _, req := range mine {
				path := req.URL.Path
				a, err := fetch(tr, req)
				if err != nil {
					t.Errorf("%s: %v", path, err)
					return
				}
				if a.status != http.StatusOK || a.body != path {
					t.Errorf("%s: got %d %q, want 200 %q", path, a.status, a.body, path)
				}
			}
		})
	}
	wg.Wait()
	// A worker holds at most one connection and returns it before its next
	// request, so a new connection is opened only when the other workers
	// hold all the existing ones.
	conns := b.newConns.Load()
	if conns < 1 || conns > workers {
		t.Errorf("backend accepted %d connections, want 1 to %d", conns, workers)
	}
	if got := attempts(cache, b.addr); got != uint64(conns) {
		t.Errorf("Attempts = %d, want %d (the connections the backend accepted)", got, conns)
	}
}

// proxyRequest builds a request shaped like the proxy's outbound ones:
// scheme http, the backend's address as URL.Host, no RequestURI, and an
// empty User-Agent so that none is added.
func proxyRequest(t *testing.T, ctx context.Context, method, addr, target string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+target, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil && req.ContentLength == 0 {
		req.ContentLength = -1
	}
	req.Header["User-Agent"] = []string{""}
	return req
}

// answer is a response read to its end.
type answer struct {
	status int
	header http.Header
	body   string
}

// fetch sends req through tr, reads the body to EOF and closes it.
func fetch(tr http.RoundTripper, req *http.Request) (answer, error) {
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body)}, nil
}

// testContext returns a context that ends with the test or after 10s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newCacheWith returns a cache built with opts whose idle connections are
// closed when the test ends.
func newCacheWith(t *testing.T, opts upstream.Options) *upstream.Cache {
	t.Helper()
	c := upstream.NewCache(opts)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// attempts returns the connections the cache's transports started to addr.
func attempts(c *upstream.Cache, addr string) uint64 {
	return c.Dials().For(addr).Attempts.Load()
}

// recv returns the next value from ch, failing the test after 10s.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// httpBackend is a net/http server on loopback that counts the connections
// it accepts.
type httpBackend struct {
	addr     string
	newConns atomic.Int64
}

func newHTTPBackend(t *testing.T, h http.Handler) *httpBackend {
	t.Helper()
	b := &httpBackend{}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.newConns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

// rawBackend is a TCP listener on loopback whose connections are each
// served by a script, on a goroutine of their own, that reads requests and
// writes hand-made bytes.
type rawBackend struct {
	t    *testing.T
	addr string
	// done is closed when the test ends; a script that waits for anything
	// but its connection also waits for it.
	done chan struct{}
	// ended receives a connection's number, and the error, when a script's
	// read of the next request fails: the client closed the connection.
	ended    chan connEnd
	accepted atomic.Int64

	// mu guards conns and closed.
	mu     sync.Mutex
	conns  []net.Conn // accepted, to close when the test ends
	closed bool

	wg sync.WaitGroup // the accept loop and the scripts
}

// connEnd says that a raw backend's connection n ended with err.
type connEnd struct {
	n   int
	err error
}

// rawConn is one connection of a raw backend.
type rawConn struct {
	net.Conn
	n  int // 1 for the first connection accepted
	br *bufio.Reader
	b  *rawBackend
}

// newRawBackend starts a raw backend serving each connection with script;
// the connection is closed when script returns. When the test ends the
// listener and every connection are closed, and the scripts waited for.
func newRawBackend(t *testing.T, script func(c *rawConn)) *rawBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{t: t, addr: lis.Addr().String(), done: make(chan struct{}), ended: make(chan connEnd, 16)}
	b.wg.Go(func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			if b.closed {
				b.mu.Unlock()
				nc.Close()
				return
			}
			b.conns = append(b.conns, nc)
			b.mu.Unlock()
			c := &rawConn{Conn: nc, n: int(b.accepted.Add(1)), br: bufio.NewReader(nc), b: b}
			b.wg.Go(func() {
				defer nc.Close()
				script(c)
			})
		}
	})
	t.Cleanup(func() {
		close(b.done)
		lis.Close()
		b.mu.Lock()
		b.closed = true
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// next reads the next request and its body. When that fails it reports the
// end of the connection on b.ended and returns false.
func (c *rawConn) next() (*http.Request, string, bool) {
	req, err := http.ReadRequest(c.br)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(req.Body)
		if err == nil {
			return req, string(body), true
		}
	}
	select {
	case c.b.ended <- connEnd{n: c.n, err: err}:
	case <-c.b.done:
	}
	return nil, "", false
}

// write sends s; a failure shows in the test's client-side checks.
func (c *rawConn) write(s string) { _, _ = io.WriteString(c.Conn, s) }

// serveKeepAlive answers every request on c with okResponse, echoing the
// method, the request target and the body.
func (c *rawConn) serveKeepAlive() {
	for {
		req, body, ok := c.next()
		if !ok {
			return
		}
		c.write(okResponse(c.n, req.Method+" "+req.RequestURI+" "+body))
	}
}

// okResponse is a keep-alive 200 with body, naming connection n.
func okResponse(n int, body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: %d\r\n\r\n%s", len(body), n, body)
}

// TestFastH1SlowBackend: an exchange starts watching the client only after
// clientCheckAfter (shortened here); a backend slower than that is still
// answered in full on the same connection, whether its head comes late or
// in two parts with a pause between, and a client that leaves after the
// watch started ends the wait at once.
func TestFastH1SlowBackend(t *testing.T) {
	defer upstream.SetClientCheckAfter(30 * time.Millisecond)()
	const pause = 150 * time.Millisecond
	tests := []struct {
		name   string
		answer func(c *rawConn)
		cancel bool // the client leaves while the backend pauses
	}{
		{name: "late head", answer: func(c *rawConn) {
			time.Sleep(pause)
			c.write(okResponse(c.n, "late"))
		}},
		{name: "head in two parts", answer: func(c *rawConn) {
			c.write("HTTP/1.1 200 OK\r\nContent-")
			time.Sleep(pause)
			c.write("Length: 4\r\nX-Conn: 1\r\n\r\nlate")
		}},
		{name: "client leaves during the pause", cancel: true, answer: func(c *rawConn) {
			time.Sleep(pause)
			c.write(okResponse(c.n, "late"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newRawBackend(t, func(c *rawConn) {
				for i := 0; ; i++ {
					if _, _, ok := c.next(); !ok {
						return
					}
					if c.n == 1 && i == 0 {
						tt.answer(c)
						continue
					}
					c.write(okResponse(c.n, "next"))
				}
			})
			cache := newCache(t)
			tr := transport(t, cache, upstream.Settings{})
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			if tt.cancel {
				time.AfterFunc(pause/2, cancel)
			}
			start := time.Now()
			a, err := fetch(tr, proxyRequest(t, ctx, http.MethodGet, b.addr, "/slow", nil))
			if tt.cancel {
				if err == nil {
					t.Fatalf("got %d %q after the client left, want an error", a.status, a.body)
				}
				if d := time.Since(start); d >= pause {
					t.Errorf("returned %v after the start, want before the backend answered (%v)", d, pause)
				}
				return
			}
			if err != nil || a.status != http.StatusOK || a.body != "late" {
				t.Fatalf("got %d %q, %v; want 200 %q", a.status, a.body, err, "late")
			}
			next, err := fetch(tr, proxyRequest(t, testContext(t), http.MethodGet, b.addr, "/next", nil))
			if err != nil || next.header.Get("X-Conn") != "1" || next.body != "next" {
				t.Fatalf("next request: connection %s, %q, %v; want connection 1 reused", next.header.Get("X-Conn"), next.body, err)
			}
		})
	}
}
