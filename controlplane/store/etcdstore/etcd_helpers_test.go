package etcdstore_test

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
)

// etcdServer is an etcd process started for one test.
type etcdServer struct {
	// Endpoint is its client URL, http://127.0.0.1:PORT.
	Endpoint string
	log      *etcdLog
}

// etcdLog is a goroutine-safe sink for the etcd process's output.
type etcdLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *etcdLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *etcdLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// etcdFreePorts returns n distinct loopback ports that were free a moment ago.
func etcdFreePorts(t *testing.T, n int) []int {
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

// startEtcd runs a single-member etcd cluster on two free loopback ports,
// with its data in a fresh temporary directory, waits until it answers a Get,
// and kills it when the test ends. A port taken by someone else in between
// is retried with new ports.
func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found in PATH (%v); scripts/test.sh installs it (Debian package etcd-server)", err)
	}
	var lastErr error
	for attempt := range 3 {
		s, err := tryStartEtcd(t, bin, attempt)
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

func tryStartEtcd(t *testing.T, bin string, attempt int) (*etcdServer, error) {
	t.Helper()
	ports := etcdFreePorts(t, 2)
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	dataDir := filepath.Join(t.TempDir(), fmt.Sprintf("etcd-%d", attempt))
	log := &etcdLog{}
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
	s := &etcdServer{Endpoint: client, log: log}
	if err := etcdWaitReady(client, exited, 30*time.Second); err != nil {
		kill()
		if strings.Contains(log.String(), "address already in use") {
			err = fmt.Errorf("%w (address already in use)", err)
		}
		return nil, fmt.Errorf("%w\n--- etcd log ---\n%s", err, log.String())
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			t.Logf("--- etcd log (exit: %v) ---\n%s", waitErr, etcdTail(log.String(), 60))
		}
	})
	return s, nil
}

// etcdWaitReady polls a Get on endpoint until one succeeds, the process
// exits, or timeout passes.
func etcdWaitReady(endpoint string, exited <-chan struct{}, timeout time.Duration) error {
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
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: time.Second})
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

// etcdTail returns the last n lines of s.
func etcdTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rawClient is a plain etcd client on s, closed when the test ends, for
// looking behind the store's back.
func (s *etcdServer) rawClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
