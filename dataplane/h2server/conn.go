package h2server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/lb-project/lb/dataplane/coalesce"
)

// clientPreface opens every HTTP/2 connection (RFC 9113 section 3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxWindow is the largest flow-control window (2^31-1).
const maxWindow = 1<<31 - 1

// maxFrameSize is the largest frame this server reads: the protocol's
// default, which it does not raise.
const maxFrameSize = 16384

// goAwayGrace is how long a connection that sent GOAWAY keeps reading
// before it closes: frames the client sent meanwhile are read (and PINGs
// answered) rather than left unread, which would make the close a reset
// that can destroy the GOAWAY before the client reads it.
const goAwayGrace = time.Second

var (
	errConnClosed  = errors.New("h2server: connection closed")
	errStreamReset = errors.New("h2server: stream reset")
	errClientReset = errors.New("h2server: client reset the stream")
	errStreamDone  = errors.New("h2server: write after the response ended")
)

// conn is one HTTP/2 connection. The reading goroutine (serve) owns the
// framer's read side and the stream table's growth; everything below mu is
// shared with the handlers, which write their frames themselves.
type conn struct {
	srv        *Server
	nc         net.Conn
	w          *coalesce.Conn
	fr         *http2.Framer
	tlsState   *tls.ConnectionState
	remoteAddr string
	log        interface {
		Debug(string, ...any)
		Error(string, ...any)
	}
	maxStreams uint32

	ctx    context.Context
	cancel context.CancelFunc

	// handlers counts running handler goroutines; serve waits for them.
	handlers sync.WaitGroup

	mu   sync.Mutex
	cond sync.Cond // on mu: send windows grew, a stream was reset, or the connection closed

	enc    *hpack.Encoder
	encBuf bytes.Buffer

	streams     map[uint32]*stream
	maxStreamID uint32 // highest stream the client opened
	running     uint32 // handlers not yet returned
	orphans     uint32 // handlers still running for streams already reset
	refused     int    // streams refused because of orphans

	sendWindow   int64 // connection-level credit for our DATA
	peerInitial  int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame int   // the client's SETTINGS_MAX_FRAME_SIZE
	recvUnacked  int64 // body bytes consumed but not yet returned to the client
	recvWindow   int64 // connection-level credit the client has left
	ready        bool  // the handshake is done: GOAWAY may be sent
	drainAsked   bool  // GOAWAY asked for before the handshake was done
	goingAway    bool  // GOAWAY sent: no new streams
	lingering    bool  // reading out goAwayGrace before closing
	closed       bool
	idleTimer    *time.Timer

	// recentResets holds the last streams reset here (as many as may be
	// open), whose frames still in flight are ignored (RFC 9113 section
	// 5.1, "closed").
	recentResets []uint32
	resetsNext   int
	// goAwayID is the last stream the GOAWAY sent names: frames for later
	// streams, which were not served, are ignored.
	goAwayID uint32

	closeOnce sync.Once
}

func newConn(ctx context.Context, s *Server, c net.Conn, state *tls.ConnectionState) *conn {
	w := coalesce.New(c)
	cn := &conn{
		srv:          s,
		nc:           c,
		w:            w,
		tlsState:     state,
		remoteAddr:   c.RemoteAddr().String(),
		log:          s.logger(),
		maxStreams:   s.maxStreams(),
		streams:      make(map[uint32]*stream),
		sendWindow:   65535,
		peerInitial:  65535,
		peerMaxFrame: 16384,
		recvWindow:   connWindow,
	}
	cn.cond.L = &cn.mu
	cn.ctx, cn.cancel = context.WithCancel(ctx)
	cn.recentResets = make([]uint32, max(cn.maxStreams, 32))
	w.SetStallTimeout(s.stallTimeout())
	// Frames are appended without waiting for room: handlers wait for it
	// before they take mu, so that nothing blocks while holding it.
	cn.fr = http2.NewFramer(appender{w}, c)
	cn.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cn.fr.MaxHeaderListSize = s.maxHeaderListSize()
	cn.fr.SetReuseFrames()
	cn.fr.SetMaxReadFrameSize(maxFrameSize)
	cn.enc = hpack.NewEncoder(&cn.encBuf)
	return cn
}

// appender writes to a coalesce.Conn without waiting for room.
type appender struct{ w *coalesce.Conn }

func (a appender) Write(p []byte) (int, error) { return a.w.Append(p) }

