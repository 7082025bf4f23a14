package connchan_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/connchan"
)

func TestDeliverAcceptClose(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	l := connchan.New(addr)
	if l.Addr() != addr {
		t.Errorf("Addr() = %v, want %v", l.Addr(), addr)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	delivered := make(chan bool, 1)
	go func() { delivered <- l.Deliver(a) }()
	c, err := l.Accept()
	if err != nil || c != a {
		t.Fatalf("Accept() = %v, %v; want the delivered connection", c, err)
	}
	select {
	case ok := <-delivered:
		if !ok {
			t.Error("Deliver reported false for an accepted connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Deliver did not return within 5s of Accept")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_ = l.Close() // twice is fine
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if l.Deliver(b) {
		t.Error("Deliver after Close reported true, want false")
	}
}
