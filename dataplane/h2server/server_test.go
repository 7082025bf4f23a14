package h2server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/lb-project/lb/dataplane/h2server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRoundTrips drives requests through Go's HTTP/2 client and checks
// status, headers, body and trailers exactly.
func TestRoundTrips(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		body        string
		header      http.Header
		handler     http.HandlerFunc
		wantStatus  int
		wantBody    string
		wantHeader  map[string]string
		wantTrailer map[string]string
	}{
		{
			name: "small GET",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			},
			wantStatus: 200, wantBody: "hello",
			wantHeader: map[string]string{"Content-Type": "text/plain", "Content-Length": "5"},
		},
		{
			name:   "request seen by the handler",
			header: http.Header{"X-Custom": {"a"}, "Cookie": {"a=1", "b=2"}},
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s %s %s %s host=%s cookie=%q custom=%s tls=%v", r.Method, r.URL.Path, r.URL.RawQuery, r.Proto,
					r.Host, r.Header.Get("Cookie"), r.Header.Get("X-Custom"), r.TLS != nil)
			},
			wantStatus: 200, wantBody: `GET /p q=1 HTTP/2.0 host=example.test cookie="a=1; b=2" custom=a tls=false`,
		},
		{
			name: "no body ends with the headers", handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-A", "1")
				w.WriteHeader(http.StatusAccepted)
			},
			wantStatus: 202, wantHeader: map[string]string{"X-A": "1"},
		},
		{
			name: "204 drops Content-Length", handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "0")
				w.WriteHeader(http.StatusNoContent)
			},
			wantStatus: 204, wantHeader: map[string]string{"Content-Length": ""},
		},
		{
			name: "HEAD sends no body", method: http.MethodHead, handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			},
			wantStatus: 200, wantHeader: map[string]string{"Content-Length": "5"},
		},
		{
			name: "connection-specific fields are dropped", handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close")
				w.Header().Set("Keep-Alive", "timeout=5")
				w.Header().Set("Transfer-Encoding", "chunked")
				io.WriteString(w, "x")
			},
			wantStatus: 200, wantBody: "x", wantHeader: map[string]string{"Connection": "", "Keep-Alive": "", "Transfer-Encoding": ""},
		},
		{
			name: "declared trailers", handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "Grpc-Status")
				w.WriteHeader(200)
				io.WriteString(w, "body")
				w.Header().Set("Grpc-Status", "0")
			},
			wantStatus: 200, wantBody: "body", wantTrailer: map[string]string{"Grpc-Status": "0"},
		},
		{
			name: "trailers set with TrailerPrefix after a flush", handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				io.WriteString(w, "streamed")
				w.Header().Set(http.TrailerPrefix+"Grpc-Message", "done")
			},
			wantStatus: 200, wantBody: "streamed", wantTrailer: map[string]string{"Grpc-Message": "done"},
		},
		{
			name: "trailers after a body of declared length", handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "4")
				io.WriteString(w, "body")
				w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			},
			wantStatus: 200, wantBody: "body", wantTrailer: map[string]string{"Grpc-Status": "0"},
		},
		{
			name: "a header block over the frame size goes out in CONTINUATION frames", handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Big", strings.Repeat("v", 40<<10))
				io.WriteString(w, "x")
			},
			wantStatus: 200, wantBody: "x", wantHeader: map[string]string{"X-Big": strings.Repeat("v", 40<<10)},
		},
		{
			name: "request body and its length", method: http.MethodPost, body: strings.Repeat("b", 1000),
			handler: func(w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				fmt.Fprintf(w, "cl=%d read=%d err=%v", r.ContentLength, n, err)
			},
			wantStatus: 200, wantBody: "cl=1000 read=1000 err=<nil>",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := serve(t, tt.handler)
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, err := http.NewRequest(method, ts.url("/p?q=1"), body)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "example.test"
			for k, vv := range tt.header {
				req.Header[k] = vv
			}
			resp, err := ts.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != tt.wantStatus || string(got) != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, got, tt.wantStatus, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if g := resp.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			for k, v := range tt.wantTrailer {
				if g := resp.Trailer.Get(k); g != v {
					t.Errorf("trailer %s = %q, want %q (trailers %v)", k, g, v, resp.Trailer)
				}
			}
		})
	}
}