// serve runs the reading side until the connection ends, then waits for
// the handlers.
func (c *conn) serve() {
	defer func() {
		c.closeNow()
		c.handlers.Wait()
		c.cancel()
	}()
	if err := c.handshake(); err != nil {
		c.log.Debug("HTTP/2 handshake failed", "client", c.remoteAddr, "error", err)
		c.drain()
		return
	}
	c.mu.Lock()
	c.ready = true
	if c.srv.IdleTimeout > 0 {
		c.idleTimer = time.AfterFunc(c.srv.IdleTimeout, c.goAwayLater)
	}
	drain := c.drainAsked
	c.mu.Unlock()
	if drain {
		c.goAwayLater()
	}
	for {
		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.process(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			c.log.Debug("HTTP/2 stream error", "client", c.remoteAddr, "stream", se.StreamID, "code", se.Code, "cause", se.Cause)
			c.mu.Lock()
			if se.StreamID > c.maxStreamID && se.StreamID%2 == 1 {
				// A HEADERS frame the framer refused still opened (and
				// closed) its stream.
				c.maxStreamID = se.StreamID
			}
			c.mu.Unlock()
			c.resetStream(se.StreamID, se.Code)
			continue
		}
		var ce http2.ConnectionError
		code, isProtocol := http2.ErrCodeNo, false
		switch {
		case errors.As(err, &ce):
			code, isProtocol = http2.ErrCode(ce), true
		case errors.Is(err, http2.ErrFrameTooLarge):
			code, isProtocol = http2.ErrCodeFrameSize, true
		}
		if isProtocol {
			c.log.Debug("HTTP/2 connection error", "client", c.remoteAddr, "code", code, "detail", c.fr.ErrorDetail())
			c.mu.Lock()
			c.goingAway = true
			c.goAwayID = c.maxStreamID
			_ = c.fr.WriteGoAway(c.maxStreamID, code, nil)
			c.mu.Unlock()
			c.drain()
		}
		return
	}
}

// drain reads and discards what the client still sends, for goAwayGrace
// at most, so that closing does not reset the connection before the
// client has read the GOAWAY.
func (c *conn) drain() {
	_ = c.nc.SetReadDeadline(time.Now().Add(goAwayGrace))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 1<<20))
}

// handshake reads the client preface and first SETTINGS frame, and sends
// this server's SETTINGS and connection window.
func (c *conn) handshake() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var buf [len(clientPreface)]byte
	if _, err := io.ReadFull(c.nc, buf[:]); err != nil {
		return fmt.Errorf("read preface: %w", err)
	}
	if string(buf[:]) != clientPreface {
		return errors.New("bad connection preface")
	}
	c.mu.Lock()
	err := c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.srv.maxHeaderListSize()},
	)
	if err == nil {
		err = c.fr.WriteWindowUpdate(0, connWindow-65535)
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return fmt.Errorf("read first frame: %w", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		c.mu.Lock()
		_ = c.fr.WriteGoAway(0, http2.ErrCodeProtocol, []byte("first frame must be SETTINGS"))
		c.mu.Unlock()
		return fmt.Errorf("first frame is %v, not SETTINGS", f.Header().Type)
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	if err := c.processSettings(sf); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			c.mu.Lock()
			_ = c.fr.WriteGoAway(0, http2.ErrCode(ce), nil)
			c.mu.Unlock()
		}
		return err
	}
	return nil
}

// process handles one frame from the client. A StreamError resets that
// stream; any other error ends the connection.
func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil // nothing of ours waits for it
		}
		return c.processSettings(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		// Replies wait for room: a client that sends without reading
		// stops being read.
		if err := c.w.WaitWritable(nil); err != nil {
			return err
		}
		c.mu.Lock()
		err := c.fr.WritePing(true, f.Data)
		c.mu.Unlock()
		return err
	case *http2.PriorityFrame:
		if f.StreamID == f.PriorityParam.StreamDep {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol, Cause: errors.New("stream depends on itself")}
		}
		return nil
	case *http2.GoAwayFrame:
		// The client opens no more streams; finish those open and close.
		c.goAwayLater()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		// Unknown frame types are ignored (RFC 9113 section 4.1).
		return nil
	}
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if err := c.w.WaitWritable(nil); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSize(s.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitial
			c.peerInitial = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.cond.Broadcast()
	return c.fr.WriteSettingsAck()
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.cond.Broadcast()
		return nil
	}
	if f.StreamID > c.maxStreamID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
	}
	st := c.streams[f.StreamID]
	if st == nil || st.reset {
		return nil // closed: updates may cross our END_STREAM
	}
	st.sendWindow += inc
	if st.sendWindow > maxWindow {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	c.cond.Broadcast()
	return nil
}

