// Package h1guard checks HTTP/1.1 request framing before net/http parses it,
// so that requests a proxy must never forward are refused instead of being
// "repaired": a request with both Content-Length and Transfer-Encoding,
// several differing Content-Length values, obsolete line folding, bare CR or
// LF line endings, invalid header names or values, or a malformed request
// line. (net/http accepts some of these: it drops Content-Length in favour
// of chunked and joins folded lines, which is how request smuggling starts.)
//
// A Conn wraps a client connection and validates the byte stream request by
// request: it holds back each request head until it is complete and valid,
// follows the body's framing (Content-Length or chunked, strictly parsed) to
// find the next head, and releases bytes to net/http only once they are
// checked. When a request is refused, the Conn hands net/http one synthetic
// request for RejectPath, whose handler answers 400 with the reason (see
// Rejected), and then ends the stream, so nothing after the bad request is
// ever parsed.
//
// After a WebSocket upgrade request and for HTTP/2 with prior knowledge, the
// Conn stops inspecting: those bytes belong to another protocol. A proxy must
// close a connection whose upgrade it did not complete.
package h1guard

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/lb-project/lb/dataplane/h1wire"
)

// rejectPath is the path of the synthetic request that stands for a refused
// one. It carries a random token made at start-up, so a client cannot ask
// for it (a request that does gets routed like any other).
var rejectPath = "/.lb-h1guard-rejected/" + randomToken()

func randomToken() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("h1guard: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// MaxHeadBytes bounds a request head (request line and headers).
const MaxHeadBytes = 64 << 10

// maxChunkLine bounds a chunk-size line, extensions included.
const maxChunkLine = 4096

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var rejectRequest = []byte("GET " + rejectPath + " HTTP/1.1\r\nHost: invalid\r\nConnection: close\r\n\r\n")

type state uint8

const (
	stStart       state = iota // before the first request: maybe an HTTP/2 preface
	stHead                     // reading a request head
	stBody                     // copying a Content-Length body
	stChunkSize                // reading a chunk-size line
	stChunkData                // copying chunk data
	stChunkCRLF                // expecting the CRLF after chunk data
	stTrailer                  // reading the trailer section
	stPassthrough              // another protocol: no more checks
	stRejected                 // refused: drain out, then EOF
)

// Conn is a net.Conn whose reads return only validated HTTP/1.1 requests.
// Its Read must not be called concurrently (net/http never does).
type Conn struct {
	net.Conn

	state     state
	remaining int64  // bytes left in the current body or chunk
	in        []byte // bytes read but not yet checked
	scanned   int    // bytes of in already searched for a line end
	out       []byte // checked bytes not yet returned
	buf       []byte // backing storage for in
	outBuf    []byte // backing storage for out
	// inArr and outArr are the pooled arrays behind buf and outBuf; an
	// idle connection returns them (see readIdle), so that thousands of
	// idle keep-alive connections hold no buffers of their own.
	inArr, outArr *[bufSize]byte
	upgrade       bool // the current request asks for a WebSocket upgrade
	// reason says why a request was refused; written by the reading
	// goroutine, read by handlers.
	reason atomic.Pointer[string]
}

// New wraps c.
func New(c net.Conn) *Conn {
	return &Conn{Conn: c}
}

// Unwrap returns the wrapped connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Reason returns why a request on c was refused, or "".
func (c *Conn) Reason() string {
	if r := c.reason.Load(); r != nil {
		return *r
	}
	return ""
}

// CloseWrite half-closes the wrapped connection when it can (net/http does
// so before closing a connection whose client may still be sending).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type ctxKey struct{}

// WithConn returns ctx carrying c; use it as http.Server.ConnContext so that
// handlers can ask Rejected.
func WithConn(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, ctxKey{}, gc)
	}
	return ctx
}

// Rejected reports whether r is the synthetic request standing for a
// refused one, and why that was refused.
func Rejected(r *http.Request) (string, bool) {
	if r.URL.Path != rejectPath {
		return "", false
	}
	gc, ok := r.Context().Value(ctxKey{}).(*Conn)
	if !ok {
		return "", false
	}
	reason := gc.Reason()
	return reason, reason != ""
}

