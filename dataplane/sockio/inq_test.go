//go:build linux && !386

package sockio_test

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/sockio"
)

// inqRead reads c's socket once with an InqReader (EnableInq first when
// enable), after waiting for it to be readable.
func inqRead(t *testing.T, c net.Conn, enable bool, size int) (n, left int, err error) {
	t.Helper()
	raw, rerr := c.(syscall.Conn).SyscallConn()
	if rerr != nil {
		t.Fatal(rerr)
	}
	if enable {
		if cerr := raw.Control(func(fd uintptr) {
			if e := sockio.EnableInq(fd); e != nil {
				t.Fatalf("EnableInq: %v", e)
			}
		}); cerr != nil {
			t.Fatal(cerr)
		}
	}
	var r sockio.InqReader
	p := make([]byte, size)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rerr := raw.Read(func(fd uintptr) bool {
		n, left, err = r.Read(fd, p)
		return err != syscall.EAGAIN
	}); rerr != nil {
		t.Fatalf("RawRead: %v", rerr)
	}
	return n, left, err
}

func TestInqReader(t *testing.T) {
	tests := []struct {
		name     string
		enable   bool
		size     int
		closeW   bool // the peer half-closes after writing
		wantN    int
		wantLeft int
	}{
		{"all read, socket empty", true, 64, false, 10, 0},
		{"part read", true, 4, false, 4, 6},
		{"all read, FIN behind", true, 64, true, 10, 1},
		{"part read, FIN behind", true, 4, true, 4, 7}, // the FIN counts one
		{"not enabled", false, 64, false, 10, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pair(t)
			if _, err := b.Write([]byte("0123456789")); err != nil {
				t.Fatal(err)
			}
			if tc.closeW {
				if err := b.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(20 * time.Millisecond) // all of it in a's queue
			n, left, err := inqRead(t, a, tc.enable, tc.size)
			if err != nil || n != tc.wantN || left != tc.wantLeft {
				t.Errorf("Read = %d, left %d, %v; want %d, left %d, nil", n, left, err, tc.wantN, tc.wantLeft)
			}
		})
	}
}
