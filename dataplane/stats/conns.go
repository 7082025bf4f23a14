package stats

import (
	"net"
	"sync"
	"sync/atomic"
)

// Listener wraps a net.Listener so that its connections are counted in
// Conns under one listener kind. A connection counts as HTTP/1.1 until it
// is known to be HTTP/2: by its first bytes (the h2c preface) or by
// SetProto (after TLS negotiated h2).
type Listener struct {
	net.Listener
	// Conns receives the counts.
	Conns *Conns
	// Kind is ListenerHTTP or ListenerHTTPS.
	Kind int
}

// Accept implements net.Listener.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Track(c, l.Conns, l.Kind), nil
}

// Conn is a counted connection; see Listener.
type Conn struct {
	net.Conn

	conns   *Conns
	kind    int
	proto   atomic.Int32
	sniffed bool // only Read touches it, and reads are not concurrent
	once    sync.Once
}

// Track counts c as an open HTTP/1.1 connection on a listener of kind until
// it is closed.
func Track(c net.Conn, conns *Conns, kind int) *Conn {
	conns.Accepted[kind].Add(1)
	conns.Active[kind][ProtoHTTP1].Add(1)
	return &Conn{Conn: c, conns: conns, kind: kind}
}

// SetProto moves the connection to protocol p (ProtoHTTP1 or ProtoHTTP2).
func (c *Conn) SetProto(p int) {
	if old := int(c.proto.Swap(int32(p))); old != p {
		c.conns.Active[c.kind][old].Add(-1)
		c.conns.Active[c.kind][p].Add(1)
	}
}

// Read implements net.Conn. The first read tells h2c (prior knowledge)
// from HTTP/1.1: only the HTTP/2 preface starts with "PRI".
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.Sniff(p[:n])
	}
	return n, err
}

// Sniff looks at the first bytes read from the connection, when they were
// read around Read (from the socket itself); later calls do nothing.
// Reads and Sniff must not be concurrent.
func (c *Conn) Sniff(first []byte) {
	if c.sniffed || len(first) == 0 {
		return
	}
	c.sniffed = true
	if len(first) >= 3 && string(first[:3]) == "PRI" {
		c.SetProto(ProtoHTTP2)
	}
}

// Close implements net.Conn; the connection stops counting at the first
// call.
func (c *Conn) Close() error {
	c.once.Do(func() { c.conns.Active[c.kind][c.proto.Load()].Add(-1) })
	return c.Conn.Close()
}

// CloseWrite half-closes the connection when the underlying one can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }
