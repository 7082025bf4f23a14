package upstream

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"testing"
)

// appendRequestHead must send what Request.Write sends for the requests
// it takes, field order aside: both are parsed back and compared.
func TestAppendRequestHeadMatchesRequestWrite(t *testing.T) {
	tests := []struct {
		name   string
		method string
		url    string
		host   string
		header http.Header
		close  bool
		ok     bool
	}{
		{name: "GET with fields", method: http.MethodGet, url: "http://10.0.0.1:8080/a/b?x=1&y=%20z", host: "app.example.com",
			header: http.Header{"Accept": {"*/*"}, "X-Multi": {"one", "two"}, "User-Agent": {"curl/8"}}, ok: true},
		{name: "no Host of its own", method: http.MethodGet, url: "http://10.0.0.1:8080/", ok: true},
		{name: "empty User-Agent means none", method: http.MethodGet, url: "http://b/", header: http.Header{"User-Agent": {""}}, ok: true},
		{name: "no User-Agent: Go's", method: http.MethodHead, url: "http://b/", ok: true},
		{name: "two User-Agents: the first", method: http.MethodGet, url: "http://b/", header: http.Header{"User-Agent": {"a", "b"}}, ok: true},
		{name: "POST without a body says Content-Length 0", method: http.MethodPost, url: "http://b/p", ok: true},
		{name: "DELETE without a body", method: http.MethodDelete, url: "http://b/d", ok: true},
		{name: "values trimmed", method: http.MethodGet, url: "http://b/", header: http.Header{"X-Pad": {"  v \t"}}, ok: true},
		{name: "UTF-8 value as it is", method: http.MethodGet, url: "http://b/", header: http.Header{"X-Name": {"Zoë"}}, ok: true},
		{name: "Connection: close", method: http.MethodGet, url: "http://b/", close: true, ok: true},
		{name: "line break in a value: left to Request.Write", method: http.MethodGet, url: "http://b/", header: http.Header{"X-Bad": {"a\r\nb"}}},
		{name: "non-ASCII Host: left to Request.Write", method: http.MethodGet, url: "http://b/", host: "bücher.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(tt.method, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				r.Host = tt.host
			}
			if tt.header != nil {
				r.Header = tt.header
			}
			r.Close = tt.close
			got, ok := appendRequestHead(nil, r)
			if ok != tt.ok {
				t.Fatalf("appendRequestHead ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			var want bytes.Buffer
			if err := r.Write(&want); err != nil {
				t.Fatal(err)
			}
			g, w := parseHead(t, got), parseHead(t, want.Bytes())
			if g.Method != w.Method || g.RequestURI != w.RequestURI || g.Host != w.Host || g.ContentLength != w.ContentLength || g.Close != w.Close {
				t.Errorf("request line or framing differs:\ngot  %s %s Host %q CL %d close %v\nwant %s %s Host %q CL %d close %v",
					g.Method, g.RequestURI, g.Host, g.ContentLength, g.Close, w.Method, w.RequestURI, w.Host, w.ContentLength, w.Close)
			}
			if !reflect.DeepEqual(g.Header, w.Header) {
				t.Errorf("fields differ:\ngot  %v\nwant %v\nraw: %q", g.Header, w.Header, got)
			}
		})
	}
}

func parseHead(t *testing.T, b []byte) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("parsing %q: %v", b, err)
	}
	return r
}