func (c *conn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	if f.StreamID > c.maxStreamID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
	}
	st := c.streams[f.StreamID]
	if st == nil {
		c.mu.Unlock()
		return nil
	}
	c.resetLocked(st)
	c.mu.Unlock()
	st.cancel()
	if st.body != nil {
		st.body.closeWithError(errClientReset)
	}
	return nil
}

// resetLocked marks st reset and forgets it; its handler, if still
// running, counts as an orphan until it returns.
func (c *conn) resetLocked(st *stream) {
	st.reset = true
	if st.gone.CompareAndSwap(false, true) {
		c.w.Wake() // a handler waiting for room to write stops
	}
	if st.running {
		st.orphan = true
		c.orphans++
	}
	c.forgetLocked(st)
	c.cond.Broadcast()
}

// resetStream sends RST_STREAM for id and forgets the stream.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	_ = c.w.WaitWritable(nil)
	c.mu.Lock()
	st := c.streams[id]
	if st != nil {
		if st.reset {
			c.mu.Unlock()
			return
		}
		c.resetLocked(st)
	}
	c.noteResetLocked(id)
	if !c.closed {
		_ = c.fr.WriteRSTStream(id, code)
	}
	c.mu.Unlock()
	if st != nil {
		st.cancel()
		if st.body != nil {
			st.body.closeWithError(errStreamReset)
		}
	}
}

// noteResetLocked remembers that this server reset stream id: frames the
// client sent before it learnt that are ignored. (Frames on a stream the
// client reset itself are errors.)
func (c *conn) noteResetLocked(id uint32) {
	c.recentResets[c.resetsNext] = id
	c.resetsNext = (c.resetsNext + 1) % len(c.recentResets)
}

// ignoredLocked reports whether frames for closed stream id are to be
// ignored: it was reset here lately, or came after our GOAWAY.
func (c *conn) ignoredLocked(id uint32) bool {
	if c.goingAway && id > c.goAwayID {
		return true
	}
	for _, r := range c.recentResets {
		if r == id {
			return true
		}
	}
	return false
}

// forgetLocked drops st from the stream table; with no stream left, the
// idle timer starts, and a connection going away closes.
func (c *conn) forgetLocked(st *stream) {
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	c.checkIdleLocked()
}

// checkIdleLocked starts the idle timer, or closes a connection that is
// going away, once nothing runs on it.
func (c *conn) checkIdleLocked() {
	if len(c.streams) > 0 || c.running > 0 {
		return
	}
	if c.goingAway {
		// Nothing left to serve: read for goAwayGrace more, then close.
		if !c.lingering {
			c.lingering = true
			_ = c.nc.SetReadDeadline(time.Now().Add(goAwayGrace))
		}
		return
	}
	if c.idleTimer != nil {
		c.idleTimer.Reset(c.srv.IdleTimeout)
	}
}

// goAwayLater sends GOAWAY (no error) naming the last stream this
// connection will serve; the connection closes when those streams are
// done. It may be called from any goroutine.
func (c *conn) goAwayLater() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if !c.ready {
		c.drainAsked = true // sent once our SETTINGS are out
		return
	}
	if !c.goingAway {
		c.goingAway = true
		c.goAwayID = c.maxStreamID
		_ = c.fr.WriteGoAway(c.maxStreamID, http2.ErrCodeNo, nil)
	}
	c.checkIdleLocked()
}

// closeNow closes the connection: buffered frames are still flushed,
// handlers' writes fail, their contexts and request bodies end.
func (c *conn) closeNow() {
	// Close first (once: a second Close would not let the writer flush),
	// which also wakes handlers waiting for room to write.
	c.closeOnce.Do(func() { _ = c.w.Close() })
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	streams := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if c.cancel != nil {
		c.cancel()
	}
	for _, st := range streams {
		if st.body != nil {
			st.body.closeWithError(errConnClosed)
		}
	}
}

// returnCredit gives the client back flow-control credit for n body
// bytes the handler consumed (or discarded), in WINDOW_UPDATE frames sent
// once a quarter of a window has gathered. st is nil for bytes of a stream
// that no longer takes data.
func (c *conn) returnCredit(st *stream, n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.recvUnacked += int64(n)
	if c.recvUnacked >= connWindow/4 {
		_ = c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
	if st == nil || st.recvEnd || st.reset {
		return
	}
	st.recvUnacked += int64(n)
	if st.recvUnacked >= streamWindow/4 {
		_ = c.fr.WriteWindowUpdate(st.id, uint32(st.recvUnacked))
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
	}
}
