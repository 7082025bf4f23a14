package coalesce_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/coalesce"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// inspectingConn reads each batch in Go, slowly, before writing a copy.
type inspectingConn struct{ net.Conn }

func (c *inspectingConn) Write(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return c.Conn.Write(bytes.Clone(p))
}

// readAll reads from c until EOF or 5 s pass.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the peer's end: %v", err)
	}
	return b
}

func TestConcurrentWritesArriveWholeAndInOrder(t *testing.T) {
	client, server := pair(t)
	// The socket is slow to take each batch, and the batch is read in Go
	// (the race detector sees it), as crypto/tls would.
	c := coalesce.New(&inspectingConn{Conn: client})
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				// One record per Write: "<writer>:<seq>:<padding>;" must
				// arrive whole. Every tenth is larger than the buffer
				// kept between writes.
				if _, err := fmt.Fprintf(c, "%d:%04d:%s;", w, i, padding(w, i)); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	got := make(chan []byte, 1)
	go func() {
		_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(server)
		got <- b
	}()
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	b := <-got
	next := make([]int, writers)
	records := bytes.Split(bytes.TrimSuffix(b, []byte(";")), []byte(";"))
	if len(records) != writers*each {
		t.Fatalf("got %d records, want %d", len(records), writers*each)
	}
	for _, r := range records {
		var w, i int
		parts := bytes.SplitN(r, []byte(":"), 3)
		if len(parts) != 3 {
			t.Fatalf("torn record %.40q", r)
		}
		if _, err := fmt.Sscanf(string(parts[0])+":"+string(parts[1]), "%d:%d", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("torn record %.40q", r)
		}
		if string(parts[2]) != padding(w, i) {
			t.Fatalf("writer %d record %d: padding of %d bytes corrupted", w, i, len(parts[2]))
		}
		if i != next[w] {
			t.Fatalf("writer %d: record %d arrived where %d was due", w, i, next[w])
		}
		next[w]++
	}
}

// padding is record i of writer w's filler: 100 KiB for every tenth.
func padding(w, i int) string {
	n := 3
	if i%10 == 0 {
		n = 100 << 10
	}
	return strings.Repeat(string(rune('a'+w)), n)
}

func TestWritesMadeBeforeTheWriterRunsGoOutTogether(t *testing.T) {
	client, server := pair(t)
	cc := &countingConn{Conn: client}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	c := coalesce.New(cc)
	// With one P the writer goroutine cannot run until this one blocks.
	for range 100 {
		if _, err := c.Write([]byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	runtime.GOMAXPROCS(prev)
	if b := readAll(t, server); len(b) != 1000 {
		t.Fatalf("peer got %d bytes, want 1000", len(b))
	}
	// One write, or two if the runtime preempted this goroutine once.
	if n := cc.writes.Load(); n < 1 || n > 2 {
		t.Fatalf("100 writes reached the socket in %d system calls, want 1 (2 at most)", n)
	}
}

func TestCloseWritesWhatIsBuffered(t *testing.T) {
	client, server := pair(t)
	c := coalesce.New(client)
	want := bytes.Repeat([]byte("x"), 100<<10)
	if _, err := c.Write(want); err != nil {
		t.Fatal(err)
	}
	done := make(chan []byte, 1)
	go func() {
		_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(server)
		done <- b
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("peer got %d bytes, want %d", len(got), len(want))
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, coalesce.ErrClosed) {
		t.Fatalf("write after close: %v, want ErrClosed", err)
	}
	_ = c.Close() // a second Close is harmless
}

func TestWriteErrorIsReturnedByLaterWrites(t *testing.T) {
	client, server := pair(t)
	c := coalesce.New(client)
	defer c.Close()
	// The peer resets the connection; writes soon fail.
	_ = server.(*net.TCPConn).SetLinger(0)
	server.Close()
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		_, err = c.Write(bytes.Repeat([]byte("y"), 4096))
		time.Sleep(5 * time.Millisecond)
	}
	if err == nil || errors.Is(err, coalesce.ErrClosed) {
		t.Fatalf("writes to a reset connection: %v, want the socket's error", err)
	}
	if _, again := c.Write([]byte("z")); again == nil {
		t.Fatal("the write error is not sticky")
	}
}

func TestWriterWaitsForASlowPeerAndCloseReleasesIt(t *testing.T) {
	defer coalesce.SetCloseLinger(200 * time.Millisecond)()
	client, _ := pair(t) // the peer never reads
	c := coalesce.New(client)
	chunk := bytes.Repeat([]byte("z"), 64<<10)
	blocked := make(chan error, 1)
	go func() {
		// Socket buffers and then the pending limit fill up; a Write
		// then waits.
		for range 2000 {
			if _, err := c.Write(chunk); err != nil {
				blocked <- err
				return
			}
		}
		blocked <- nil
	}()
	select {
	case err := <-blocked:
		t.Fatalf("128 MB went into a connection whose peer reads nothing (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	// A reader waiting on the connection is released by Close too.
	readDone := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readDone <- err
	}()
	closed := make(chan struct{})
	go func() {
		_ = c.Close() // returns at once; the writer lingers for the unread bytes
		close(closed)
	}()
	select {
	case err := <-blocked:
		if !errors.Is(err, coalesce.ErrClosed) {
			t.Fatalf("blocked write returned %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not release the waiting writer")
	}
	select {
	case <-closed:
	case <-time.After(100 * time.Millisecond):
		t.Fatal("Close waited for the peer; it must return at once")
	}
	select {
	case err := <-readDone:
		if err == nil {
			t.Fatal("read after Close succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release the waiting reader")
	}
}