// FromContext returns the guarded connection ctx carries, if any.
func FromContext(ctx context.Context) (*Conn, bool) {
	gc, ok := ctx.Value(ctxKey{}).(*Conn)
	return gc, ok
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		switch c.state {
		case stRejected:
			return 0, io.EOF
		case stPassthrough:
			if len(c.in) > 0 {
				n := copy(p, c.in)
				c.in = c.in[n:]
				return n, nil
			}
			return c.Conn.Read(p)
		case stBody, stChunkData:
			if len(c.in) == 0 {
				// Body bytes need no inspection, only counting: read them
				// straight into the caller's buffer.
				if int64(len(p)) > c.remaining {
					p = p[:c.remaining]
				}
				n, err := c.Conn.Read(p)
				c.remaining -= int64(n)
				c.afterData()
				return n, err
			}
		}
		if len(c.in) > 0 && c.step() {
			continue
		}
		var err error
		if len(c.in) == 0 && len(c.out) == 0 {
			err = c.readIdle(p)
		} else {
			err = c.fill()
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, err // a deadline: the held bytes wait for the next Read
			}
			// The stream ended inside a head or a chunk line: those bytes
			// were never checked, so they are dropped, not handed over.
			c.in = nil
			c.state = stRejected
			return 0, err
		}
	}
}

// bufSize is the size of the pooled buffers.
const bufSize = 4096

// bufPool holds the buffers of connections that are not idle.
var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// readIdle reads with nothing held, typically waiting for the next request
// on a keep-alive connection, which may take minutes: it returns the
// connection's buffers to the pool, reads into the caller's buffer p, and
// takes a buffer again only when bytes arrive.
func (c *Conn) readIdle(p []byte) error {
	c.in, c.out, c.buf, c.outBuf = nil, nil, nil, nil
	if c.inArr != nil {
		bufPool.Put(c.inArr)
		c.inArr = nil
	}
	if c.outArr != nil {
		bufPool.Put(c.outArr)
		c.outArr = nil
	}
	if len(p) == 0 {
		return c.fill()
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.inArr = bufPool.Get().(*[bufSize]byte)
		c.buf = c.inArr[:0]
		c.in = append(c.buf, p[:n]...) // p is at most what the caller can take back
		c.scanned = 0
		return nil
	}
	return err
}

// fill reads more bytes into in.
func (c *Conn) fill() error {
	if c.buf == nil {
		c.inArr = bufPool.Get().(*[bufSize]byte)
		c.buf = c.inArr[:0]
	}
	if len(c.in) == 0 {
		c.in = c.buf[:0]
		c.scanned = 0
	}
	if cap(c.in)-len(c.in) < 1024 {
		if len(c.in) < cap(c.buf)/2 {
			// Move the tail to the front of the buffer rather than grow.
			n := copy(c.buf[:cap(c.buf)], c.in)
			c.in = c.buf[:n]
		} else {
			grown := make([]byte, len(c.in), max(2*cap(c.in), 4096))
			copy(grown, c.in)
			c.in = grown
			c.buf = grown[:0]
		}
	}
	n, err := c.Conn.Read(c.in[len(c.in):cap(c.in)])
	c.in = c.in[:len(c.in)+n]
	if n > 0 {
		return nil
	}
	return err
}

// step advances the state machine over in; it reports whether it consumed
// anything.
func (c *Conn) step() bool {
	switch c.state {
	case stStart:
		if len(c.in) < len(h2Preface) && bytes.HasPrefix([]byte(h2Preface), c.in) {
			return false // could still be the preface
		}
		if bytes.HasPrefix(c.in, []byte(h2Preface)) {
			c.state = stPassthrough
			return true
		}
		c.state = stHead
		return true
	case stHead:
		return c.stepHead()
	case stBody, stChunkData:
		n := int64(len(c.in))
		if n > c.remaining {
			n = c.remaining
		}
		c.release(int(n))
		c.remaining -= n
		c.afterData()
		return n > 0
	case stChunkCRLF:
		if len(c.in) < 2 {
			return false
		}
		if c.in[0] != '\r' || c.in[1] != '\n' {
			c.reject("chunk data is not followed by CRLF")
			return true
		}
		c.release(2)
		c.state = stChunkSize
		return true
	case stChunkSize:
		return c.stepChunkSize()
	case stTrailer:
		return c.stepTrailer()
	}
	return false
}

// afterData moves on once a body or chunk is complete.
func (c *Conn) afterData() {
	if c.remaining > 0 {
		return
	}
	switch c.state {
	case stBody:
		c.endRequest()
	case stChunkData:
		c.state = stChunkCRLF
	}
}

// endRequest moves to the next request, or to passthrough after an upgrade.
func (c *Conn) endRequest() {
	if c.upgrade {
		c.state = stPassthrough
		return
	}
	c.state = stHead
}

