package handoff_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lb-project/lb/dataplane/handoff"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 15 * time.Second

// Environment of the helper process (see TestHelperProcess).
const (
	helperModeEnv = "LB_HANDOFF_HELPER"
	helperPathEnv = "LB_HANDOFF_PATH"
)

// Helper process modes.
const (
	// modeTakeOver takes over, says ready, accepts one connection on
	// "proxy", writes helperByte to it and exits 0.
	modeTakeOver = "take-over"
	// modeTakeAndDie receives the listeners and exits without saying
	// ready or closing anything.
	modeTakeAndDie = "take-and-die"
	// modeBindAndExit binds a handoff-type socket at the path and exits
	// without removing it, leaving a stale socket file.
	modeBindAndExit = "bind-and-exit"
)

// helperByte is what the helper process writes on the connection it accepts.
const helperByte = 'x'

// socketPath returns a path for a Unix socket in a fresh short directory:
// t.TempDir's names can exceed the 108-byte limit of socket paths.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "handoff")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "h.sock")
}

// testLogger logs into the test's output.
func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: t.Output(), Level: hclog.Debug})
}

// tcpListeners returns listeners on 127.0.0.1:0 for names, closed at cleanup.
func tcpListeners(t *testing.T, names ...string) handoff.Listeners {
	t.Helper()
	ls := make(handoff.Listeners, len(names))
	for _, n := range names {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		ls[n] = l
	}
	return ls
}

// server is a Server whose Serve runs in a goroutine the test owns.
type server struct {
	srv       *handoff.Server
	cancel    context.CancelFunc
	handovers atomic.Int32
	// handedOver is closed by the first OnHandover call.
	handedOver chan struct{}
	// done is closed when Serve has returned; err is its result.
	done chan struct{}
	err  error
}

// startServer runs Listen(cfg) and Serve; cleanup stops Serve and waits.
func startServer(t *testing.T, cfg handoff.Config) *server {
	t.Helper()
	s := &server{handedOver: make(chan struct{}), done: make(chan struct{})}
	cfg.OnHandover = func() {
		if s.handovers.Add(1) == 1 {
			close(s.handedOver)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	srv, err := handoff.Listen(cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	s.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		s.err = srv.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		s.wait(t)
		_ = srv.Close()
	})
	return s
}

// wait waits for Serve to return and returns its error.
func (s *server) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
		return nil
	}
}

// waitHandover waits for OnHandover.
func (s *server) waitHandover(t *testing.T) {
	t.Helper()
	select {
	case <-s.handedOver:
	case <-time.After(testTimeout):
		t.Fatal("OnHandover was not called")
	}
}

// tokens numbers the connections of checkAccepts so a connection accepted
// by the wrong listener is noticed.
var tokens atomic.Int64

// checkAccepts dials addr and checks that l accepts that very connection.
func checkAccepts(t *testing.T, l *net.TCPListener, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	token := fmt.Sprintf("token-%d\n", tokens.Add(1))
	if _, err := io.WriteString(c, token); err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	_ = l.SetDeadline(time.Now().Add(testTimeout))
	defer l.SetDeadline(time.Time{})
	a, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on %s: %v", addr, err)
	}
	defer a.Close()
	_ = a.SetDeadline(time.Now().Add(testTimeout))
	got := make([]byte, len(token))
	if _, err := io.ReadFull(a, got); err != nil {
		t.Fatalf("read from accepted connection: %v", err)
	}
	if string(got) != token {
		t.Fatalf("accepted connection carries %q, want %q (another connection?)", got, token)
	}
}

// take runs Take with a bounded context.
func take(t *testing.T, path string) *handoff.Takeover {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tk, err := handoff.Take(ctx, path)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	t.Cleanup(tk.Abort)
	return tk
}

// ready runs tk.Ready with a bounded context.
func ready(t *testing.T, tk *handoff.Takeover) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := tk.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

// helper is a running copy of the test binary in a helper mode.
type helper struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	// mu guards out, written by exec's copying goroutines.
	mu  sync.Mutex
	out bytes.Buffer
}

// Write collects the helper's output.
func (h *helper) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.out.Write(p)
}

// output returns what the helper printed so far.
func (h *helper) output() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.out.String()
}

// startHelper re-executes the test binary as a helper process in mode: the
// standard helper-process pattern, so descriptors really cross a process
// boundary. It is killed, if still running, at cleanup.
func startHelper(t *testing.T, mode, path string) *helper {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	h := &helper{cancel: cancel}
	h.cmd = exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
	h.cmd.Env = append(os.Environ(), helperModeEnv+"="+mode, helperPathEnv+"="+path)
	h.cmd.Stdout, h.cmd.Stderr = h, h
	h.cmd.WaitDelay = time.Second
	if err := h.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting helper: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = h.cmd.Wait()
	})
	return h
}

// wait waits for the helper to exit and fails the test unless it exits 0.
func (h *helper) wait(t *testing.T) {
	t.Helper()
	defer h.cancel()
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v; output:\n%s", err, h.output())
	}
}

// TestHelperProcess is not a test: it is the body of the helper process
// (see startHelper) and skips unless started as one.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperModeEnv)
	if mode == "" {
		t.Skip("helper process for the cross-process tests")
	}
	if err := runHelper(mode, os.Getenv(helperPathEnv)); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		os.Exit(2)
	}
	os.Exit(0)
}

// runHelper does the work of one helper mode.
func runHelper(mode, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	switch mode {
	case modeBindAndExit:
		_, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		return err // exit without closing: the socket file stays
	case modeTakeAndDie:
		tk, err := handoff.Take(ctx, path)
		if err != nil {
			return err
		}
		if _, ok := tk.Listeners()["proxy"]; !ok {
			return fmt.Errorf("no proxy listener")
		}
		return nil // exit without Ready or Abort
	case modeTakeOver:
		tk, err := handoff.Take(ctx, path)
		if err != nil {
			return err
		}
		ls := tk.Listeners()
		defer func() {
			for _, l := range ls {
				_ = l.Close()
			}
		}()
		l, ok := ls["proxy"]
		if !ok {
			tk.Abort()
			return fmt.Errorf("no proxy listener among %d", len(ls))
		}
		if err := tk.Ready(ctx); err != nil {
			return err
		}
		_ = l.SetDeadline(time.Now().Add(testTimeout))
		c, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		defer c.Close()
		_, err = c.Write([]byte{helperByte})
		return err
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
}

// mustContain fails unless err is non-nil and its text has every part.
func mustContain(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}
