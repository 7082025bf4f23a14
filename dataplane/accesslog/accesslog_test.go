package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

var sample = Entry{
	Time: time.Date(2026, 11, 25, 10, 0, 0, 123456000, time.UTC), Client: "127.0.0.1:5000", Host: "web.example",
	Method: "GET", Path: "/a b\"c\x01é\xff", Proto: "HTTP/1.1", Status: 200, BytesIn: 3, BytesOut: 64,
	Duration: 1500 * time.Microsecond, Pool: "web", Backend: "10.0.0.1:8080", Retries: 1, UpstreamStatus: 200,
}

func TestJSONLine(t *testing.T) {
	line := appendJSON(nil, &sample)
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("line does not parse: %v\n%s", err, line)
	}
	want := map[string]any{
		"time": "2026-11-25T10:00:00.123456Z", "client": "127.0.0.1:5000", "host": "web.example", "method": "GET",
		"path": "/a b\"c\x01é\ufffd", "protocol": "HTTP/1.1", "status": 200.0, "bytes_in": 3.0, "bytes_out": 64.0,
		"duration_seconds": 0.0015, "pool": "web", "backend": "10.0.0.1:8080", "retries": 1.0, "upstream_status": 200.0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("keys: %d, want %d: %v", len(got), len(want), got)
	}
}

func TestLogfmtLine(t *testing.T) {
	e := sample
	e.Path = "/plain"
	e.Backend = ""
	line := string(appendLogfmt(nil, &e))
	want := `time=2026-11-25T10:00:00.123456Z client=127.0.0.1:5000 host=web.example method=GET path=/plain protocol=HTTP/1.1 status=200 bytes_in=3 bytes_out=64 duration_seconds=0.001500 pool=web backend="" retries=1 upstream_status=200` + "\n"
	if line != want {
		t.Errorf("logfmt line\n got %q\nwant %q", line, want)
	}
	e.Path = `/a b="c"`
	if got := string(appendKV(nil, "path", e.Path)); got != ` path="/a b=\"c\""` {
		t.Errorf("quoted value: %s", got)
	}
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunWritesEveryEntryAndFlushesOnStop(t *testing.T) {
	var out syncBuffer
	l := New(&out, JSON, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for i := range 500 {
		e := sample
		e.Status = 200 + i%2
		l.Log(e)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 500 || l.Written() != 500 || l.Dropped() != 0 {
		t.Fatalf("lines %d written %d dropped %d, want 500 500 0", len(lines), l.Written(), l.Dropped())
	}
}

// blockingWriter blocks every write until released.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

func TestLogNeverBlocks(t *testing.T) {
	w := blockingWriter{release: make(chan struct{})}
	l := New(w, Logfmt, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	start := time.Now()
	for range 100 {
		l.Log(sample) // the writer is stuck; Log must still return
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Log blocked")
	}
	if l.Dropped() < 100-4-1 {
		t.Errorf("dropped %d of 100 with a queue of 4 and a stuck writer", l.Dropped())
	}
	close(w.release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l.Written()+l.Dropped() != 100 {
		t.Errorf("written %d + dropped %d != 100", l.Written(), l.Dropped())
	}
}

func TestParseFormat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Format
		ok   bool
	}{{"json", JSON, true}, {"logfmt", Logfmt, true}, {"JSON", 0, false}, {"", 0, false}} {
		got, err := ParseFormat(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseFormat(%q) = %v, %v", tt.in, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), tt.in) {
			t.Errorf("error %q does not name the value", err)
		}
	}
}
