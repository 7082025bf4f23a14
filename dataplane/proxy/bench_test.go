package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

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
// proxy in an HTTP server, and a backend, all on loopback. Allocations count
// all three.
func BenchmarkProxyEndToEnd(b *testing.B) {
	run := func(b *testing.B, parallel bool) {
		e := newProxyEnv(b, nil)
		e.store(b, poolOf("web", nil, "", backendAddr(benchBackend(b))))
		url := e.server.URL + "/api/items?page=2"
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
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
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
