package h1guard

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	getA      = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
	getB      = "GET /b?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"
	getC      = "GET http://a/c HTTP/1.1\r\nHost: a\r\n\r\n"
	smuggled  = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	chunkHead = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	wsHead    = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

// binaryJunk is every byte value, with the sequences the guard looks for
// sprinkled in: once passing through, none of it may matter.
func binaryJunk() string {
	var b bytes.Buffer
	for i := range 256 {
		b.WriteByte(byte(i))
	}
	b.WriteString("\n\r\x00\r\n\r\nGET / HTTP/1.1\nHost: a\nHost: b\n\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	b.WriteString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xfe")
	return b.String()
}

func randomBody(n int) string {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	// Something that would be refused if it were parsed as a head.
	copy(b[n/2:], "\r\n\r\nGET / HTTP/1.1\nHost: x\n\n")
	return string(b)
}

func TestValidStreamsPassThrough(t *testing.T) {
	big := randomBody(5 << 20)
	tests := []struct {
		name string
		in   string
	}{
		{"simple GET", getA},
		{"pipelined GETs", getA + getB + getC + getA},
		{"POST Content-Length 0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" + getA},
		{"POST Content-Length 1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx" + getA},
		{"POST Content-Length body that looks like requests", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 41\r\n\r\n" +
			"GET /x HTTP/1.1\nHost: a\nHost: b\n\n\r\n\r\n\x00\r\n" + getA},
		{"POST Content-Length 5 MiB", "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 5242880\r\n\r\n" + big + getA},
		{"POST chunked with extensions and trailers", chunkHead +
			"5;name=value\r\nhello\r\n" +
			"A;x;y=\"q r\"\r\n0123456789\r\n" +
			"1a \t;ext\r\n\r\n\r\nGET / HTTP/1.1\nX:\x00\r\n\r\n\r\n" +
			"0;last\r\nX-Trailer: t\r\nY: caf\xe9\r\n\r\n" + getA},
		{"chunked, no trailer, upper-case hex", chunkHead + "00A\r\n0123456789\r\n0\r\n\r\n" + getA},
		{"Transfer-Encoding case-insensitive", "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  Chunked \r\n\r\n1\r\nx\r\n0\r\n\r\n" + getA},
		{"duplicate identical Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length:3\r\n\r\nabc" + getA},
		{"Content-Length with leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc" + getA},
		{"HTTP/1.0 request", "GET / HTTP/1.0\r\n\r\n" + "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"},
		{"obs-text and HTAB in values", "GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xe9\t\x80\xff end\t\r\nX-Tab:\tv\t\r\nX-Empty:\r\n\r\n"},
		{"all token characters in method and names", "M-!#$%&'*+.^_`|~09az / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n"},
		{"h2 prior-knowledge preface then binary", h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00" + binaryJunk()},
		{"h2 preface only", h2Preface},
		{"websocket upgrade then binary frames", wsHead + "\x82\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" + binaryJunk()},
		{"websocket upgrade with a body then binary", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\nContent-Length: 3\r\n\r\nabc" + binaryJunk()},
		{"websocket upgrade after other requests", getA + getB + wsHead + binaryJunk()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			for _, sp := range splitters {
				if sp.small && len(in) > 1<<16 {
					continue
				}
				t.Run(sp.name, func(t *testing.T) {
					out, g := pipeRun(t, sp.split(in), nil)
					if !bytes.Equal(out, in) {
						t.Fatalf("output differs from input at byte %d (len %d vs %d): %.200q", firstDiff(out, in), len(out), len(in), out[firstDiff(out, in):])
					}
					if g.Reason() != "" {
						t.Fatalf("Reason() = %q, want \"\"", g.Reason())
					}
				})
			}
			if len(in) <= 1<<16 {
				// The consumer reads one byte at a time (the body fast path
				// then reads straight into a 1-byte buffer).
				t.Run("one-byte-reader", func(t *testing.T) {
					out, g := pipeRun(t, splitters[2].split(in), iotest.OneByteReader)
					if !bytes.Equal(out, in) || g.Reason() != "" {
						t.Fatalf("output %q, reason %q; want the input", out, g.Reason())
					}
				})
			}
			if len(in) <= 600 {
				// Every two-write split.
				t.Run("every-split", func(t *testing.T) {
					for i := 0; i <= len(in); i++ {
						out, g := pipeRun(t, [][]byte{in[:i], in[i:]}, nil)
						if !bytes.Equal(out, in) || g.Reason() != "" {
							t.Fatalf("split at %d: output %q, reason %q; want the input", i, out, g.Reason())
						}
					}
				})
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestRefused(t *testing.T) {
	chunkPrefix := chunkHead + "5\r\nhello\r\n"
	tests := []struct {
		name   string
		valid  string // the requests (or part) that pass before the bad one
		bad    string // the refused part; smuggled follows it
		reason string
		noTail bool // do not append a request after bad
	}{
		{"CL then TE", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding", false},
		{"TE then CL", "", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding", false},
		{"TE then CL in a later pipelined request", getA + getB, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding", false},
		{"bad request after a CL body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "several Host headers", false},
		{"bad request after a chunked body", chunkHead + "3\r\nabc\r\n0\r\nT: v\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "several Host headers", false},
		{"two differing CL", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "several differing Content-Length headers", false},
		{"CL +5", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", `invalid Content-Length "+5"`, false},
		{"CL 5 5", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", `invalid Content-Length "5 5"`, false},
		{"CL 5,5", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello", `invalid Content-Length "5,5"`, false},
		{"CL 0x5", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", `invalid Content-Length "0x5"`, false},
		{"CL -1", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", `invalid Content-Length "-1"`, false},
		{"CL empty", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", `invalid Content-Length ""`, false},
		{"CL 19 digits", "", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n", "invalid Content-Length", false},
		{"TE chunked, identity", "", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", `unsupported Transfer-Encoding "chunked, identity"`, false},
		{"TE xchunked", "", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", `unsupported Transfer-Encoding "xchunked"`, false},
		{"TE twice", "", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", `unsupported Transfer-Encoding "chunked,chunked"`, false},
		{"TE in HTTP/1.0", "", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding in an HTTP/1.0 request", false},
		{"obs-fold", "", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "obsolete line folding", false},
		{"obs-fold with HTAB", getA, "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", "obsolete line folding", false},
		{"bare LF line endings", "", "GET / HTTP/1.1\nHost: a\n\n", "bare LF", false},
		{"bare LF after the request line", getA, "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", "bare LF", false},
		{"bare LF before a request", "", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "bare LF", false},
		{"bare CR inside a value", "", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", "bare CR", false},
		{"bare CR ending the request line", "", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", "bare CR", false},
		{"NUL in a value", "", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", `invalid character in the value of header "X"`, false},
		{"DEL in a value", "", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", `invalid character in the value of header "X"`, false},
		{"space in a header name", "", "GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n", `invalid header name "X Y"`, false},
		{"space before colon", "", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", `invalid header name "Host "`, false},
		{"empty header name", "", "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", "header line without a name and colon", false},
		{"header line without colon", "", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", "header line without a name and colon", false},
		{"obs-text in a header name", "", "GET / HTTP/1.1\r\nHost: a\r\nX\xe9: v\r\n\r\n", "invalid header name", false},
		{"two Host headers", "", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "several Host headers", false},
		{"bad method char", "", "G(ET / HTTP/1.1\r\nHost: a\r\n\r\n", "invalid method", false},
		{"empty method", "", " / HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line", false},
		{"two spaces after the method", "", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line", false},
		{"no version", "", "GET /\r\nHost: a\r\n\r\n", "malformed request line", false},
		{"target with a space", "", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", "unsupported protocol version", false},
		{"target with a control", "", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", "invalid character in the request target", false},
		{"target with HTAB", "", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", "invalid character in the request target", false},
		{"target with DEL", "", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", "invalid character in the request target", false},
		{"target with obs-text", "", "GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", "invalid character in the request target", false},
		{"HTTP/1.2", "", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", `unsupported protocol version "HTTP/1.2"`, false},
		{"HTTP/2.0 request line", "", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", `unsupported protocol version "HTTP/2.0"`, false},
		{"lower-case version", "", "GET / http/1.1\r\nHost: a\r\n\r\n", "unsupported protocol version", false},
		{"trailing space after the version", "", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "unsupported protocol version", false},
		{"PRI line that is not the preface", "", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", `unsupported protocol version "HTTP/2.0"`, false},
		{"h2 preface after a request", getA, h2Preface, `unsupported protocol version "HTTP/2.0"`, false},
		{"head larger than MaxHeadBytes, never ending", "", "GET / HTTP/1.1\r\nHost: a\r\nX: " + repeat("a", MaxHeadBytes+10), "request head larger than 65536 bytes", true},
		{"chunk size zz", chunkPrefix, "zz\r\n", "malformed chunk-size line", false},
		{"chunk size empty", chunkPrefix, "\r\n", "malformed chunk-size line", false},
		{"chunk size 16 hex digits", chunkPrefix, "0000000000000001\r\nx\r\n0\r\n\r\n", "malformed chunk-size line", false},
		{"chunk size with leading space", chunkPrefix, " 5\r\nhello\r\n", "malformed chunk-size line", false},
		{"chunk size 0x5", chunkPrefix, "0x5\r\nhello\r\n", "malformed chunk-size line", false},
		{"chunk size with a sign", chunkPrefix, "+5\r\nhello\r\n", "malformed chunk-size line", false},
		{"chunk extension with a control", chunkPrefix, "5;a\x00\r\nhello\r\n", "malformed chunk-size line", false},
		{"chunk-size line too long", chunkPrefix, "5;" + repeat("e", maxChunkLine+10), "chunk-size line too long", true},
		{"first chunk size malformed", chunkHead, "g\r\n", "malformed chunk-size line", false},
		{"chunk data not followed by CRLF", chunkPrefix + "5\r\nhello", "XX\r\n0\r\n\r\n", "chunk data is not followed by CRLF", false},
		{"chunk data followed by bare LF", chunkPrefix + "5\r\nhello", "\n0\r\n\r\n", "chunk data is not followed by CRLF", false},
		{"bare LF in the chunk-size line", chunkPrefix, "5\nhello\r\n0\r\n\r\n", "chunk-size line", false},
		{"bare LF ending the last chunk", chunkPrefix, "0\n\r\n", "chunk-size line", false},
		{"invalid trailer name", chunkPrefix + "0\r\nGood: t\r\n", "Bad Name: v\r\n\r\n", `trailer: invalid header name "Bad Name"`, false},
		{"trailer without colon", chunkPrefix + "0\r\n", "nocolon\r\n\r\n", "trailer: header line without a name and colon", false},
		{"trailer obs-fold", chunkPrefix + "0\r\nA: b\r\n", " c\r\n\r\n", "trailer: ", false},
		{"trailer with NUL", chunkPrefix + "0\r\n", "A: \x00\r\n\r\n", "trailer: invalid character", false},
		{"trailer with bare LF", chunkPrefix + "0\r\n", "A: b\n\r\n", "trailer", false},
		{"trailer section too large", chunkPrefix + "0\r\n", "A: " + repeat("b", MaxHeadBytes+10), "trailer section too large", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.valid + tt.bad
			if !tt.noTail {
				in += smuggled
			}
			want := tt.valid + wantReject
			for _, sp := range splitters {
				if sp.small && len(in) > 1<<16 {
					continue
				}
				t.Run(sp.name, func(t *testing.T) {
					out, g := pipeRun(t, sp.split([]byte(in)), nil)
					if string(out) != want {
						t.Fatalf("output:\n%.300q\nwant:\n%.300q", out, want)
					}
					if !strings.Contains(g.Reason(), tt.reason) {
						t.Fatalf("Reason() = %q, want it to contain %q", g.Reason(), tt.reason)
					}
				})
			}
			if len(in) <= 600 {
				t.Run("every-split", func(t *testing.T) {
					for i := 0; i <= len(in); i++ {
						out, g := pipeRun(t, [][]byte{[]byte(in[:i]), []byte(in[i:])}, nil)
						if string(out) != want || !strings.Contains(g.Reason(), tt.reason) {
							t.Fatalf("split at %d: output %q, reason %q; want %q, reason containing %q", i, out, g.Reason(), want, tt.reason)
						}
					}
				})
			}
		})
	}
}

// After a refusal every Read returns io.EOF, even if more bytes arrive.
func TestReadAfterRejectIsEOF(t *testing.T) {
	c := &memConn{pieces: [][]byte{[]byte("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + getA)}}
	g := New(c)
	out, err := io.ReadAll(g)
	if err != nil || string(out) != wantReject {
		t.Fatalf("ReadAll = %q, %v", out, err)
	}
	c.pieces = append(c.pieces, []byte(getA))
	for range 3 {
		if n, err := g.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("Read after reject = %d, %v; want 0, EOF", n, err)
		}
	}
}

// An incomplete head at the end of the stream (with nothing refusable in
// it) is handed over as it is: net/http sees the truncation.
// TestIncompleteAtEOF: bytes of a head or chunk line that the stream ends
// inside were never checked, so they are dropped; everything checked before
// them (whole heads, body bytes) comes through.
func TestIncompleteAtEOF(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"GET / HTTP/1.1\r\nHost: a\r\n", ""},
		{"G", ""},
		{"\r", ""},
		{"PRI * HTTP/2.0\r\n", ""},
		{getA + "GET /b HTTP/1.1\r\nHo", getA},
		{chunkHead + "5\r\nhel", chunkHead + "5\r\nhel"},
		{chunkHead + "5", chunkHead},
		{chunkHead + "5\r\nhello\r", chunkHead + "5\r\nhello"},
		{chunkHead + "0\r\nX: y", chunkHead + "0\r\n"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"},
	} {
		for _, sp := range splitters {
			out, g := pipeRun(t, sp.split([]byte(tc.in)), nil)
			if string(out) != tc.want || g.Reason() != "" {
				t.Errorf("%s %q: output %q, reason %q; want %q, no reason", sp.name, tc.in, out, g.Reason(), tc.want)
			}
		}
	}
}

func TestWritePassesThrough(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	g := New(server)
	defer g.Close()
	go func() { g.Write([]byte("HTTP/1.1 200 OK\r\n\n\x00")) }()
	buf := make([]byte, 64)
	n, err := io.ReadFull(client, buf[:19])
	if err != nil || string(buf[:n]) != "HTTP/1.1 200 OK\r\n\n\x00" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
	if g.Unwrap() != server {
		t.Fatal("Unwrap does not return the wrapped conn")
	}
}

func TestContextHelpers(t *testing.T) {
	ctx := context.Background()
	reqFor := func(ctx context.Context, path string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		return r.WithContext(ctx)
	}
	if _, ok := Rejected(reqFor(ctx, rejectPath)); ok {
		t.Fatal("Rejected of a bare context says rejected")
	}
	if _, ok := FromContext(ctx); ok {
		t.Fatal("FromContext of a bare context reports a Conn")
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if got := WithConn(ctx, c1); got != ctx {
		t.Fatal("WithConn with a plain net.Conn changed the context")
	}
	g := New(&memConn{pieces: [][]byte{[]byte("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")}})
	gctx := WithConn(ctx, g)
	if got, ok := FromContext(gctx); !ok || got != g {
		t.Fatalf("FromContext = %p, %v; want %p, true", got, ok, g)
	}
	if _, ok := Rejected(reqFor(gctx, rejectPath)); ok {
		t.Fatal("Rejected before anything was read")
	}
	if _, err := io.ReadAll(g); err != nil {
		t.Fatal(err)
	}
	if r, ok := Rejected(reqFor(gctx, rejectPath)); !ok || r != "both Content-Length and Transfer-Encoding" {
		t.Fatalf("Rejected = %q, %v", r, ok)
	}
	if _, ok := Rejected(reqFor(gctx, "/.lb-h1guard-rejected")); ok {
		t.Fatal("Rejected for a path without the token")
	}
}

type errListener struct {
	net.Listener
	conn net.Conn
	err  error
}

func (l *errListener) Accept() (net.Conn, error) { return l.conn, l.err }

func TestListener(t *testing.T) {
	inner := &memConn{}
	c, err := Listener{Listener: &errListener{conn: inner}}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if gc, ok := c.(*Conn); !ok || gc.Unwrap() != inner {
		t.Fatalf("Accept returned %T, want *Conn wrapping the accepted conn", c)
	}
	boom := errors.New("boom")
	c, err = Listener{Listener: &errListener{err: boom}}.Accept()
	if c != nil || err != boom {
		t.Fatalf("Accept = %v, %v; want nil, boom", c, err)
	}
}

// TestLeadingCRLFDropped: empty lines before a request line are allowed by
// RFC 9112 but not by net/http at a connection's start, so the guard drops
// them.
func TestLeadingCRLFDropped(t *testing.T) {
	in := "\r\n\r\n" + getA + "\r\n" + getB
	for _, sp := range splitters {
		out, g := pipeRun(t, sp.split([]byte(in)), nil)
		if string(out) != getA+getB || g.Reason() != "" {
			t.Errorf("%s: output %q, reason %q; want %q", sp.name, out, g.Reason(), getA+getB)
		}
	}
}
