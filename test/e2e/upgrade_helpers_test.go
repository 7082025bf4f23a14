package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Helpers of the zero-downtime upgrade test (upgrade_test.go). Every
// identifier starts with "upg" so as not to clash with the other files of
// the package.

// upgStartDemoBackend runs lb-demo-backend named name on a free loopback
// port until the test ends and returns its address once it listens.
func upgStartDemoBackend(t *testing.T, name string) string {
	t.Helper()
	addr := freeAddr(t)
	start(t, "lb-demo-backend", "--listen", addr, "--name", name)
	waitFor(t, 20*time.Second, "demo backend "+name+" to listen on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// upgDemoBody is what lb-demo-backend name answers GET uri with.
func upgDemoBody(name, uri string) string {
	return fmt.Sprintf("backend %s: GET %s\n", name, uri)
}

// upgSlowBackend answers GET ?id=ID&size=N with opsSlowBody(ID, N) once
// release is called (or 30s after the request arrived), and sends ID on
// arrived as each request arrives: the test decides when requests in flight
// complete.
type upgSlowBackend struct {
	*lbBackend
	arrived chan string
	gate    chan struct{} // closed by release
	once    sync.Once
}

func upgStartSlowBackend(t *testing.T) *upgSlowBackend {
	t.Helper()
	s := &upgSlowBackend{arrived: make(chan string, 64), gate: make(chan struct{})}
	t.Cleanup(s.release) // handlers end before the backend stops
	s.lbBackend = opsStartSlowBackend(t, s.arrived, s.gate, 30*time.Second)
	return s
}

// release lets every request, held or to come, complete.
func (s *upgSlowBackend) release() { s.once.Do(func() { close(s.gate) }) }

// upgClient is one load client: requests go to url+"/load/"+name and every
// answer must come over proto.
type upgClient struct {
	name  string
	url   string // scheme://host:port of a data plane listener
	proto string // "HTTP/1.1" or "HTTP/2.0"
	c     *http.Client
}

// upgLoad is a steady stream of GET requests to the pool of demo backends,
// one goroutine per client, bounded in time and count.
type upgLoad struct {
	backends []string // names of the demo backends
	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	// after is set once the old data plane has exited; requests sent from
	// then on are counted apart.
	after atomic.Bool

	mu             sync.Mutex // guards the fields below
	ok             int
	okAfter        int
	failures       []string
	byBackend      map[string]int // successes by demo backend
	byBackendAfter map[string]int // successes by demo backend, sent once after was set
}

// upgStartLoad starts the clients; each sends GET requests one after
// another (5ms apart) until finish is called, it sent perClient requests,
// or limit has passed. Answers must be 200 from one of backends (names of
// lb-demo-backend processes) with the exact body it sends.
func upgStartLoad(t *testing.T, backends []string, clients []upgClient, perClient int, limit time.Duration) *upgLoad {
	t.Helper()
	l := &upgLoad{backends: backends, stopc: make(chan struct{}), byBackend: map[string]int{}, byBackendAfter: map[string]int{}}
	deadline := time.Now().Add(limit)
	for _, cl := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; n < perClient && time.Now().Before(deadline); n++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				l.one(cl, n)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(func() { l.finish() })
	return l
}

// one sends request n of client cl and records its outcome.
func (l *upgLoad) one(cl upgClient, n int) {
	uri := fmt.Sprintf("/load/%s?n=%d", cl.name, n)
	after := l.after.Load()
	sent := time.Now()
	r := opsDo(cl.c, http.MethodGet, cl.url+uri, "", nil)
	var fail string
	be := r.hdr.Get("X-Backend")
	switch {
	case r.err != nil:
		fail = r.err.Error()
	case r.code != http.StatusOK || r.proto != cl.proto:
		fail = fmt.Sprintf("status %d over %s (want 200 over %s), body %q", r.code, r.proto, cl.proto, r.body)
	case !l.known(be) || r.body != upgDemoBody(be, uri):
		fail = fmt.Sprintf("X-Backend %q, body %q; want one of %v answering %q", be, r.body, l.backends, upgDemoBody("NAME", uri))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if fail != "" {
		l.failures = append(l.failures, fmt.Sprintf("%s %s sent %s: %s", cl.name, uri, sent.Format("15:04:05.000"), fail))
		return
	}
	l.ok++
	l.byBackend[be]++
	if after {
		l.okAfter++
		l.byBackendAfter[be]++
	}
}

func (l *upgLoad) known(name string) bool {
	for _, b := range l.backends {
		if b == name {
			return true
		}
	}
	return false
}

// upgLoadResult is what the load clients saw.
type upgLoadResult struct {
	ok, okAfter int
	failures    []string
	byBackend   map[string]int
	after       map[string]int // successes by backend of requests sent after the old process exited
}

// finish stops the clients, waits for them and returns what they saw.
func (l *upgLoad) finish() upgLoadResult {
	l.stopOnce.Do(func() { close(l.stopc) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	res := upgLoadResult{ok: l.ok, okAfter: l.okAfter, failures: append([]string(nil), l.failures...),
		byBackend: map[string]int{}, after: map[string]int{}}
	for k, v := range l.byBackend {
		res.byBackend[k] = v
	}
	for k, v := range l.byBackendAfter {
		res.after[k] = v
	}
	return res
}

// upgIdleConn is a raw TCP connection to the proxy that carried one
// keep-alive request and then stays idle; a goroutine waits for what the
// server does with it.
type upgIdleConn struct {
	conn net.Conn
	done chan struct{} // closed when the fields below are final
	// err is what the first read after the answer returned (io.EOF when the
	// server closed the connection cleanly), at is when, and extra counts
	// any bytes the server sent after its answer.
	err   error
	at    time.Time
	extra int
}

// upgOpenIdle connects to addr, sends GET uri with keep-alive, reads the
// whole answer (which must be 200 and keep the connection open) and then
// reads in the background until the connection ends, at most within.
func upgOpenIdle(t *testing.T, addr, uri string, within time.Duration) *upgIdleConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: upgrade.test\r\n\r\n", uri); err != nil {
		t.Fatalf("idle connection: write request: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("idle connection: read answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("idle connection: answer %s, body %q (error %v), connection close %v; want 200 keeping the connection open",
			resp.Status, body, err, resp.Close)
	}
	ic := &upgIdleConn{conn: conn, done: make(chan struct{})}
	_ = conn.SetDeadline(time.Now().Add(within))
	go func() {
		defer close(ic.done)
		buf := make([]byte, 4096)
		for i := 0; i < 1000; i++ {
			n, err := br.Read(buf)
			ic.extra += n
			if err != nil {
				ic.err, ic.at = err, time.Now()
				return
			}
		}
		ic.err, ic.at = errors.New("the server kept sending bytes"), time.Now()
	}()
	return ic
}

// upgIsReset reports whether err is a connection reset by the peer.
func upgIsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

// upgWaitLog waits up to timeout for a line containing text in the log of
// p and returns when it was seen; it fails the test when p exits first.
func upgWaitLog(t *testing.T, p *proc, text string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.log.String(), text) {
			return time.Now()
		}
		select {
		case <-p.done:
			if strings.Contains(p.log.String(), text) {
				return time.Now()
			}
			t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, text)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v", p.name, text, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
