package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// opsSlowDelay is how long the slow backend takes to answer.
const opsSlowDelay = 1500 * time.Millisecond

// opsSlowBody is the body the slow backend answers request id with.
func opsSlowBody(id string, size int) []byte {
	pattern := []byte(id + ";")
	return bytes.Repeat(pattern, size/len(pattern)+1)[:size]
}

// opsStartSlowBackend starts a backend that answers GET ?id=ID&size=N with
// opsSlowBody(ID, N) once hold is closed or after wait, whichever comes
// first (a nil hold: after wait), and sends ID on arrived as each request
// arrives.
func opsStartSlowBackend(t *testing.T, arrived chan<- string, hold <-chan struct{}, wait time.Duration) *lbBackend {
	t.Helper()
	return lbStartBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		size, err := strconv.Atoi(r.URL.Query().Get("size"))
		if err != nil || size <= 0 {
			http.Error(w, "want ?size=N", http.StatusBadRequest)
			return
		}
		select {
		case arrived <- id:
		default:
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-hold:
		case <-timer.C:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(opsSlowBody(id, size))
	})
}

// opsH2Watch is one slow request on a raw h2c connection, read frame by
// frame until the server's GOAWAY and the end of the response.
type opsH2Watch struct {
	done chan struct{} // closed when the fields below are final
	// goAway is set when a GOAWAY frame arrived, with its fields.
	goAway           bool
	goAwayAt         time.Time
	goAwayLastStream uint32
	goAwayCode       http2.ErrCode
	// status, body and ended describe stream 1's response; endedAt is when
	// its last frame arrived.
	status  string
	body    []byte
	ended   bool
	endedAt time.Time
	err     error
}

// opsH2Start opens an h2c connection to addr, sends GET path on stream 1
// and reads frames in the background until both a GOAWAY and the end of
// stream 1 arrived, the connection fails, or 30s pass.
func opsH2Start(t *testing.T, addr, authority, path string) *opsH2Watch {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatalf("h2c preface: %v", err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatalf("h2c settings: %v", err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: authority}, {Name: ":path", Value: path},
	} {
		_ = enc.WriteField(f)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatalf("h2c headers: %v", err)
	}
	w := &opsH2Watch{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; i < 10000 && !(w.goAway && w.ended); i++ {
			f, err := fr.ReadFrame()
			if err != nil {
				w.err = err
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = fr.WritePing(true, f.Data)
				}
			case *http2.GoAwayFrame:
				w.goAway, w.goAwayAt, w.goAwayLastStream, w.goAwayCode = true, time.Now(), f.LastStreamID, f.ErrCode
			case *http2.RSTStreamFrame:
				w.err = fmt.Errorf("stream %d reset: %v", f.StreamID, f.ErrCode)
				return
			case *http2.MetaHeadersFrame:
				if f.StreamID == 1 {
					if w.status == "" {
						w.status = f.PseudoValue("status")
					}
					if f.StreamEnded() {
						w.ended, w.endedAt = true, time.Now()
					}
				}
			case *http2.DataFrame:
				if f.StreamID == 1 {
					w.body = append(w.body, f.Data()...)
					if f.StreamEnded() {
						w.ended, w.endedAt = true, time.Now()
					}
				}
			}
		}
	}()
	return w
}

// TestGracefulShutdown checks SIGTERM on a data plane: requests in flight
// over HTTP/1.1 and HTTP/2 complete, HTTP/2 clients get a GOAWAY, new
// connections are refused, and the process exits 0 without waiting out the
// drain timeout; a WebSocket session goes on echoing during the drain and
// then gets a close frame 1001 (going away) on both sides.
func TestGracefulShutdown(t *testing.T) {
	t.Run("requests", opsShutdownRequests)
	t.Run("websocket", opsShutdownWebSocket)
}

