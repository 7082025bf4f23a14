package proxy

import (
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/routing"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com:8080", "example.com"},
		{"API.Example.com:8080", "api.example.com"},
		{"example.com.", "example.com"},
		{"Example.com.:80", "example.com"},
		{"example.com:", "example.com"},
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.1:80", "127.0.0.1"},
		{"[::1]", "::1"},
		{"[::1]:80", "::1"},
		{"[FE80::1]:443", "fe80::1"},
		{"[::1", ""},
		{"localhost", "localhost"},
	}
	for _, tc := range tests {
		if got := normalizeHost(tc.in); got != tc.want {
			t.Errorf("normalizeHost(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeHostAllocatesOnlyToLowerCase(t *testing.T) {
	tests := []struct {
		in     string
		allocs float64
	}{
		{"api.example.com:8080", 0},
		{"api.example.com.", 0},
		{"[::1]:80", 0},
		{"API.example.com", 1},
	}
	for _, tc := range tests {
		in := tc.in
		if got := testing.AllocsPerRun(100, func() { _ = normalizeHost(in) }); got != tc.allocs {
			t.Errorf("normalizeHost(%q): %v allocs, want %v", tc.in, got, tc.allocs)
		}
	}
}

func TestRemoveHopByHop(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{
			name: "all hop-by-hop headers",
			in: http.Header{
				"Connection":          {"keep-alive"},
				"Proxy-Connection":    {"keep-alive"},
				"Keep-Alive":          {"timeout=5"},
				"Proxy-Authenticate":  {"Basic"},
				"Proxy-Authorization": {"Basic eA=="},
				"Te":                  {"gzip"},
				"Trailer":             {"X-T"},
				"Transfer-Encoding":   {"chunked"},
				"Upgrade":             {"websocket"},
				"X-End-To-End":        {"1"},
			},
			want: http.Header{"X-End-To-End": {"1"}},
		},
		{
			name: "headers named in Connection, over several lines",
			in: http.Header{
				"Connection": {"x-a , X-B", "X-C"},
				"X-A":        {"1"},
				"X-B":        {"2"},
				"X-C":        {"3"},
				"X-D":        {"4"},
			},
			want: http.Header{"X-D": {"4"}},
		},
		{
			name: "TE trailers kept",
			in:   http.Header{"Te": {"trailers"}},
			want: http.Header{"Te": {"trailers"}},
		},
		{
			name: "TE Trailers kept case-insensitively",
			in:   http.Header{"Te": {" Trailers "}},
			want: http.Header{"Te": {"trailers"}},
		},
		{
			// RFC 9110 section 10.1.4 requires a sender of TE to list it in
			// Connection.
			name: "TE trailers kept when Connection lists TE",
			in:   http.Header{"Connection": {"TE"}, "Te": {"trailers"}},
			want: http.Header{"Te": {"trailers"}},
		},
		{
			name: "TE trailers kept among other codings",
			in:   http.Header{"Te": {"deflate;q=0.5, trailers"}},
			want: http.Header{"Te": {"trailers"}},
		},
		{
			name: "nothing to remove",
			in:   http.Header{"Accept": {"*/*"}},
			want: http.Header{"Accept": {"*/*"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			removeHopByHop(tc.in)
			if !reflect.DeepEqual(tc.in, tc.want) {
				t.Errorf("got %v, want %v", tc.in, tc.want)
			}
		})
	}
}

// TestCloseTunnelsWithNoneOpen checks that CloseTunnels, finding no tunnel
// open, still marks the handler as going away, so that a tunnel opened
// later in the drain is sent a close frame at once.
func TestCloseTunnelsWithNoneOpen(t *testing.T) {
	h := New(Config{Table: &routing.Current{}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	h.CloseTunnels(ctx)
	h.tunnels.mu.Lock()
	away := h.tunnels.goingAway
	h.tunnels.mu.Unlock()
	if !away {
		t.Error("after CloseTunnels with none open, a tunnel opened next would be left open")
	}
}
