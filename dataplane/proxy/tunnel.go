package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tunnel completes a protocol upgrade (WebSocket) that the backend accepted
// with 101 Switching Protocols: it takes over the client connection, relays
// the 101 response, and copies bytes both ways, unbuffered, until either side
// closes or the tunnel has been idle for the WebSocket idle timeout. Only a
// 101 answering an upgrade the client asked for turns a connection into a
// tunnel. At shutdown, CloseTunnels ends tunnels with WebSocket close frames.
func (h *Handler) tunnel(w http.ResponseWriter, r *http.Request, resp *http.Response, upgrade string, o *outcome, addr string) {
	pool := o.pool.Name
	got := resp.Header.Get("Upgrade")
	if upgrade == "" || !strings.EqualFold(got, upgrade) {
		h.log.Warn("backend switched protocols without being asked", "pool", pool, "backend", addr, "requested", upgrade, "got", got)
		h.fail(w, r, o, http.StatusBadGateway, grpcUnavailable, "bad gateway: backend "+addr+" switched to a protocol the client did not ask for")
		return
	}
	backConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		h.fail(w, r, o, http.StatusBadGateway, grpcUnavailable, "bad gateway: backend "+addr+" upgrade is not a stream")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.log.Error("cannot take over connection for upgrade", "pool", pool, "error", err)
		h.fail(w, r, o, http.StatusInternalServerError, grpcUnavailable, "cannot upgrade this connection")
		return
	}
	o.status = http.StatusSwitchingProtocols
	defer conn.Close()
	defer backConn.Close()
	// Request timeouts do not apply to a tunnel; the idle timeout does.
	_ = conn.SetDeadline(time.Time{})

	hdr := resp.Header.Clone()
	removeHopByHop(hdr)
	hdr["Connection"] = connectionUpgrade
	hdr["Upgrade"] = []string{got}
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return
	}
	if err := hdr.Write(brw); err != nil {
		return
	}
	if _, err := brw.WriteString("\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	h.log.Debug("upgraded connection", "pool", pool, "backend", addr, "protocol", got)

	tc := &tunnelConn{client: conn, backend: backConn}
	tc.last.Store(time.Now().UnixNano())
	h.tunnels.add(tc)
	defer h.tunnels.remove(tc)
	errc := make(chan error, 2)
	go func() { errc <- h.clientToBackend(tc, brw.Reader) }()
	go func() { errc <- tc.backendToClient() }()
	// The first direction to end ends the tunnel; the deferred closes stop
	// the other, whose result is then collected. After a going-away close,
	// the first direction to end may be the one that sent it: the peers are
	// given closeGrace to answer before the tunnel is cut.
	err = <-errc
	pending := 1
	if tc.goingAway.Load() && errors.Is(err, errGoneAway) {
		t := time.NewTimer(closeGrace)
		select {
		case err2 := <-errc:
			pending--
			if !errors.Is(err2, errGoneAway) {
				err = err2
			}
		case <-t.C:
		}
		t.Stop()
	}
	conn.Close()
	backConn.Close()
	for ; pending > 0; pending-- {
		<-errc
	}
	o.bytesIn, o.bytesOut = tc.in.Load(), tc.out.Load()
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) && !errors.Is(err, errGoneAway) {
		h.log.Debug("tunnel ended", "pool", pool, "backend", addr, "error", err)
	}
}

// closeGrace is how long a tunnel that was sent WebSocket close frames
// waits for the peers to answer before it is cut.
const closeGrace = time.Second

// errGoneAway ends a tunnel direction after it sent its close frame.
var errGoneAway = errors.New("tunnel closed for shutdown")

// tunnelConn is one open tunnel: its two connections, and where each
// direction stands in the WebSocket framing, so that a close frame can be
// put between two frames at shutdown.
type tunnelConn struct {
	client  net.Conn
	backend io.ReadWriteCloser
	// last is the unix nanoseconds of the last byte either way.
	last atomic.Int64
	// in and out count bytes from and to the client.
	in, out atomic.Int64
	// goingAway is set by goAway: each direction sends a close frame at
	// its next frame boundary, then stops relaying.
	goingAway atomic.Bool

	// toClientMu serialises writes to the client and guards toClient.
	toClientMu sync.Mutex
	toClient   frameTracker
	// toBackendMu serialises writes to the backend and guards toBackend.
	toBackendMu sync.Mutex
	toBackend   frameTracker
}