func opsShutdownRequests(t *testing.T) {
	const drain = 10 * time.Second
	ca := newTestCA(t, "shutdown e2e CA")
	certFile, keyFile := ca.issue(t, "shutdown.test", "shutdown.test").writeFiles(t, t.TempDir(), "frontend")
	tlsAddr := freeAddr(t)
	e := opsStart(t, "dp-shutdown", "--drain-timeout", drain.String(),
		"--tls-listen", tlsAddr, "--tls-cert", certFile, "--tls-key", keyFile)
	arrived := make(chan string, 64)
	be := opsStartSlowBackend(t, arrived, nil, opsSlowDelay)
	e.apply(t, "pool", "create", "slow", "--backend", be.addr)

	// 5 HTTP/1.1 requests (5 connections), 5 HTTP/2 requests on one h2c
	// connection, 5 on one TLS connection, and one stream on a raw h2c
	// connection.
	const perProto, kinds, size, rawSize = 5, 3, 100000, 1000
	type result struct {
		id    string
		proto string
		r     opsResult
	}
	results := make(chan result, kinds*perProto)
	var completed atomic.Int64
	h1 := newClient()
	defer h1.CloseIdleConnections()
	h2c, h2tr := opsH2CClient()
	defer h2tr.CloseIdleConnections()
	h2tls := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool(), ServerName: "shutdown.test"}}
	defer h2tls.CloseIdleConnections()
	for i := 0; i < perProto; i++ {
		for _, cl := range []struct {
			kind, proto, base string
			c                 *http.Client
		}{
			{"HTTP/1.1", "HTTP/1.1", e.url, h1},
			{"h2c", "HTTP/2.0", e.url, h2c},
			{"h2", "HTTP/2.0", "https://" + tlsAddr, &http.Client{Transport: h2tls, Timeout: 20 * time.Second}},
		} {
			id := fmt.Sprintf("%s-%d", cl.kind, i)
			go func() {
				r := opsDo(cl.c, http.MethodGet, fmt.Sprintf("%s/slow?id=%s&size=%d", cl.base, id, size), "", nil)
				completed.Add(1)
				results <- result{id: id, proto: cl.proto, r: r}
			}()
		}
	}
	raw := opsH2Start(t, e.dp.addr, e.dp.addr, fmt.Sprintf("/slow?id=raw&size=%d", rawSize))
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for n := 0; n < kinds*perProto+1; n++ {
		select {
		case <-arrived:
		case <-timer.C:
			t.Fatalf("only %d of %d slow requests reached the backend within 10s", n, kinds*perProto+1)
		}
	}

	sent := time.Now()
	opsSignal(t, e.dp.proc, syscall.SIGTERM)

	// The listener closes while the requests are still in flight.
	refusedAt, inFlightThen := time.Duration(-1), int64(-1)
	for i := 0; i < 100 && time.Since(sent) < 2*time.Second; i++ {
		if opsRefused(e.dp.addr) {
			refusedAt, inFlightThen = time.Since(sent), kinds*perProto-completed.Load()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if refusedAt < 0 {
		t.Errorf("connections to %s were still accepted 2s after SIGTERM", e.dp.addr)
	} else {
		t.Logf("new connections refused %v after SIGTERM, with %d of %d client requests still in flight",
			refusedAt.Round(time.Millisecond), inFlightThen, kinds*perProto)
		if inFlightThen != kinds*perProto {
			t.Errorf("new connections were refused only after %d requests had completed (%v after SIGTERM); want the listener closed while all were in flight",
				kinds*perProto-inFlightThen, refusedAt)
		}
	}

	resultsTimer := time.NewTimer(15 * time.Second)
	defer resultsTimer.Stop()
	for n := 0; n < kinds*perProto; n++ {
		select {
		case res := <-results:
			want := opsSlowBody(res.id, size)
			if res.r.err != nil || res.r.code != http.StatusOK || res.r.body != string(want) || res.r.proto != res.proto {
				t.Errorf("request %s: %d over %s, %d body bytes (complete and correct: %v), error %v; want 200 over %s with the %d-byte body",
					res.id, res.r.code, res.r.proto, len(res.r.body), res.r.body == string(want), res.r.err, res.proto, size)
			}
		case <-resultsTimer.C:
			t.Fatalf("only %d of %d requests completed within 15s of SIGTERM", n, kinds*perProto)
		}
	}

	select {
	case <-raw.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("raw h2c connection: no GOAWAY and end of stream within 15s of SIGTERM")
	}
	switch {
	case raw.err != nil && !(raw.goAway && raw.ended):
		t.Errorf("raw h2c connection failed before a GOAWAY and the end of stream 1 (GOAWAY %v, ended %v): %v", raw.goAway, raw.ended, raw.err)
	case !raw.goAway:
		t.Errorf("raw h2c connection: no GOAWAY frame")
	case raw.goAwayCode != http2.ErrCodeNo || raw.goAwayLastStream != 1:
		t.Errorf("raw h2c connection: GOAWAY with code %v last stream %d, want NO_ERROR and last stream 1 (the one in flight)",
			raw.goAwayCode, raw.goAwayLastStream)
	case raw.status != "200" || !raw.ended || string(raw.body) != string(opsSlowBody("raw", rawSize)):
		t.Errorf("raw h2c stream 1: status %q, ended %v, %d body bytes; want 200 with the %d-byte body", raw.status, raw.ended, len(raw.body), rawSize)
	case !raw.goAwayAt.Before(raw.endedAt):
		t.Errorf("raw h2c connection: GOAWAY came %v after the end of stream 1; want it while the stream was in flight",
			raw.goAwayAt.Sub(raw.endedAt))
	default:
		t.Logf("raw h2c connection: GOAWAY (NO_ERROR, last stream 1) %v after SIGTERM, stream 1 completed %v after SIGTERM",
			raw.goAwayAt.Sub(sent).Round(time.Millisecond), raw.endedAt.Sub(sent).Round(time.Millisecond))
	}

	opsAwaitExit(t, e.dp.proc, drain+5*time.Second-time.Since(sent))
	exited := time.Since(sent)
	t.Logf("the data plane exited %v after SIGTERM (drain timeout %v)", exited.Round(time.Millisecond), drain)
	if exited >= drain {
		t.Errorf("the data plane exited %v after SIGTERM: it waited out the %v drain timeout although every request had completed %v in",
			exited, drain, opsSlowDelay)
	}
	if got := be.requests.Load(); got != kinds*perProto+1 {
		t.Errorf("the backend got %d requests, want %d (each once)", got, kinds*perProto+1)
	}
}

func opsShutdownWebSocket(t *testing.T) {
	const drain = 2 * time.Second
	e := opsStart(t, "dp-shutdown-ws", "--drain-timeout", drain.String())
	be := lbStartWSBackend(t, "echo")
	e.apply(t, "pool", "create", "ws", "--backend", be.addr)
	const id = "drain-ws"
	c, via := lbWSDial(t, e.dp.addr, id)
	if via != "echo" {
		t.Fatalf("session went to %q, want echo", via)
	}
	wsRoundTrip(t, c, websocket.MessageText, []byte("before SIGTERM"), 5*time.Second)

	sent := time.Now()
	opsSignal(t, e.dp.proc, syscall.SIGTERM)
	// Messages at 0.2s, 0.5s, 0.8s and 1.1s into the 2s drain are echoed.
	for i := 0; i < 4; i++ {
		time.Sleep(time.Until(sent.Add(200*time.Millisecond + time.Duration(i)*300*time.Millisecond)))
		msg := fmt.Sprintf("during the drain %d", i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Write(ctx, websocket.MessageText, []byte(msg))
		var got []byte
		if err == nil {
			_, got, err = c.Read(ctx)
		}
		cancel()
		if err != nil || string(got) != msg {
			t.Fatalf("message %d, %v after SIGTERM: echo %q, error %v; want %q echoed during the drain",
				i, time.Since(sent).Round(time.Millisecond), got, err, msg)
		}
	}

	// Then the session gets a going-away close at the drain deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, data, err := c.Read(ctx)
	closedAt := time.Since(sent)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("client read %v after SIGTERM: %v message %q, error %v; want a close frame with status %d (going away)",
			closedAt.Round(time.Millisecond), typ, data, err, websocket.StatusGoingAway)
	}
	t.Logf("client got close %d %q %v after SIGTERM (drain timeout %v)", ce.Code, ce.Reason, closedAt.Round(time.Millisecond), drain)
	if closedAt < drain || closedAt > drain+2*time.Second {
		t.Errorf("the close frame came %v after SIGTERM, want at the drain deadline (%v, within 2s)", closedAt, drain)
	}
	end := be.awaitEnd(t, id, 5*time.Second)
	if st := websocket.CloseStatus(end); st != websocket.StatusGoingAway {
		t.Errorf("the backend's session ended with %v (status %v), want a close frame with status %d (going away)",
			end, st, websocket.StatusGoingAway)
	}
	opsAwaitExit(t, e.dp.proc, drain+5*time.Second-time.Since(sent))
	t.Logf("the data plane exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
}
