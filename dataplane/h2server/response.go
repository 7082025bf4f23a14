package h2server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// responseWriter is the handler's http.ResponseWriter. Body bytes are not
// held back: each Write becomes DATA frames at once (the coalesce.Conn
// under the connection gathers them), so Flush only has headers to send.
// The HEADERS frame waits for the first Write, Flush or the handler's
// return, so an answer with no body goes out as one frame; the stream ends
// when the handler returns, with trailers if it set any.
type responseWriter struct {
	st          *stream
	header      http.Header
	status      int
	wroteHeader bool  // the final status is chosen
	sentHeader  bool  // the HEADERS frame is out
	declLen     int64 // the Content-Length sent, or -1
	written     int64
	noBody      bool // HEAD, 204 or 304
}

// Header returns the response header map.
func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// WriteHeader sends an informational (1xx) response at once, or chooses
// the final status.
func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols {
			_ = w.st.c.writeHeaders(w.st, code, w.header, false)
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	w.noBody = w.st.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
}

// sendHeader sends the HEADERS frame; the Content-Length it carries is
// what the body is held to.
func (w *responseWriter) sendHeader(end bool) error {
	w.sentHeader = true
	w.declLen = contentLength(w.header)
	return w.st.c.writeHeaders(w.st, w.status, w.header, end)
}

// contentLength returns h's Content-Length, or -1.
func contentLength(h http.Header) int64 {
	if cl := h["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseUint(cl[0], 10, 63); err == nil {
			return int64(n)
		}
	}
	return -1
}

// Write sends p as DATA, with the headers first if they are not out yet.
func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		if w.st.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if !w.sentHeader {
		if err := w.sendHeader(false); err != nil {
			return 0, err
		}
	}
	if w.declLen >= 0 && w.written+int64(len(p)) > w.declLen {
		return 0, http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.written += int64(len(p))
	if err := w.st.c.writeData(w.st, p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends the headers if they are not out yet.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush, reporting a failure (http.ResponseController).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.sentHeader {
		return nil
	}
	return w.sendHeader(false)
}

// finish ends the response when the handler returns: headers if not yet
// out, then trailers or an empty DATA frame with END_STREAM. A body
// shorter than its Content-Length is not ended (the stream is reset).
func (w *responseWriter) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	declLen := w.declLen
	if !w.sentHeader {
		declLen = contentLength(w.header)
	}
	if !w.noBody && declLen >= 0 && w.written < declLen {
		return fmt.Errorf("response body of %d bytes, Content-Length %d", w.written, declLen)
	}
	trailers := w.trailers()
	c := w.st.c
	if !w.sentHeader {
		if len(trailers) == 0 {
			return w.sendHeader(true)
		}
		if err := w.sendHeader(false); err != nil {
			return err
		}
	}
	if len(trailers) > 0 {
		return c.writeHeaders(w.st, 0, trailers, true)
	}
	return c.writeData(w.st, nil, true)
}

// trailers collects the trailers the handler set: fields named in the
// Trailer header, and fields with http.TrailerPrefix.
func (w *responseWriter) trailers() http.Header {
	var trailers http.Header
	add := func(k string, vv []string) {
		if trailers == nil {
			trailers = make(http.Header)
		}
		trailers[k] = vv
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(http.CanonicalHeaderKey(name), vv)
		}
	}
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if vv, ok := w.header[k]; ok && k != "" {
				add(k, vv)
			}
		}
	}
	return trailers
}

// writeHeaders sends a HEADERS frame (status 0: trailers) for st.
func (c *conn) writeHeaders(st *stream, status int, h http.Header, end bool) error {
	if err := c.waitRoom(st); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.writableLocked(st); err != nil {
		return err
	}
	if err := c.writeHeadersLocked(st.id, status, h, end); err != nil {
		return err
	}
	if end {
		c.endedLocked(st)
	}
	return nil
}

// endedLocked records that we ended st, forgetting it if the client has.
func (c *conn) endedLocked(st *stream) {
	st.sentEnd = true
	if st.recvEnd {
		c.forgetLocked(st)
	}
}

