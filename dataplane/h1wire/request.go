// Package h1wire reads HTTP/1.1 message heads strictly and without
// allocating: request heads (the rules h1guard enforces in front of
// net/http, and the proxy's own HTTP/1.1 server uses directly), response
// heads from backends, and chunked bodies. Its slices point into the bytes
// it is given.
package h1wire

import (
	"bytes"
	"strconv"
	"strings"
)

// Head is a parsed and validated HTTP/1.1 request head. Its byte slices
// point into the bytes given to Parse and are valid as long as those are.
// A Head can be reused: Parse keeps the capacity of Fields.
type Head struct {
	// Method, Target and Version are the request line's three parts;
	// Version is "HTTP/1.1" or "HTTP/1.0".
	Method, Target, Version []byte
	// HTTP10 says the version is HTTP/1.0.
	HTTP10 bool
	// Fields are the header fields in order, values without surrounding
	// whitespace.
	Fields []Field
	// Chunked says the body is chunked (Transfer-Encoding: chunked).
	Chunked bool
	// ContentLength is the body's length; -1 when the head has no
	// Content-Length (with Chunked, or no body at all).
	ContentLength int64
	// Upgrade says the request asks for a WebSocket upgrade.
	Upgrade bool
	// Hosts counts the Host fields (a valid head has at most one).
	Hosts int
	// HasUpgrade says the head has an Upgrade field of any kind (h2c,
	// WebSocket, ...).
	HasUpgrade bool
}

// Field is one header field.
type Field struct {
	Name, Value []byte
}

// Parse validates a complete request head (ending in CRLF CRLF) into h. It
// returns "" when the head is valid, else why it is refused: a malformed
// request line or field, bare CR or LF, obsolete line folding, several Host
// fields, both Content-Length and Transfer-Encoding, differing
// Content-Lengths, a Transfer-Encoding other than chunked, or one in an
// HTTP/1.0 request. It allocates nothing
// unless the head repeats Transfer-Encoding.
func (h *Head) Parse(head []byte) string {
	*h = Head{Fields: h.Fields[:0], ContentLength: -1}
	if len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
		return "malformed request head"
	}
	rest := head[:len(head)-2] // every line, the last one included, ends in CRLF
	line, rest, reason := nextLine(rest)
	if reason != "" {
		return reason
	}
	if h.Method, h.Target, h.Version, reason = checkRequestLine(line); reason != "" {
		return reason
	}
	h.HTTP10 = string(h.Version) == "HTTP/1.0"
	var (
		cl, te      []byte
		haveCL      bool
		haveTE      bool
		teCopied    bool
		connUpgrade bool
		upgrades    int
		upgrade     []byte
	)
	for len(rest) > 0 {
		if line, rest, reason = nextLine(rest); reason != "" {
			return reason
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			return "obsolete line folding (a header line starting with whitespace)"
		}
		name, value, reason := CheckField(line)
		if reason != "" {
			return reason
		}
		h.Fields = append(h.Fields, Field{Name: name, Value: value})
		switch {
		case EqualFold(name, "content-length"):
			if !isDigits(value) || len(value) > 18 {
				return "invalid Content-Length " + strconv.Quote(string(value))
			}
			if haveCL && !bytes.Equal(trimZeros(cl), trimZeros(value)) {
				return "several differing Content-Length headers"
			}
			cl, haveCL = value, true
		case EqualFold(name, "transfer-encoding"):
			if haveTE {
				if !teCopied {
					te, teCopied = append([]byte(nil), te...), true
				}
				te = append(append(te, ','), value...)
			} else {
				te = value
			}
			haveTE = true
		case EqualFold(name, "host"):
			h.Hosts++
		case EqualFold(name, "connection"):
			if HasToken(value, "upgrade") {
				connUpgrade = true
			}
		case EqualFold(name, "upgrade"):
			upgrades++
			upgrade = value
			h.HasUpgrade = true
		}
	}
	if h.Hosts > 1 {
		return "several Host headers"
	}
	if haveTE {
		if haveCL {
			return "both Content-Length and Transfer-Encoding"
		}
		if h.HTTP10 {
			return "Transfer-Encoding in an HTTP/1.0 request"
		}
		if !EqualFold(bytes.TrimSpace(te), "chunked") {
			return "unsupported Transfer-Encoding " + strconv.Quote(string(te)) + "; only chunked is accepted"
		}
		h.Chunked = true
	} else if haveCL {
		n, err := strconv.ParseInt(string(cl), 10, 64)
		if err != nil {
			return "invalid Content-Length " + strconv.Quote(string(cl))
		}
		h.ContentLength = n
	}
	h.Upgrade = connUpgrade && upgrades == 1 && EqualFold(upgrade, "websocket") && string(h.Method) == "GET"
	return ""
}

