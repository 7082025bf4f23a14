package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startH1(t *testing.T) (addr string, s *h1Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s = newH1Server(map[string][]byte{"/small": body(64), "/large": body(64 << 10)})
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { _ = l.Close(); <-done; s.Close() })
	return l.Addr().String(), s
}

// exchange writes raw to a new connection and reads want responses; the
// last is read as the answer to a HEAD request when lastHead is set.
func exchange(t *testing.T, addr, raw string, want int, lastHead bool) []*http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for len(out) < want {
		var req *http.Request
		if lastHead && len(out) == want-1 {
			req = &http.Request{Method: http.MethodHead}
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("response %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", len(out)+1, err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		resp.ContentLength = int64(len(b))
		out = append(out, resp)
	}
	return out
}

func TestH1KeepAlivePipelinedBodies(t *testing.T) {
	addr, s := startH1(t)
	raw := "GET /small HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /large?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"PUT /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: v\r\n\r\n" +
		"GET http://x/nope HTTP/1.1\r\nHost: x\r\n\r\n" +
		"HEAD /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	got := exchange(t, addr, raw, 5, true)
	wantStatus := []int{200, 200, 200, 404, 200}
	wantLen := []int64{64, 64 << 10, 64, 10, 0}
	for i, r := range got {
		if r.StatusCode != wantStatus[i] || r.ContentLength != wantLen[i] {
			t.Errorf("response %d: status %d, %d body bytes; want %d, %d", i+1, r.StatusCode, r.ContentLength, wantStatus[i], wantLen[i])
		}
	}
	if !got[4].Close {
		t.Errorf("response to Connection: close does not close")
	}
	if n := s.Requests.Load(); n != 5 {
		t.Errorf("Requests = %d, want 5", n)
	}
}

func TestH1RefusesMalformed(t *testing.T) {
	addr, _ := startH1(t)
	for _, raw := range []string{
		"GARBAGE\r\n\r\n",
		"GET /small HTTP/2.0\r\n\r\n",
		"GET /small HTTP/1.1\r\nno colon\r\n\r\n",
		"GET /small HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"GET /small HTTP/1.1\r\nX: " + strings.Repeat("a", maxHead) + "\r\n\r\n",
		"GET /a\nb HTTP/1.1\r\n\r\n",
	} {
		got := exchange(t, addr, raw, 1, false)
		if got[0].StatusCode/100 != 4 || !got[0].Close {
			t.Errorf("%.40q: status %d close %v, want 4xx and close", raw, got[0].StatusCode, got[0].Close)
		}
	}
}

func TestH1ServesNetHTTPClient(t *testing.T) {
	addr, s := startH1(t)
	client := &http.Client{Timeout: 5 * time.Second}
	for range 3 {
		resp, err := client.Get("http://" + addr + "/large")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || len(b) != 64<<10 {
			t.Fatalf("GET /large: %d bytes, %v", len(b), err)
		}
	}
	if n := s.Conns.Load(); n != 1 {
		t.Errorf("3 requests used %d connections, want 1 (keep-alive)", n)
	}
}

// TestH1FastPath checks that the common request is answered from the
// socket, one at a time with pauses between (the connection waits between
// them) and pipelined, and that a request with a body on the same
// connection goes on to the bufio loop, answered in order.
func TestH1FastPath(t *testing.T) {
	addr, s := startH1(t)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	read := func(method string, wantLen int) {
		t.Helper()
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || len(b) != wantLen {
			t.Fatalf("status %d, %d body bytes, %v; want 200, %d", resp.StatusCode, len(b), err, wantLen)
		}
	}
	for range 3 {
		time.Sleep(20 * time.Millisecond)
		if _, err := io.WriteString(c, "GET /small?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		read(http.MethodGet, 64)
	}
	if _, err := io.WriteString(c, "GET /large HTTP/1.1\r\nHost: x\r\n\r\nHEAD /small HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /small HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	read(http.MethodGet, 64<<10)
	read(http.MethodHead, 0)
	read(http.MethodPost, 64)
	read(http.MethodGet, 64)
	if n, fast := s.Requests.Load(), s.fastRequests.Load(); n != 7 || fast != 5 {
		t.Errorf("%d requests answered, %d from the socket; want 7 and 5 (not the POST nor the GET after it)", n, fast)
	}
}

// TestH1BareLFAndPipelinedLarge checks heads with bare LF line ends (the
// bufio loop's to answer; the fast path must not wait for a CRLF CRLF that
// never comes) and a pipelined batch of large answers.
func TestH1BareLFAndPipelinedLarge(t *testing.T) {
	addr, _ := startH1(t)
	for _, raw := range []string{
		"GET /small HTTP/1.1\nHost: x\n\r\n",
		"GET /small HTTP/1.1\r\nHost: x\n\n",
	} {
		if got := exchange(t, addr, raw, 1, false); got[0].StatusCode != http.StatusOK || got[0].ContentLength != 64 {
			t.Errorf("%q: status %d, %d body bytes; want 200, 64", raw, got[0].StatusCode, got[0].ContentLength)
		}
	}
	got := exchange(t, addr, strings.Repeat("GET /large HTTP/1.1\r\nHost: x\r\n\r\n", 20)+"GET /small HTTP/1.1\r\nHost: x\r\n\r\n", 21, false)
	for i, r := range got {
		want := int64(64 << 10)
		if i == 20 {
			want = 64
		}
		if r.StatusCode != http.StatusOK || r.ContentLength != want {
			t.Errorf("response %d: status %d, %d body bytes; want 200, %d", i+1, r.StatusCode, r.ContentLength, want)
		}
	}
}
