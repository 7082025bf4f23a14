package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/lb-project/lb/dataplane/h1wire"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/sockio"
	"github.com/lb-project/lb/dataplane/upstream"
)

// h1exchange holds what serving one request needs: taken from a pool for
// the request and returned after it, so an idle connection holds none of it.
type h1exchange struct {
	req  h1wire.Head
	resp h1wire.Response
	// out is the upstream request head, then the response head (and the
	// start of the body) for the client.
	out []byte
	// big holds a response head too large for the upstream connection's
	// buffer.
	big []byte
}

// maxOutKeep is the largest out buffer an h1work keeps for the next request.
const maxOutKeep = 16 << 10

// init gives x its buffers.
func (x *h1exchange) init() {
	x.out = make([]byte, 0, 4096)
	x.req.Fields = make([]h1wire.Field, 0, 24)
	x.resp.Fields = make([]h1wire.Field, 0, 24)
}

// maxResponseHead bounds a response head from a backend (net/http's
// default too).
const maxResponseHead = 1 << 20

// serveRequest serves one request whose head is complete. It returns
// errHandOver, having sent nothing anywhere, when the request is not one it
// serves (see H1Server); keep says the connection stays open for more.
func (c *h1conn) serveRequest(head []byte) (keep bool, err error) {
	h := c.s.h
	x := &c.work.x // head is in c.work's buffer
	defer func() {
		x.big = nil
		if cap(x.out) > maxOutKeep {
			x.out = make([]byte, 0, 4096)
		}
	}()
	rq := &x.req
	if rq.Parse(head) != "" {
		return false, errHandOver // h1guard refuses it, with the same reason
	}
	host, closeReq, ok := fastRequest(rq)
	if !ok {
		return false, errHandOver
	}
	path := rq.Target
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	t := h.table.Load()
	if t == nil {
		return false, errHandOver
	}
	pool := t.Match(normalizeHost(unsafeString(host)), unsafeString(path))
	if pool == nil || pool.Transport == nil {
		return false, errHandOver
	}
	up := pool.Transport.H1()
	if up == nil {
		return false, errHandOver
	}

	// From here on, the request is this server's.
	o := outcome{start: time.Now(), method: methodString(rq.Method), proto: "HTTP/1.1", pool: pool, backend: -1}
	c.inFlightSince.Store(o.start.UnixNano())
	defer c.inFlightSince.Store(0)
	if h.access != nil {
		o.host, o.client, o.path = string(host), c.client, accessPath(path)
	}
	defer h.finish(&o)
	closing := closeReq || c.s.draining.Load()
	x.out = appendUpstreamHead(x.out[:0], rq, pool, host, c.clientIP)
	key := hashKey(pool, (*headFields)(rq), c.client, unsafeString(path))
	var uc *upstream.H1Conn
	var respHead []byte
	now := o.start // a clock read saved for the first backend's attempt
	idx, err := h.tryBackends(c, pool, key, &o, alwaysSafe, func(idx int) (int, error) {
		var err error
		uc, respHead, err = c.exchange(x, up, pool.Backends[idx].Address, rq.Method, now)
		now = time.Time{}
		if err != nil {
			return 0, err
		}
		return x.resp.Status, nil
	})
	if err != nil {
		if errors.Is(err, errNoBackend) {
			return c.fail(x, &o, http.StatusServiceUnavailable, "no backend: pool "+pool.Name+" has no backends", closing)
		}
		o.backend = idx
		code, msg := h.describeUpstreamError(c.Err() != nil, pool.Name, pool.Backends[idx].Address, err)
		return c.fail(x, &o, code, msg, closing)
	}
	o.backend = idx
	o.upstreamStatus = x.resp.Status
	o.status = x.resp.Status
	defer pool.States[idx].End()
	return c.relay(x, &o, up, uc, respHead, closing)
}

func alwaysSafe() bool { return true }

// fastRequest reports whether a valid request head is one H1Server serves
// itself, with its Host and whether it asks to close the connection.
func fastRequest(rq *h1wire.Head) (host []byte, closeConn, ok bool) {
	if rq.HTTP10 || rq.Hosts != 1 || rq.HasUpgrade || rq.Chunked || rq.ContentLength > 0 ||
		rq.Target[0] != '/' || bytes.IndexByte(rq.Target, '%') >= 0 || bytes.IndexByte(rq.Target, '#') >= 0 {
		return nil, false, false
	}
	switch string(rq.Method) {
	case "CONNECT", "PRI":
		return nil, false, false
	}
	for i := range rq.Fields {
		f := &rq.Fields[i]
		switch {
		case h1wire.EqualFold(f.Name, "host"):
			host = f.Value
		case h1wire.EqualFold(f.Name, "connection"):
			closeConn = closeConn || h1wire.HasToken(f.Value, "close")
		case h1wire.EqualFold(f.Name, "expect"):
			return nil, false, false
		case h1wire.EqualFold(f.Name, "content-type"):
			if len(f.Value) >= 16 && h1wire.EqualFold(f.Value[:16], "application/grpc") {
				return nil, false, false
			}
		}
	}
	if !validHost(host) {
		return nil, false, false
	}
	return host, closeConn, true
}

// validHost reports whether a Host value is one net/http would accept
// without question: a name or address, an optional port.
func validHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, b := range h {
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '.', b == '-', b == ':', b == '[', b == ']', b == '_':
		default:
			return false
		}
	}
	return true
}

// unsafeString views b as a string without copying; the string must not be
// kept beyond b's lifetime (the routing lookup and the hash do not keep it).
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// methodString returns a request method as a string, allocating only for
// unusual methods.
func methodString(m []byte) string {
	switch string(m) {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodOptions:
		return http.MethodOptions
	case http.MethodPatch:
		return http.MethodPatch
	}
	return string(m)
}

// accessPath returns the path for the access log, decoded as net/http
// decodes it.
func accessPath(p []byte) string {
	s := string(p)
	if strings.IndexByte(s, '%') >= 0 {
		if d, err := url.PathUnescape(s); err == nil {
			return d
		}
	}
	return s
}

// headFields looks up header fields of a parsed head for hashKey.
type headFields h1wire.Head

func (h *headFields) values(name string, each func(string) bool) {
	for i := range h.Fields {
		if strings.EqualFold(unsafeString(h.Fields[i].Name), name) && !each(unsafeString(h.Fields[i].Value)) {
			return
		}
	}
}

// Fields of a forwarded head, by how they are treated.
const (
	fieldKeep = iota
	fieldDrop // hop-by-hop, or set by the proxy
	fieldHost
	fieldXFF
	fieldTE
)

// requestField classifies a client's header field by name.
func requestField(name []byte) int {
	switch len(name) {
	case 2:
		if h1wire.EqualFold(name, "te") {
			return fieldTE
		}
	case 4:
		if h1wire.EqualFold(name, "host") {
			return fieldHost
		}
	}
	if isHopByHop(name) || h1wire.EqualFold(name, "x-forwarded-proto") || h1wire.EqualFold(name, "x-forwarded-host") {
		return fieldDrop
	}
	if h1wire.EqualFold(name, "x-forwarded-for") {
		return fieldXFF
	}
	return fieldKeep
}

// isHopByHop reports whether a field describes one connection, not the
// message (see hopByHop), TE aside.
func isHopByHop(name []byte) bool {
	switch len(name) {
	case 7:
		return h1wire.EqualFold(name, "trailer") || h1wire.EqualFold(name, "upgrade")
	case 10:
		return h1wire.EqualFold(name, "connection") || h1wire.EqualFold(name, "keep-alive")
	case 16:
		return h1wire.EqualFold(name, "proxy-connection")
	case 17:
		return h1wire.EqualFold(name, "transfer-encoding")
	case 18:
		return h1wire.EqualFold(name, "proxy-authenticate")
	case 19:
		return h1wire.EqualFold(name, "proxy-authorization")
	}
	return false
}

// namedByConnection reports whether the Connection fields of a head name
// the field name (which makes it hop-by-hop).
func namedByConnection(fields []h1wire.Field, name []byte) bool {
	for i := range fields {
		if h1wire.EqualFold(fields[i].Name, "connection") && h1wire.HasToken(fields[i].Value, name) {
			return true
		}
	}
	return false
}

