package h2server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// stream is one request and its response. Fields under "mu" are guarded
// by the connection's mu; req and rw belong to the handler goroutine.
type stream struct {
	c      *conn
	id     uint32
	cancel context.CancelFunc
	body   *body // nil when the request has no body
	req    *http.Request
	rw     responseWriter

	// mu
	sendWindow  int64 // credit for our DATA on this stream
	recvWindow  int64 // credit the client has left on this stream
	recvUnacked int64
	declLen     int64 // the request's Content-Length, or -1
	bodyBytes   int64
	recvEnd     bool // the client ended its side
	sentEnd     bool // we ended ours
	reset       bool // RST_STREAM sent or received
	running     bool // the handler has not returned
	orphan      bool // reset while the handler runs: counted in conn.orphans

	// gone is reset, readable without mu: it ends a handler's wait for
	// room to write.
	gone atomic.Bool
}

func (c *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		c.mu.Unlock()
		return c.processTrailers(st, f)
	}
	if id <= c.maxStreamID {
		ignored := c.ignoredLocked(id)
		c.mu.Unlock()
		if ignored {
			return nil // trailers that crossed our RST_STREAM or GOAWAY
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.maxStreamID = id
	if c.goingAway || c.closed {
		// Past the GOAWAY's last stream: the client retries elsewhere.
		c.mu.Unlock()
		return nil
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: errors.New("stream depends on itself")}
	}
	if uint32(len(c.streams)) >= c.maxStreams {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream, Cause: errors.New("over the stream limit")}
	}
	if uint32(len(c.streams))+c.orphans >= c.maxStreams {
		// The client reset streams whose handlers still run: refuse until
		// they return, and give up on a client that keeps at it
		// (CVE-2023-44487, "rapid reset").
		c.refused++
		if c.refused > 4*int(c.maxStreams) {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream, Cause: errors.New("handlers of reset streams still running")}
	}
	if f.Truncated {
		// The header list is over the limit: answer 431 without a handler.
		err := c.writeHeadersLocked(id, http.StatusRequestHeaderFieldsTooLarge, nil, true)
		if err == nil && !f.StreamEnded() {
			c.noteResetLocked(id)
			err = c.fr.WriteRSTStream(id, http2.ErrCodeNo)
		}
		c.mu.Unlock()
		return err
	}
	// The request is built under the lock so that no GOAWAY can fall
	// between taking the stream's identifier and registering it.
	st := &stream{c: c, id: id, declLen: -1}
	req, err := c.newRequest(st, f)
	if err != nil {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: err}
	}
	st.req = req
	st.rw.st = st
	st.sendWindow = c.peerInitial
	st.recvWindow = streamWindow
	st.recvEnd = f.StreamEnded()
	c.streams[id] = st
	c.running++
	st.running = true
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	c.handlers.Add(1)
	go st.run()
	return nil
}

// processTrailers takes the HEADERS frame that ends a request body.
func (c *conn) processTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	recvEnd, declLen, got := st.recvEnd, st.declLen, st.bodyBytes
	if !recvEnd {
		st.recvEnd = true
	}
	c.mu.Unlock()
	if recvEnd {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.StreamEnded() {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol, Cause: errors.New("trailers without END_STREAM")}
	}
	if len(f.PseudoFields()) > 0 {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol, Cause: errors.New("pseudo-header field in trailers")}
	}
	if declLen >= 0 && got != declLen {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol, Cause: fmt.Errorf("body of %d bytes, Content-Length %d", got, declLen)}
	}
	var tr http.Header
	for _, hf := range f.RegularFields() {
		key := http.CanonicalHeaderKey(hf.Name)
		if !httpguts.ValidTrailerHeader(key) {
			return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol, Cause: fmt.Errorf("field %q not allowed in trailers", hf.Name)}
		}
		if tr == nil {
			tr = make(http.Header)
		}
		tr[key] = append(tr[key], hf.Value)
	}
	st.body.end(tr)
	c.streamDoneReading(st)
	return nil
}

func (c *conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	c.mu.Lock()
	if id > c.maxStreamID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
	}
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	st := c.streams[id]
	if st == nil || st.recvEnd || st.reset {
		// Closed for the client's data: still count it against the
		// connection window, and give that back. Data that crossed our
		// RST_STREAM is dropped without another.
		ignored := st == nil && c.ignoredLocked(id)
		c.mu.Unlock()
		c.returnCredit(nil, int(n))
		if ignored {
			return nil
		}
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if n > st.recvWindow {
		c.mu.Unlock()
		c.returnCredit(nil, int(n))
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	st.recvWindow -= n
	data := f.Data()
	st.bodyBytes += int64(len(data))
	over := st.declLen >= 0 && st.bodyBytes > st.declLen
	short := f.StreamEnded() && st.declLen >= 0 && st.bodyBytes != st.declLen
	if f.StreamEnded() {
		st.recvEnd = true
	}
	c.mu.Unlock()
	if over || short {
		c.returnCredit(nil, int(n))
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: fmt.Errorf("body of %d bytes or more, Content-Length %d", st.bodyBytes, st.declLen)}
	}
	// Padding is returned now; the data when the handler reads it.
	pad := int(n) - len(data)
	if len(data) > 0 && !st.body.write(data) {
		pad = int(n) // the handler closed the body: give it all back
	}
	c.returnCredit(st, pad)
	if f.StreamEnded() {
		st.body.end(nil)
		c.streamDoneReading(st)
	}
	return nil
}

