package h1guard

import (
	"bytes"
	"strconv"
)

// framing is what a valid head says about the message that follows.
type framing struct {
	chunked bool  // Transfer-Encoding: chunked
	length  int64 // Content-Length, when not chunked
	upgrade bool  // a WebSocket upgrade request
}

// checkHead validates a complete request head (ending in CRLF CRLF) and
// returns its framing, or the reason it is refused.
func checkHead(head []byte) (framing, string) {
	var f framing
	lines := bytes.Split(head[:len(head)-4], []byte("\r\n"))
	for _, l := range lines {
		if bytes.IndexByte(l, '\r') >= 0 {
			return f, "bare CR in the request head"
		}
		if bytes.IndexByte(l, '\n') >= 0 {
			return f, "line ends in a bare LF; HTTP/1.1 needs CRLF"
		}
	}
	http10, reason := checkRequestLine(lines[0])
	if reason != "" {
		return f, reason
	}
	var (
		cl, te      []byte
		haveCL      bool
		haveTE      bool
		hosts       int
		connUpgrade bool
		upgrades    [][]byte
	)
	for _, l := range lines[1:] {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			return f, "obsolete line folding (a header line starting with whitespace)"
		}
		name, value, reason := checkField(l)
		if reason != "" {
			return f, reason
		}
		switch {
		case equalFold(name, "content-length"):
			if !isDigits(value) || len(value) > 18 {
				return f, "invalid Content-Length " + strconv.Quote(string(value))
			}
			if haveCL && !bytes.Equal(trimZeros(cl), trimZeros(value)) {
				return f, "several differing Content-Length headers"
			}
			cl, haveCL = value, true
		case equalFold(name, "transfer-encoding"):
			if haveTE {
				te = append(append(append([]byte(nil), te...), ','), value...)
			} else {
				te = value
			}
			haveTE = true
		case equalFold(name, "host"):
			hosts++
		case equalFold(name, "connection"):
			if hasTokenFold(value, "upgrade") {
				connUpgrade = true
			}
		case equalFold(name, "upgrade"):
			upgrades = append(upgrades, value)
		}
	}
	if hosts > 1 {
		return f, "several Host headers"
	}
	if haveTE {
		if haveCL {
			return f, "both Content-Length and Transfer-Encoding"
		}
		if http10 {
			return f, "Transfer-Encoding in an HTTP/1.0 request"
		}
		if !equalFold(bytes.TrimSpace(te), "chunked") {
			return f, "unsupported Transfer-Encoding " + strconv.Quote(string(te)) + "; only chunked is accepted"
		}
		f.chunked = true
	} else if haveCL {
		n, err := strconv.ParseInt(string(cl), 10, 64)
		if err != nil {
			return f, "invalid Content-Length " + strconv.Quote(string(cl))
		}
		f.length = n
	}
	f.upgrade = connUpgrade && len(upgrades) == 1 && equalFold(bytes.TrimSpace(upgrades[0]), "websocket") &&
		bytes.HasPrefix(lines[0], []byte("GET "))
	return f, ""
}

// checkRequestLine validates "METHOD SP TARGET SP HTTP/1.x".
func checkRequestLine(l []byte) (http10 bool, reason string) {
	sp1 := bytes.IndexByte(l, ' ')
	if sp1 <= 0 {
		return false, "malformed request line"
	}
	method, rest := l[:sp1], l[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return false, "malformed request line"
	}
	target, version := rest[:sp2], rest[sp2+1:]
	for _, b := range method {
		if !isTokenChar(b) {
			return false, "invalid method"
		}
	}
	for _, b := range target {
		if b <= 0x20 || b >= 0x7f {
			return false, "invalid character in the request target"
		}
	}
	switch string(version) {
	case "HTTP/1.1":
		return false, ""
	case "HTTP/1.0":
		return true, ""
	}
	return false, "unsupported protocol version " + strconv.Quote(string(version))
}

// checkField validates one "name: value" line and returns the name and the
// value without surrounding whitespace.
func checkField(l []byte) (name, value []byte, reason string) {
	colon := bytes.IndexByte(l, ':')
	if colon <= 0 {
		return nil, nil, "header line without a name and colon"
	}
	name = l[:colon]
	for _, b := range name {
		if !isTokenChar(b) {
			return nil, nil, "invalid header name " + strconv.Quote(string(name))
		}
	}
	value = bytes.Trim(l[colon+1:], " \t")
	for _, b := range value {
		if b < 0x20 && b != '\t' || b == 0x7f {
			return nil, nil, "invalid character in the value of header " + strconv.Quote(string(name))
		}
	}
	return name, value, ""
}

// isTokenChar reports whether b may appear in an HTTP token (RFC 9110 5.6.2).
func isTokenChar(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), b) >= 0
}

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

// equalFold compares b with the lower-case ASCII string s, ignoring case.
func equalFold(b []byte, s string) bool {
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

// hasTokenFold reports whether the comma-separated value holds token.
func hasTokenFold(value []byte, token string) bool {
	for _, f := range bytes.Split(value, []byte(",")) {
		if equalFold(bytes.TrimSpace(f), token) {
			return true
		}
	}
	return false
}
