package h1wire_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/lb-project/lb/dataplane/h1wire"
)

// headView is a Head in comparable form.
type headView struct {
	Method, Target, Version string
	HTTP10                  bool
	Fields                  []string // "Name|Value"
	Chunked                 bool
	ContentLength           int64
	Upgrade                 bool
	Hosts                   int
	HasUpgrade              bool
}

func viewHead(h *h1wire.Head) headView {
	v := headView{
		Method:        string(h.Method),
		Target:        string(h.Target),
		Version:       string(h.Version),
		HTTP10:        h.HTTP10,
		Chunked:       h.Chunked,
		ContentLength: h.ContentLength,
		Upgrade:       h.Upgrade,
		Hosts:         h.Hosts,
		HasUpgrade:    h.HasUpgrade,
	}
	for _, f := range h.Fields {
		v.Fields = append(v.Fields, string(f.Name)+"|"+string(f.Value))
	}
	return v
}

func (v headView) equal(w headView) bool {
	return reflect.DeepEqual(v, w)
}

// get returns a GET / HTTP/1.1 head with the given field lines.
func get(fields ...string) string {
	return reqHead("GET / HTTP/1.1", fields...)
}

func reqHead(line string, fields ...string) string {
	var b strings.Builder
	b.WriteString(line + "\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// typicalHead is a browser-like GET with 8 fields.
const typicalHead = "GET /index.html?q=1 HTTP/1.1\r\n" +
	"Host: example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
	"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: a=b; c=d\r\n" +
	"Cache-Control: max-age=0\r\n" +
	"\r\n"

func TestHeadParseValid(t *testing.T) {
	plain := func(v headView) headView {
		if v.Method == "" {
			v.Method = "GET"
		}
		if v.Target == "" {
			v.Target = "/"
		}
		if v.Version == "" {
			v.Version = "HTTP/1.1"
		}
		return v
	}
	tests := []struct {
		name string
		head string
		want headView
	}{
		{
			name: "typical GET keeps fields in order",
			head: typicalHead,
			want: headView{
				Method: "GET", Target: "/index.html?q=1", Version: "HTTP/1.1",
				Fields: []string{
					"Host|example.com",
					"User-Agent|Mozilla/5.0 (X11; Linux x86_64)",
					"Accept|text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
					"Accept-Language|en-US,en;q=0.5",
					"Accept-Encoding|gzip, deflate, br",
					"Connection|keep-alive",
					"Cookie|a=b; c=d",
					"Cache-Control|max-age=0",
				},
				ContentLength: -1,
				Hosts:         1,
			},
		},
		{
			name: "no fields",
			head: get(),
			want: plain(headView{ContentLength: -1}),
		},
		{
			name: "HTTP/1.0",
			head: reqHead("GET / HTTP/1.0"),
			want: headView{Method: "GET", Target: "/", Version: "HTTP/1.0", HTTP10: true, ContentLength: -1},
		},
		{
			name: "other method and absolute target",
			head: reqHead("OPTIONS * HTTP/1.1", "Host: a"),
			want: headView{Method: "OPTIONS", Target: "*", Version: "HTTP/1.1", Fields: []string{"Host|a"}, ContentLength: -1, Hosts: 1},
		},
		{
			name: "absolute-form target",
			head: reqHead("GET http://a.example/x?y=%20 HTTP/1.1", "Host: a.example"),
			want: headView{Method: "GET", Target: "http://a.example/x?y=%20", Version: "HTTP/1.1", Fields: []string{"Host|a.example"}, ContentLength: -1, Hosts: 1},
		},
		{
			name: "values trimmed of spaces and tabs",
			head: get("X:   a b \t", "Y:\tc", "Z:", "W:  "),
			want: plain(headView{Fields: []string{"X|a b", "Y|c", "Z|", "W|"}, ContentLength: -1}),
		},
		{
			name: "obs-text and inner tab in a value",
			head: get("X: caf\xe9\tau lait"),
			want: plain(headView{Fields: []string{"X|caf\xe9\tau lait"}, ContentLength: -1}),
		},
		{
			name: "Content-Length 0",
			head: reqHead("POST / HTTP/1.1", "Host: a", "Content-Length: 0"),
			want: headView{Method: "POST", Target: "/", Version: "HTTP/1.1", Fields: []string{"Host|a", "Content-Length|0"}, ContentLength: 0, Hosts: 1},
		},
		{
			name: "Content-Length n",
			head: reqHead("POST / HTTP/1.1", "content-length: 1234"),
			want: headView{Method: "POST", Target: "/", Version: "HTTP/1.1", Fields: []string{"content-length|1234"}, ContentLength: 1234},
		},
		{
			name: "Content-Length with leading zeros",
			head: get("Content-Length: 007"),
			want: plain(headView{Fields: []string{"Content-Length|007"}, ContentLength: 7}),
		},
		{
			name: "Content-Length of 18 digits",
			head: get("Content-Length: 999999999999999999"),
			want: plain(headView{Fields: []string{"Content-Length|999999999999999999"}, ContentLength: 999999999999999999}),
		},
		{
			name: "equal Content-Lengths",
			head: get("Content-Length: 5", "Content-Length: 5"),
			want: plain(headView{Fields: []string{"Content-Length|5", "Content-Length|5"}, ContentLength: 5}),
		},
		{
			name: "equal Content-Lengths with leading zeros",
			head: get("Content-Length: 0005", "CONTENT-LENGTH: 5", "Content-Length: 05"),
			want: plain(headView{Fields: []string{"Content-Length|0005", "CONTENT-LENGTH|5", "Content-Length|05"}, ContentLength: 5}),
		},
		{
			name: "equal zero Content-Lengths",
			head: get("Content-Length: 0", "Content-Length: 000"),
			want: plain(headView{Fields: []string{"Content-Length|0", "Content-Length|000"}, ContentLength: 0}),
		},
		{
			name: "chunked",
			head: reqHead("POST /up HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"),
			want: headView{Method: "POST", Target: "/up", Version: "HTTP/1.1", Fields: []string{"Host|a", "Transfer-Encoding|chunked"}, Chunked: true, ContentLength: -1, Hosts: 1},
		},
		{
			name: "chunked in another case",
			head: reqHead("POST / HTTP/1.1", "transfer-encoding: Chunked"),
			want: headView{Method: "POST", Target: "/", Version: "HTTP/1.1", Fields: []string{"transfer-encoding|Chunked"}, Chunked: true, ContentLength: -1},
		},
		{
			name: "WebSocket upgrade",
			head: get("Host: a", "Connection: Upgrade", "Upgrade: websocket"),
			want: plain(headView{Fields: []string{"Host|a", "Connection|Upgrade", "Upgrade|websocket"}, ContentLength: -1, Upgrade: true, Hosts: 1, HasUpgrade: true}),
		},
		{
			name: "WebSocket upgrade, token in a list and mixed case",
			head: get("Upgrade: WebSocket", "connection: keep-alive, UPGRADE"),
			want: plain(headView{Fields: []string{"Upgrade|WebSocket", "connection|keep-alive, UPGRADE"}, ContentLength: -1, Upgrade: true, HasUpgrade: true}),
		},
		{
			name: "WebSocket upgrade with a second Connection field",
			head: get("Connection: keep-alive", "Connection: upgrade", "Upgrade: websocket"),
			want: plain(headView{Fields: []string{"Connection|keep-alive", "Connection|upgrade", "Upgrade|websocket"}, ContentLength: -1, Upgrade: true, HasUpgrade: true}),
		},
		{
			name: "upgrade to websocket by POST is no upgrade",
			head: reqHead("POST / HTTP/1.1", "Connection: upgrade", "Upgrade: websocket"),
			want: headView{Method: "POST", Target: "/", Version: "HTTP/1.1", Fields: []string{"Connection|upgrade", "Upgrade|websocket"}, ContentLength: -1, HasUpgrade: true},
		},
		{
			name: "lower-case get is no upgrade",
			head: reqHead("get / HTTP/1.1", "Connection: upgrade", "Upgrade: websocket"),
			want: headView{Method: "get", Target: "/", Version: "HTTP/1.1", Fields: []string{"Connection|upgrade", "Upgrade|websocket"}, ContentLength: -1, HasUpgrade: true},
		},
		{
			name: "Upgrade without Connection: upgrade",
			head: get("Upgrade: websocket"),
			want: plain(headView{Fields: []string{"Upgrade|websocket"}, ContentLength: -1, HasUpgrade: true}),
		},
		{
			name: "Connection: upgrade without Upgrade",
			head: get("Connection: upgrade"),
			want: plain(headView{Fields: []string{"Connection|upgrade"}, ContentLength: -1}),
		},
		{
			name: "Connection: upgrades is not the upgrade token",
			head: get("Connection: upgrades", "Upgrade: websocket"),
			want: plain(headView{Fields: []string{"Connection|upgrades", "Upgrade|websocket"}, ContentLength: -1, HasUpgrade: true}),
		},
		{
			name: "two Upgrade fields",
			head: get("Connection: upgrade", "Upgrade: websocket", "Upgrade: websocket"),
			want: plain(headView{Fields: []string{"Connection|upgrade", "Upgrade|websocket", "Upgrade|websocket"}, ContentLength: -1, HasUpgrade: true}),
		},
		{
			name: "Upgrade to a list",
			head: get("Connection: upgrade", "Upgrade: websocket, h2c"),
			want: plain(headView{Fields: []string{"Connection|upgrade", "Upgrade|websocket, h2c"}, ContentLength: -1, HasUpgrade: true}),
		},
		{
			name: "h2c upgrade",
			head: get("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"),
			want: plain(headView{Fields: []string{"Connection|Upgrade, HTTP2-Settings", "Upgrade|h2c", "HTTP2-Settings|AAMAAABkAAQCAAAAAAIAAAAA"}, ContentLength: -1, HasUpgrade: true}),
		},
		{
			name: "empty Upgrade field",
			head: get("Connection: upgrade", "Upgrade:"),
			want: plain(headView{Fields: []string{"Connection|upgrade", "Upgrade|"}, ContentLength: -1, HasUpgrade: true}),
		},
		{
			name: "no Host",
			head: get("X: y"),
			want: plain(headView{Fields: []string{"X|y"}, ContentLength: -1}),
		},
		{
			name: "Host in another case",
			head: get("hOsT: a"),
			want: plain(headView{Fields: []string{"hOsT|a"}, ContentLength: -1, Hosts: 1}),
		},
		{
			name: "token characters in names",
			head: get("!#$%&'*+-.^_`|~09azAZ: v"),
			want: plain(headView{Fields: []string{"!#$%&'*+-.^_`|~09azAZ|v"}, ContentLength: -1}),
		},
		{
			name: "colon in a value",
			head: get("Host: a.example:8080"),
			want: plain(headView{Fields: []string{"Host|a.example:8080"}, ContentLength: -1, Hosts: 1}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h h1wire.Head
			if reason := h.Parse([]byte(tt.head)); reason != "" {
				t.Fatalf("Parse(%q) = %q; want \"\"", tt.head, reason)
			}
			if got := viewHead(&h); !got.equal(tt.want) {
				t.Errorf("Parse(%q):\ngot  %+v\nwant %+v", tt.head, got, tt.want)
			}
		})
	}
}

func TestHeadParseRefused(t *testing.T) {
	tests := []struct {
		name string
		head string
		want string
	}{
		// The end of the head.
		{"empty", "", "malformed request head"},
		{"shorter than CRLF CRLF", "\r\n\r", "malformed request head"},
		{"no empty line", "GET / HTTP/1.1\r\nHost: a\r\n", "malformed request head"},
		{"ends in LF LF", "GET / HTTP/1.1\r\nHost: a\n\n", "malformed request head"},
		{"ends in CRLF LF", "GET / HTTP/1.1\r\nHost: a\r\n\n", "malformed request head"},
		{"only CRLF CRLF", "\r\n\r\n", "malformed request line"},

		// Bare CR and LF.
		{"bare CR in a value", get("Host: a\rb"), "bare CR in the request head"},
		{"bare CR ending a field", get("Host: a\r"), "bare CR in the request head"},
		{"bare CR in the request line", "GET /\r HTTP/1.1\r\n\r\n", "bare CR in the request head"},
		{"bare CR before the head's end", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", "bare CR in the request head"},
		{"bare LF between fields", get("Host: a\nX: b"), "line ends in a bare LF; HTTP/1.1 needs CRLF"},
		{"bare LF after the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", "line ends in a bare LF; HTTP/1.1 needs CRLF"},
		{"bare LF before the head's end", "GET / HTTP/1.1\r\nHost: a\n\r\n\r\n", "line ends in a bare LF; HTTP/1.1 needs CRLF"},

		// Obsolete line folding.
		{"obs-fold with a space", get("X: a", " b"), "obsolete line folding (a header line starting with whitespace)"},
		{"obs-fold with a tab", get("X: a", "\tb"), "obsolete line folding (a header line starting with whitespace)"},
		{"whitespace before the first field", get(" Host: a"), "obsolete line folding (a header line starting with whitespace)"},

		// Field syntax.
		{"no colon", get("Host"), "header line without a name and colon"},
		{"empty name", get(": v"), "header line without a name and colon"},
		{"empty line inside the head", "GET / HTTP/1.1\r\n\r\nHost: a\r\n\r\n", "header line without a name and colon"},
		{"space in a name", get("Bad Name: v"), `invalid header name "Bad Name"`},
		{"space before the colon", get("Host : a"), `invalid header name "Host "`},
		{"tab before the colon", get("Host\t: a"), `invalid header name "Host\t"`},
		{"separator in a name", get("X(y): v"), `invalid header name "X(y)"`},
		{"non-ASCII name", get("X\xe9: v"), `invalid header name "X\xe9"`},
		{"NUL in a value", get("X: a\x00b"), `invalid character in the value of header "X"`},
		{"control character in a value", get("X: \x01"), `invalid character in the value of header "X"`},
		{"DEL in a value", get("X: a\x7f"), `invalid character in the value of header "X"`},
		{"escape in a value", get("X-Y: \x1b[1m"), `invalid character in the value of header "X-Y"`},

		// Host.
		{"several Host", get("Host: a", "Host: a"), "several Host headers"},
		{"several Host in other cases", get("Host: a", "X: y", "HOST: b"), "several Host headers"},

		// Framing.
		{"Content-Length then Transfer-Encoding", reqHead("POST / HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked"), "both Content-Length and Transfer-Encoding"},
		{"Transfer-Encoding then Content-Length", reqHead("POST / HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 5"), "both Content-Length and Transfer-Encoding"},
		{"Content-Length 0 and Transfer-Encoding", reqHead("POST / HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 0"), "both Content-Length and Transfer-Encoding"},
		{"differing Content-Lengths", get("Content-Length: 5", "Content-Length: 6"), "several differing Content-Length headers"},
		{"differing Content-Lengths, one zero", get("Content-Length: 0", "Content-Length: 00010"), "several differing Content-Length headers"},
		{"differing Content-Lengths, third one", get("Content-Length: 5", "Content-Length: 05", "Content-Length: 50"), "several differing Content-Length headers"},
		{"Content-Length with letters", get("Content-Length: abc"), `invalid Content-Length "abc"`},
		{"empty Content-Length", get("Content-Length:"), `invalid Content-Length ""`},
		{"negative Content-Length", get("Content-Length: -1"), `invalid Content-Length "-1"`},
		{"Content-Length with a plus sign", get("Content-Length: +5"), `invalid Content-Length "+5"`},
		{"Content-Length as a list", get("Content-Length: 5, 5"), `invalid Content-Length "5, 5"`},
		{"hex Content-Length", get("Content-Length: 0x10"), `invalid Content-Length "0x10"`},
		{"Content-Length with a space inside", get("Content-Length: 1 2"), `invalid Content-Length "1 2"`},
		{"Content-Length of 19 digits", get("Content-Length: 1000000000000000000"), `invalid Content-Length "1000000000000000000"`},
		{"Content-Length of 19 digits with leading zero", get("Content-Length: 0000000000000000005"), `invalid Content-Length "0000000000000000005"`},
		{"invalid Content-Length after a valid one", get("Content-Length: 5", "Content-Length: x"), `invalid Content-Length "x"`},
		{"Transfer-Encoding gzip", reqHead("POST / HTTP/1.1", "Transfer-Encoding: gzip"), `unsupported Transfer-Encoding "gzip"; only chunked is accepted`},
		{"Transfer-Encoding gzip, chunked", reqHead("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked"), `unsupported Transfer-Encoding "gzip, chunked"; only chunked is accepted`},
		{"Transfer-Encoding chunked, chunked", reqHead("POST / HTTP/1.1", "Transfer-Encoding: chunked, chunked"), `unsupported Transfer-Encoding "chunked, chunked"; only chunked is accepted`},
		{"Transfer-Encoding chunked twice", reqHead("POST / HTTP/1.1", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), `unsupported Transfer-Encoding "chunked,chunked"; only chunked is accepted`},
		{"Transfer-Encoding empty then chunked", reqHead("POST / HTTP/1.1", "Transfer-Encoding:", "Transfer-Encoding: chunked"), `unsupported Transfer-Encoding ",chunked"; only chunked is accepted`},
		{"Transfer-Encoding empty", reqHead("POST / HTTP/1.1", "Transfer-Encoding:"), `unsupported Transfer-Encoding ""; only chunked is accepted`},
		{"Transfer-Encoding with a parameter", reqHead("POST / HTTP/1.1", "Transfer-Encoding: chunked;q=1"), `unsupported Transfer-Encoding "chunked;q=1"; only chunked is accepted`},
		{"Transfer-Encoding chunked in HTTP/1.0", reqHead("POST / HTTP/1.0", "Transfer-Encoding: chunked"), "Transfer-Encoding in an HTTP/1.0 request"},
		{"Transfer-Encoding gzip in HTTP/1.0", reqHead("POST / HTTP/1.0", "Transfer-Encoding: gzip"), "Transfer-Encoding in an HTTP/1.0 request"},

		// The request line.
		{"request line without spaces", "GET\r\n\r\n", "malformed request line"},
		{"request line without version", "GET /\r\n\r\n", "malformed request line"},
		{"request line without method", " / HTTP/1.1\r\n\r\n", "malformed request line"},
		{"request line with two spaces", "GET  / HTTP/1.1\r\n\r\n", "malformed request line"},
		{"request line with a tab", "GET\t/ HTTP/1.1\r\n\r\n", "malformed request line"},
		{"separator in the method", "G(T / HTTP/1.1\r\n\r\n", "invalid method"},
		{"non-ASCII method", "G\xc9T / HTTP/1.1\r\n\r\n", "invalid method"},
		{"DEL in the target", "GET /a\x7f HTTP/1.1\r\n\r\n", "invalid character in the request target"},
		{"non-ASCII target", "GET /caf\xe9 HTTP/1.1\r\n\r\n", "invalid character in the request target"},
		{"control character in the target", "GET /\x01 HTTP/1.1\r\n\r\n", "invalid character in the request target"},
		{"tab in the target", "GET /\ta HTTP/1.1\r\n\r\n", "invalid character in the request target"},

		// The version.
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", `unsupported protocol version "HTTP/1.2"`},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", `unsupported protocol version "HTTP/2.0"`},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", `unsupported protocol version "HTTP/0.9"`},
		{"lower-case version", "GET / http/1.1\r\n\r\n", `unsupported protocol version "http/1.1"`},
		{"empty version", "GET / \r\n\r\n", `unsupported protocol version ""`},
		{"space in the target", "GET /a b HTTP/1.1\r\n\r\n", `unsupported protocol version "b HTTP/1.1"`},
		{"trailing space after the version", "GET / HTTP/1.1 \r\n\r\n", `unsupported protocol version "HTTP/1.1 "`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h h1wire.Head
			if got := h.Parse([]byte(tt.head)); got != tt.want {
				t.Errorf("Parse(%q) = %q; want %q", tt.head, got, tt.want)
			}
		})
	}
}

// The first refusal in a head wins: errors are found line by line, and the
// checks over the whole head come after.
func TestHeadParseRefusalOrder(t *testing.T) {
	tests := []struct {
		name string
		head string
		want string
	}{
		{"bad field before several Host", get("Host: a", "Host: b", "Bad Name: v"), `invalid header name "Bad Name"`},
		{"several Host before CL and TE", reqHead("POST / HTTP/1.1", "Host: a", "Host: b", "Content-Length: 1", "Transfer-Encoding: chunked"), "several Host headers"},
		{"CL and TE before HTTP/1.0", reqHead("POST / HTTP/1.0", "Content-Length: 1", "Transfer-Encoding: chunked"), "both Content-Length and Transfer-Encoding"},
		{"HTTP/1.0 before an unsupported coding", reqHead("POST / HTTP/1.0", "Transfer-Encoding: gzip"), "Transfer-Encoding in an HTTP/1.0 request"},
		{"request line before fields", "GET / HTTP/9\r\nBad Name: v\r\n\r\n", `unsupported protocol version "HTTP/9"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h h1wire.Head
			if got := h.Parse([]byte(tt.head)); got != tt.want {
				t.Errorf("Parse(%q) = %q; want %q", tt.head, got, tt.want)
			}
		})
	}
}

func TestHeadParseReuseResets(t *testing.T) {
	var h h1wire.Head
	first := reqHead("POST /a HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Connection: upgrade", "Upgrade: websocket", "X: 1")
	if reason := h.Parse([]byte(first)); reason != "" {
		t.Fatalf("Parse(%q) = %q; want \"\"", first, reason)
	}
	second := reqHead("GET /b HTTP/1.0", "Content-Length: 3")
	if reason := h.Parse([]byte(second)); reason != "" {
		t.Fatalf("Parse(%q) = %q; want \"\"", second, reason)
	}
	want := headView{Method: "GET", Target: "/b", Version: "HTTP/1.0", HTTP10: true, Fields: []string{"Content-Length|3"}, ContentLength: 3}
	if got := viewHead(&h); !got.equal(want) {
		t.Errorf("second Parse on a reused Head:\ngot  %+v\nwant %+v", got, want)
	}
	if reason := h.Parse([]byte(get("Host: a", "Host: b"))); reason != "several Host headers" {
		t.Fatalf("third Parse = %q; want %q", reason, "several Host headers")
	}
	if reason := h.Parse([]byte(get())); reason != "" {
		t.Fatalf("fourth Parse = %q; want \"\"", reason)
	}
	want = headView{Method: "GET", Target: "/", Version: "HTTP/1.1", ContentLength: -1}
	if got := viewHead(&h); !got.equal(want) {
		t.Errorf("Parse after a refused head:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestHeadParseSlicesPointIntoInput(t *testing.T) {
	buf := []byte(get("Host: a"))
	var h h1wire.Head
	if reason := h.Parse(buf); reason != "" {
		t.Fatalf("Parse = %q", reason)
	}
	buf[0] = 'P'                               // the method
	buf[len("GET / HTTP/1.1\r\nHost: ")] = 'z' // the Host value
	if string(h.Method) != "PET" || string(h.Fields[0].Value) != "z" {
		t.Errorf("after changing the input, Method = %q and Host = %q; want %q and %q (slices into the input)",
			h.Method, h.Fields[0].Value, "PET", "z")
	}
}

func TestHeadField(t *testing.T) {
	var h h1wire.Head
	head := get("Host: example.com", "X-Dup: first", "x-dup: second", "Empty:", "Content-Type: text/plain")
	if reason := h.Parse([]byte(head)); reason != "" {
		t.Fatalf("Parse(%q) = %q; want \"\"", head, reason)
	}
	tests := []struct {
		name   string
		field  string
		want   string
		wantOK bool
	}{
		{"exact case", "host", "example.com", true},
		{"mixed case in the head", "content-type", "text/plain", true},
		{"first of several", "x-dup", "first", true},
		{"empty value", "empty", "", true},
		{"absent", "accept", "", false},
		{"prefix of a name", "hos", "", false},
		{"longer than a name", "hosts", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := h.Field(tt.field)
			if string(got) != tt.want || ok != tt.wantOK {
				t.Errorf("Field(%q) = %q, %v; want %q, %v", tt.field, got, ok, tt.want, tt.wantOK)
			}
			if !ok && got != nil {
				t.Errorf("Field(%q) = %q for an absent field; want nil", tt.field, got)
			}
		})
	}
}

func TestHeadParseAllocs(t *testing.T) {
	tests := []struct {
		name string
		head string
	}{
		{"typical 8-field GET", typicalHead},
		{"POST with Content-Length", reqHead("POST /api HTTP/1.1", "Host: a", "Content-Type: application/json", "Content-Length: 1234", "Connection: keep-alive")},
		{"chunked POST", reqHead("POST /api HTTP/1.1", "Host: a", "Transfer-Encoding: chunked")},
		{"WebSocket upgrade", get("Host: a", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.head)
			var h h1wire.Head
			if reason := h.Parse(b); reason != "" {
				t.Fatalf("Parse = %q", reason)
			}
			allocs := testing.AllocsPerRun(100, func() {
				if reason := h.Parse(b); reason != "" {
					t.Fatalf("Parse = %q", reason)
				}
			})
			if allocs != 0 {
				t.Errorf("Parse on a reused Head allocates %v times; want 0", allocs)
			}
		})
	}
}

func TestHasToken(t *testing.T) {
	tests := []struct {
		value, token string
		want         bool
	}{
		{"close", "close", true},
		{"Close", "close", true},
		{"CLOSE", "close", true},
		{"keep-alive, Upgrade", "upgrade", true},
		{"keep-alive,upgrade", "upgrade", true},
		{"upgrade, keep-alive", "upgrade", true},
		{"  upgrade  ", "upgrade", true},
		{"\tupgrade\t,x", "upgrade", true},
		{"a,,close,", "close", true},
		{"upgrade;q=1", "upgrade", true},
		{"x, upgrade ; a=b, y", "upgrade", true},
		{"gzip;q=1.0, chunked", "chunked", true},
		{"gzip, chunked", "gzip", true},
		{"", "close", false},
		{",", "close", false},
		{"closed", "close", false},
		{"notclose", "close", false},
		{"clo se", "close", false},
		{"upgrades", "upgrade", false},
		{"keep-alive", "close", false},
		{"x;close", "close", false},
		{"\"close\"", "close", false},
		// Mixed-case tokens: field names listed in Connection.
		{"keep-alive, X-Secret", "x-secret", true},
		{"keep-alive, x-secret", "X-Secret", true},
		{"X-SECRET", "x-Secret", true},
		{"X-Secrets", "X-Secret", false},
		{"close", "", false},
		{"a, ,b", "", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q in %q", tt.token, tt.value), func(t *testing.T) {
			// Every combination of bytes and strings answers the same.
			got := [4]bool{
				h1wire.HasToken([]byte(tt.value), tt.token),
				h1wire.HasToken(tt.value, tt.token),
				h1wire.HasToken([]byte(tt.value), []byte(tt.token)),
				h1wire.HasToken(tt.value, []byte(tt.token)),
			}
			for i, g := range got {
				if g != tt.want {
					t.Errorf("HasToken(%q, %q) = %v (argument types %d); want %v", tt.value, tt.token, g, i, tt.want)
				}
			}
		})
	}
}

func TestEqualFold(t *testing.T) {
	tests := []struct {
		b, s string
		want bool
	}{
		{"content-length", "content-length", true},
		{"Content-Length", "content-length", true},
		{"CONTENT-LENGTH", "content-length", true},
		{"", "", true},
		{"a1-_", "a1-_", true},
		{"content-lengt", "content-length", false},
		{"content-lengths", "content-length", false},
		{"content_length", "content-length", false},
		{"", "a", false},
		{"a", "", false},
		// s is lower case by contract: an upper-case s never matches.
		{"A", "A", false},
		{"a", "A", false},
		// Only ASCII letters fold.
		{"[", "{", false},
		{"@", "`", false},
		{"\xc9", "\xe9", false},
		{"\xe9", "\xe9", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q vs %q", tt.b, tt.s), func(t *testing.T) {
			if got := h1wire.EqualFold([]byte(tt.b), tt.s); got != tt.want {
				t.Errorf("EqualFold(%q, %q) = %v; want %v", tt.b, tt.s, got, tt.want)
			}
		})
	}
}

func TestCheckField(t *testing.T) {
	tests := []struct {
		name       string
		line       string
		wantName   string
		wantValue  string
		wantReason string
	}{
		{"simple", "Host: example.com", "Host", "example.com", ""},
		{"no space", "X:a", "X", "a", ""},
		{"surrounding whitespace", "X: \t a b \t ", "X", "a b", ""},
		{"empty value", "X:", "X", "", ""},
		{"only whitespace", "X: \t ", "X", "", ""},
		{"colons in the value", "X: a:b:c", "X", "a:b:c", ""},
		{"obs-text", "X: caf\xe9", "X", "caf\xe9", ""},
		{"inner tab", "X: a\tb", "X", "a\tb", ""},
		{"all token characters", "!#$%&'*+-.^_`|~09azAZ: v", "!#$%&'*+-.^_`|~09azAZ", "v", ""},
		{"no colon", "Host example.com", "", "", "header line without a name and colon"},
		{"empty", "", "", "", "header line without a name and colon"},
		{"empty name", ": v", "", "", "header line without a name and colon"},
		{"space in the name", "X Y: v", "", "", `invalid header name "X Y"`},
		{"space before the colon", "X : v", "", "", `invalid header name "X "`},
		{"leading space", " X: v", "", "", `invalid header name " X"`},
		{"NUL in the name", "X\x00: v", "", "", `invalid header name "X\x00"`},
		{"slash in the name", "X/Y: v", "", "", `invalid header name "X/Y"`},
		{"NUL in the value", "X: a\x00", "", "", `invalid character in the value of header "X"`},
		{"CR in the value", "X: a\rb", "", "", `invalid character in the value of header "X"`},
		{"LF in the value", "X: a\nb", "", "", `invalid character in the value of header "X"`},
		{"DEL in the value", "X: \x7f", "", "", `invalid character in the value of header "X"`},
		{"unit separator in the value", "X: \x1f", "", "", `invalid character in the value of header "X"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, value, reason := h1wire.CheckField([]byte(tt.line))
			if string(name) != tt.wantName || string(value) != tt.wantValue || reason != tt.wantReason {
				t.Errorf("CheckField(%q) = %q, %q, %q; want %q, %q, %q",
					tt.line, name, value, reason, tt.wantName, tt.wantValue, tt.wantReason)
			}
		})
	}
}

func TestIsTokenChar(t *testing.T) {
	// RFC 9110 section 5.6.2: tchar.
	const tchars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for c := 0; c < 256; c++ {
		want := strings.IndexByte(tchars, byte(c)) >= 0
		if got := h1wire.IsTokenChar(byte(c)); got != want {
			t.Errorf("IsTokenChar(%q) = %v; want %v", byte(c), got, want)
		}
	}
}
