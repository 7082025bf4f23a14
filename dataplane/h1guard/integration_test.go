package h1guard

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type serverOpts struct {
	hook        func(*http.Request) // called for every accepted request
	rejectDelay time.Duration       // sleep before asking Rejected
}

type testServer struct {
	addr  string
	mu    sync.Mutex
	paths []string
}

// startServer serves the test handler on a guarded loopback listener until
// the test ends.
func startServer(t *testing.T, o serverOpts) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: l.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/.lb-h1guard-rejected") {
				time.Sleep(o.rejectDelay)
				if reason, ok := Rejected(r); ok {
					w.Header().Set("Connection", "close")
					http.Error(w, "bad request: "+reason, http.StatusBadRequest)
					return
				}
			}
			s.mu.Lock()
			s.paths = append(s.paths, r.URL.Path)
			s.mu.Unlock()
			if o.hook != nil {
				o.hook(r)
			}
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok "+r.URL.Path)
		}),
		ConnContext:       WithConn,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    MaxHeadBytes,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(Listener{Listener: l}) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func (s *testServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c
}

func (s *testServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...)
}

type response struct {
	status int
	header http.Header
	body   string
	close  bool // Connection: close (ReadResponse moves it to Response.Close)
}

// readResponses reads n responses from c, or, when n < 0, responses until
// the server closes the connection; it then checks that the connection is
// closed (n < 0) or still open (n >= 0).
func readResponses(t *testing.T, c net.Conn, n int) []response {
	t.Helper()
	br := bufio.NewReader(c)
	var out []response
	for n < 0 || len(out) < n {
		if n < 0 {
			if _, err := br.Peek(1); err == io.EOF {
				return out
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading response %d: %v (have %v)", len(out)+1, err, statuses(out))
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("reading response %d body: %v", len(out)+1, err)
		}
		out = append(out, response{resp.StatusCode, resp.Header, string(body), resp.Close})
	}
	// Still open: nothing more comes for a while, and no EOF.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if b, err := br.Peek(1); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("after %d responses %v: read %q, %v; want the connection to stay open and quiet", n, statuses(out), b, err)
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	return out
}

func statuses(rs []response) []int {
	var s []int
	for _, r := range rs {
		s = append(s, r.status)
	}
	return s
}

func firstBody(rs []response) string {
	if len(rs) == 0 {
		return ""
	}
	return rs[0].body
}

func TestServerRefusesSmuggling(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		reason  []string
		allowed []string // paths the handler may see
	}{
		{
			name: "CL then TE",
			in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
				"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
			reason: []string{"Content-Length", "Transfer-Encoding"},
		},
		{
			name: "TE then CL",
			in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n" +
				"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
			reason: []string{"Content-Length", "Transfer-Encoding"},
		},
		{
			name:   "obs-fold",
			in:     "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n Transfer-Encoding: chunked\r\n\r\n" + "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
			reason: []string{"obsolete line folding"},
		},
		{
			name:   "bare LF",
			in:     "GET / HTTP/1.1\nHost: a\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
			reason: []string{"bare LF"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			c := s.dial(t)
			defer c.Close()
			if _, err := c.Write([]byte(tt.in)); err != nil {
				t.Fatal(err)
			}
			resps := readResponses(t, c, -1)
			if len(resps) != 1 || resps[0].status != http.StatusBadRequest {
				t.Fatalf("responses %v; want exactly one 400", statuses(resps))
			}
			for _, r := range tt.reason {
				if !strings.Contains(resps[0].body, r) {
					t.Errorf("400 body %q does not mention %q", resps[0].body, r)
				}
			}
			if !resps[0].close {
				t.Errorf("400 without Connection: close: %v", resps[0].header)
			}
			if paths := s.seen(); len(paths) != 0 {
				t.Errorf("the handler saw %q", paths)
			}
		})
	}
}

// A request that arrives before a refused one in the pipeline is served.
func TestServerServesValidPrefix(t *testing.T) {
	s := startServer(t, serverOpts{})
	c := s.dial(t)
	defer c.Close()
	in := "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n" +
		"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	if _, err := c.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	resps := readResponses(t, c, -1)
	if got := statuses(resps); len(got) != 2 || got[0] != 200 || got[1] != 400 {
		t.Fatalf("responses %v; want [200 400]", got)
	}
	if paths := s.seen(); len(paths) != 1 || paths[0] != "/first" {
		t.Errorf("the handler saw %q; want [/first]", paths)
	}
}

// A client asking for "/.lb-h1guard-rejected" itself is routed like any request.
func TestServerRejectPathFromClient(t *testing.T) {
	s := startServer(t, serverOpts{})
	c := s.dial(t)
	defer c.Close()
	if _, err := c.Write([]byte("GET /.lb-h1guard-rejected HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resps := readResponses(t, c, 1)
	if resps[0].status != 200 || resps[0].body != "ok "+"/.lb-h1guard-rejected" {
		t.Fatalf("response %d %q; want 200", resps[0].status, resps[0].body)
	}
	if paths := s.seen(); len(paths) != 1 || paths[0] != "/.lb-h1guard-rejected" {
		t.Errorf("the handler saw %q", paths)
	}
}

func TestServerKeepAlivePipelined(t *testing.T) {
	s := startServer(t, serverOpts{})
	c := s.dial(t)
	defer c.Close()
	in := "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n" +
		"POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
	if _, err := c.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	resps := readResponses(t, c, 3)
	for i, r := range resps {
		if want := "ok /" + string(rune('1'+i)); r.status != 200 || r.body != want {
			t.Errorf("response %d: %d %q; want 200 %q", i+1, r.status, r.body, want)
		}
	}
	if got := strings.Join(s.seen(), ","); got != "/1,/2,/3" {
		t.Errorf("the handler saw %s", got)
	}
	// And the connection stays usable, also after a slow, split request.
	for _, part := range []string{"GET /4 HTTP/1.1\r\n", "Host: a\r", "\n", "\r\n"} {
		if _, err := c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r := readResponses(t, c, 1); r[0].status != 200 || r[0].body != "ok /4" {
		t.Errorf("response 4: %d %q", r[0].status, r[0].body)
	}
}

// A head over MaxHeadBytes that never ends is refused rather than waited on.
func TestServerHugeHead(t *testing.T) {
	s := startServer(t, serverOpts{})
	c := s.dial(t)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		// Exactly one byte too many: the guard refuses only once it has
		// read everything, so closing leaves no unread data (and no RST).
		head := "GET / HTTP/1.1\r\nHost: a\r\nX: "
		_, err := c.Write([]byte(head + repeat("a", MaxHeadBytes+1-len(head))))
		errc <- err
	}()
	resps := readResponses(t, c, -1)
	if len(resps) != 1 || resps[0].status != 400 || !strings.Contains(resps[0].body, "request head larger than") {
		t.Fatalf("responses %v %q; want one 400 about the head size", statuses(resps), firstBody(resps))
	}
	<-errc
}
