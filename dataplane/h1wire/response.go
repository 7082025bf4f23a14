package h1wire

import (
	"bytes"
	"errors"
	"strings"
	"sync/atomic"
	"time"
)

// Response is a parsed and validated response head from a backend. Its
// byte slices point into the bytes given to Parse. A Response can be
// reused: Parse keeps the capacity of Fields.
type Response struct {
	// Status is the three-digit status code.
	Status int
	// Reason is the reason phrase (may be empty).
	Reason []byte
	// HTTP10 says the backend answered in HTTP/1.0.
	HTTP10 bool
	// Fields are the header fields in order.
	Fields []Field
	// ContentLength is the body's length; -1 when the head gives none.
	ContentLength int64
	// Chunked says the body is chunked (Transfer-Encoding ending in
	// chunked); ContentLength is then -1.
	Chunked bool
	// Close says the backend will close the connection after this
	// response: Connection: close, or HTTP/1.0 without keep-alive.
	Close bool
	// HasDate says the head has a Date field.
	HasDate bool
}

// ErrMalformed says a response head breaks HTTP/1.1's syntax or framing
// rules; Parse wraps it with the details.
var ErrMalformed = errors.New("malformed response head")

func malformed(what string) error {
	return &detailError{base: ErrMalformed, what: strings.Replace(what, "request head", "response head", 1)}
}

// malformedValue is malformed(what + " " + the quoted value), built apart
// from the parsers so that their stack frames stay small: the request path
// runs them on fresh goroutines, whose stacks are copied when they grow.
//
//go:noinline
func malformedValue(what string, v []byte) error {
	return malformed(quoted(what, v))
}

// detailError is base with what went wrong.
type detailError struct {
	base error
	what string
}

func (e *detailError) Error() string { return e.base.Error() + ": " + e.what }
func (e *detailError) Unwrap() error { return e.base }

// Parse validates a complete response head (ending in CRLF CRLF) into r.
// It refuses what could make the client and the proxy disagree on where
// the response ends: bare CR or LF, obsolete line folding, invalid field
// names or values, differing or invalid Content-Lengths and transfer
// codings other than chunked. (Transfer-Encoding wins over Content-Length,
// as RFC 9112 section 6.3 says.) It allocates only to describe an error.
func (r *Response) Parse(head []byte) error {
	*r = Response{Fields: r.Fields[:0], ContentLength: -1}
	if len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
		return malformed("no end")
	}
	rest := head[:len(head)-2]
	line, rest, reason := nextLine(rest)
	if reason != "" {
		return malformed(reason)
	}
	if err := r.statusLine(line); err != nil {
		return err
	}
	var (
		cl            []byte
		haveCL, keep  bool
		te            []byte
		haveTE, multi bool
	)
	for len(rest) > 0 {
		if line, rest, reason = nextLine(rest); reason != "" {
			return malformed(reason)
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			return malformed("obsolete line folding")
		}
		name, value, reason := CheckField(line)
		if reason != "" {
			return malformed(reason)
		}
		r.Fields = append(r.Fields, Field{Name: name, Value: value})
		switch {
		case EqualFold(name, "content-length"):
			if !isDigits(value) || len(value) > 18 {
				return malformedValue("invalid Content-Length", value)
			}
			if haveCL && !bytes.Equal(trimZeros(cl), trimZeros(value)) {
				return malformed("several differing Content-Length fields")
			}
			cl, haveCL = value, true
		case EqualFold(name, "transfer-encoding"):
			te, multi = value, haveTE
			haveTE = true
		case EqualFold(name, "connection"):
			if HasToken(value, "close") {
				r.Close = true
			}
			if HasToken(value, "keep-alive") {
				keep = true
			}
		case EqualFold(name, "date"):
			r.HasDate = true
		}
	}
	if r.HTTP10 && !keep {
		r.Close = true
	}
	if haveTE {
		if r.HTTP10 {
			// RFC 9112 section 6.1: faulty framing in HTTP/1.0.
			return malformed("Transfer-Encoding in an HTTP/1.0 response")
		}
		// Only the last coding frames the message; it must be chunked.
		last := te
		if i := bytes.LastIndexByte(te, ','); i >= 0 {
			last = te[i+1:]
		}
		if multi || !EqualFold(bytes.TrimSpace(last), "chunked") {
			return malformedValue("unsupported Transfer-Encoding", te)
		}
		r.Chunked = true
		return nil
	}
	if haveCL {
		// Digits only, at most 18 of them (checked above): no overflow.
		var n int64
		for _, d := range cl {
			n = n*10 + int64(d-'0')
		}
		r.ContentLength = n
	}
	return nil
}

// statusLine parses "HTTP/1.x SP 3DIGIT [SP reason]".
func (r *Response) statusLine(l []byte) error {
	if len(l) < 12 || string(l[:7]) != "HTTP/1." || (l[7] != '1' && l[7] != '0') || l[8] != ' ' {
		return malformed("bad status line")
	}
	r.HTTP10 = l[7] == '0'
	code := l[9:12]
	if !isDigits(code) || code[0] == '0' {
		return malformed("bad status code")
	}
	r.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if len(l) > 12 {
		if l[12] != ' ' {
			return malformed("bad status line")
		}
		r.Reason = l[13:]
		for _, b := range r.Reason {
			if b < 0x20 && b != '\t' || b == 0x7f {
				return malformed("invalid character in the reason phrase")
			}
		}
	}
	return nil
}

// HeadEnd returns the length of the head at the start of b, through its
// CRLF CRLF; -1 when b holds no complete head. bareLF says b holds the end
// of a head whose lines end in bare LFs (LF LF, or LF CRLF) before any
// CRLF CRLF: such a head never ends the way HeadEnd looks for.
func HeadEnd(b []byte) (n int, bareLF bool) {
	i := bytes.Index(b, crlfCRLF)
	before := b
	if i >= 0 {
		before = b[:i+3] // "\n\r\n" may start at i+1, inside the CRLF CRLF
	}
	if bytes.Contains(before, lfLF) || bytes.Contains(before, lfCRLF) {
		return -1, true
	}
	if i < 0 {
		return -1, false
	}
	return i + 4, false
}

var (
	crlfCRLF = []byte("\r\n\r\n")
	lfLF     = []byte("\n\n")
	lfCRLF   = []byte("\n\r\n")
)

// BodyLess reports whether a response with this status to a request with
// this method has no body whatever its head says: HEAD, 1xx, 204, 304.
func BodyLess(method []byte, status int) bool {
	return status < 200 || status == 204 || status == 304 || string(method) == "HEAD"
}

// dateCache holds the formatted Date of the current second.
type dateCache struct {
	sec int64
	val []byte
}

var date atomic.Pointer[dateCache]

// AppendDate appends now as an HTTP date (RFC 9110 section 5.6.7),
// formatting it at most once a second.
func AppendDate(b []byte, now time.Time) []byte {
	sec := now.Unix()
	if d := date.Load(); d != nil && d.sec == sec {
		return append(b, d.val...)
	}
	d := &dateCache{sec: sec, val: now.UTC().AppendFormat(nil, "Mon, 02 Jan 2006 15:04:05 GMT")}
	date.Store(d)
	return append(b, d.val...)
}
