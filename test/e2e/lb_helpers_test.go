package e2e

import (
	"context"
	"encoding/json"
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

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// Helpers of the selection policy, failover and drain tests
// (lb_policies_test.go, failover_test.go, drain_test.go). Every identifier
// starts with "lb" so as not to clash with the other files of the package.

// lbProbeUA is the User-Agent prefix of the data plane's HTTP health checks
// (health.UserAgent), which backends count apart from proxied requests.
const lbProbeUA = "lb-health-check/"

// lbEnv is a control plane with one data plane.
type lbEnv struct {
	cp  *controlPlane
	dp  *dataPlane
	url string // http://<data plane proxy address>
}

// lbStart starts a control plane and a data plane named nodeID; the test
// fails at its end if either reported a data race.
func lbStart(t *testing.T, nodeID string) *lbEnv {
	t.Helper()
	cp := startControlPlane(t, "", "")
	dp := startDataPlane(t, cp.addr, nodeID)
	lbFailOnRace(t, cp.proc, dp.proc)
	return &lbEnv{cp: cp, dp: dp, url: "http://" + dp.addr}
}

// apply runs an lbctl mutation with -o json and waits for the data plane to
// apply the version it committed.
func (e *lbEnv) apply(t *testing.T, args ...string) uint64 {
	t.Helper()
	return lbApply(t, e.cp.addr, []*dataPlane{e.dp}, args...)
}

// lbApply runs an lbctl mutation with -o json against the control plane at
// cp and waits for every data plane in dps to apply the committed version.
func lbApply(t *testing.T, cp string, dps []*dataPlane, args ...string) uint64 {
	t.Helper()
	v := versionOf(t, mustLbctl(t, cp, append([]string{"-o", "json"}, args...)...))
	for _, dp := range dps {
		dp.waitVersion(t, v)
	}
	return v
}

// lbFailOnRace fails the test, at its end, when one of the processes (built
// with -race) reported a data race, quoting the first report.
func lbFailOnRace(t *testing.T, procs ...*proc) {
	t.Helper()
	t.Cleanup(func() {
		for _, p := range procs {
			blocks := strings.Split(p.log.String(), "WARNING: DATA RACE")
			if len(blocks) < 2 {
				continue
			}
			b := blocks[1]
			if i := strings.Index(b, "=================="); i >= 0 {
				b = b[:i]
			}
			t.Errorf("%s reported %d data race(s); the first:%s", p.name, len(blocks)-1, b)
		}
	})
}

// lbBackend is an in-process HTTP backend that can be stopped (its listener
// and connections closed, so connections are refused) and restarted on the
// same address. It counts proxied requests apart from health checks.
type lbBackend struct {
	name     string
	addr     string
	requests atomic.Int64 // requests other than health checks
	probes   atomic.Int64 // health-check requests
	handle   http.HandlerFunc

	mu  sync.Mutex
	srv *http.Server
}

// lbStartBackend starts a backend that sets X-Backend: name on every answer
// and then runs handle, or answers 200 with its name when handle is nil.
func lbStartBackend(t *testing.T, name string, handle http.HandlerFunc) *lbBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	b := &lbBackend{name: name, addr: l.Addr().String(), handle: handle}
	b.serve(l)
	t.Cleanup(b.stop)
	return b
}

func (b *lbBackend) serve(l net.Listener) {
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(b.serveHTTP)}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

func (b *lbBackend) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.Header.Get("User-Agent"), lbProbeUA) {
		b.probes.Add(1)
	} else {
		b.requests.Add(1)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("X-Backend", b.name)
	if b.handle != nil {
		b.handle(w, r)
		return
	}
	_, _ = io.WriteString(w, b.name)
}

// stop closes the listener and every connection: new connections are refused.
func (b *lbBackend) stop() {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	_ = srv.Close()
}

// restart listens on the same address again and serves as before, with the
// same counters.
func (b *lbBackend) restart(t *testing.T) {
	t.Helper()
	var l net.Listener
	var err error
	for i := 0; i < 100; i++ { // at most ~2s
		if l, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("restart backend %s on %s: %v", b.name, b.addr, err)
	}
	b.serve(l)
}

// lbBackendView is one entry of the data plane's /backends.
type lbBackendView struct {
	Pool     string `json:"pool"`
	Address  string `json:"address"`
	Weight   uint32 `json:"weight"`
	Draining bool   `json:"draining"`
	Healthy  bool   `json:"healthy"`
	Ejected  bool   `json:"ejected"`
	InFlight int64  `json:"in_flight"`
}

// lbBackends reads the data plane's /backends.
func lbBackends(t *testing.T, dp *dataPlane) []lbBackendView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+dp.admin+"/backends", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /backends: %v", err)
	}
	defer resp.Body.Close()
	var v []lbBackendView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode /backends: %v", err)
	}
	return v
}

// lbBackendOf returns the /backends entry of addr in pool.
func lbBackendOf(t *testing.T, dp *dataPlane, pool, addr string) lbBackendView {
	t.Helper()
	for _, v := range lbBackends(t, dp) {
		if v.Pool == pool && v.Address == addr {
			return v
		}
	}
	t.Fatalf("/backends has no entry for %s in pool %s", addr, pool)
	return lbBackendView{}
}