// TestLargeBodiesBothWays echoes bodies several times the flow-control
// windows (ours and Go's client's), so both directions must wait for
// WINDOW_UPDATE frames, on many streams at once.
func TestLargeBodiesBothWays(t *testing.T) {
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})
	c := ts.client(t)
	const streams = 8
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := bytes.Repeat([]byte{byte('a' + i)}, 3<<20+i)
			resp, err := c.Post(ts.url("/echo"), "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- err
				return
			}
			if sha256.Sum256(got) != sha256.Sum256(payload) {
				errs <- fmt.Errorf("stream %d: echoed %d bytes, sent %d", i, len(got), len(payload))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestConcurrentStreams sends 200 requests at once over one connection.
// (Go's client with StrictMaxConcurrentStreams deadlocks itself when more
// callers than the stream limit start at once, so the limit itself is
// left to h2spec and TestRapidReset.)
func TestConcurrentStreams(t *testing.T) {
	var running, peak atomic.Int32
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		running.Add(-1)
		io.WriteString(w, r.URL.Path)
	})
	c := ts.client(t)
	const n = 200
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/r%d", i)
			resp, err := c.Get(ts.url(path))
			if err != nil {
				t.Error(err)
				bad.Add(1)
				return
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != path {
				t.Errorf("got %q for %s", got, path)
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d requests failed", bad.Load(), n)
	}
	if p := peak.Load(); p > n || p < 2 {
		t.Fatalf("peak concurrent handlers %d, want 2..%d", p, n)
	}
}

// TestClientCancel: a client resetting its stream cancels the handler's
// context, and the connection serves the next request.
func TestClientCancel(t *testing.T) {
	canceled := make(chan struct{})
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			io.WriteString(w, "ok")
			return
		}
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(10 * time.Second):
		}
	})
	c := ts.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.url("/wait"), nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not canceled")
	}
	resp, err = c.Get(ts.url("/ok"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "ok" {
		t.Fatalf("got %q after a reset stream", got)
	}
}

// TestBrokenResponses: a handler that panics, or writes less than its
// Content-Length, gets its stream reset (the client sees an error, not a
// short body), and the connection lives on.
func TestBrokenResponses(t *testing.T) {
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			w.WriteHeader(200)
			io.WriteString(w, "part")
			panic(http.ErrAbortHandler)
		case "/short":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "short")
		case "/long":
			w.Header().Set("Content-Length", "2")
			if _, err := io.WriteString(w, "toolong"); !errors.Is(err, http.ErrContentLength) {
				panic(fmt.Sprintf("Write past Content-Length: %v", err))
			}
			io.WriteString(w, "ok")
		default:
			io.WriteString(w, "fine")
		}
	})
	c := ts.client(t)
	for _, path := range []string{"/panic", "/short"} {
		resp, err := c.Get(ts.url(path))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Errorf("%s: read a whole response, want a stream error", path)
		}
	}
	for path, want := range map[string]string{"/long": "ok", "/": "fine"} {
		resp, err := c.Get(ts.url(path))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != want {
			t.Errorf("%s: got %q, %v; want %q", path, got, err, want)
		}
	}
}

// TestShutdown: a request in flight finishes, the client gets GOAWAY, and
// Shutdown returns once the connection is closed.
func TestShutdown(t *testing.T) {
	srv, ts, started, release := heldServer(t)
	c := ts.client(t)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get(ts.url("/"))
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if r := <-done; r.err != nil || r.body != "finished" {
		t.Fatalf("request in flight: %q, %v", r.body, r.err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last request")
	}
}

// rawConn is a hand-driven HTTP/2 client connection for what Go's client
// will not do.
type rawConn struct {
	t   testing.TB
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialRaw(t testing.TB, addr string, settings ...http2.Setting) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawConn{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.buf)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return rc
}

// request opens stream id with a GET for path.
func (rc *rawConn) request(id uint32, path string, end bool) {
	rc.t.Helper()
	rc.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.buf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
}

// next reads frames until one passes keep (settings, pings and window
// updates not asked for are skipped by keep returning false).
func (rc *rawConn) next(keep func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("read frame: %v", err)
		}
		if keep(f) {
			return f
		}
	}
}

