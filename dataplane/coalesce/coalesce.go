// Package coalesce gathers the writes many goroutines make to one
// connection into as few system calls as it can. An HTTP/2 client writes
// each request's HEADERS and DATA frames with a flush apiece, under the
// connection's write lock; with a hundred streams on one connection that is
// a system call per frame. Conn takes the bytes of each Write into a buffer
// and returns; one goroutine per connection writes whatever has gathered
// once the goroutines that are ready to run have had their turn.
package coalesce

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// maxPending bounds the bytes waiting to be written: a writer beyond it
// waits for the socket to take them (the backpressure a plain write gives).
const maxPending = 256 << 10

// keepBuffer is the largest write buffer kept for the next writes; a burst
// beyond it does not pin its memory to an idle connection.
const keepBuffer = 64 << 10

// closeLinger bounds how long Close waits for the bytes already written to
// reach the socket.
var closeLinger = 5 * time.Second

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("coalesce: connection closed")

// Conn is a net.Conn whose writes are gathered and written by its own
// goroutine. Write returns once its bytes are buffered; an error writing
// them is returned by the next Write and closes the connection. Close
// leaves the writer to write what is still buffered. Reads go straight to
// the underlying connection. A write deadline set on Conn applies to the
// writer's next system call, not to Write.
type Conn struct {
	net.Conn

	// wake has a token when bytes are waiting; done is closed by Close,
	// after which the writer writes what is left and returns.
	wake chan struct{}
	done chan struct{}

	mu sync.Mutex
	// drained is signalled when the writer took the pending bytes or failed.
	drained sync.Cond
	pending []byte
	spare   []byte
	err     error // sticky: the write error, or ErrClosed
	closing bool

	// stall, if set, bounds each system call of the writer (see
	// SetStallTimeout).
	stall atomic.Int64
}

// New wraps c and starts its writer goroutine, which stops at Close.
func New(c net.Conn) *Conn {
	cc := &Conn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	cc.drained.L = &cc.mu
	go cc.writeLoop()
	return cc
}

// Write buffers p for the writer goroutine. It waits only while more than
// maxPending bytes are waiting already.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.WaitWritable(nil); err != nil {
		return 0, err
	}
	return c.Append(p)
}

// Append buffers p for the writer goroutine without waiting for room: for
// callers that wait with WaitWritable before they take a lock of their
// own, and then must not block under it.
func (c *Conn) Append(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // already woken; it will take these bytes too
	}
	return len(p), nil
}

// WaitWritable waits while more than maxPending bytes are waiting to be
// written, and returns the connection's error if it failed or closed.
// stop, if not nil, ends the wait early when it reports true; it is
// checked at each wake-up, and Wake wakes the waiters to check it. stop is
// called with Conn's lock held and must not block.
func (c *Conn) WaitWritable(stop func() bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.pending) >= maxPending && (stop == nil || !stop()) {
		c.drained.Wait()
	}
	return c.err
}

// Wake makes goroutines in WaitWritable check their stop functions.
func (c *Conn) Wake() {
	c.mu.Lock()
	c.drained.Broadcast()
	c.mu.Unlock()
}

// SetStallTimeout bounds each system call writing gathered bytes (at most
// stallChunk of them) to d: a peer that takes nothing for that long fails
// the connection. Zero, the default, means no bound.
func (c *Conn) SetStallTimeout(d time.Duration) { c.stall.Store(int64(d)) }

// stallChunk is the most a system call writes under a stall timeout, so
// that a slow but live peer is not taken for a stalled one.
const stallChunk = 64 << 10

// write writes b to the underlying connection, in chunks with deadlines
// under a stall timeout.
func (c *Conn) write(b []byte) error {
	d := time.Duration(c.stall.Load())
	if d <= 0 {
		_, err := c.Conn.Write(b)
		return err
	}
	for len(b) > 0 {
		n := min(len(b), stallChunk)
		select {
		case <-c.done: // Close set the deadline: closeLinger
		default:
			if err := c.Conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
				return err
			}
		}
		if _, err := c.Conn.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// writeLoop writes what has gathered each time it is woken, after letting
// every goroutine that is ready to run add its bytes first.
func (c *Conn) writeLoop() {
	for {
		last := false
		select {
		case <-c.done:
			last = true
		case <-c.wake:
			runtime.Gosched()
		}
		c.mu.Lock()
		b := c.pending
		c.pending = c.spare[:0]
		c.drained.Broadcast()
		c.mu.Unlock()
		var err error
		if len(b) > 0 {
			err = c.write(b)
		}
		c.mu.Lock()
		// b becomes the spare buffer; pending has the other one.
		c.spare = nil
		if cap(b) <= keepBuffer {
			c.spare = b[:0]
		}
		if err != nil && (c.err == nil || errors.Is(c.err, ErrClosed)) {
			c.err = err
		}
		c.drained.Broadcast()
		c.mu.Unlock()
		if err != nil || last {
			// Closed, or the stream of bytes is broken: nothing after
			// this can be written in order. Readers learn it from the
			// closed socket.
			_ = c.Conn.Close()
			return
		}
	}
}

// Close stops taking writes and returns at once; the writer goroutine
// then writes what is still buffered (waiting at most closeLinger for the
// peer to take it) and closes the connection. Reads waiting on the
// connection end at once. A second Close closes the connection without
// waiting for the writer.
func (c *Conn) Close() error {
	c.mu.Lock()
	first := !c.closing
	c.closing = true
	if c.err == nil {
		c.err = ErrClosed
	}
	c.drained.Broadcast()
	c.mu.Unlock()
	if !first {
		return c.Conn.Close()
	}
	now := time.Now()
	_ = c.Conn.SetWriteDeadline(now.Add(closeLinger))
	_ = c.Conn.SetReadDeadline(now)
	close(c.done)
	return nil
}
