package stats

import (
	"net"
	"testing"
	"time"
)

func TestClasses(t *testing.T) {
	methods := []struct {
		in   string
		want string
	}{
		{"GET", "GET"}, {"HEAD", "HEAD"}, {"POST", "POST"}, {"PUT", "PUT"}, {"DELETE", "DELETE"},
		{"PATCH", "PATCH"}, {"OPTIONS", "OPTIONS"}, {"get", "other"}, {"BREW", "other"}, {"", "other"},
	}
	for _, tt := range methods {
		if got := MethodNames[MethodClass(tt.in)]; got != tt.want {
			t.Errorf("MethodClass(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	codes := []struct {
		in   int
		want string
	}{{100, "1xx"}, {101, "1xx"}, {200, "2xx"}, {304, "3xx"}, {404, "4xx"}, {499, "4xx"}, {502, "5xx"}, {599, "5xx"}, {0, "5xx"}, {600, "5xx"}, {99, "5xx"}}
	for _, tt := range codes {
		if got := CodeNames[CodeClass(tt.in)]; got != tt.want {
			t.Errorf("CodeClass(%d) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{0, 500 * time.Microsecond, 501 * time.Microsecond, 7 * time.Millisecond, 10 * time.Second, time.Minute, -time.Second} {
		h.Observe(d)
	}
	count, sum, cum := h.Snapshot()
	if count != 7 {
		t.Errorf("count = %d, want 7", count)
	}
	wantSum := (500*time.Microsecond + 501*time.Microsecond + 7*time.Millisecond + 10*time.Second + time.Minute).Seconds()
	if d := sum - wantSum; d > 1e-9 || d < -1e-9 {
		t.Errorf("sum = %v, want %v", sum, wantSum)
	}
	want := map[float64]uint64{0.0005: 3, 0.001: 4, 0.0025: 4, 0.005: 4, 0.01: 5, 5: 5, 10: 6}
	for le, n := range want {
		if cum[le] != n {
			t.Errorf("bucket le=%v: %d, want %d", le, cum[le], n)
		}
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	var h Histogram
	var r Requests
	if n := testing.AllocsPerRun(100, func() {
		h.Observe(3 * time.Millisecond)
		r.Add(MethodClass("GET"), 200)
	}); n != 0 {
		t.Errorf("allocs per observation = %v, want 0", n)
	}
}

func TestConnTracking(t *testing.T) {
	var cs Conns
	a, b := net.Pipe()
	defer b.Close()
	c := Track(a, &cs, ListenerHTTP)
	if got := cs.Active[ListenerHTTP][ProtoHTTP1].Load(); got != 1 {
		t.Fatalf("active http1 after accept = %d, want 1", got)
	}
	go func() { _, _ = b.Write([]byte("PRI * HTTP/2.0\r\n")) }()
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if h1, h2 := cs.Active[ListenerHTTP][ProtoHTTP1].Load(), cs.Active[ListenerHTTP][ProtoHTTP2].Load(); h1 != 0 || h2 != 1 {
		t.Errorf("after the h2c preface: http1 %d h2 %d, want 0 and 1", h1, h2)
	}
	c.Close()
	c.Close()
	if h2 := cs.Active[ListenerHTTP][ProtoHTTP2].Load(); h2 != 0 {
		t.Errorf("after two closes: h2 %d, want 0", h2)
	}
	if acc := cs.Accepted[ListenerHTTP].Load(); acc != 1 {
		t.Errorf("accepted = %d, want 1", acc)
	}
}

func TestConnHTTP1StaysHTTP1(t *testing.T) {
	var cs Conns
	a, b := net.Pipe()
	defer b.Close()
	c := Track(a, &cs, ListenerHTTPS)
	go func() { _, _ = b.Write([]byte("GET / HTTP/1.1\r\n")) }()
	if _, err := c.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if h1 := cs.Active[ListenerHTTPS][ProtoHTTP1].Load(); h1 != 1 {
		t.Errorf("http1 = %d, want 1", h1)
	}
	c.SetProto(ProtoHTTP2)
	c.SetProto(ProtoHTTP2)
	if h1, h2 := cs.Active[ListenerHTTPS][ProtoHTTP1].Load(), cs.Active[ListenerHTTPS][ProtoHTTP2].Load(); h1 != 0 || h2 != 1 {
		t.Errorf("after SetProto(h2) twice: http1 %d h2 %d, want 0 and 1", h1, h2)
	}
	c.Close()
}