// TestSendWindowRespected: with a 100-byte stream window the server sends
// 100 bytes of a 250-byte body, then exactly what each WINDOW_UPDATE
// grants.
func TestSendWindowRespected(t *testing.T) {
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 250))
	})
	rc := dialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	rc.request(1, "/", true)
	isData := func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }
	var got []int
	readUntil := func(total int) {
		sum := 0
		for _, n := range got {
			sum += n
		}
		for sum < total {
			f := rc.next(isData).(*http2.DataFrame)
			got = append(got, len(f.Data()))
			sum += len(f.Data())
		}
	}
	readUntil(100)
	// Nothing more may come until the window grows: a PING's answer
	// arrives before any further DATA.
	rc.fr.WritePing(false, [8]byte{1})
	f := rc.next(func(f http2.Frame) bool {
		_, ping := f.(*http2.PingFrame)
		return ping || isData(f)
	})
	if _, ok := f.(*http2.PingFrame); !ok {
		t.Fatalf("got %v beyond the stream window", f.Header())
	}
	rc.fr.WriteWindowUpdate(1, 50)
	readUntil(150)
	rc.fr.WriteWindowUpdate(1, 1000)
	readUntil(250)
	if fmt.Sprint(got) != "[100 50 100]" {
		t.Fatalf("DATA frame sizes %v, want [100 50 100]", got)
	}
	f = rc.next(isData)
	if !f.Header().Flags.Has(http2.FlagDataEndStream) || len(f.(*http2.DataFrame).Data()) != 0 {
		t.Fatalf("want an empty DATA frame ending the stream, got %v", f.Header())
	}
}

// TestRapidReset: a client opening streams and resetting them at once
// cannot run more handlers than the stream limit; the server refuses the
// streams beyond it, then closes the connection with ENHANCE_YOUR_CALM.
func TestRapidReset(t *testing.T) {
	const limit = 10
	var running, peak atomic.Int32
	release := make(chan struct{})
	srv := &h2server.Server{MaxConcurrentStreams: limit, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release // a handler slow to notice its context
	})}
	ts := startServer(t, srv)
	defer close(release)
	rc := dialRaw(t, ts.addr)
	var refused, goaway int
	var code http2.ErrCode
	for i := range 200 {
		id := uint32(2*i + 1)
		rc.request(id, "/", true)
		if err := rc.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break // the server closed the connection
		}
	}
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream {
				refused++
			}
		case *http2.GoAwayFrame:
			goaway++
			code = f.ErrCode
		}
	}
	if p := peak.Load(); p != limit {
		t.Errorf("peak running handlers %d, want %d", p, limit)
	}
	if refused != 4*limit || goaway != 1 || code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("refused %d streams and sent %d GOAWAY (%v); want %d refused, then GOAWAY ENHANCE_YOUR_CALM", refused, goaway, code, 4*limit)
	}
}

// TestIdleTimeout: a connection with no stream for IdleTimeout gets GOAWAY
// (no error) naming the last stream served, then is closed.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, &h2server.Server{IdleTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
	})})
	rc := dialRaw(t, ts.addr)
	rc.request(1, "/", true)
	start := time.Now()
	f := rc.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if f.ErrCode != http2.ErrCodeNo || f.LastStreamID != 1 {
		t.Fatalf("GOAWAY %v last stream %d, want NO_ERROR and 1", f.ErrCode, f.LastStreamID)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatalf("GOAWAY after %v, before the idle timeout", time.Since(start))
	}
	if _, err := io.Copy(io.Discard, rc.nc); err != nil {
		t.Fatalf("connection not closed cleanly after GOAWAY: %v", err)
	}
}

