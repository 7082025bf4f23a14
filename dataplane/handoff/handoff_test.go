package handoff_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/handoff"
)

// TestHandover runs a whole in-process handover and then the next one, from
// the successor, on the same path.
func TestHandover(t *testing.T) {
	path := socketPath(t)
	old := tcpListeners(t, "proxy", "admin")
	srv := startServer(t, handoff.Config{Path: path, Listeners: old})

	tk := take(t, path)
	got := tk.Listeners()
	if len(got) != len(old) {
		t.Fatalf("received %d listeners, want %d", len(got), len(old))
	}
	for name, l := range old {
		nl, ok := got[name]
		if !ok {
			t.Fatalf("listener %q not received", name)
		}
		t.Cleanup(func() { _ = nl.Close() })
		if nl.Addr().String() != l.Addr().String() {
			t.Fatalf("listener %q: received address %s, want %s", name, nl.Addr(), l.Addr())
		}
	}

	// Overlap: both processes accept on the same sockets.
	for name, l := range old {
		addr := l.Addr().String()
		checkAccepts(t, l, addr)
		checkAccepts(t, got[name], addr)
	}
	if n := srv.handovers.Load(); n != 0 {
		t.Fatalf("OnHandover ran %d times before Ready", n)
	}

	ready(t, tk)
	srv.waitHandover(t)
	if err := srv.wait(t); err != nil {
		t.Fatalf("Serve returned %v after the handover, want nil", err)
	}
	if n := srv.handovers.Load(); n != 1 {
		t.Fatalf("OnHandover ran %d times, want 1", n)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after the handover: %v, want it removed", err)
	}

	// The old process drains and exits; the new listeners keep accepting.
	for _, l := range old {
		_ = l.Close()
	}
	for name := range old {
		checkAccepts(t, got[name], got[name].Addr().String())
	}

	// The path is free: the successor serves it for the next upgrade.
	next := startServer(t, handoff.Config{Path: path, Listeners: got})
	tk2 := take(t, path)
	ready(t, tk2)
	next.waitHandover(t)
	if err := next.wait(t); err != nil {
		t.Fatalf("second Serve: %v", err)
	}
	third := tk2.Listeners()
	for name := range got {
		_ = got[name].Close()
		t.Cleanup(func() { _ = third[name].Close() })
		checkAccepts(t, third[name], third[name].Addr().String())
	}
}

// TestCrossProcessHandover hands the listener to a re-executed copy of the
// test binary, which accepts one connection after the old side closed its
// own listener and writes a byte on it.
func TestCrossProcessHandover(t *testing.T) {
	path := socketPath(t)
	old := tcpListeners(t, "proxy", "tls")
	addr := old["proxy"].Addr().String()
	srv := startServer(t, handoff.Config{Path: path, Listeners: old})

	child := startHelper(t, modeTakeOver, path)
	select {
	case <-srv.handedOver:
	case <-time.After(testTimeout):
		t.Fatalf("no handover; helper output:\n%s", child.output())
	}
	if err := srv.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Drain and stop: from now on only the child can accept.
	for _, l := range old {
		_ = l.Close()
	}

	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s after the handover: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading from the successor: %v; helper output:\n%s", err, child.output())
	}
	if b[0] != helperByte {
		t.Fatalf("successor wrote %q, want %q", b[0], helperByte)
	}
	child.wait(t)
	if n := srv.handovers.Load(); n != 1 {
		t.Fatalf("OnHandover ran %d times, want 1", n)
	}
}

