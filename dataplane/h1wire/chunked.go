package h1wire

import "errors"

// Limits of a chunked body's framing.
const (
	maxChunkLine   = 4096     // a chunk-size line, extensions included
	maxTrailerSize = 64 << 10 // the trailer section
)

// ErrChunked says a chunked body breaks its framing rules.
var ErrChunked = errors.New("malformed chunked body")

func chunkError(what string) error { return &detailError{base: ErrChunked, what: what} }

type chunkState uint8

const (
	csSize      chunkState = iota // hex digits of a chunk size
	csSizeWS                      // whitespace after the size: ";" or CR next
	csExt                         // chunk extensions, up to CR
	csSizeLF                      // the LF after a size line
	csData                        // chunk data
	csDataCR                      // the CR after chunk data
	csDataLF                      // the LF after chunk data
	csTrailer                     // at the start of a trailer line
	csTrailerIn                   // inside a trailer line
	csTrailerLF                   // the LF of a trailer line (or of the end)
	csDone
)

// Chunked follows a chunked body byte by byte so that it can be relayed as
// it is (chunk sizes, extensions and trailers included) while knowing
// where it ends. The zero value is at the start of a body.
type Chunked struct {
	state    chunkState
	size     int64 // the chunk size being read, then the data left
	digits   int   // hex digits read of the size
	line     int   // bytes of the current size line
	trailer  int   // bytes of the trailer section
	emptyEnd bool  // the trailer line being ended is empty
}

// Done reports whether the body has ended.
func (c *Chunked) Done() bool { return c.state == csDone }

// Scan follows p, the next bytes of the body, and returns how many of them
// belong to it: all of p, or fewer when the body ends inside p.
func (c *Chunked) Scan(p []byte) (int, error) {
	i := 0
	for i < len(p) && c.state != csDone {
		b := p[i]
		switch c.state {
		case csSize:
			c.line++
			switch {
			case b >= '0' && b <= '9', b >= 'a' && b <= 'f', b >= 'A' && b <= 'F':
				if c.digits == 15 {
					return i, chunkError("chunk size too large")
				}
				c.size = c.size<<4 | int64(unhex(b))
				c.digits++
			case c.digits > 0 && b == ';':
				c.state = csExt
			case c.digits > 0 && (b == ' ' || b == '\t'):
				c.state = csSizeWS
			case c.digits > 0 && b == '\r':
				c.state = csSizeLF
			default:
				return i, chunkError("invalid chunk size line")
			}
		case csSizeWS:
			c.line++
			switch b {
			case ' ', '\t':
				if c.line > maxChunkLine {
					return i, chunkError("chunk size line too long")
				}
			case ';':
				c.state = csExt
			case '\r':
				c.state = csSizeLF
			default:
				return i, chunkError("invalid chunk size line")
			}
		case csExt:
			c.line++
			if c.line > maxChunkLine {
				return i, chunkError("chunk size line too long")
			}
			switch {
			case b == '\r':
				c.state = csSizeLF
			case b == '\n' || b < 0x20 && b != '\t' || b == 0x7f:
				return i, chunkError("invalid character in a chunk extension")
			}
		case csSizeLF:
			if b != '\n' {
				return i, chunkError("bare CR in a chunk size line")
			}
			c.line, c.digits = 0, 0
			if c.size == 0 {
				c.state = csTrailer
			} else {
				c.state = csData
			}
		case csData:
			n := int64(len(p) - i)
			if n > c.size {
				n = c.size
			}
			c.size -= n
			i += int(n)
			if c.size == 0 {
				c.state = csDataCR
			}
			continue
		case csDataCR:
			if b != '\r' {
				return i, chunkError("chunk data not followed by CRLF")
			}
			c.state = csDataLF
		case csDataLF:
			if b != '\n' {
				return i, chunkError("chunk data not followed by CRLF")
			}
			c.state = csSize
		case csTrailer, csTrailerIn:
			c.trailer++
			if c.trailer > maxTrailerSize {
				return i, chunkError("trailer section too large")
			}
			switch {
			case b == '\r':
				c.emptyEnd = c.state == csTrailer
				c.state = csTrailerLF
			case b == '\n' || b < 0x20 && b != '\t' || b == 0x7f:
				return i, chunkError("invalid character in the trailer section")
			default:
				c.state = csTrailerIn
			}
		case csTrailerLF:
			c.trailer++
			if c.trailer > maxTrailerSize {
				return i, chunkError("trailer section too large")
			}
			if b != '\n' {
				return i, chunkError("bare CR in the trailer section")
			}
			if c.emptyEnd {
				c.state = csDone
			} else {
				c.state = csTrailer
			}
		}
		i++
	}
	return i, nil
}

func unhex(b byte) byte {
	switch {
	case b >= '0' && b <= '9':
		return b - '0'
	case b >= 'a' && b <= 'f':
		return b - 'a' + 10
	}
	return b - 'A' + 10
}