func (c *Conn) release(n int) {
	if c.outBuf == nil {
		c.outArr = bufPool.Get().(*[bufSize]byte)
		c.outBuf = c.outArr[:0]
	}
	if len(c.out) == 0 {
		c.out = c.outBuf[:0]
	}
	c.out = append(c.out, c.in[:n]...)
	c.outBuf = c.out[:0]
	c.in = c.in[n:]
	c.scanned = 0
}

// skip drops n checked bytes that net/http need not see.
func (c *Conn) skip(n int) {
	c.in = c.in[n:]
	c.scanned = 0
}

func (c *Conn) reject(reason string) {
	c.reason.Store(&reason)
	c.state = stRejected
	c.in = nil
	c.out = append(c.out, rejectRequest...)
}

func (c *Conn) stepHead() bool {
	// Empty lines before a request line are allowed (RFC 9112 section
	// 2.2); they are dropped, since net/http is less forgiving.
	if len(c.in) >= 2 && c.in[0] == '\r' && c.in[1] == '\n' {
		c.skip(2)
		return true
	}
	end, bareLF := c.findLineEnd([]byte("\r\n\r\n"))
	if bareLF {
		c.reject("line ends in a bare LF; HTTP/1.1 needs CRLF")
		return true
	}
	if end < 0 {
		if len(c.in) > MaxHeadBytes {
			c.reject("request head larger than " + strconv.Itoa(MaxHeadBytes) + " bytes")
			return true
		}
		return false
	}
	if end+4 > MaxHeadBytes {
		c.reject("request head larger than " + strconv.Itoa(MaxHeadBytes) + " bytes")
		return true
	}
	head := c.in[:end+4]
	f, err := checkHead(head)
	if err != "" {
		c.reject(err)
		return true
	}
	c.release(len(head))
	c.upgrade = f.upgrade
	switch {
	case f.chunked:
		c.state = stChunkSize
	case f.length > 0:
		c.state = stBody
		c.remaining = f.length
	default:
		c.endRequest()
	}
	return true
}

// findLineEnd searches in for sep (CRLF or CRLF CRLF) and reports a bare LF
// met before it. Searches resume where the last one stopped, so a head
// trickling in byte by byte costs linear time.
func (c *Conn) findLineEnd(sep []byte) (int, bool) {
	from := max(0, c.scanned-len(sep)+1)
	end := len(c.in)
	i := bytes.Index(c.in[from:], sep)
	if i >= 0 {
		end = from + i
	}
	for j := c.scanned; j < end; j++ {
		if c.in[j] == '\n' && (j == 0 || c.in[j-1] != '\r') {
			return -1, true
		}
	}
	if i >= 0 {
		return end, false
	}
	c.scanned = len(c.in)
	return -1, false
}

func (c *Conn) stepChunkSize() bool {
	i, bareLF := c.findLineEnd([]byte("\r\n"))
	if bareLF {
		c.reject("chunk-size line ends in a bare LF")
		return true
	}
	if i < 0 && len(c.in) <= maxChunkLine {
		return false
	}
	if i < 0 || i > maxChunkLine {
		c.reject("chunk-size line too long")
		return true
	}
	size, ok := parseChunkSize(c.in[:i])
	if !ok {
		c.reject("malformed chunk-size line")
		return true
	}
	c.release(i + 2)
	if size == 0 {
		c.state = stTrailer
		return true
	}
	c.state = stChunkData
	c.remaining = size
	return true
}

func (c *Conn) stepTrailer() bool {
	i, bareLF := c.findLineEnd([]byte("\r\n"))
	if bareLF {
		c.reject("trailer line ends in a bare LF")
		return true
	}
	if i < 0 && len(c.in) <= MaxHeadBytes {
		return false
	}
	if i < 0 || i > MaxHeadBytes {
		c.reject("trailer section too large")
		return true
	}
	if i == 0 {
		c.release(2)
		c.endRequest()
		return true
	}
	if _, _, err := h1wire.CheckField(c.in[:i]); err != "" {
		c.reject("trailer: " + err)
		return true
	}
	c.release(i + 2)
	return true
}

// parseChunkSize parses "HEX[;ext...]" strictly.
func parseChunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		for _, b := range line[i:] {
			if b < 0x20 && b != '\t' || b == 0x7f {
				return 0, false
			}
		}
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, b := range line {
		var d byte
		switch {
		case b >= '0' && b <= '9':
			d = b - '0'
		case b >= 'a' && b <= 'f':
			d = b - 'a' + 10
		case b >= 'A' && b <= 'F':
			d = b - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// Listener wraps every connection a net.Listener accepts in a Conn.
type Listener struct {
	net.Listener
}

// Accept implements net.Listener.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return New(c), nil
}