// hasConnectionTokens reports whether the head has a Connection field that
// could name other fields (anything but close and keep-alive).
func hasConnectionTokens(fields []h1wire.Field) bool {
	for i := range fields {
		if !h1wire.EqualFold(fields[i].Name, "connection") {
			continue
		}
		v := fields[i].Value
		if !h1wire.EqualFold(v, "close") && !h1wire.EqualFold(v, "keep-alive") {
			return true
		}
	}
	return false
}

// appendUpstreamHead appends the request head sent to the backend: the
// client's request line and fields in order, without hop-by-hop fields and
// the ones the Connection field names, with Host rewritten when the pool
// says so, "TE: trailers" kept, and X-Forwarded-For (appended to),
// X-Forwarded-Proto and X-Forwarded-Host (set) — what prepareOutbound does
// for net/http's requests.
func appendUpstreamHead(b []byte, rq *h1wire.Head, pool *routing.Pool, host []byte, clientIP string) []byte {
	b = append(b, rq.Method...)
	b = append(b, ' ')
	b = append(b, rq.Target...)
	b = append(b, " HTTP/1.1\r\n"...)
	named := hasConnectionTokens(rq.Fields)
	var xff [][]byte
	var xffBuf [4][]byte
	teTrailers := false
	for i := range rq.Fields {
		f := &rq.Fields[i]
		kind := requestField(f.Name)
		if named && kind != fieldHost && kind != fieldTE && namedByConnection(rq.Fields, f.Name) {
			// Host is the request's whatever Connection says, and TE
			// is looked at for "trailers" (a conforming client lists TE
			// in Connection).
			continue
		}
		switch kind {
		case fieldDrop:
			continue
		case fieldTE:
			teTrailers = teTrailers || h1wire.HasToken(f.Value, "trailers")
			continue
		case fieldXFF:
			if xff == nil {
				xff = xffBuf[:0]
			}
			xff = append(xff, f.Value)
			continue
		case fieldHost:
			if pool.HostHeader != "" {
				b = append(b, "Host: "...)
				b = append(b, pool.HostHeader...)
				b = append(b, "\r\n"...)
				continue
			}
		}
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	if teTrailers {
		b = append(b, "TE: trailers\r\n"...)
	}
	if clientIP != "" {
		b = append(b, "X-Forwarded-For: "...)
		for _, v := range xff {
			b = append(b, v...)
			b = append(b, ", "...)
		}
		b = append(b, clientIP...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-Proto: http\r\nX-Forwarded-Host: "...)
	b = append(b, host...)
	b = append(b, "\r\n\r\n"...)
	return b
}

// errBareLFHead refuses a head whose lines end in bare LFs.
var errBareLFHead = fmt.Errorf("%w: lines ending in a bare LF", h1wire.ErrMalformed)

// errUnexpected101 says a backend switched protocols unasked.
var errUnexpected101 = errors.New("backend answered 101 Switching Protocols to a request without an upgrade")

// exchange sends the upstream head in x.out to addr and reads the final
// response head into x.resp, on a kept connection when there is one; a
// kept connection that gives nothing back is replaced once for a method
// safe to repeat, as net/http's Transport does. It returns the connection
// and the response head (valid until the connection is read again).
//
// now is a recent reading of the clock, or zero: the head's deadline counts
// from it when the connection was kept (a new one took time to connect).
func (c *h1conn) exchange(x *h1exchange, up *upstream.H1Pool, addr string, method []byte, now time.Time) (*upstream.H1Conn, []byte, error) {
	for attempt := 0; ; attempt++ {
		repeatable := upstream.SafeToRepeat(unsafeString(method))
		uc, reused, err := up.Get(context.Background(), addr, repeatable)
		if err != nil {
			return nil, nil, err
		}
		if !c.waitingOn(uc) {
			uc.Close()
			return nil, nil, errClientGone
		}
		if !reused || attempt > 0 || now.IsZero() {
			now = time.Now()
		}
		head, stale, err := x.roundTrip(up, uc, now)
		if !c.waitingOn(nil) {
			uc.Close() // its deadline may have been cut short
			return nil, nil, errClientGone
		}
		if err == nil {
			return uc, head, nil
		}
		uc.Close()
		if !(reused && stale && attempt == 0 && repeatable) {
			return nil, nil, err
		}
	}
}

// roundTrip writes x.out on uc and reads the response head, skipping 1xx
// informational responses, under the response header timeout counted from
// now (a deadline relay clears before it reads a body). stale says nothing
// at all came back.
func (x *h1exchange) roundTrip(up *upstream.H1Pool, uc *upstream.H1Conn, now time.Time) (head []byte, stale bool, err error) {
	if !uc.WriteOnRead(x.out) {
		if _, err := uc.Write(x.out); err != nil {
			return nil, true, err
		}
	}
	if d := up.ResponseHeaderTimeout(); d > 0 {
		uc.SetHeadDeadline(now, d)
	}
	br := uc.Reader()
	for first := true; ; first = false {
		head, err = x.readResponseHead(br)
		if err != nil {
			var ne net.Error
			if first && br.Buffered() == 0 && len(x.big) == 0 && !(errors.As(err, &ne) && ne.Timeout()) {
				// Nothing came back: the request may never have been
				// read (a kept connection closed while idle).
				return nil, true, fmt.Errorf("backend closed the connection before answering: %w", err)
			}
			return nil, false, err
		}
		if err := x.resp.Parse(head); err != nil {
			return nil, false, err
		}
		switch {
		case x.resp.Status == http.StatusSwitchingProtocols:
			return nil, false, errUnexpected101
		case x.resp.Status < 200:
			x.discardHead(br, head) // 100 Continue, 103 Early Hints: not relayed
			continue
		}
		return head, false, nil
	}
}

// readResponseHead returns the next response head from br: a view of br's
// buffer when it fits there, else a copy in x.big (the bytes then already
// consumed from br).
func (x *h1exchange) readResponseHead(br *bufio.Reader) ([]byte, error) {
	x.big = x.big[:0]
	for {
		buf, err := br.Peek(max(br.Buffered(), 1))
		n, bareLF := h1wire.HeadEnd(buf)
		if bareLF {
			// Such a head never ends in CRLF CRLF: refuse it now rather
			// than wait for the header timeout.
			return nil, errBareLFHead
		}
		if n >= 0 {
			return buf[:n], nil
		}
		if err != nil {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(buf) == br.Size() {
			return x.readBigHead(br)
		}
		if _, err := br.Peek(len(buf) + 1); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// readBigHead reads a response head larger than br's buffer into x.big.
func (x *h1exchange) readBigHead(br *bufio.Reader) ([]byte, error) {
	for !bytes.HasSuffix(x.big, headEnd) {
		line, err := br.ReadSlice('\n')
		x.big = append(x.big, line...)
		if len(x.big) > maxResponseHead {
			return nil, fmt.Errorf("%w: response head over %d bytes", h1wire.ErrMalformed, maxResponseHead)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return x.big, nil
}

// discardHead consumes a head returned by readResponseHead from br.
func (x *h1exchange) discardHead(br *bufio.Reader, head []byte) {
	if len(x.big) == 0 {
		_, _ = br.Discard(len(head))
	}
}

// relay writes the response whose head is in x.resp to the client and
// copies its body. The upstream connection goes back to the pool (or is
// closed) as soon as the body has been read from it, before the last write
// to the client, so that the client's next request finds it there.
func (c *h1conn) relay(x *h1exchange, o *outcome, up *upstream.H1Pool, uc *upstream.H1Conn, head []byte, closing bool) (bool, error) {
	resp := &x.resp
	br := uc.Reader()
	bodyless := h1wire.BodyLess(x.req.Method, resp.Status)
	chunked := resp.Chunked && !bodyless
	length := resp.ContentLength
	if bodyless {
		length = 0
	}
	if !chunked && length < 0 || c.s.draining.Load() {
		// The body ends when the backend closes (so must this response),
		// or the server began to drain while the backend worked.
		closing = true
	}
	x.out = appendResponseHead(x.out[:0], resp, chunked, closing, o.answered)
	x.discardHead(br, head)
	u := upstreamRelease{pool: up, conn: uc, addr: o.pool.Backends[o.backend].Address, reusable: !resp.Close && (chunked || length >= 0)}
	if chunked || length < 0 || int64(br.Buffered()) < length {
		// The body is read from the backend: under no deadline, as net/http
		// reads bodies (the client's pace, not the head's timeout, rules),
		// and registered again so that a client that leaves, or Shutdown,
		// can cut the reads short.
		uc.ClearHeadDeadline()
		u.watched = c
		if !c.waitingOn(uc) {
			u.done(false)
			return false, errClientGone
		}
	}

	var n int64
	var err error
	switch {
	case chunked:
		n, err = c.relayChunked(x, br, &u)
	case length >= 0:
		n, err = c.relayLength(x, br, length, &u)
	default:
		n, err = c.relayUntilEOF(x, br, &u)
	}
	o.bytesOut = n
	if err != nil {
		u.done(false)
		var werr *clientWriteError
		if !errors.As(err, &werr) && c.Err() == nil {
			c.s.h.log.Warn("response body copy failed", "pool", o.pool.Name, "backend", u.addr, "error", err)
		}
		return false, err
	}
	u.done(true)
	return !closing, nil
}

// upstreamRelease gives an upstream connection back once: to the pool
// when its response was read whole and it may be reused, else closed.
type upstreamRelease struct {
	pool     *upstream.H1Pool
	conn     *upstream.H1Conn
	addr     string
	reusable bool
	released bool
	// watched is the client connection the body reads were registered
	// with (see h1conn.waitingOn), if any.
	watched *h1conn
}

// done releases the connection; complete says the body was read whole.
func (u *upstreamRelease) done(complete bool) {
	if u.released {
		return
	}
	u.released = true
	if u.watched != nil && !u.watched.waitingOn(nil) {
		// The wait was cut (its deadline is in the past): not reusable.
		complete = false
	}
	if complete && u.reusable && u.conn.Reader().Buffered() == 0 {
		u.pool.Put(u.addr, u.conn)
		return
	}
	u.conn.Close()
}

// clientWriteError is a failed write to the client.
type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "write to client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

// write sends b to the client: inside the read step, with one system
// call when the socket takes it all, as it does unless a large response
// fills its buffer; what is left waits for room through c.w, under the
// write deadline.
func (c *h1conn) write(b []byte) error {
	if c.w == nil {
		if _, err := c.nc.Write(b); err != nil {
			return &clientWriteError{err}
		}
		return nil
	}
	if c.inStep && !c.aborted.Load() {
		n, err := sockio.Write(c.fd, b)
		switch {
		case err == nil && n == len(b):
			return nil
		case err != nil && err != syscall.EAGAIN:
			return &clientWriteError{err}
		}
		b = b[n:]
	}
	if _, err := c.w.Write(b); err != nil {
		return &clientWriteError{err}
	}
	return nil
}

// appendResponseHead appends the head sent to the client: the backend's
// status line (as HTTP/1.1) and fields without hop-by-hop ones (chunked
// framing kept as it is relayed), with a Date (now, a recent reading of the
// clock) when the backend gave none and Connection: close when the
// connection ends after this response.
func appendResponseHead(b []byte, resp *h1wire.Response, chunked, closing bool, now time.Time) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.Status), 10)
	b = append(b, ' ')
	if len(resp.Reason) > 0 {
		b = append(b, resp.Reason...)
	} else {
		b = append(b, http.StatusText(resp.Status)...)
	}
	b = append(b, "\r\n"...)
	named := hasConnectionTokens(resp.Fields)
	for i := range resp.Fields {
		f := &resp.Fields[i]
		switch {
		case h1wire.EqualFold(f.Name, "transfer-encoding"), h1wire.EqualFold(f.Name, "trailer"):
			// A chunked body is relayed as it came, with its framing and
			// the trailers it announces, whatever Connection says.
			if !chunked {
				continue
			}
		case h1wire.EqualFold(f.Name, "content-length"):
			if resp.Chunked {
				continue // Transfer-Encoding overrides it; never forward both
			}
		case len(f.Name) == 2 && h1wire.EqualFold(f.Name, "te"), isHopByHop(f.Name),
			named && namedByConnection(resp.Fields, f.Name):
			continue
		}
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	if !resp.HasDate {
		b = append(b, "Date: "...)
		if now.IsZero() {
			now = time.Now()
		}
		b = h1wire.AppendDate(b, now)
		b = append(b, "\r\n"...)
	}
	if closing {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// relayLength sends the head in x.out and a body of n bytes. Body bytes
// already buffered go out with the head, in one write, as far as out has
// room (it is not grown for them, so that it stays poolable).
func (c *h1conn) relayLength(x *h1exchange, br *bufio.Reader, n int64, u *upstreamRelease) (int64, error) {
	var sent int64
	if k := min(int64(br.Buffered()), n, int64(cap(x.out)-len(x.out))); k > 0 {
		p, _ := br.Peek(int(k))
		x.out = append(x.out, p...)
		_, _ = br.Discard(int(k))
		sent = k
	}
	if sent == n {
		u.done(true)
	}
	if err := c.write(x.out); err != nil {
		return 0, err
	}
	if sent == n {
		return n, nil
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for sent < n {
		k, err := br.Read(buf[:min(int64(len(buf)), n-sent)])
		if sent+int64(k) == n {
			u.done(true)
		}
		if k > 0 {
			if werr := c.write(buf[:k]); werr != nil {
				return sent, werr
			}
			sent += int64(k)
		}
		if err != nil && sent < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return sent, err
		}
	}
	return sent, nil
}

// relayChunked sends the head in x.out and relays a chunked body as it
// comes, to the end of its trailer section.
func (c *h1conn) relayChunked(x *h1exchange, br *bufio.Reader, u *upstreamRelease) (int64, error) {
	var ch h1wire.Chunked
	var sent int64
	if k := min(br.Buffered(), cap(x.out)-len(x.out)); k > 0 {
		p, _ := br.Peek(k)
		m, err := ch.Scan(p)
		if err != nil {
			return 0, err
		}
		x.out = append(x.out, p[:m]...)
		_, _ = br.Discard(m)
		sent = int64(m)
	}
	if ch.Done() {
		u.done(true)
	}
	if err := c.write(x.out); err != nil {
		return 0, err
	}
	for !ch.Done() {
		// Never read past the body's end: scan what is buffered, send the
		// part that belongs to the body straight from the buffer, consume it.
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return sent, err
			}
		}
		p, _ := br.Peek(br.Buffered())
		m, serr := ch.Scan(p)
		if serr != nil {
			return sent, serr
		}
		if werr := c.write(p[:m]); werr != nil {
			return sent, werr
		}
		_, _ = br.Discard(m)
		sent += int64(m)
	}
	return sent, nil
}

// relayUntilEOF sends the head in x.out and a body that ends when the
// backend closes the connection.
func (c *h1conn) relayUntilEOF(x *h1exchange, br *bufio.Reader, u *upstreamRelease) (int64, error) {
	if err := c.write(x.out); err != nil {
		return 0, err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	var sent int64
	for {
		k, err := br.Read(*bp)
		if k > 0 {
			if werr := c.write((*bp)[:k]); werr != nil {
				return sent, werr
			}
			sent += int64(k)
		}
		if errors.Is(err, io.EOF) {
			u.done(false)
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
	}
}

// fail answers a request the proxy could not forward, as Handler.fail does
// for net/http: the status and msg as a plain-text body.
func (c *h1conn) fail(x *h1exchange, o *outcome, code int, msg string, closing bool) (bool, error) {
	o.status = code
	closing = closing || c.s.draining.Load()
	b := x.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: "...)
	b = h1wire.AppendDate(b, time.Now())
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(msg)+1), 10)
	if closing {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	if string(x.req.Method) != http.MethodHead {
		b = append(b, msg...)
		b = append(b, '\n')
		o.bytesOut = int64(len(msg) + 1)
	}
	x.out = b
	if err := c.write(b); err != nil {
		return false, err
	}
	return !closing, nil
}
