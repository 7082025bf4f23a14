package dataplane

import (
	"net"
	"strings"
	"testing"
)

func TestSameAddress(t *testing.T) {
	tcp := func(ip string, port int) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	tests := []struct {
		want    string
		got     net.Addr
		wantErr string
	}{
		{"127.0.0.1:6188", tcp("127.0.0.1", 6188), ""},
		{"127.0.0.1:0", tcp("127.0.0.1", 41234), ""}, // port 0: whatever was bound
		{":6188", tcp("::", 6188), ""},
		{"0.0.0.0:6188", tcp("::", 6188), ""},
		{"[::1]:6188", tcp("::1", 6188), ""},
		{"127.0.0.1:6188", tcp("127.0.0.1", 6189), "this data plane is told to listen on 127.0.0.1:6188"},
		{"127.0.0.2:6188", tcp("127.0.0.1", 6188), "it listens on 127.0.0.1:6188"},
		{"not an address", tcp("127.0.0.1", 6188), "resolve not an address"},
		{"127.0.0.1:6188", &net.UnixAddr{Name: "/x", Net: "unix"}, "is not TCP"},
	}
	for _, tt := range tests {
		err := sameAddress(tt.want, tt.got)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("sameAddress(%q, %v) = %v, want nil", tt.want, tt.got, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("sameAddress(%q, %v) = %v, want an error containing %q", tt.want, tt.got, err, tt.wantErr)
		}
	}
}
