// Package etcdtest starts a real, single-member etcd for tests: the etcd
// binary (Debian's etcd-server, which scripts/test.sh installs) on free
// loopback ports with its data in a temporary directory, stopped when the
// test ends. It is shared by the etcd store's tests and the end-to-end
// tests; nothing outside tests imports it.
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Server is an etcd process started for one test.
type Server struct {
	// Endpoint is its client URL, http://127.0.0.1:PORT.
	Endpoint string
	log      *logBuffer
}

// logBuffer is a goroutine-safe sink for the etcd process's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		// Held open until all are picked, so they differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Start runs a single-member etcd cluster on two free loopback ports,
// with its data in a fresh temporary directory, waits until it answers a Get,
// and kills it when the test ends. A port taken by someone else in between
// is retried with new ports.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found in PATH (%v); scripts/test.sh installs it (Debian package etcd-server)", err)
	}
	var lastErr error
	for attempt := range 3 {
		s, err := tryStart(t, bin, attempt)
		if err == nil {
			return s
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("start etcd: %v", lastErr)
	return nil
}

func tryStart(t testing.TB, bin string, attempt int) (*Server, error) {
	t.Helper()
	ports := FreePorts(t, 2)
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	dataDir := filepath.Join(t.TempDir(), fmt.Sprintf("etcd-%d", attempt))
	log := &logBuffer{}
	cmd := exec.Command(bin,
		"--name", "t",
		"--data-dir", dataDir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer,
	)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	kill := func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	s := &Server{Endpoint: client, log: log}
	if err := waitReady(client, exited, 30*time.Second); err != nil {
		kill()
		if strings.Contains(log.String(), "address already in use") {
			err = fmt.Errorf("%w (address already in use)", err)
		}
		return nil, fmt.Errorf("%w\n--- etcd log ---\n%s", err, log.String())
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			t.Logf("--- etcd log (exit: %v) ---\n%s", waitErr, tail(log.String(), 60))
		}
	})
	return s, nil
}

// waitReady polls a Get on endpoint until one succeeds, the process
// exits, or timeout passes.
func waitReady(endpoint string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	// First until it listens, so that the client does not log refused
	// connections while etcd starts.
	hostPort := strings.TrimPrefix(endpoint, "http://")
	for {
		c, err := net.DialTimeout("tcp", hostPort, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return errors.New("etcd exited before listening")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd did not listen on %s within %v: %w", hostPort, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", endpoint, err)
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("etcd exited before answering")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd at %s did not answer within %v: %w", endpoint, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns what the etcd process printed so far.
func (s *Server) Log() string { return s.log.String() }
