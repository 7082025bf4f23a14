package h2server

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// keepBodyBuffer is the largest drained body buffer kept for more data.
const keepBodyBuffer = 32 << 10

// errBodyClosed is returned by a Read after the handler closed the body.
var errBodyClosed = errors.New("h2server: read on closed request body")

// body is a request body: the reading goroutine appends DATA payloads, the
// handler reads them, and each read returns flow-control credit.
type body struct {
	st   *stream
	mu   sync.Mutex
	cond sync.Cond
	buf  []byte // unread bytes are buf[off:]
	off  int
	err  error // io.EOF once the client ended the stream, else why it ended
	done bool  // the handler closed the body

	// trailer is the request's Trailer map, filled at EOF from trailers.
	trailer  http.Header
	trailers http.Header
}

func newBody(st *stream) *body {
	b := &body{st: st}
	b.cond.L = &b.mu
	return b
}

// Read reads body bytes, waiting for the client to send them.
func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	for b.off == len(b.buf) && b.err == nil && !b.done {
		b.cond.Wait()
	}
	if b.done {
		b.mu.Unlock()
		return 0, errBodyClosed
	}
	if b.off == len(b.buf) {
		err := b.err
		if err == io.EOF && b.trailers != nil {
			for k, vv := range b.trailers {
				if _, ok := b.trailer[k]; ok {
					b.trailer[k] = vv
				}
			}
			b.trailers = nil
		}
		b.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	if b.off == len(b.buf) {
		b.buf, b.off = b.buf[:0], 0
		if cap(b.buf) > keepBodyBuffer {
			b.buf = nil // a burst does not pin its memory to the stream
		}
	}
	b.mu.Unlock()
	b.st.c.returnCredit(b.st, n)
	return n, nil
}

// Close discards what is unread; later DATA is discarded as it comes.
func (b *body) Close() error {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return nil
	}
	b.done = true
	n := len(b.buf) - b.off
	b.buf, b.off = nil, 0
	b.cond.Broadcast()
	b.mu.Unlock()
	b.st.c.returnCredit(nil, n)
	return nil
}

// write appends a DATA payload; false if the handler closed the body.
func (b *body) write(p []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done || b.err != nil {
		return false
	}
	b.buf = append(b.buf, p...)
	b.cond.Signal()
	return true
}

// end marks the end of the body, with the request's trailers if any.
func (b *body) end(trailers http.Header) {
	b.mu.Lock()
	if b.err == nil {
		b.err = io.EOF
		b.trailers = trailers
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// closeWithError ends the body early: a reset stream or a closed
// connection.
func (b *body) closeWithError(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}