// Field returns the value of the first field named name (lower case), and
// whether there is one.
func (h *Head) Field(name string) ([]byte, bool) {
	for i := range h.Fields {
		if EqualFold(h.Fields[i].Name, name) {
			return h.Fields[i].Value, true
		}
	}
	return nil, false
}

// nextLine splits off the first CRLF-terminated line of b (which ends in
// CRLF), refusing bare CR and LF inside it.
func nextLine(b []byte) (line, rest []byte, reason string) {
	i := bytes.Index(b, []byte("\r\n"))
	line = b[:i]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, "bare CR in the request head"
	}
	if bytes.IndexByte(line, '\n') >= 0 {
		return nil, nil, "line ends in a bare LF; HTTP/1.1 needs CRLF"
	}
	return line, b[i+2:], ""
}

// checkRequestLine validates "METHOD SP TARGET SP HTTP/1.x".
func checkRequestLine(l []byte) (method, target, version []byte, reason string) {
	sp1 := bytes.IndexByte(l, ' ')
	if sp1 <= 0 {
		return nil, nil, nil, "malformed request line"
	}
	method, rest := l[:sp1], l[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return nil, nil, nil, "malformed request line"
	}
	target, version = rest[:sp2], rest[sp2+1:]
	for _, b := range method {
		if !IsTokenChar(b) {
			return nil, nil, nil, "invalid method"
		}
	}
	for _, b := range target {
		if b <= 0x20 || b >= 0x7f {
			return nil, nil, nil, "invalid character in the request target"
		}
	}
	switch string(version) {
	case "HTTP/1.1", "HTTP/1.0":
		return method, target, version, ""
	}
	return nil, nil, nil, "unsupported protocol version " + strconv.Quote(string(version))
}

// CheckField validates one "name: value" line and returns the name and the
// value without surrounding whitespace.
func CheckField(l []byte) (name, value []byte, reason string) {
	// One pass over the name up to the colon, one over the value.
	colon := 0
	for colon < len(l) && tokenChars[l[colon]] {
		colon++
	}
	if colon == 0 || colon == len(l) || l[colon] != ':' {
		if c := bytes.IndexByte(l, ':'); c > 0 {
			return nil, nil, quoted("invalid header name", l[:c])
		}
		return nil, nil, "header line without a name and colon"
	}
	name = l[:colon]
	value = l[colon+1:]
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	for _, b := range value {
		if b < 0x20 && b != '\t' || b == 0x7f {
			return nil, nil, quoted("invalid character in the value of header", name)
		}
	}
	return name, value, ""
}

// quoted is what + " " + the quoted bytes, built apart from the parsers so
// that their stack frames stay small (see malformedValue).
//
//go:noinline
func quoted(what string, b []byte) string {
	return what + " " + strconv.Quote(string(b))
}

// IsTokenChar reports whether b may appear in an HTTP token (RFC 9110 5.6.2).
func IsTokenChar(b byte) bool { return tokenChars[b] }

// tokenChars holds the bytes IsTokenChar accepts.
var tokenChars = func() (t [256]bool) {
	for b := range 256 {
		t[b] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(b)) >= 0
	}
	return t
}()

func isDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func trimZeros(b []byte) []byte {
	t := bytes.TrimLeft(b, "0")
	if len(t) == 0 {
		return []byte("0")
	}
	return t
}

// EqualFold compares b with the lower-case ASCII string s, ignoring case.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// Text is a header value or name as bytes or as a string.
type Text interface{ ~string | ~[]byte }

// HasToken reports whether the comma-separated value holds token, ignoring
// ASCII case, spaces around elements and ";" parameters. value and token
// may each be bytes or a string; it allocates nothing. An empty token is
// never held.
func HasToken[V, T Text](value V, token T) bool {
	if len(token) == 0 {
		return false
	}
	for start := 0; start <= len(value); {
		end := start
		for end < len(value) && value[end] != ',' {
			end++
		}
		// The element is value[start:end]; its parameters end it early.
		e := start
		for e < end && value[e] != ';' {
			e++
		}
		if foldEqualTrimmed(value, start, e, token) {
			return true
		}
		start = end + 1
	}
	return false
}

// foldEqualTrimmed reports whether value[from:to], without the spaces and
// tabs around it, equals token ignoring ASCII case.
func foldEqualTrimmed[V, T Text](value V, from, to int, token T) bool {
	for from < to && (value[from] == ' ' || value[from] == '\t') {
		from++
	}
	for to > from && (value[to-1] == ' ' || value[to-1] == '\t') {
		to--
	}
	if to-from != len(token) {
		return false
	}
	for i := 0; i < len(token); i++ {
		if lower(value[from+i]) != lower(token[i]) {
			return false
		}
	}
	return true
}

// lower is the ASCII lower case of c.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
