package h1guard

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wantReject is the synthetic request a refused request turns into, spelled
// out here so that a change to it is noticed.
// wantReject is the synthetic request that stands for a refused one.
var wantReject = "GET " + rejectPath + " HTTP/1.1\r\nHost: invalid\r\nConnection: close\r\n\r\n"

func TestRejectRequestBytes(t *testing.T) {
	if string(rejectRequest) != wantReject {
		t.Fatalf("rejectRequest = %q, want %q", rejectRequest, wantReject)
	}
	if !strings.HasPrefix(rejectPath, "/.lb-h1guard-rejected/") || len(rejectPath) != len("/.lb-h1guard-rejected/")+32 {
		t.Fatalf("rejectPath = %q, want the prefix and a 32-hex-digit token", rejectPath)
	}
}

// ioTimeout bounds every read of a guarded connection in the tests.
const ioTimeout = 10 * time.Second

// pipeRun writes each element of writes, in order, to one end of a net.Pipe
// from a goroutine, then closes that end; it reads everything from a Conn
// guarding the other end (through wrap, when not nil) under a deadline and
// returns it with the Conn.
func pipeRun(t testing.TB, writes [][]byte, wrap func(io.Reader) io.Reader) ([]byte, *Conn) {
	t.Helper()
	client, server := net.Pipe()
	g := New(server)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer client.Close()
		for _, w := range writes {
			if _, err := client.Write(w); err != nil {
				return // the guard stopped reading (refused) and closed
			}
		}
	}()
	if err := g.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	var r io.Reader = g
	if wrap != nil {
		r = wrap(g)
	}
	out, err := io.ReadAll(r)
	g.Close()
	<-done
	if err != nil {
		t.Fatalf("reading the guarded conn: %v (after %d bytes: %.200q)", err, len(out), out)
	}
	return out, g
}

// A splitter cuts an input into the writes that deliver it.
type splitter struct {
	name  string
	small bool // only for small inputs (it makes one write per byte)
	split func([]byte) [][]byte
}

var splitters = []splitter{
	{name: "whole", split: func(b []byte) [][]byte { return [][]byte{b} }},
	{name: "bytewise", small: true, split: func(b []byte) [][]byte {
		out := make([][]byte, len(b))
		for i := range b {
			out[i] = b[i : i+1]
		}
		return out
	}},
	{name: "random", split: func(b []byte) [][]byte {
		r := rand.New(rand.NewPCG(uint64(len(b)), 7))
		var out [][]byte
		for len(b) > 0 {
			n := 1 + r.IntN(min(len(b), 1+r.IntN(3)*4096+r.IntN(200)))
			out = append(out, b[:n])
			b = b[n:]
		}
		return out
	}},
}

// memConn is an in-memory net.Conn whose Read returns the pieces in order
// (each at most maxRead bytes per Read when maxRead > 0), then io.EOF.
// Writes are discarded.
type memConn struct {
	pieces  [][]byte
	maxRead int
	reads   int
}

func (c *memConn) Read(p []byte) (int, error) {
	for len(c.pieces) > 0 && len(c.pieces[0]) == 0 {
		c.pieces = c.pieces[1:]
	}
	if len(c.pieces) == 0 {
		return 0, io.EOF
	}
	c.reads++
	q := p
	if c.maxRead > 0 && len(q) > c.maxRead {
		q = q[:c.maxRead]
	}
	n := copy(q, c.pieces[0])
	c.pieces[0] = c.pieces[0][n:]
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (c *memConn) String() string                   { return "memConn" }

func repeat(s string, n int) string { return string(bytes.Repeat([]byte(s), n)) }
