package h1wire_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/h1wire"
)

// respView is a Response in comparable form.
type respView struct {
	Status        int
	Reason        string
	HTTP10        bool
	Fields        []string // "Name|Value"
	ContentLength int64
	Chunked       bool
	Close         bool
	HasDate       bool
}

func viewResp(r *h1wire.Response) respView {
	v := respView{
		Status:        r.Status,
		Reason:        string(r.Reason),
		HTTP10:        r.HTTP10,
		ContentLength: r.ContentLength,
		Chunked:       r.Chunked,
		Close:         r.Close,
		HasDate:       r.HasDate,
	}
	for _, f := range r.Fields {
		v.Fields = append(v.Fields, string(f.Name)+"|"+string(f.Value))
	}
	return v
}

func resp(line string, fields ...string) string {
	return reqHead(line, fields...) // same layout: a line, fields, CRLF
}

func TestResponseParseValid(t *testing.T) {
	tests := []struct {
		name string
		head string
		want respView
	}{
		{
			name: "200 OK with Content-Length",
			head: resp("HTTP/1.1 200 OK", "Content-Type: text/plain", "Content-Length: 5"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Content-Type|text/plain", "Content-Length|5"}, ContentLength: 5},
		},
		{
			name: "no reason phrase",
			head: resp("HTTP/1.1 200"),
			want: respView{Status: 200, ContentLength: -1},
		},
		{
			name: "empty reason phrase",
			head: resp("HTTP/1.1 204 "),
			want: respView{Status: 204, ContentLength: -1},
		},
		{
			name: "reason with spaces",
			head: resp("HTTP/1.1 404 Not Found", "Content-Length: 0"),
			want: respView{Status: 404, Reason: "Not Found", Fields: []string{"Content-Length|0"}, ContentLength: 0},
		},
		{
			name: "reason with a tab and obs-text",
			head: resp("HTTP/1.1 200 O\tK caf\xe9"),
			want: respView{Status: 200, Reason: "O\tK caf\xe9", ContentLength: -1},
		},
		{
			name: "reason with a leading space",
			head: resp("HTTP/1.1 200  OK"),
			want: respView{Status: 200, Reason: " OK", ContentLength: -1},
		},
		{
			name: "1xx",
			head: resp("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: websocket"),
			want: respView{Status: 101, Reason: "Switching Protocols", Fields: []string{"Connection|Upgrade", "Upgrade|websocket"}, ContentLength: -1},
		},
		{
			name: "highest status",
			head: resp("HTTP/1.1 999 x"),
			want: respView{Status: 999, Reason: "x", ContentLength: -1},
		},
		{
			name: "lowest status",
			head: resp("HTTP/1.1 100 Continue"),
			want: respView{Status: 100, Reason: "Continue", ContentLength: -1},
		},
		{
			name: "HTTP/1.0 closes",
			head: resp("HTTP/1.0 200 OK", "Content-Length: 2"),
			want: respView{Status: 200, Reason: "OK", HTTP10: true, Fields: []string{"Content-Length|2"}, ContentLength: 2, Close: true},
		},
		{
			name: "HTTP/1.0 with keep-alive",
			head: resp("HTTP/1.0 200 OK", "Connection: keep-alive", "Content-Length: 2"),
			want: respView{Status: 200, Reason: "OK", HTTP10: true, Fields: []string{"Connection|keep-alive", "Content-Length|2"}, ContentLength: 2},
		},
		{
			name: "HTTP/1.0 with Keep-Alive in a list",
			head: resp("HTTP/1.0 200 OK", "connection: Foo, Keep-Alive"),
			want: respView{Status: 200, Reason: "OK", HTTP10: true, Fields: []string{"connection|Foo, Keep-Alive"}, ContentLength: -1},
		},
		{
			name: "HTTP/1.0 with keep-alive and close",
			head: resp("HTTP/1.0 200 OK", "Connection: keep-alive, close"),
			want: respView{Status: 200, Reason: "OK", HTTP10: true, Fields: []string{"Connection|keep-alive, close"}, ContentLength: -1, Close: true},
		},
		{
			name: "HTTP/1.0 with a Keep-Alive field is not keep-alive",
			head: resp("HTTP/1.0 200 OK", "Keep-Alive: timeout=5"),
			want: respView{Status: 200, Reason: "OK", HTTP10: true, Fields: []string{"Keep-Alive|timeout=5"}, ContentLength: -1, Close: true},
		},
		{
			name: "Connection: close",
			head: resp("HTTP/1.1 200 OK", "Connection: close"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Connection|close"}, ContentLength: -1, Close: true},
		},
		{
			name: "Connection: Close in a list",
			head: resp("HTTP/1.1 200 OK", "Connection: Upgrade, CLOSE"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Connection|Upgrade, CLOSE"}, ContentLength: -1, Close: true},
		},
		{
			name: "Connection: close in a second field",
			head: resp("HTTP/1.1 200 OK", "Connection: keep-alive", "Connection: close"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Connection|keep-alive", "Connection|close"}, ContentLength: -1, Close: true},
		},
		{
			name: "Connection: closed is not close",
			head: resp("HTTP/1.1 200 OK", "Connection: closed"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Connection|closed"}, ContentLength: -1},
		},
		{
			name: "Date",
			head: resp("HTTP/1.1 200 OK", "date: Tue, 15 Nov 1994 08:12:31 GMT"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"date|Tue, 15 Nov 1994 08:12:31 GMT"}, ContentLength: -1, HasDate: true},
		},
		{
			name: "empty Date",
			head: resp("HTTP/1.1 200 OK", "Date:"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Date|"}, ContentLength: -1, HasDate: true},
		},
		{
			name: "Date-like field is not Date",
			head: resp("HTTP/1.1 200 OK", "X-Date: now"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"X-Date|now"}, ContentLength: -1},
		},
		{
			name: "chunked",
			head: resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Transfer-Encoding|chunked"}, ContentLength: -1, Chunked: true},
		},
		{
			name: "gzip, chunked",
			head: resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Transfer-Encoding|gzip, chunked"}, ContentLength: -1, Chunked: true},
		},
		{
			name: "gzip,Chunked without a space",
			head: resp("HTTP/1.1 200 OK", "transfer-encoding: gzip,Chunked"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"transfer-encoding|gzip,Chunked"}, ContentLength: -1, Chunked: true},
		},
		{
			name: "chunked wins over Content-Length",
			head: resp("HTTP/1.1 200 OK", "Content-Length: 10", "Transfer-Encoding: chunked"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Content-Length|10", "Transfer-Encoding|chunked"}, ContentLength: -1, Chunked: true},
		},
		{
			name: "chunked wins over a later Content-Length",
			head: resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked", "Content-Length: 10"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Transfer-Encoding|gzip, chunked", "Content-Length|10"}, ContentLength: -1, Chunked: true},
		},
		{
			name: "equal Content-Lengths with leading zeros",
			head: resp("HTTP/1.1 200 OK", "Content-Length: 005", "Content-Length: 5"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Content-Length|005", "Content-Length|5"}, ContentLength: 5},
		},
		{
			name: "Content-Length of 18 digits",
			head: resp("HTTP/1.1 200 OK", "Content-Length: 999999999999999999"),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Content-Length|999999999999999999"}, ContentLength: 999999999999999999},
		},
		{
			name: "values trimmed",
			head: resp("HTTP/1.1 200 OK", "Server: \t x y \t", "Content-Length:  7  "),
			want: respView{Status: 200, Reason: "OK", Fields: []string{"Server|x y", "Content-Length|7"}, ContentLength: 7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r h1wire.Response
			if err := r.Parse([]byte(tt.head)); err != nil {
				t.Fatalf("Parse(%q) = %v; want nil", tt.head, err)
			}
			if got := viewResp(&r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q):\ngot  %+v\nwant %+v", tt.head, got, tt.want)
			}
		})
	}
}

func TestResponseParseRefused(t *testing.T) {
	tests := []struct {
		name string
		head string
		want string // the error's text after "malformed response head: "
	}{
		{"empty", "", "no end"},
		{"no empty line", "HTTP/1.1 200 OK\r\n", "no end"},
		{"ends in LF LF", "HTTP/1.1 200 OK\n\n", "no end"},

		// Transfer-Encoding.
		{"gzip", resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip"), `unsupported Transfer-Encoding "gzip"`},
		{"chunked, gzip", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked, gzip"), `unsupported Transfer-Encoding "chunked, gzip"`},
		{"chunked with a parameter", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked;x=1"), `unsupported Transfer-Encoding "chunked;x=1"`},
		{"empty Transfer-Encoding", resp("HTTP/1.1 200 OK", "Transfer-Encoding:"), `unsupported Transfer-Encoding ""`},
		{"trailing comma", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked,"), `unsupported Transfer-Encoding "chunked,"`},
		{"two Transfer-Encoding fields", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), `unsupported Transfer-Encoding "chunked"`},
		{"gzip then chunked fields", resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"), `unsupported Transfer-Encoding "chunked"`},

		// Content-Length.
		{"differing Content-Lengths", resp("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6"), "several differing Content-Length fields"},
		{"differing Content-Lengths with chunked", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Length: 5", "Content-Length: 6"), "several differing Content-Length fields"},
		{"Content-Length with letters", resp("HTTP/1.1 200 OK", "Content-Length: 5a"), `invalid Content-Length "5a"`},
		{"empty Content-Length", resp("HTTP/1.1 200 OK", "Content-Length:"), `invalid Content-Length ""`},
		{"negative Content-Length", resp("HTTP/1.1 200 OK", "Content-Length: -5"), `invalid Content-Length "-5"`},
		{"Content-Length list", resp("HTTP/1.1 200 OK", "Content-Length: 5,5"), `invalid Content-Length "5,5"`},
		{"Content-Length of 19 digits", resp("HTTP/1.1 200 OK", "Content-Length: 9223372036854775807"), `invalid Content-Length "9223372036854775807"`},
		{"invalid Content-Length with chunked", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Length: x"), `invalid Content-Length "x"`},

		// Status line.
		{"HTTP/2", resp("HTTP/2 200"), "bad status line"},
		{"HTTP/2 with reason", resp("HTTP/2 200 OK"), "bad status line"},
		{"HTTP/1.2", resp("HTTP/1.2 200 OK"), "bad status line"},
		{"HTTP/1.1 two-digit status", resp("HTTP/1.1 20"), "bad status line"},
		{"four-digit status", resp("HTTP/1.1 2000 x"), "bad status line"},
		{"four-digit status without reason", resp("HTTP/1.1 2000"), "bad status line"},
		{"tab after the status", resp("HTTP/1.1 200\tOK"), "bad status line"},
		{"two spaces before the status", resp("HTTP/1.1  200 OK"), "bad status code"},
		{"lower-case protocol", resp("http/1.1 200 OK"), "bad status line"},
		{"no space after the version", resp("HTTP/1.1200 OK"), "bad status line"},
		{"empty status line", "\r\n\r\n", "bad status line"},
		{"status with a leading zero", resp("HTTP/1.1 099 x"), "bad status code"},
		{"status 000", resp("HTTP/1.1 000 x"), "bad status code"},
		{"status with a letter", resp("HTTP/1.1 2x0 OK"), "bad status code"},
		{"signed status", resp("HTTP/1.1 +20 OK"), "bad status code"},
		{"NUL in the reason", resp("HTTP/1.1 200 O\x00K"), "invalid character in the reason phrase"},
		{"control character in the reason", resp("HTTP/1.1 200 \x01"), "invalid character in the reason phrase"},
		{"DEL in the reason", resp("HTTP/1.1 200 OK\x7f"), "invalid character in the reason phrase"},

		// Line syntax.
		{"bare LF after the status line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "line ends in a bare LF; HTTP/1.1 needs CRLF"},
		{"bare LF between fields", resp("HTTP/1.1 200 OK", "A: b\nContent-Length: 0"), "line ends in a bare LF; HTTP/1.1 needs CRLF"},
		{"bare CR in the reason", resp("HTTP/1.1 200 O\rK"), "bare CR in the response head"},
		{"bare CR in a field", resp("HTTP/1.1 200 OK", "A: b\rc"), "bare CR in the response head"},
		{"obs-fold", resp("HTTP/1.1 200 OK", "X: a", " b"), "obsolete line folding"},
		{"obs-fold with a tab", resp("HTTP/1.1 200 OK", "X: a", "\tb"), "obsolete line folding"},
		{"no colon", resp("HTTP/1.1 200 OK", "X"), "header line without a name and colon"},
		{"invalid name", resp("HTTP/1.1 200 OK", "Content Length: 5"), `invalid header name "Content Length"`},
		{"space before the colon", resp("HTTP/1.1 200 OK", "Transfer-Encoding : chunked"), `invalid header name "Transfer-Encoding "`},
		{"control character in a value", resp("HTTP/1.1 200 OK", "X: a\x00"), `invalid character in the value of header "X"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r h1wire.Response
			err := r.Parse([]byte(tt.head))
			if err == nil {
				t.Fatalf("Parse(%q) = nil; want an error %q", tt.head, tt.want)
			}
			if !errors.Is(err, h1wire.ErrMalformed) {
				t.Errorf("Parse(%q) = %v, not ErrMalformed; want errors.Is(err, ErrMalformed)", tt.head, err)
			}
			if want := "malformed response head: " + tt.want; err.Error() != want {
				t.Errorf("Parse(%q) = %q; want %q", tt.head, err, want)
			}
		})
	}
}

func TestResponseParseReuseResets(t *testing.T) {
	var r h1wire.Response
	first := resp("HTTP/1.1 503 Unavailable", "Transfer-Encoding: chunked", "Date: x", "Connection: close", "A: 1", "B: 2")
	if err := r.Parse([]byte(first)); err != nil {
		t.Fatalf("Parse(%q) = %v", first, err)
	}
	second := resp("HTTP/1.1 200", "Content-Length: 3")
	if err := r.Parse([]byte(second)); err != nil {
		t.Fatalf("Parse(%q) = %v", second, err)
	}
	want := respView{Status: 200, Fields: []string{"Content-Length|3"}, ContentLength: 3}
	if got := viewResp(&r); !reflect.DeepEqual(got, want) {
		t.Errorf("second Parse on a reused Response:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestResponseParseAllocs(t *testing.T) {
	heads := map[string]string{
		"Content-Length": resp("HTTP/1.1 200 OK", "Date: Tue, 15 Nov 1994 08:12:31 GMT", "Server: x", "Content-Type: text/html; charset=utf-8",
			"Content-Length: 12345", "Connection: keep-alive", "Cache-Control: no-cache", "Vary: Accept-Encoding"),
		"chunked":    resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked", "Connection: close"),
		"HTTP/1.0":   resp("HTTP/1.0 404 Not Found", "Content-Length: 0"),
		"no reason":  resp("HTTP/1.1 204"),
		"no headers": resp("HTTP/1.1 304 Not Modified"),
	}
	for name, head := range heads {
		t.Run(name, func(t *testing.T) {
			b := []byte(head)
			var r h1wire.Response
			if err := r.Parse(b); err != nil {
				t.Fatalf("Parse = %v", err)
			}
			allocs := testing.AllocsPerRun(100, func() {
				if err := r.Parse(b); err != nil {
					t.Fatalf("Parse = %v", err)
				}
			})
			if allocs != 0 {
				t.Errorf("Parse of a valid head on a reused Response allocates %v times; want 0", allocs)
			}
		})
	}
}

// For valid heads, Parse agrees with net/http on the status and the body's
// framing.
func TestResponseParseMatchesNetHTTP(t *testing.T) {
	heads := []string{
		resp("HTTP/1.1 200 OK", "Content-Length: 5"),
		resp("HTTP/1.1 200 OK", "Content-Length: 0"),
		resp("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 5"),
		resp("HTTP/1.1 200 OK", "Content-Length: 007"),
		resp("HTTP/1.1 200 OK", "Content-Length: 999999999999999999"),
		resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"),
		resp("HTTP/1.1 200 OK", "Transfer-Encoding: Chunked"),
		resp("HTTP/1.1 200 OK"),
		resp("HTTP/1.1 200"),
		resp("HTTP/1.1 201 "),
		resp("HTTP/1.1 404 Not Found", "Content-Type: text/plain", "Content-Length: 9"),
		resp("HTTP/1.1 500 Internal Server Error", "Connection: close", "Content-Length: 21"),
		resp("HTTP/1.1 302 Found", "Location: /x", "Content-Length: 0"),
		resp("HTTP/1.1 204 No Content"),
		resp("HTTP/1.1 204 No Content", "Content-Length: 0"),
		resp("HTTP/1.1 304 Not Modified", "Content-Length: 10"),
		resp("HTTP/1.1 100 Continue"),
		resp("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: websocket"),
		resp("HTTP/1.1 999 Whatever"),
		resp("HTTP/1.0 200 OK"),
		resp("HTTP/1.0 200 OK", "Content-Length: 3"),
		resp("HTTP/1.0 200 OK", "Connection: keep-alive", "Content-Length: 3"),
		resp("HTTP/1.1 200 caf\xe9", "X: \xff", "Content-Length: 1"),
		resp("HTTP/1.1 200 OK", "content-length:   42   "),
	}
	for _, head := range heads {
		t.Run(fmt.Sprintf("%q", strings.SplitN(head, "\r\n", 2)[0]), func(t *testing.T) {
			var r h1wire.Response
			if err := r.Parse([]byte(head)); err != nil {
				t.Fatalf("Parse(%q) = %v; want nil", head, err)
			}
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(head)), nil)
			if err != nil {
				t.Fatalf("net/http cannot read %q: %v", head, err)
			}
			defer res.Body.Close()
			if r.Status != res.StatusCode {
				t.Errorf("%q: Status = %d; net/http says %d", head, r.Status, res.StatusCode)
			}
			if r.HTTP10 != (res.ProtoMinor == 0) {
				t.Errorf("%q: HTTP10 = %v; net/http says HTTP/1.%d", head, r.HTTP10, res.ProtoMinor)
			}
			// net/http reports 0 for the responses that have no body.
			want := res.ContentLength
			got := r.ContentLength
			if h1wire.BodyLess([]byte("GET"), r.Status) {
				got = 0
			}
			if got != want {
				t.Errorf("%q: ContentLength = %d (%d after BodyLess); net/http says %d", head, r.ContentLength, got, want)
			}
			chunked := len(res.TransferEncoding) > 0 && res.TransferEncoding[0] == "chunked"
			if r.Chunked != chunked {
				t.Errorf("%q: Chunked = %v; net/http's TransferEncoding is %q", head, r.Chunked, res.TransferEncoding)
			}
		})
	}
}

func TestBodyLess(t *testing.T) {
	tests := []struct {
		method string
		status int
		want   bool
	}{
		{"GET", 200, false},
		{"GET", 201, false},
		{"GET", 205, false},
		{"POST", 200, false},
		{"GET", 404, false},
		{"GET", 500, false},
		{"GET", 100, true},
		{"GET", 101, true},
		{"GET", 103, true},
		{"GET", 199, true},
		{"GET", 204, true},
		{"GET", 304, true},
		{"POST", 204, true},
		{"HEAD", 200, true},
		{"HEAD", 404, true},
		{"HEAD", 500, true},
		{"head", 200, false}, // methods are case-sensitive
		{"", 200, false},
		{"CONNECT", 200, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d", tt.method, tt.status), func(t *testing.T) {
			if got := h1wire.BodyLess([]byte(tt.method), tt.status); got != tt.want {
				t.Errorf("BodyLess(%q, %d) = %v; want %v", tt.method, tt.status, got, tt.want)
			}
		})
	}
}

func TestAppendDate(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
	}{
		{"epoch", time.Unix(0, 0)},
		{"RFC example", time.Date(1994, time.November, 6, 8, 49, 37, 0, time.UTC)},
		{"leap day", time.Date(2024, time.February, 29, 23, 59, 59, 999999999, time.UTC)},
		{"new year", time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)},
		{"other time zone", time.Date(2025, time.January, 1, 3, 30, 0, 0, time.FixedZone("X", 5*3600+1800))},
		{"negative offset crossing a day", time.Date(2025, time.June, 30, 22, 15, 1, 0, time.FixedZone("Y", -7*3600))},
		{"now", time.Now()},
		{"before 1970", time.Date(1960, time.March, 3, 4, 5, 6, 500000000, time.UTC)},
		{"year 9999", time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.t.UTC().Format(http.TimeFormat)
			if got := string(h1wire.AppendDate(nil, tt.t)); got != want {
				t.Errorf("AppendDate(nil, %v) = %q; want %q", tt.t, got, want)
			}
			// A second call (from the cache) gives the same.
			if got := string(h1wire.AppendDate([]byte("Date: "), tt.t)); got != "Date: "+want {
				t.Errorf("AppendDate(\"Date: \", %v) = %q; want %q", tt.t, got, "Date: "+want)
			}
		})
	}
}

func TestAppendDateSameSecond(t *testing.T) {
	base := time.Date(2025, time.March, 4, 5, 6, 7, 100000000, time.UTC)
	later := base.Add(800 * time.Millisecond)
	next := base.Add(time.Second)
	zoned := later.In(time.FixedZone("Z", -3*3600))
	want := "Tue, 04 Mar 2025 05:06:07 GMT"
	wantNext := "Tue, 04 Mar 2025 05:06:08 GMT"
	steps := []struct {
		name string
		t    time.Time
		want string
	}{
		{"first", base, want},
		{"same second", later, want},
		{"same second in another zone", zoned, want},
		{"next second", next, wantNext},
		{"back to the first second", later, want},
		{"next second again", next, wantNext},
	}
	for _, s := range steps {
		if got := string(h1wire.AppendDate(nil, s.t)); got != s.want {
			t.Errorf("%s: AppendDate(%v) = %q; want %q", s.name, s.t, got, s.want)
		}
		if s.want != s.t.UTC().Format(http.TimeFormat) {
			t.Fatalf("test bug: %q is not the HTTP date of %v", s.want, s.t)
		}
	}
}

func TestAppendDateConcurrent(t *testing.T) {
	base := time.Date(2025, time.March, 4, 5, 6, 7, 0, time.UTC)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := range 200 {
				tm := base.Add(time.Duration((g+i)%5)*time.Second + time.Duration(i)*time.Millisecond%time.Second)
				buf = h1wire.AppendDate(buf[:0], tm)
				if want := tm.UTC().Format(http.TimeFormat); string(buf) != want {
					t.Errorf("AppendDate(%v) = %q; want %q", tm, buf, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestAppendDateDoesNotAliasCache(t *testing.T) {
	tm := time.Date(2025, time.March, 4, 5, 6, 7, 0, time.UTC)
	want := tm.Format(http.TimeFormat)
	b := h1wire.AppendDate(make([]byte, 0, 64), tm)
	for i := range b {
		b[i] = 'x'
	}
	if got := string(h1wire.AppendDate(nil, tm)); got != want {
		t.Errorf("after overwriting a returned slice, AppendDate = %q; want %q", got, want)
	}
	if got := h1wire.AppendDate(nil, tm); !bytes.Equal(got, []byte(want)) {
		t.Errorf("AppendDate = %q; want %q", got, want)
	}
}

// An HTTP/1.0 response with Transfer-Encoding has faulty framing (RFC 9112
// section 6.1): net/http would read such a body up to the close, so it is
// refused rather than relayed as chunked on a kept connection.
func TestHTTP10ChunkedResponseRefused(t *testing.T) {
	head := resp("HTTP/1.0 200 OK", "Transfer-Encoding: chunked", "Connection: keep-alive")
	var r h1wire.Response
	err := r.Parse([]byte(head))
	const want = "malformed response head: Transfer-Encoding in an HTTP/1.0 response"
	if !errors.Is(err, h1wire.ErrMalformed) || err.Error() != want {
		t.Errorf("Parse(%q) = %v; want %q", head, err, want)
	}
}

func TestHeadEnd(t *testing.T) {
	tests := []struct {
		in     string
		n      int
		bareLF bool
	}{
		{"HTTP/1.1 200 OK\r\nA: 1\r\n\r\nbody", 25, false},
		{"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n", 25, false},
		{"HTTP/1.1 200 OK\r\nA: 1\r\n", -1, false},
		{"HTTP/1.1 200 OK\nA: 1\n\nbody", -1, true},
		{"HTTP/1.1 200 OK\r\nA: 1\n\r\nbody", -1, true},
		{"HTTP/1.1 200 OK\r\nA: 1\r\n\r\nbody\n\n", 25, false},
		{"", -1, false},
	}
	for _, tt := range tests {
		n, bare := h1wire.HeadEnd([]byte(tt.in))
		if n != tt.n || bare != tt.bareLF {
			t.Errorf("HeadEnd(%q) = %d, %v; want %d, %v", tt.in, n, bare, tt.n, tt.bareLF)
		}
	}
}
