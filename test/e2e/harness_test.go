// Package e2e drives the real lb-controlplane, lb-dataplane and lbctl
// binaries, built once per test run, as an operator would: processes on
// loopback ports, real bbolt files, real HTTP backends.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lb-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/lb-project/lb/cmd/...")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running binary.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error // set when done is closed
}

// start runs a binary from binDir until the test ends.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, p.log.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("%s exited with %v", p.name, p.err)
		}
	case <-time.After(15 * time.Second):
		p.t.Errorf("%s did not exit within 15s of SIGTERM", p.name)
		p.kill()
	}
}

// kill sends SIGKILL (a crash) and waits for the process to be gone.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// controlPlane is a running lb-controlplane.
type controlPlane struct {
	*proc
	addr    string
	dataDir string
	// admin is its admin HTTP address (/metrics, /healthz, /readyz,
	// /log-level); empty when it has none.
	admin string
}

// startControlPlane starts lb-controlplane on addr (a free one when empty)
// with its store in dataDir (a new one when empty), its admin listener on
// a free port, and debug logging, and waits until it listens.
func startControlPlane(t *testing.T, addr, dataDir string) *controlPlane {
	t.Helper()
	if addr == "" {
		addr = freeAddr(t)
	}
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	admin := freeAddr(t)
	p := start(t, "lb-controlplane", "--listen", addr, "--admin-listen", admin, "--data-dir", dataDir, "--log-level", "debug")
	cp := &controlPlane{proc: p, addr: addr, dataDir: dataDir, admin: admin}
	waitFor(t, 20*time.Second, "control plane to listen on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cp
}

// dataPlane is a running lb-dataplane.
type dataPlane struct {
	*proc
	addr, admin string
}

func startDataPlane(t *testing.T, cpAddr, nodeID string) *dataPlane {
	t.Helper()
	return startDataPlaneWith(t, cpAddr, nodeID)
}

// startDataPlaneWith starts a data plane with extra flags (e.g. --tls-listen).
//
// A port freeAddr found free can be taken, before the data plane binds it,
// as the source port of a connection some other test opens; a data plane
// that exits because of that is started again on other ports.
func startDataPlaneWith(t *testing.T, cpAddr, nodeID string, extra ...string) *dataPlane {
	t.Helper()
	for attempt := 1; ; attempt++ {
		dp := &dataPlane{addr: freeAddr(t), admin: freeAddr(t)}
		args := append([]string{"--controlplane", cpAddr, "--node-id", nodeID,
			"--listen", dp.addr, "--admin-listen", dp.admin, "--log-level", "debug"}, extra...)
		dp.proc = start(t, "lb-dataplane", args...)
		exited := false
		waitFor(t, 20*time.Second, "data plane admin to answer", func() bool {
			select {
			case <-dp.proc.done:
				exited = true
				return true
			default:
			}
			resp, err := http.Get("http://" + dp.admin + "/healthz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		})
		if !exited {
			return dp
		}
		if attempt == 3 || !strings.Contains(dp.proc.log.String(), "address already in use") {
			t.Fatalf("the data plane exited at start (attempt %d): %v\n%s", attempt, dp.proc.err, dp.proc.log.String())
		}
		t.Logf("a port was taken before the data plane bound it; starting it again (attempt %d)", attempt+1)
	}
}

// configView is the subset of the data plane's /config this package reads.
type configView struct {
	Version   uint64 `json:"version"`
	Connected bool   `json:"connected"`
	Pools     []struct {
		Name     string `json:"name"`
		Backends []struct {
			Address string `json:"address"`
			Weight  uint32 `json:"weight"`
		} `json:"backends"`
	} `json:"pools"`
}

func (dp *dataPlane) config(t *testing.T) configView {
	t.Helper()
	resp, err := http.Get("http://" + dp.admin + "/config")
	if err != nil {
		t.Fatalf("GET /config: %v", err)
	}
	defer resp.Body.Close()
	var v configView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode /config: %v", err)
	}
	return v
}

// waitVersion waits until the data plane has applied version v or later.
func (dp *dataPlane) waitVersion(t *testing.T, v uint64) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("data plane to apply version %d", v), func() bool {
		return dp.config(t).Version >= v
	})
}

// waitFor polls cond every 10ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lbctlResult is the outcome of one lbctl run.
type lbctlResult struct {
	stdout, stderr string
	code           int
}

// lbctl runs the CLI against the control plane at cp.
func lbctl(t *testing.T, cp string, args ...string) lbctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "lbctl"), args...)
	cmd.Env = append(os.Environ(), "LBCTL_CONTROLPLANE="+cp)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := lbctlResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run lbctl %v: %v", args, err)
	}
	return res
}

// mustLbctl runs lbctl and fails the test unless it succeeds.
func mustLbctl(t *testing.T, cp string, args ...string) string {
	t.Helper()
	r := lbctl(t, cp, args...)
	if r.code != 0 {
		t.Fatalf("lbctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// versionOf reads the configuration version from a mutation's JSON output.
func versionOf(t *testing.T, jsonOut string) uint64 {
	t.Helper()
	var v struct {
		Version json.Number `json:"version"`
	}
	if err := json.Unmarshal([]byte(jsonOut), &v); err != nil {
		t.Fatalf("decode lbctl output %q: %v", jsonOut, err)
	}
	n, err := v.Version.Int64()
	if err != nil {
		t.Fatalf("version in %q: %v", jsonOut, err)
	}
	return uint64(n)
}

// backend is an in-process HTTP backend that answers with its name (at
// /forwarded-proto: with the X-Forwarded-Proto it was sent) and counts
// requests and connections.
type backend struct {
	name     string
	addr     string
	requests atomic.Int64
	conns    atomic.Int64
	srv      *http.Server
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	b := &backend{name: name, addr: l.Addr().String()}
	b.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.requests.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Backend", name)
			if r.URL.Path == "/forwarded-proto" {
				fmt.Fprint(w, r.Header.Get("X-Forwarded-Proto"))
				return
			}
			fmt.Fprintf(w, "%s", name)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.conns.Add(1)
			}
		},
	}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// client is a keep-alive HTTP client for the data plane.
func newClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
		},
	}
}

// get fetches url and returns status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// sequence sends n requests to url one after another and returns the bodies.
func sequence(t *testing.T, c *http.Client, url string, n int) []string {
	t.Helper()
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		code, body := get(t, c, url)
		if code != http.StatusOK {
			t.Fatalf("request %d to %s: status %d, body %q", i, url, code, body)
		}
		out = append(out, body)
	}
	return out
}
