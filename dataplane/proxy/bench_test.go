package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/proxy"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/upstream"
)

var benchPayload = []byte("hello from the backend\n")

// benchBackend answers every request with benchPayload and a Content-Length.
func benchBackend(b *testing.B) *httptest.Server {
	return newBackend(b, func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{"23"}
		_, _ = w.Write(benchPayload)
	})
}

// discardWriter is a minimal http.ResponseWriter and http.Flusher that keeps
// the status and drops the body.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) Flush() {}

// BenchmarkProxyHandler measures Handler.ServeHTTP alone (one reused request,
// a discarding writer) against a real loopback backend over a kept-alive
// upstream connection: the allocations are the proxy's and its transport's.
//
// The "dataplane" case uses the data plane's own transports (package
// upstream: the single-goroutine HTTP/1.1 path for requests without a body);
// "net/http" uses a plain http.Transport.
func BenchmarkProxyHandler(b *testing.B) {
	b.Run("dataplane", func(b *testing.B) {
		cache := upstream.NewCache(upstream.Options{})
		b.Cleanup(cache.CloseIdleConnections)
		benchProxyHandler(b, nil, cache)
	})
	b.Run("net/http", func(b *testing.B) {
		tr := proxy.NewTransport()
		b.Cleanup(tr.CloseIdleConnections)
		benchProxyHandler(b, tr, nil)
	})
}

func benchProxyHandler(b *testing.B, tr http.RoundTripper, tp routing.TransportSource) {
	backend := benchBackend(b)
	cur := &routing.Current{}
	tab, err := routing.Build(nil, routing.Config{Version: 1, Pools: []routing.PoolConfig{
		poolOf("web", []string{"bench.example.com"}, "", backendAddr(backend)),
	}}, tp)
	if err != nil {
		b.Fatal(err)
	}
	cur.Store(tab)
	h := proxy.New(proxy.Config{Table: cur, Transport: tr})

	req := httptest.NewRequest(http.MethodGet, "http://bench.example.com/api/items?page=2", nil)
	req = req.WithContext(context.Background())
	req.RemoteAddr = "192.0.2.10:54321"
	req.Header["User-Agent"] = []string{"bench/1"}
	req.Header["Accept"] = []string{"*/*"}
	body := req.Body
	w := &discardWriter{h: make(http.Header)}

	b.ReportAllocs()
	for b.Loop() {
		// Undo what the handler did to the request and the writer.
		req.Body = body
		req.RequestURI = "/api/items?page=2"
		delete(req.Header, "X-Forwarded-For")
		delete(req.Header, "X-Forwarded-Proto")
		delete(req.Header, "X-Forwarded-Host")
		clear(w.h)
		w.status, w.n = 0, 0

		h.ServeHTTP(w, req)
		if w.status != http.StatusOK || w.n != len(benchPayload) {
			b.Fatalf("status %d, %d body bytes", w.status, w.n)
		}
	}
}

// BenchmarkProxyEndToEnd measures a whole exchange: a keep-alive client, the
// proxy in an HTTP server (of each kind), and a backend, all on loopback.
// Allocations count all three.
func BenchmarkProxyEndToEnd(b *testing.B) {
	run := func(b *testing.B, kind serverKind, parallel bool) {
		e := newProxyEnv(b, kind)
		e.store(b, poolOf("web", nil, "", backendAddr(benchBackend(b))))
		url := e.url + "/api/items?page=2"
		ctx := context.Background()
		do := func(b *testing.B) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				b.Error(err)
				return
			}
			resp, err := e.client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(benchPayload)) {
				b.Errorf("status %d, %d body bytes, err %v", resp.StatusCode, n, err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		if parallel {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					do(b)
				}
			})
			return
		}
		for range b.N {
			do(b)
		}
	}
	for _, kind := range serverKinds {
		b.Run(kind.String(), func(b *testing.B) {
			b.Run("serial", func(b *testing.B) { run(b, kind, false) })
			b.Run("parallel", func(b *testing.B) { run(b, kind, true) })
		})
	}
}

// BenchmarkUpstreamRoundTripBaseline is BenchmarkProxyHandler's exchange
// without the proxy: the same transport and backend, the response body read
// to the end. The difference between the two is the handler's own cost (the
// in-process backend's allocations count in both).
func BenchmarkUpstreamRoundTripBaseline(b *testing.B) {
	backend := benchBackend(b)
	tr := proxy.NewTransport()
	b.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+backendAddr(backend)+"/api/items?page=2", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Host = "bench.example.com"
	req.Header["User-Agent"] = []string{"bench/1"}
	req.Header["Accept"] = []string{"*/*"}
	buf := make([]byte, 512)

	b.ReportAllocs()
	for b.Loop() {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := resp.Body.Read(buf)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n != len(benchPayload) {
			b.Fatalf("status %d, %d body bytes", resp.StatusCode, n)
		}
	}
}

// BenchmarkH1Server measures keep-alive GETs over one client connection
// through the proxy's own HTTP/1.1 server to a backend that answers at once.
// The client and the backend speak HTTP/1.1 on bare TCP without allocating,
// so the allocations reported are the proxy's and its upstream pool's. The
// "net/http" case is the same exchange through net/http's server, for
// comparison.
func BenchmarkH1Server(b *testing.B) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 23\r\n\r\n" + string(benchPayload))
	for _, kind := range serverKinds {
		b.Run(kind.String(), func(b *testing.B) {
			backend := rawBackend(b, func(_ int, c net.Conn, br *bufio.Reader) {
				_ = c.SetDeadline(time.Time{})
				for {
					if err := skipHead(br); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			})
			e := newProxyEnv(b, kind)
			e.store(b, poolOf("web", []string{"bench.example.com"}, "", backend))
			conn, err := net.Dial("tcp", e.addr())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			req := []byte("GET /api/items?page=2 HTTP/1.1\r\nHost: bench.example.com\r\nUser-Agent: bench/1\r\nAccept: */*\r\n\r\n")
			br := bufio.NewReader(conn)

			b.ReportAllocs()
			for b.Loop() {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				n, err := readBenchResponse(br)
				if err != nil || n != len(benchPayload) {
					b.Fatalf("response: %d body bytes, %v", n, err)
				}
			}
			b.StopTimer()
			e.wantFallbacks(b, 0)
		})
	}
}

// skipHead reads past the next message head on br, without allocating.
func skipHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 && line[0] == '\r' {
			return nil
		}
	}
}

var (
	status200     = []byte("HTTP/1.1 200 ")
	contentLength = []byte("content-length:")
)

// readBenchResponse reads a 200 response with a Content-Length, without
// allocating, and returns its body's length.
func readBenchResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(line, status200) {
		return 0, io.ErrUnexpectedEOF
	}
	n := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) == 2 && line[0] == '\r' {
			break
		}
		if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
			n = 0
			for _, c := range bytes.TrimSpace(line[len(contentLength):]) {
				n = n*10 + int(c-'0')
			}
		}
	}
	if n < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	_, err = br.Discard(n)
	return n, err
}
