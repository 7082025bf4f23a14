package h1guard

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// readerConn is a net.Conn reading from a bytes.Reader.
type readerConn struct {
	memConn
	r bytes.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// head200 is a typical 200-byte GET head.
var head200 = func() string {
	h := "GET /api/v1/items?id=12345 HTTP/1.1\r\nHost: service.example.com\r\nUser-Agent: bench/1.0\r\n" +
		"Accept: application/json\r\nAccept-Encoding: gzip\r\nX-Request-Id: "
	h += strings.Repeat("a", 200-len(h)-len("\r\n\r\n")) + "\r\n\r\n"
	if len(h) != 200 {
		panic(len(h))
	}
	return h
}()

// drain reads r to the end with a 4 KiB buffer, as net/http's bufio.Reader
// does.
func drain(b *testing.B, r io.Reader, buf []byte) int {
	total := 0
	for {
		n, err := r.Read(buf)
		total += n
		if err == io.EOF {
			return total
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func benchStream(b *testing.B, stream []byte, guarded bool) {
	buf := make([]byte, 4096)
	c := &readerConn{}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.r.Reset(stream)
		var r net.Conn = c
		var g *Conn
		if guarded {
			g = New(c)
			r = g
		}
		if n := drain(b, r, buf); n != len(stream) {
			b.Fatalf("read %d of %d bytes", n, len(stream))
		}
		if g != nil && g.Reason() != "" {
			b.Fatal(g.Reason())
		}
	}
}

var pipelined = []byte(strings.Repeat(head200, 1000))

func BenchmarkPipelinedGETsGuarded(b *testing.B) { benchStream(b, pipelined, true) }
func BenchmarkPipelinedGETsRaw(b *testing.B)     { benchStream(b, pipelined, false) }

var bigPOST = []byte("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("x", 1<<20))

func BenchmarkContentLengthBodyGuarded(b *testing.B) { benchStream(b, bigPOST, true) }
func BenchmarkContentLengthBodyRaw(b *testing.B)     { benchStream(b, bigPOST, false) }

var chunkedPOST = func() []byte {
	var s strings.Builder
	s.WriteString(chunkHead)
	for range 256 {
		s.WriteString("1000\r\n" + strings.Repeat("y", 4096) + "\r\n")
	}
	s.WriteString("0\r\n\r\n")
	return []byte(s.String())
}()

func BenchmarkChunkedBodyGuarded(b *testing.B) { benchStream(b, chunkedPOST, true) }
func BenchmarkChunkedBodyRaw(b *testing.B)     { benchStream(b, chunkedPOST, false) }

// A 60 KB head that arrives one byte per read: stepHead searches the whole
// buffered head again after every read (quadratic).
func BenchmarkTrickledLargeHead(b *testing.B) {
	head := []byte("GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 60000) + "\r\n\r\n")
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		g := New(&memConn{pieces: [][]byte{bytes.Clone(head)}, maxRead: 1})
		if n := drain(b, g, buf); n != len(head) {
			b.Fatalf("read %d of %d", n, len(head))
		}
	}
}
