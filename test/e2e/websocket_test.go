package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocketEcho sends text and binary messages of the sizes around the
// frame length encodings (0, 125, 126, 65535, 65536) and 16 MiB through the
// proxy's ws:// and wss:// listeners; each comes back identical, with its
// type.
func TestWebSocketEcho(t *testing.T) {
	_, cases := wsSetup(t)
	sizes := []int{0, 125, 126, 65535, 65536, 16 << 20}
	for _, wc := range cases {
		t.Run(wc.name, func(t *testing.T) {
			c := wc.mustDial(t, "/echo?id="+t.Name())
			for _, typ := range []websocket.MessageType{websocket.MessageText, websocket.MessageBinary} {
				for _, size := range sizes {
					msg := wsPayload(t, typ, size)
					wsRoundTrip(t, c, typ, msg, 2*time.Minute)
				}
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

// wsPayload returns size random bytes; printable ASCII for text messages.
func wsPayload(t *testing.T, typ websocket.MessageType, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if typ == websocket.MessageText {
		for i := range b {
			b[i] = 'a' + b[i]%26
		}
	}
	return b
}

// TestWebSocketPing pings the backend through the proxy; the backend's
// automatic pong comes back.
func TestWebSocketPing(t *testing.T) {
	_, cases := wsSetup(t)
	for _, wc := range cases {
		t.Run(wc.name, func(t *testing.T) {
			c := wc.mustDial(t, "/echo?id="+t.Name())
			// Pongs are processed by a reader: CloseRead runs one.
			readCtx, cancelRead := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancelRead()
			c.CloseRead(readCtx)
			for i := 0; i < 3; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.Ping(ctx)
				cancel()
				if err != nil {
					t.Fatalf("ping %d: %v", i, err)
				}
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

// TestWebSocketCloseHandshake checks both close handshakes end to end: the
// client's close reaches the backend with its status and reason and the
// backend's answer reaches the client; and a backend-initiated close reaches
// the client with its status and reason and the client's answer reaches the
// backend.
func TestWebSocketCloseHandshake(t *testing.T) {
	be, cases := wsSetup(t)
	for _, wc := range cases {
		t.Run(wc.name+"/client-closes", func(t *testing.T) {
			id := t.Name()
			c := wc.mustDial(t, "/echo?id="+id)
			wsRoundTrip(t, c, websocket.MessageText, []byte("hello"), 10*time.Second)
			if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Fatalf("client Close: %v, want nil (the backend's close frame came back)", err)
			}
			err := be.awaitEnd(t, id, 10*time.Second)
			var ce websocket.CloseError
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure || !errors.As(err, &ce) || ce.Reason != "bye" {
				t.Fatalf("backend's read ended with %v, want close status %v reason %q", err, websocket.StatusNormalClosure, "bye")
			}
		})
		t.Run(wc.name+"/server-closes", func(t *testing.T) {
			id := t.Name()
			c := wc.mustDial(t, "/close?id="+id)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Write(ctx, websocket.MessageText, []byte("close please")); err != nil {
				t.Fatalf("write: %v", err)
			}
			_, _, err := c.Read(ctx)
			var ce websocket.CloseError
			if websocket.CloseStatus(err) != wsServerCloseCode || !errors.As(err, &ce) || ce.Reason != wsServerCloseReason {
				t.Fatalf("client's read ended with %v, want close status %d reason %q", err, wsServerCloseCode, wsServerCloseReason)
			}
			if err := be.awaitEnd(t, id, 10*time.Second); err != nil {
				t.Fatalf("backend Close: %v, want nil (the client's close frame came back)", err)
			}
		})
	}
}

// TestWebSocketIdleTimeout runs a data plane with --websocket-idle-timeout
// 500ms: an idle tunnel is closed (on both sides), a tunnel with a message
// every 100ms stays open for 1.5s and beyond.
func TestWebSocketIdleTimeout(t *testing.T) {
	be, cases := wsSetup(t, "--websocket-idle-timeout", "500ms")
	for _, wc := range cases {
		t.Run(wc.name+"/idle", func(t *testing.T) {
			id := t.Name()
			c := wc.mustDial(t, "/echo?id="+id)
			wsRoundTrip(t, c, websocket.MessageText, []byte("then silence"), 10*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, _, err := c.Read(ctx)
			if err == nil {
				t.Fatal("read on an idle tunnel returned a message")
			}
			if ctx.Err() != nil {
				t.Fatalf("idle tunnel still open after %v (read: %v)", time.Since(start), err)
			}
			t.Logf("idle tunnel closed after %v: %v", time.Since(start), err)
			if err := be.awaitEnd(t, id, 5*time.Second); err == nil {
				t.Fatal("backend connection ended without an error")
			}
		})
		t.Run(wc.name+"/active", func(t *testing.T) {
			c := wc.mustDial(t, "/echo?id="+t.Name())
			start := time.Now()
			for i := 0; time.Since(start) < 1500*time.Millisecond; i++ {
				wsRoundTrip(t, c, websocket.MessageText, fmt.Appendf(nil, "tick-%d", i), 5*time.Second)
				time.Sleep(100 * time.Millisecond) // pacing below the idle timeout
			}
			wsRoundTrip(t, c, websocket.MessageBinary, []byte("still open"), 5*time.Second)
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("close: %v", err)
			}
		})
	}
}

// TestWebSocketRefusedUpgrade has the backend answer an upgrade with 403:
// the client gets the 403 and its body, no upgrade, and the connection is
// closed afterwards rather than turned into a tunnel or read for more
// requests.
func TestWebSocketRefusedUpgrade(t *testing.T) {
	be, cases := wsSetup(t)
	for _, wc := range cases {
		t.Run(wc.name+"/dial", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := wc.dial(ctx, "/refuse")
			if err == nil {
				c.CloseNow()
				t.Fatal("dial succeeded; want the backend's 403")
			}
			if resp == nil {
				t.Fatalf("dial: %v, with no response; want a 403", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "upgrade refused by backend") {
				t.Fatalf("dial got %d %q, want 403 with the backend's body", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Refused-By") != "backend" {
				t.Errorf("response headers %v lack the backend's X-Refused-By", resp.Header)
			}
		})
		t.Run(wc.name+"/raw", func(t *testing.T) {
			before := be.refused.Load()
			var conn net.Conn
			var err error
			d := &net.Dialer{Timeout: 5 * time.Second}
			if wc.tlsCfg != nil {
				cfg := wc.tlsCfg.Clone()
				cfg.NextProtos = []string{"http/1.1"}
				conn, err = tls.DialWithDialer(d, "tcp", wc.addr, cfg)
			} else {
				conn, err = d.Dial("tcp", wc.addr)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			// The upgrade request is followed at once by a (masked) frame,
			// meant for the tunnel that the backend will refuse.
			const req = "GET /refuse HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
			frame := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
			if _, err := conn.Write(append([]byte(req), frame...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "upgrade refused by backend") {
				t.Fatalf("got %d %q, want 403 with the backend's body", resp.StatusCode, body)
			}
			if up := resp.Header.Get("Upgrade"); up != "" {
				t.Errorf("refused upgrade answered with Upgrade: %q", up)
			}
			if n := be.refused.Load() - before; n != 1 {
				t.Errorf("backend saw %d upgrade requests, want 1", n)
			}
			// Nothing more: the connection ends (no tunnel, and the frame is
			// not parsed as a request).
			rest, err := io.ReadAll(br)
			if len(rest) > 0 {
				t.Fatalf("after the 403 the connection carried %q; want it closed", rest)
			}
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("after the 403: %v; want the connection closed", err)
			}
		})
	}
}
