package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// tunnel completes a protocol upgrade (WebSocket) that the backend accepted
// with 101 Switching Protocols: it takes over the client connection, relays
// the 101 response, and copies bytes both ways, unbuffered, until either side
// closes or the tunnel has been idle for the WebSocket idle timeout. Only a
// 101 answering an upgrade the client asked for turns a connection into a
// tunnel.
func (h *Handler) tunnel(w http.ResponseWriter, r *http.Request, resp *http.Response, upgrade, pool, addr string) {
	got := resp.Header.Get("Upgrade")
	if upgrade == "" || !strings.EqualFold(got, upgrade) {
		h.log.Warn("backend switched protocols without being asked", "pool", pool, "peer", addr, "requested", upgrade, "got", got)
		h.fail(w, r, http.StatusBadGateway, grpcUnavailable, "bad gateway: backend "+addr+" switched to a protocol the client did not ask for")
		return
	}
	backConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		h.fail(w, r, http.StatusBadGateway, grpcUnavailable, "bad gateway: backend "+addr+" upgrade is not a stream")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.log.Error("cannot take over connection for upgrade", "pool", pool, "error", err)
		h.fail(w, r, http.StatusInternalServerError, grpcUnavailable, "cannot upgrade this connection")
		return
	}
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
	h.log.Debug("upgraded connection", "pool", pool, "peer", addr, "protocol", got)

	var last atomic.Int64 // unix nanoseconds of the last byte either way
	last.Store(time.Now().UnixNano())
	errc := make(chan error, 2)
	go func() { errc <- h.clientToBackend(conn, brw.Reader, backConn, &last) }()
	go func() { errc <- backendToClient(backConn, conn, &last) }()
	// The first direction to end ends the tunnel; the deferred closes stop
	// the other, whose result is then collected.
	err = <-errc
	conn.Close()
	backConn.Close()
	<-errc
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		h.log.Debug("tunnel ended", "pool", pool, "peer", addr, "error", err)
	}
}

// clientToBackend copies client bytes (first those already buffered) to the
// backend. It reads with a deadline of one idle period, and ends the tunnel
// when a whole period passed without traffic in either direction.
func (h *Handler) clientToBackend(conn net.Conn, buffered *bufio.Reader, dst io.Writer, last *atomic.Int64) error {
	if n := buffered.Buffered(); n > 0 {
		early, _ := buffered.Peek(n)
		if _, err := dst.Write(early); err != nil {
			return err
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		// The deadline is one idle period after the last traffic in either
		// direction, so an idle tunnel closes after exactly that period.
		_ = conn.SetReadDeadline(time.Unix(0, last.Load()).Add(h.wsIdle))
		n, err := conn.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Since(time.Unix(0, last.Load())) < h.wsIdle {
					continue // the other direction was busy
				}
				h.log.Debug("closing idle tunnel", "idle_timeout", h.wsIdle)
			}
			return err
		}
	}
}

// backendToClient copies backend bytes to the client as they arrive.
func backendToClient(src io.Reader, conn net.Conn, last *atomic.Int64) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}
