package upstream_test

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/upstream"
)

// TestResponseHeadsMatchReadResponse sends response heads through the fast
// path and checks that what the caller gets is what http.ReadResponse makes
// of the same bytes: status, protocol, every header field (names in
// canonical form, repeated fields in order), length, Close and body. Parts
// are written separately, a moment apart, so heads and bodies also arrive
// split across reads.
func TestResponseHeadsMatchReadResponse(t *testing.T) {
	big := "X-Big: " + strings.Repeat("b", 5000) + "\r\n"
	tests := []struct {
		name  string
		parts []string
	}{
		{"plain", []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"}},
		{"names not in canonical form", []string{"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: 7\r\nX-UPPER: u\r\nx_under-score: s\r\nwww-authenticate: Basic\r\n\r\nok"}},
		{"repeated fields", []string{"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\nset-cookie: b=2\r\nSet-Cookie: c=3\r\nVary: Accept\r\nVary: Origin\r\n\r\n"}},
		{"empty and padded values", []string{"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Pad:   v  \r\nX-Tab:\tw\t\r\nContent-Length: 1\r\n\r\n!"}},
		{"no reason phrase", []string{"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"}},
		{"own reason phrase", []string{"HTTP/1.1 404 Nowhere To Be Found\r\nContent-Length: 3\r\n\r\nnop"}},
		{"HTTP/1.0 keep-alive", []string{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"}},
		{"Connection: close", []string{"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 4\r\n\r\nboom"}},
		{"equal Content-Lengths", []string{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"}},
		{"head split across reads", []string{"HTTP/1.1 200 OK\r\nContent-Le", "ngth: 6\r\nX-A: 1\r", "\n\r\n", "split!"}},
		{"body split across reads", []string{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", "56789"}},
		{"head larger than the buffer", []string{"HTTP/1.1 200 OK\r\n" + big + "Content-Length: 3\r\n\r\nbig"}},
		{"bare LF line ends", []string{"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nhi"}},
		{"bare LF, then CRLF", []string{"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nhi"}},
		{"obsolete line folding", []string{"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nhi"}},
		{"chunked", []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"}},
		{"informational first", []string{"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", "HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 1\r\n\r\nx"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire := strings.Join(tt.parts, "")
			b := newRawBackend(t, func(c *rawConn) {
				if _, _, ok := c.next(); !ok {
					return
				}
				for i, p := range tt.parts {
					if i > 0 {
						time.Sleep(20 * time.Millisecond)
					}
					c.write(p)
				}
				c.next() // until the client closes
			})
			tr := transport(t, newCache(t), upstream.Settings{})
			req := proxyRequest(t, testContext(t), http.MethodGet, b.addr, "/", nil)
			got, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			gotBody, err := io.ReadAll(got.Body)
			got.Body.Close()
			if err != nil {
				t.Fatalf("body: %v", err)
			}

			want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(wire)), req)
			if err == nil && want.StatusCode < 200 {
				// The fast path skips informational answers.
				want, err = http.ReadResponse(bufio.NewReader(strings.NewReader(wire[strings.Index(wire, "\r\n\r\n")+4:])), req)
			}
			if err != nil {
				t.Fatalf("http.ReadResponse: %v", err)
			}
			wantBody, _ := io.ReadAll(want.Body)
			if got.Status != want.Status || got.StatusCode != want.StatusCode || got.Proto != want.Proto ||
				got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor {
				t.Errorf("status %q %d %s %d.%d, want %q %d %s %d.%d", got.Status, got.StatusCode, got.Proto, got.ProtoMajor, got.ProtoMinor,
					want.Status, want.StatusCode, want.Proto, want.ProtoMajor, want.ProtoMinor)
			}
			if !reflect.DeepEqual(got.Header, want.Header) {
				t.Errorf("header\n got %q\nwant %q", got.Header, want.Header)
			}
			if got.ContentLength != want.ContentLength || got.Close != want.Close {
				t.Errorf("length %d close %v, want %d %v", got.ContentLength, got.Close, want.ContentLength, want.Close)
			}
			if string(gotBody) != string(wantBody) {
				t.Errorf("body %q, want %q", gotBody, wantBody)
			}
		})
	}
}
