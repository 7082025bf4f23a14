package h1guard

import "github.com/lb-project/lb/dataplane/h1wire"

// framing is what a valid head says about the message that follows.
type framing struct {
	chunked bool  // Transfer-Encoding: chunked
	length  int64 // Content-Length, when not chunked
	upgrade bool  // a WebSocket upgrade request
}

// checkHead validates a complete request head (ending in CRLF CRLF) and
// returns its framing, or the reason it is refused.
func checkHead(head []byte) (framing, string) {
	var h h1wire.Head
	if reason := h.Parse(head); reason != "" {
		return framing{}, reason
	}
	return framing{chunked: h.Chunked, length: max(h.ContentLength, 0), upgrade: h.Upgrade}, ""
}