// TestFailedSuccessorKeepsOffering checks that a successor that goes away
// without saying ready changes nothing: the old process keeps serving and
// offering, and the next successor takes over.
func TestFailedSuccessorKeepsOffering(t *testing.T) {
	tests := []struct {
		name string
		fail func(t *testing.T, path string)
	}{
		{"abort after take", func(t *testing.T, path string) {
			tk := take(t, path)
			l := tk.Listeners()["proxy"]
			tk.Abort()
			if err := l.SetDeadline(time.Now()); err == nil {
				t.Fatal("Abort left a received listener open")
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := tk.Ready(ctx); err == nil {
				t.Fatal("Ready after Abort succeeded")
			}
		}},
		{"disconnect before hello", func(t *testing.T, path string) {
			c, err := net.Dial("unixpacket", path)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
		}},
		{"protocol mismatch", func(t *testing.T, path string) {
			reply := exchange(t, path, []byte("LBHO\x63\x01"))
			for _, want := range []string{"the successor speaks handoff protocol version 99", "the old process speaks version 1"} {
				if !strings.Contains(reply, want) {
					t.Fatalf("reply %q to a version 99 hello does not contain %q", reply, want)
				}
			}
		}},
		{"not the protocol", func(t *testing.T, path string) {
			reply := exchange(t, path, []byte("GET / HTTP/1.1\r\n\r\n"))
			if !strings.Contains(reply, "not a handoff protocol message") {
				t.Fatalf("reply %q to garbage does not say it is not the protocol", reply)
			}
		}},
		{"no ready before the timeout", func(t *testing.T, path string) {
			tk := take(t, path)
			// The old side gives up after ReadyTimeout; until then the
			// next successor waits in the backlog.
			tk2 := take(t, path)
			tk2.Abort()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := tk.Ready(ctx); err == nil {
				t.Fatal("Ready after the ready timeout succeeded")
			}
			tk.Abort()
		}},
		{"successor process dies before ready", func(t *testing.T, path string) {
			startHelper(t, modeTakeAndDie, path).wait(t)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			old := tcpListeners(t, "proxy", "admin")
			srv := startServer(t, handoff.Config{Path: path, Listeners: old, ReadyTimeout: 300 * time.Millisecond})

			tt.fail(t, path)

			if n := srv.handovers.Load(); n != 0 {
				t.Fatalf("OnHandover ran %d times after a failed successor", n)
			}
			for _, l := range old {
				checkAccepts(t, l, l.Addr().String())
			}
			tk := take(t, path)
			ready(t, tk)
			srv.waitHandover(t)
			if err := srv.wait(t); err != nil {
				t.Fatalf("Serve: %v", err)
			}
			for name, l := range tk.Listeners() {
				t.Cleanup(func() { _ = l.Close() })
				checkAccepts(t, l, old[name].Addr().String())
			}
			if n := srv.handovers.Load(); n != 1 {
				t.Fatalf("OnHandover ran %d times, want 1", n)
			}
		})
	}
}

// exchange sends one raw packet to the handoff socket and returns the
// payload of the answer.
func exchange(t *testing.T, path string, msg []byte) string {
	t.Helper()
	c, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return string(b[:n])
}

// TestListenExistingFile checks what Listen does with a file already at
// the path.
func TestListenExistingFile(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr error    // matched with errors.Is; nil: Listen succeeds
		errText []string // parts of the error's text
	}{
		{name: "nothing there", prepare: func(*testing.T, string) {}},
		{name: "stale socket of a dead process", prepare: func(t *testing.T, path string) {
			startHelper(t, modeBindAndExit, path).wait(t)
			if _, err := os.Lstat(path); err != nil {
				t.Fatalf("the helper left no socket file: %v", err)
			}
		}},
		{name: "stale socket closed in process", prepare: func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			_ = ln.Close()
		}},
		{name: "live handoff server", prepare: func(t *testing.T, path string) {
			startServer(t, handoff.Config{Path: path, Listeners: tcpListeners(t, "proxy")})
		}, wantErr: handoff.ErrInUse, errText: []string{"already serves"}},
		{name: "live socket of another type", prepare: func(t *testing.T, path string) {
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
		}, wantErr: handoff.ErrInUse, errText: []string{"already serves", "another type"}},
		{name: "regular file", prepare: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, errText: []string{"not a socket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			tt.prepare(t, path)
			before, _ := os.Lstat(path)

			srv, err := handoff.Listen(handoff.Config{Path: path, Listeners: tcpListeners(t, "proxy"), Logger: testLogger(t)})
			if tt.wantErr == nil && tt.errText == nil {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				// It really serves: a successor takes the listener.
				done := make(chan error, 1)
				ctx, cancel := context.WithCancel(context.Background())
				go func() { done <- srv.Serve(ctx) }()
				tk := take(t, path)
				tk.Abort()
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Serve: %v", err)
				}
				if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("socket file after Serve stopped: %v, want it removed", err)
				}
				return
			}
			if err == nil {
				_ = srv.Close()
				t.Fatal("Listen succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Listen: %v, want %v", err, tt.wantErr)
			}
			mustContain(t, err, append([]string{path}, tt.errText...)...)
			after, aerr := os.Lstat(path)
			if aerr != nil || !os.SameFile(before, after) {
				t.Fatalf("Listen replaced or removed the existing file (%v)", aerr)
			}
		})
	}
}