// writeHeadersLocked encodes a header block and writes it as HEADERS and
// CONTINUATION frames. Connection-specific fields and fields net/http
// would not send are left out; names are lowercased.
func (c *conn) writeHeadersLocked(id uint32, status int, h http.Header, end bool) error {
	c.encBuf.Reset()
	if status != 0 {
		c.encode(":status", statusText(status))
	}
	for k, vv := range h {
		if skipResponseField(k, status) {
			continue
		}
		name := lowerName(k)
		if !httpguts.ValidHeaderFieldName(name) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				c.encode(name, v)
			}
		}
	}
	block := c.encBuf.Bytes()
	for first := true; ; first = false {
		n := min(len(block), c.peerMaxFrame)
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil || len(block) == 0 {
			return err
		}
	}
}

func (c *conn) encode(name, value string) {
	_ = c.enc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

// writeData sends p as DATA frames within the flow-control windows,
// waiting for the client to grant more; end ends the stream with the last
// frame (an empty one if p is empty).
func (c *conn) writeData(st *stream, p []byte, end bool) error {
	for {
		if err := c.waitRoom(st); err != nil {
			return err
		}
		c.mu.Lock()
		for len(p) > 0 && (c.sendWindow <= 0 || st.sendWindow <= 0) && !c.closed && !st.reset {
			c.cond.Wait()
		}
		if err := c.writableLocked(st); err != nil {
			c.mu.Unlock()
			return err
		}
		n := int64(len(p))
		n = min(n, c.sendWindow, st.sendWindow, int64(c.peerMaxFrame))
		last := n == int64(len(p))
		if err := c.fr.WriteData(st.id, end && last, p[:n]); err != nil {
			c.mu.Unlock()
			return err
		}
		c.sendWindow -= n
		st.sendWindow -= n
		p = p[n:]
		if last && end {
			c.endedLocked(st)
		}
		c.mu.Unlock()
		if last {
			return nil
		}
	}
}

// waitRoom waits, without holding mu, until the connection's write
// buffer has room or st is reset: a client that does not read blocks its
// own streams' handlers, not the connection's lock.
func (c *conn) waitRoom(st *stream) error {
	err := c.w.WaitWritable(st.gone.Load)
	if err != nil {
		return errConnClosed
	}
	return nil
}

// writableLocked reports why st can take no more frames, if it cannot.
func (c *conn) writableLocked(st *stream) error {
	switch {
	case c.closed:
		return errConnClosed
	case st.reset:
		return errStreamReset
	case st.sentEnd:
		return errStreamDone
	}
	return nil
}

// skipResponseField reports whether header key k stays out of a response
// HEADERS frame (status 0: trailers).
func skipResponseField(k string, status int) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
		return true
	case "Content-Length":
		return status == 0 || status == http.StatusNoContent || status < 200
	}
	return strings.HasPrefix(k, http.TrailerPrefix)
}

// statusTexts holds the :status values of 100 to 999.
var statusTexts = func() (t [1000]string) {
	for i := 100; i < len(t); i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(code int) string { return statusTexts[code] }

// commonLower maps the usual canonical header names to their HTTP/2
// (lowercase) form without allocating.
var commonLower = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept-Ranges", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
		"Access-Control-Allow-Methods", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers",
		"Age", "Allow", "Alt-Svc", "Cache-Control", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Location", "Content-Range", "Content-Security-Policy",
		"Content-Type", "Date", "Etag", "Expires", "Grpc-Encoding", "Grpc-Message", "Grpc-Status",
		"Grpc-Status-Details-Bin", "Last-Modified", "Link", "Location", "Retry-After", "Server",
		"Set-Cookie", "Strict-Transport-Security", "Trailer", "Vary", "Via", "Www-Authenticate",
		"X-Content-Type-Options", "X-Frame-Options", "X-Request-Id",
	} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

// lowerName returns k in lowercase, allocating only for uncommon names
// that are not lowercase already.
func lowerName(k string) string {
	if v, ok := commonLower[k]; ok {
		return v
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}