// TestH2Spec runs h2spec, the HTTP/2 conformance suite, in strict mode.
// scripts/test.sh installs it; the test is skipped where it is not found.
func TestH2Spec(t *testing.T) {
	bin := os.Getenv("H2SPEC")
	if bin == "" {
		if p, err := exec.LookPath("h2spec"); err == nil {
			bin = p
		} else if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			bin = filepath.Join(strings.TrimSpace(string(out)), "bin", "h2spec")
		}
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("H2SPEC") != "" {
			t.Fatalf("H2SPEC=%s: %v", bin, err)
		}
		t.Skip("h2spec not installed (scripts/test.sh installs it)")
	}
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello")
	})
	_, port, _ := net.SplitHostPort(ts.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", port, "--strict", "-o", "3").CombinedOutput()
	tail := string(out)
	if i := strings.LastIndex(tail, "Finished in"); i >= 0 {
		tail = tail[i:]
	}
	if err != nil || !strings.Contains(tail, " 0 failed") {
		t.Fatalf("h2spec: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(tail))
}

// TestFramesCrossingOurReset: a handler answers before the request body
// ends, so the server resets the stream (NO_ERROR); the client's DATA and
// trailers already on the way are ignored, not taken for a protocol error
// that would end every stream on the connection.
func TestFramesCrossingOurReset(t *testing.T) {
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	rc := dialRaw(t, ts.addr)
	rc.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	f := rc.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if f.StreamID != 1 || f.ErrCode != http2.ErrCodeNo {
		t.Fatalf("got RST_STREAM %d %v, want stream 1 NO_ERROR", f.StreamID, f.ErrCode)
	}
	rc.fr.WriteData(1, false, []byte("late data"))
	rc.buf.Reset()
	rc.enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "1"})
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.buf.Bytes(), EndStream: true, EndHeaders: true})
	rc.request(3, "/", true)
	got := rc.next(func(f http2.Frame) bool {
		switch f.(type) {
		case *http2.GoAwayFrame, *http2.RSTStreamFrame:
			return true
		case *http2.MetaHeadersFrame:
			return f.Header().StreamID == 3
		}
		return false
	})
	mh, ok := got.(*http2.MetaHeadersFrame)
	if !ok || mh.PseudoValue("status") != "404" {
		t.Fatalf("after frames crossing the reset: got %v, want stream 3's 404", got.Header())
	}
}

// TestShutdownWithStuckClient: a client that stops reading while a
// handler writes must not keep Shutdown past its context.
func TestShutdownWithStuckClient(t *testing.T) {
	writing := make(chan struct{})
	srv := &h2server.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(writing)
		_ = flood(w)
	})}
	ts := startServer(t, srv)
	dialStuck(t, ts.addr)
	<-writing
	time.Sleep(200 * time.Millisecond) // let the buffers fill; the client reads nothing
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want the context's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown blocked past its context")
	}
}

// TestShutdownBeforeHandshake: a connection Shutdown catches before its
// preface gets SETTINGS, then GOAWAY, and is closed.
func TestShutdownBeforeHandshake(t *testing.T) {
	srv := &h2server.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	ts := startServer(t, srv)
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	time.Sleep(100 * time.Millisecond) // accepted, waiting for the preface
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	time.Sleep(100 * time.Millisecond)
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(nc, http2.ClientPreface)
	fr := http2.NewFramer(nc, nc)
	fr.WriteSettings()
	var types []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after %v: %v, want the connection closed", types, err)
			}
			break
		}
		if f.Header().Type != http2.FrameWindowUpdate {
			types = append(types, f.Header().Type.String())
		}
	}
	if got := strings.Join(types, ","); got != "SETTINGS,SETTINGS,GOAWAY" && got != "SETTINGS,GOAWAY,SETTINGS" {
		t.Fatalf("frames %s, want our SETTINGS, the ACK of the client's and GOAWAY", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestStuckClientResetsStream: a client that stops reading while a
// handler writes can still reset the stream: the handler's context ends
// and its Write returns, although nothing it wrote was taken.
func TestStuckClientResetsStream(t *testing.T) {
	writeErr := make(chan error, 1)
	canceled := make(chan struct{})
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		writeErr <- flood(w)
		<-r.Context().Done()
		close(canceled)
	})
	rc := dialStuck(t, ts.addr)
	time.Sleep(300 * time.Millisecond) // buffers fill; the client reads nothing
	if err := rc.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-writeErr:
		if err == nil {
			t.Fatal("Write succeeded on a reset stream")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's Write still blocked after RST_STREAM")
	}
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not canceled after RST_STREAM")
	}
}