// TestListenConfig checks the validation of a Config.
func TestListenConfig(t *testing.T) {
	many := make(handoff.Listeners)
	for i := range handoff.MaxListeners + 1 {
		many[strings.Repeat("l", i+1)] = &net.TCPListener{}
	}
	tests := []struct {
		name    string
		path    bool // set Config.Path
		ls      handoff.Listeners
		errText string
	}{
		{"no path", false, handoff.Listeners{"proxy": &net.TCPListener{}}, "Path is required"},
		{"no listeners", true, nil, "0 listeners"},
		{"too many listeners", true, many, "33 listeners"},
		{"empty name", true, handoff.Listeners{"": &net.TCPListener{}}, "want 1 to 64 bytes"},
		{"long name", true, handoff.Listeners{strings.Repeat("n", 65): &net.TCPListener{}}, "want 1 to 64 bytes"},
		{"bad character", true, handoff.Listeners{"pro xy": &net.TCPListener{}}, "only letters"},
		{"nil listener", true, handoff.Listeners{"proxy": nil}, `"proxy" is nil`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := handoff.Config{Listeners: tt.ls}
			if tt.path {
				cfg.Path = socketPath(t)
			}
			srv, err := handoff.Listen(cfg)
			if err == nil {
				_ = srv.Close()
			}
			mustContain(t, err, tt.errText)
			if tt.path {
				if _, err := os.Lstat(cfg.Path); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("a refused Listen left a file at the path: %v", err)
				}
			}
		})
	}
}