// lbPoolGet runs "lbctl -o json pool get name" and decodes it.
func lbPoolGet(t *testing.T, cp, name string) *lbv1.GetPoolResponse {
	t.Helper()
	out := mustLbctl(t, cp, "-o", "json", "pool", "get", name)
	resp := &lbv1.GetPoolResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), resp); err != nil {
		t.Fatalf("decode lbctl pool get output %q: %v", out, err)
	}
	return resp
}

// lbStatusOf returns the backend_status entry of addr, or nil.
func lbStatusOf(resp *lbv1.GetPoolResponse, addr string) *lbv1.BackendStatus {
	for _, st := range resp.GetBackendStatus() {
		if st.GetAddress() == addr {
			return st
		}
	}
	return nil
}

// lbPoolRow runs "lbctl pool get name" and returns the fields of the
// backend table row of addr: BACKEND WEIGHT STATE HEALTHY... IN-FLIGHT
// (HEALTHY is "N/M data planes", three fields, or "-").
func lbPoolRow(t *testing.T, cp, name, addr string) []string {
	t.Helper()
	out := mustLbctl(t, cp, "pool", "get", name)
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == addr {
			return f
		}
	}
	t.Fatalf("lbctl pool get %s: no row for %s in:\n%s", name, addr, out)
	return nil
}

// lbLoad is a steady stream of GET requests from several keep-alive
// clients, bounded in time and count.
type lbLoad struct {
	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failures []string
	seen     map[string]int
}

// lbStartLoad starts clients goroutines that each GET url one request after
// another (5ms apart) until finish is called or limit has passed.
func lbStartLoad(t *testing.T, url string, clients int, limit time.Duration) *lbLoad {
	t.Helper()
	l := &lbLoad{stopc: make(chan struct{}), seen: map[string]int{}}
	deadline := time.Now().Add(limit)
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := newClient()
			defer c.CloseIdleConnections()
			for n := 0; n < 100000 && time.Now().Before(deadline); n++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				code, body, err := lbGet(c, url, nil)
				l.mu.Lock()
				switch {
				case err != nil:
					l.failures = append(l.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				case code != http.StatusOK:
					l.failures = append(l.failures, fmt.Sprintf("%s: status %d %q", time.Now().Format("15:04:05.000"), code, body))
				default:
					l.ok++
					l.seen[body]++
				}
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(func() { l.finish() })
	return l
}

// finish stops the clients, waits for them and returns the successful
// requests, the failures and the successes per response body.
func (l *lbLoad) finish() (ok int, failures []string, seen map[string]int) {
	l.stopOnce.Do(func() { close(l.stopc) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	seen = make(map[string]int, len(l.seen))
	for k, v := range l.seen {
		seen[k] = v
	}
	return l.ok, append([]string(nil), l.failures...), seen
}

// lbGet sends a GET with the given extra headers, bounded by 10s, and
// returns the status and body.
func lbGet(c *http.Client, url string, hdr http.Header) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, string(body), err
	}
	return resp.StatusCode, string(body), nil
}

// lbFirst returns at most n of the strings, for failure messages.
func lbFirst(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// lbBlackholeAddr returns a loopback address whose connection attempts
// hang: a listening socket with a backlog of 0 that never accepts, its
// queue filled, so that the kernel drops further SYNs (Linux).
func lbBlackholeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	raw, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	if err := raw.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		t.Skipf("cannot shrink the listen backlog: %v %v", err, lerr)
	}
	addr := l.Addr().String()
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return addr // the queue is full: connects now hang
			}
			t.Fatalf("filling the backlog of %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skipf("could not make connects to %s hang", addr)
	return ""
}

// lbWSBackend is a WebSocket echo server that names itself in the X-Backend
// header of its 101 answer and reports how each session (by ?id=) ended.
type lbWSBackend struct {
	name     string
	addr     string
	sessions atomic.Int64

	mu   sync.Mutex
	ends map[string]chan error
}

func lbStartWSBackend(t *testing.T, name string) *lbWSBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("websocket backend %s: %v", name, err)
	}
	b := &lbWSBackend{name: name, addr: l.Addr().String(), ends: map[string]chan error{}}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(b.serve)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

func (b *lbWSBackend) endOf(id string) chan error {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.ends[id]
	if !ok {
		ch = make(chan error, 1)
		b.ends[id] = ch
	}
	return ch
}

func (b *lbWSBackend) serve(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	w.Header().Set("X-Backend", b.name)
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		b.endOf(id) <- err
		return
	}
	defer c.CloseNow()
	b.sessions.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		typ, data, err := c.Read(ctx)
		if err == nil {
			err = c.Write(ctx, typ, data)
		}
		if err != nil {
			select {
			case b.endOf(id) <- err:
			default:
			}
			return
		}
	}
}

// awaitEnd waits up to timeout for session id to end on the backend and
// returns the error its read loop ended with.
func (b *lbWSBackend) awaitEnd(t *testing.T, id string, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-b.endOf(id):
		return err
	case <-time.After(timeout):
		t.Fatalf("session %s did not end on backend %s within %v", id, b.name, timeout)
		return nil
	}
}

// lbWSDial opens a WebSocket session through the data plane at dpAddr and
// returns it with the X-Backend header of the 101 answer.
func lbWSDial(t *testing.T, dpAddr, id string) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+dpAddr+"/echo?id="+id, &websocket.DialOptions{HTTPClient: wsHTTPClient(nil)})
	if err != nil {
		t.Fatalf("dial session %s: %v", id, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, resp.Header.Get("X-Backend")
}
