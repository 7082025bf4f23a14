package connchan_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
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

// TestServeOne checks that ServeOne answers one request, with Connection:
// close, even when the client sent two, and returns once the connection
// is closed.
func TestServeOne(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.WriteString(w, "answer to "+r.URL.Path)
	})}
	returned := make(chan struct{})
	go func() {
		connchan.ServeOne(context.Background(), srv, server)
		close(returned)
	}()
	if _, err := io.WriteString(client, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(client)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "answer to /a" || !resp.Close {
		t.Errorf("got %d %q (Connection: close %v); want 200 %q with Connection: close",
			resp.StatusCode, body, resp.Close, "answer to /a")
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Errorf("after the response: %q, %v; want the connection closed", rest, err)
	}
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeOne did not return after closing the connection")
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("the handler saw %d requests, want 1", n)
	}
}