// TestServerLifecycle checks Close before, during and after Serve.
func TestServerLifecycle(t *testing.T) {
	t.Run("close before serve", func(t *testing.T) {
		path := socketPath(t)
		srv, err := handoff.Listen(handoff.Config{Path: path, Listeners: tcpListeners(t, "proxy")})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := srv.Serve(context.Background()); !errors.Is(err, handoff.ErrClosed) {
			t.Fatalf("Serve after Close: %v, want ErrClosed", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket file after Close: %v, want it removed", err)
		}
	})
	t.Run("close during an exchange", func(t *testing.T) {
		path := socketPath(t)
		s := startServer(t, handoff.Config{Path: path, Listeners: tcpListeners(t, "proxy")})
		tk := take(t, path)
		if err := s.srv.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.wait(t); err != nil {
			t.Fatalf("Serve after Close: %v, want nil", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := tk.Ready(ctx); err == nil {
			t.Fatal("Ready to a closed server succeeded")
		}
		if s.handovers.Load() != 0 {
			t.Fatal("OnHandover ran after Close")
		}
	})
	t.Run("serve twice", func(t *testing.T) {
		srv, err := handoff.Listen(handoff.Config{Path: socketPath(t), Listeners: tcpListeners(t, "proxy")})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Serve(ctx); err != nil {
			t.Fatalf("Serve with a cancelled context: %v, want nil", err)
		}
		mustContain(t, srv.Serve(ctx), "twice")
	})
	t.Run("close does not remove a replaced socket file", func(t *testing.T) {
		path := socketPath(t)
		srv, err := handoff.Listen(handoff.Config{Path: path, Listeners: tcpListeners(t, "proxy")})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		other := startServer(t, handoff.Config{Path: path, Listeners: tcpListeners(t, "proxy")})
		_ = srv.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("Close removed another server's socket file: %v", err)
		}
		tk := take(t, path)
		tk.Abort()
		_ = other
	})
}

// TestTakeErrors checks that Take names the path and the step, and reports
// a bad offer clearly, against a hand-written old process on a real socket.
func TestTakeErrors(t *testing.T) {
	connected := func(t *testing.T) *os.File {
		// A TCP socket that is connected, not listening.
		l := tcpListeners(t, "x")["x"]
		c, err := net.DialTCP("tcp", nil, l.Addr().(*net.TCPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		f, err := c.File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	listening := func(t *testing.T) *os.File {
		f, err := tcpListeners(t, "x")["x"].File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	tests := []struct {
		name    string
		answer  func(t *testing.T) ([]byte, []*os.File) // nil: no server at all
		errText []string
	}{
		{"no server", nil, []string{"connecting"}},
		{"other version", func(*testing.T) ([]byte, []*os.File) {
			return []byte("LBHO\x02\x02\x01\x05proxy"), nil
		}, []string{"receiving listeners", "the old process speaks handoff protocol version 2, the successor speaks version 1"}},
		{"refused", func(*testing.T) ([]byte, []*os.File) {
			return []byte("LBHO\x01\x05no thanks"), nil
		}, []string{"the old process refused: no thanks"}},
		{"not the protocol", func(*testing.T) ([]byte, []*os.File) {
			return []byte("HTTP/1.1 400 Bad Request\r\n"), nil
		}, []string{"not a handoff protocol message"}},
		{"fewer descriptors than names", func(t *testing.T) ([]byte, []*os.File) {
			return []byte("LBHO\x01\x02\x02\x05proxy\x03tls"), []*os.File{listening(t)}
		}, []string{"names 2 listeners but carries 1"}},
		{"duplicate name", func(t *testing.T) ([]byte, []*os.File) {
			return []byte("LBHO\x01\x02\x02\x05proxy\x05proxy"), []*os.File{listening(t), listening(t)}
		}, []string{`"proxy" offered twice`}},
		{"not listening", func(t *testing.T) ([]byte, []*os.File) {
			return []byte("LBHO\x01\x02\x01\x05proxy"), []*os.File{connected(t)}
		}, []string{`listener "proxy"`, "not listening"}},
		{"not a TCP socket", func(t *testing.T) ([]byte, []*os.File) {
			ln, err := net.Listen("unix", filepath.Join(filepath.Dir(socketPath(t)), "u.sock"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			f, err := ln.(*net.UnixListener).File()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = f.Close() })
			return []byte("LBHO\x01\x02\x01\x05proxy"), []*os.File{f}
		}, []string{`listener "proxy"`, "not a TCP listener"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			if tt.answer != nil {
				msg, files := tt.answer(t)
				fakeOld(t, path, msg, files)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			tk, err := handoff.Take(ctx, path)
			if err == nil {
				tk.Abort()
			}
			mustContain(t, err, append([]string{"handoff: take " + path}, tt.errText...)...)
		})
	}
}

// fakeOld answers the first hello on path with msg and files, then waits
// for the peer to close.
func fakeOld(t *testing.T, path string, msg []byte, files []*os.File) {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	fds := make([]int, len(files))
	for i, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		_ = rc.Control(func(fd uintptr) { fds[i] = int(fd) })
	}
	go func() {
		defer close(done)
		_ = ln.SetDeadline(time.Now().Add(testTimeout))
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		b := make([]byte, 64)
		if _, err := c.Read(b); err != nil {
			return
		}
		var oob []byte
		if len(fds) > 0 {
			oob = syscall.UnixRights(fds...)
		}
		if _, _, err := c.WriteMsgUnix(msg, oob, nil); err != nil {
			return
		}
		_, _ = c.Read(b) // until Take closes
	}()
}

// TestReadyUnconfirmed checks Ready against an old process that reads
// "ready" and goes away without answering "released".
func TestReadyUnconfirmed(t *testing.T) {
	path := socketPath(t)
	l := tcpListeners(t, "proxy")["proxy"]
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	fakeOld(t, path, []byte("LBHO\x01\x02\x01\x05proxy"), []*os.File{f})

	tk := take(t, path)
	nl := tk.Listeners()["proxy"]
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	err = tk.Ready(ctx)
	if !errors.Is(err, handoff.ErrUnconfirmed) {
		t.Fatalf("Ready: %v, want ErrUnconfirmed", err)
	}
	mustContain(t, err, "handoff: ready "+path, "waiting for release")
	// The listener stays usable until the caller decides.
	checkAccepts(t, nl, l.Addr().String())
	tk.Abort()
	if err := nl.SetDeadline(time.Now()); err == nil {
		t.Fatal("Abort after a failed Ready left the listener open")
	}
}