// TestWriteAfterResponse: a Write from a goroutine the handler left
// behind, after the response ended, fails instead of sending DATA on a
// closed stream.
func TestWriteAfterResponse(t *testing.T) {
	type handed struct {
		w   http.ResponseWriter
		ctx context.Context
	}
	leftover := make(chan handed, 1)
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "done")
		leftover <- handed{w, r.Context()}
	})
	resp, err := ts.client(t).Get(ts.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != "done" {
		t.Fatalf("got %q, %v", got, err)
	}
	h := <-leftover
	<-h.ctx.Done() // the server is done with the stream
	if n, err := h.w.Write([]byte("late")); err == nil {
		t.Fatalf("Write after the response ended: %d, nil; want an error", n)
	}
}

// TestStartAfterShutdown: Start refuses a connection once Shutdown has
// begun, leaving it to the caller.
func TestStartAfterShutdown(t *testing.T) {
	srv := &h2server.Server{Handler: http.NotFoundHandler()}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if srv.Start(context.Background(), a, nil) {
		t.Fatal("Start took a connection after Shutdown")
	}
}

// TestFramesAfterGoAway: streams a client opens after our GOAWAY (which
// it had not read yet) are ignored, their DATA included, while the stream
// in flight completes.
func TestFramesAfterGoAway(t *testing.T) {
	srv, ts, started, release := heldServer(t)
	rc := dialRaw(t, ts.addr)
	rc.request(1, "/", true)
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	ga := rc.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if ga.LastStreamID != 1 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY last stream %d %v, want 1 NO_ERROR", ga.LastStreamID, ga.ErrCode)
	}
	rc.request(3, "/", false) // sent as if the GOAWAY had not arrived yet
	rc.fr.WriteData(3, true, []byte("body"))
	close(release)
	var frames []string
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			frames = append(frames, "GOAWAY "+f.ErrCode.String())
		case *http2.RSTStreamFrame:
			frames = append(frames, fmt.Sprintf("RST_STREAM %d %v", f.StreamID, f.ErrCode))
		case *http2.MetaHeadersFrame:
			frames = append(frames, fmt.Sprintf("HEADERS %d %s", f.StreamID, f.PseudoValue("status")))
		case *http2.DataFrame:
			frames = append(frames, fmt.Sprintf("DATA %d %q", f.StreamID, f.Data()))
		}
	}
	if got, want := strings.Join(frames, ", "), `HEADERS 1 200, DATA 1 "finished", DATA 1 ""`; got != want {
		t.Fatalf("after GOAWAY: %s; want %s", got, want)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// heldServer starts a server whose handler signals started, then answers
// "finished" once release is closed.
func heldServer(t *testing.T) (*h2server.Server, *testServer, <-chan struct{}, chan struct{}) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	srv := &h2server.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	})}
	return srv, startServer(t, srv), started, release
}

// flood writes 64 MiB, more than any socket buffer holds, and returns the
// first write error.
func flood(w http.ResponseWriter) error {
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for range 1024 {
		if _, err := w.Write(chunk); err != nil {
			return err
		}
	}
	return nil
}

// dialStuck opens a connection granting the largest windows and requests
// stream 1; the client then reads nothing.
func dialStuck(t *testing.T, addr string) *rawConn {
	rc := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rc.request(1, "/", true)
	return rc
}
