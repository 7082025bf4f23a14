package sockio_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/sockio"
)

// pair returns two ends of a loopback TCP connection, closed in cleanup.
func pair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	a, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestNewNeedsASocket(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if s := sockio.New(c1); s != nil {
		t.Errorf("New(net.Pipe end) = %v, want nil", s)
	}
	a, _ := pair(t)
	if sockio.New(a) == nil {
		t.Error("New(TCP connection) = nil, want a Conn")
	}
}

func TestReadWrite(t *testing.T) {
	a, b := pair(t)
	sa, sb := sockio.New(a), sockio.New(b)
	if n, err := sa.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v; want 5, nil", n, err)
	}
	buf := make([]byte, 16)
	// The bytes may not be there yet: Read waits in the poller.
	if n, err := sb.Read(buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %d %q, %v; want 5 %q, nil", n, buf[:n], err, "hello")
	}
	if n, err := sb.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
	a.Close()
	if n, err := sb.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
}

// A write larger than the socket buffers completes by waiting for the
// reader, in several system calls.
func TestLargeWriteWaitsForTheReader(t *testing.T) {
	a, b := pair(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // let the sender fill the buffers
		all, _ := io.ReadAll(sockio.New(b))
		got <- all
	}()
	n, err := sockio.New(a).Write(data)
	if n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
	}
	a.Close()
	select {
	case all := <-got:
		if !bytes.Equal(all, data) {
			t.Errorf("reader got %d bytes, want the %d written, equal", len(all), len(data))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reader did not finish within 10s")
	}
}

func TestReadDeadline(t *testing.T) {
	a, _ := pair(t)
	if err := a.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := sockio.New(a).Read(make([]byte, 8))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past the deadline: %v; want a timeout (os.ErrDeadlineExceeded)", err)
	}
}

func TestReadUnblockedByClose(t *testing.T) {
	a, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := sockio.New(a).Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read on a closed connection: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return within 5s of Close")
	}
}

func TestWriteToResetPeer(t *testing.T) {
	a, b := pair(t)
	if err := b.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	b.Close() // RST
	s := sockio.New(a)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = s.Write([]byte("x"))
		time.Sleep(time.Millisecond)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "sendto" && se.Syscall != "write" {
		t.Errorf("Write to a reset peer: %v; want an *os.SyscallError from sendto (write off Linux)", err)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Write to a reset peer: %v; want ECONNRESET or EPIPE", err)
	}
}

// echo answers each read on c with the same bytes until c closes.
func echo(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func TestWriteOnRead(t *testing.T) {
	t.Run("question then answer", func(t *testing.T) {
		a, b := pair(t)
		go echo(b)
		s := sockio.New(a)
		buf := make([]byte, 16)
		for i, q := range []string{"ping", "again", "third"} {
			s.WriteOnRead([]byte(q))
			n, err := io.ReadFull(s, buf[:len(q)])
			if err != nil || string(buf[:n]) != q {
				t.Fatalf("exchange %d: read %q, %v; want %q", i, buf[:n], err, q)
			}
		}
	})
	t.Run("larger than the socket buffers", func(t *testing.T) {
		a, b := pair(t)
		go echo(b)
		s := sockio.New(a)
		q := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: the write cannot finish at once
		s.WriteOnRead(q)
		got := make([]byte, len(q))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, q) {
			t.Fatalf("read back %v, equal %v; want the 4 MiB echoed", err, bytes.Equal(got, q))
		}
	})
	t.Run("peer closed: the read fails instead of waiting", func(t *testing.T) {
		a, b := pair(t)
		b.Close()
		time.Sleep(20 * time.Millisecond) // the FIN is in, and signalled, before the read
		s := sockio.New(a)
		s.WriteOnRead([]byte("anyone?"))
		if err := a.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := s.Read(make([]byte, 8))
		var ne net.Error
		if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("Read after writing to a closed peer = %d, %v; want 0 and EOF or a reset, not a timeout", n, err)
		}
	})
}