// frameTracker follows the WebSocket frames of one direction as bytes go
// by, to know where one frame ends and the next begins.
type frameTracker struct {
	hdr       [14]byte
	hdrN      int    // header bytes gathered of the frame being read
	remaining uint64 // payload bytes left of the current frame
	closed    bool   // the close frame was sent; relay nothing more
}

// atBoundary reports whether the next byte starts a new frame.
func (f *frameTracker) atBoundary() bool { return f.hdrN == 0 && f.remaining == 0 }

// advance consumes p up to, at most, the end of the first frame boundary
// reached when stopAtBoundary is set (after at least one byte), and returns
// how many bytes it consumed.
func (f *frameTracker) advance(p []byte, stopAtBoundary bool) int {
	i := 0
	for i < len(p) {
		if f.remaining > 0 {
			n := min(uint64(len(p)-i), f.remaining)
			f.remaining -= n
			i += int(n)
		} else {
			f.hdr[f.hdrN] = p[i]
			f.hdrN++
			i++
			if need := f.headerLen(); need > 0 && f.hdrN == need {
				f.remaining = f.payloadLen()
				f.hdrN = 0
			}
		}
		if stopAtBoundary && f.atBoundary() {
			return i
		}
	}
	return i
}

// headerLen returns the length of the frame header being gathered, or 0
// while it cannot be told yet.
func (f *frameTracker) headerLen() int {
	if f.hdrN < 2 {
		return 0
	}
	n := 2
	switch f.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if f.hdr[1]&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

func (f *frameTracker) payloadLen() uint64 {
	switch l := f.hdr[1] & 0x7f; l {
	case 126:
		return uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
	case 127:
		var v uint64
		for _, b := range f.hdr[2:10] {
			v = v<<8 | uint64(b)
		}
		return v
	default:
		return uint64(l)
	}
}

// goingAwayReason is the reason sent with close code 1001.
const goingAwayReason = "proxy shutting down"

// closeFrame returns a close frame with code 1001 (going away), masked as
// a client's frame must be when masked is set.
func closeFrame(masked bool) []byte {
	payload := append([]byte{0x03, 0xe9}, goingAwayReason...)
	if !masked {
		return append([]byte{0x88, byte(len(payload))}, payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	f := append([]byte{0x88, 0x80 | byte(len(payload))}, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// relay writes p to dst under mu, tracking frames in f; once goingAway is
// set, it writes up to the next frame boundary, then the close frame, and
// reports errGoneAway.
func (tc *tunnelConn) relay(mu *sync.Mutex, f *frameTracker, dst io.Writer, p []byte, masked bool) error {
	mu.Lock()
	defer mu.Unlock()
	if f.closed {
		return errGoneAway
	}
	if !tc.goingAway.Load() {
		f.advance(p, false)
		_, err := dst.Write(p)
		return err
	}
	n := 0
	if !f.atBoundary() {
		n = f.advance(p, true)
		if _, err := dst.Write(p[:n]); err != nil {
			return err
		}
		if !f.atBoundary() {
			return nil // the frame goes on in the next read
		}
	}
	f.closed = true
	_, err := dst.Write(closeFrame(masked))
	if err != nil {
		return err
	}
	return errGoneAway
}

// goAway asks both directions to send a going-away close frame: at once
// where the stream is between frames, else when the current frame ends.
func (tc *tunnelConn) goAway() {
	tc.goingAway.Store(true)
	_ = tc.client.SetWriteDeadline(time.Now().Add(closeGrace))
	for _, d := range []struct {
		mu     *sync.Mutex
		f      *frameTracker
		dst    io.Writer
		masked bool
	}{{&tc.toClientMu, &tc.toClient, tc.client, false}, {&tc.toBackendMu, &tc.toBackend, tc.backend, true}} {
		d.mu.Lock()
		if !d.f.closed && d.f.atBoundary() {
			d.f.closed = true
			_, _ = d.dst.Write(closeFrame(d.masked))
		}
		d.mu.Unlock()
	}
}

// clientToBackend copies client bytes (first those already buffered) to the
// backend. It reads with a deadline of one idle period, and ends the tunnel
// when a whole period passed without traffic in either direction.
func (h *Handler) clientToBackend(tc *tunnelConn, buffered *bufio.Reader) error {
	send := func(p []byte) error {
		tc.in.Add(int64(len(p)))
		return tc.relay(&tc.toBackendMu, &tc.toBackend, tc.backend, p, true)
	}
	if n := buffered.Buffered(); n > 0 {
		early, _ := buffered.Peek(n)
		if err := send(early); err != nil {
			return err
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	conn := tc.client
	for {
		// The deadline is one idle period after the last traffic in either
		// direction, so an idle tunnel closes after exactly that period.
		_ = conn.SetReadDeadline(time.Unix(0, tc.last.Load()).Add(h.wsIdle))
		n, err := conn.Read(buf)
		if n > 0 {
			tc.last.Store(time.Now().UnixNano())
			if werr := send(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Since(time.Unix(0, tc.last.Load())) < h.wsIdle {
					continue // the other direction was busy
				}
				h.log.Debug("closing idle tunnel", "idle_timeout", h.wsIdle)
			}
			return err
		}
	}
}

// backendToClient copies backend bytes to the client as they arrive.
func (tc *tunnelConn) backendToClient() error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := tc.backend.Read(buf)
		if n > 0 {
			tc.last.Store(time.Now().UnixNano())
			tc.out.Add(int64(n))
			if werr := tc.relay(&tc.toClientMu, &tc.toClient, tc.client, buf[:n], false); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// tunnels is the set of open tunnels, for shutdown.
type tunnels struct {
	mu        sync.Mutex
	set       map[*tunnelConn]struct{}
	changed   chan struct{} // closed and replaced when a tunnel ends
	goingAway bool
}

func (t *tunnels) add(tc *tunnelConn) {
	t.mu.Lock()
	t.set[tc] = struct{}{}
	away := t.goingAway
	t.mu.Unlock()
	if away {
		tc.goAway()
	}
}

func (t *tunnels) remove(tc *tunnelConn) {
	t.mu.Lock()
	delete(t.set, tc)
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
	t.mu.Unlock()
}

// waitEmpty waits until no tunnel is open or ctx is done, and reports
// whether none is.
func (t *tunnels) waitEmpty(ctx context.Context) bool {
	for {
		t.mu.Lock()
		if len(t.set) == 0 {
			t.mu.Unlock()
			return true
		}
		if t.changed == nil {
			t.changed = make(chan struct{})
		}
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// OpenTunnels returns the number of open WebSocket tunnels.
func (h *Handler) OpenTunnels() int {
	h.tunnels.mu.Lock()
	defer h.tunnels.mu.Unlock()
	return len(h.tunnels.set)
}

// CloseTunnels ends the open WebSocket tunnels for shutdown. They may finish
// by themselves until ctx is done; then each side of each tunnel is sent a
// close frame with code 1001 (going away) between two frames, the peers get
// a short grace to answer, and what is still open is cut. Tunnels opened
// meanwhile are closed the same way, and one opened after it returns (the
// servers still answer requests in flight) is sent the close frame at
// once. It returns when no tunnel is left.
func (h *Handler) CloseTunnels(ctx context.Context) {
	if h.tunnels.waitEmpty(ctx) {
		h.tunnels.mu.Lock()
		h.tunnels.goingAway = true
		h.tunnels.mu.Unlock()
		return
	}
	h.tunnels.mu.Lock()
	h.tunnels.goingAway = true
	open := make([]*tunnelConn, 0, len(h.tunnels.set))
	for tc := range h.tunnels.set {
		open = append(open, tc)
	}
	h.tunnels.mu.Unlock()
	h.log.Info("closing WebSocket tunnels still open", "tunnels", len(open))
	// goAway may wait for a backend to take the close frame; each has its
	// own goroutine, which the cut below ends at the latest.
	var wg sync.WaitGroup
	for _, tc := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc.goAway()
		}()
	}
	defer wg.Wait()
	graceCtx, cancel := context.WithTimeout(context.Background(), 2*closeGrace)
	defer cancel()
	if h.tunnels.waitEmpty(graceCtx) {
		return
	}
	h.tunnels.mu.Lock()
	for tc := range h.tunnels.set {
		tc.client.Close()
		tc.backend.Close()
	}
	h.tunnels.mu.Unlock()
	cutCtx, cancelCut := context.WithTimeout(context.Background(), closeGrace)
	defer cancelCut()
	h.tunnels.waitEmpty(cutCtx)
}