// streamDoneReading forgets a stream both sides have ended.
func (c *conn) streamDoneReading(st *stream) {
	c.mu.Lock()
	if st.sentEnd {
		c.forgetLocked(st)
	}
	c.mu.Unlock()
}

// run serves the request on its own goroutine.
func (st *stream) run() {
	c := st.c
	defer c.handlers.Done()
	st.serve()
	if st.body != nil {
		_ = st.body.Close()
	}
	c.mu.Lock()
	c.running--
	st.running = false
	if st.orphan {
		c.orphans--
		if c.orphans == 0 {
			c.refused = 0
		}
	}
	switch {
	case st.reset || c.closed:
	case !st.sentEnd:
		// The handler panicked, or its response could not be finished:
		// the client must not take a short response for a whole one.
		c.resetLocked(st)
		c.noteResetLocked(st.id)
		_ = c.fr.WriteRSTStream(st.id, http2.ErrCodeInternal)
	case !st.recvEnd:
		// Answered before the request body ended: ask the client to stop
		// sending it (RFC 9113 section 8.1).
		c.resetLocked(st)
		c.noteResetLocked(st.id)
		_ = c.fr.WriteRSTStream(st.id, http2.ErrCodeNo)
	default:
		c.forgetLocked(st)
	}
	c.checkIdleLocked()
	c.cond.Broadcast()
	c.mu.Unlock()
	st.cancel()
}

// serve runs the handler and finishes the response; a handler that
// panics leaves it unfinished.
func (st *stream) serve() {
	defer func() {
		if e := recover(); e != nil {
			if e != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				st.c.log.Error("handler panicked", "client", st.c.remoteAddr, "panic", fmt.Sprint(e), "stack", string(buf))
			}
		}
	}()
	st.c.srv.Handler.ServeHTTP(&st.rw, st.req)
	_ = st.rw.finish()
}

// newRequest builds the handler's request from a HEADERS frame, checking
// what RFC 9113 section 8.3 asks of a request.
func (c *conn) newRequest(st *stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	var method, scheme, authority, path string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		default:
			return nil, fmt.Errorf("pseudo-header field %s not allowed in a request", hf.Name)
		}
	}
	if method == "" {
		return nil, errors.New("no :method")
	}
	isConnect := method == http.MethodConnect
	if isConnect {
		if scheme != "" || path != "" || authority == "" {
			return nil, errors.New("CONNECT needs :authority and no :scheme or :path")
		}
	} else if scheme == "" || path == "" {
		return nil, errors.New("no :scheme or :path")
	}
	fields := f.RegularFields()
	header := make(http.Header, len(fields))
	var cookies []string
	for _, hf := range fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, fmt.Errorf("connection-specific field %q", hf.Name)
		case "te":
			if hf.Value != "trailers" {
				return nil, fmt.Errorf("te: %q (only \"trailers\" is allowed)", hf.Value)
			}
		case "host":
			if authority == "" {
				authority = hf.Value
			}
			continue
		case "cookie":
			// Cookie crumbs are joined for HTTP/1.1 (RFC 9113 section 8.2.3).
			cookies = append(cookies, hf.Value)
			continue
		case "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || (st.declLen >= 0 && int64(n) != st.declLen) {
				return nil, fmt.Errorf("content-length: %q", hf.Value)
			}
			st.declLen = int64(n)
		}
		key := http.CanonicalHeaderKey(hf.Name)
		header[key] = append(header[key], hf.Value)
	}
	switch len(cookies) {
	case 0:
	case 1:
		header["Cookie"] = cookies
	default:
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	var u *url.URL
	switch {
	case isConnect:
		u = &url.URL{Host: authority}
		path = authority
	case path == "*" && method == http.MethodOptions:
		u = &url.URL{Path: "*"}
	default:
		var err error
		if u, err = url.ParseRequestURI(path); err != nil || path[0] != '/' {
			return nil, fmt.Errorf(":path %q", path)
		}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	st.cancel = cancel
	r := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     header,
		Host:       authority,
		RemoteAddr: c.remoteAddr,
		RequestURI: path,
		TLS:        c.tlsState,
	}
	if f.StreamEnded() {
		if st.declLen > 0 {
			cancel()
			return nil, fmt.Errorf("content-length %d with no body", st.declLen)
		}
		r.Body = http.NoBody
	} else {
		st.body = newBody(st)
		r.Body = st.body
		r.ContentLength = st.declLen
		if _, ok := header["Trailer"]; ok {
			r.Trailer = make(http.Header)
			for _, v := range header["Trailer"] {
				for _, k := range strings.Split(v, ",") {
					if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
						r.Trailer[k] = nil
					}
				}
			}
			st.body.trailer = r.Trailer
		}
	}
	return r.WithContext(ctx), nil
}
