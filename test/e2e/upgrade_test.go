package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestZeroDowntimeUpgrade replaces a data plane (A, started with
// --upgrade-socket) by a new process (B, the same flags plus --upgrade)
// under a steady load of HTTP/1.1, h2c and TLS (HTTP/2) keep-alive clients,
// and checks the promises of a zero-downtime upgrade: no request fails;
// requests in flight at the handover (HTTP/1.1, h2c and TLS) complete on A;
// connections idle at the handover are closed cleanly (EOF, never a reset)
// and a keep-alive client reconnects to B; a WebSocket session on A goes on
// echoing during A's drain and closes normally before A exits 0, without A
// waiting out its drain timeout; B then serves the proxy, TLS and admin
// sockets (new connections, both backends, its own /metrics) and exits 0 on
// SIGTERM.
func TestZeroDowntimeUpgrade(t *testing.T) {
	const (
		drain     = 5 * time.Second
		idleConns = 20
		slowSize  = 100000
		perClient = 5000 // requests per load client, at most
		msgs      = 4    // WebSocket messages echoed during A's drain
	)
	ca := newTestCA(t, "upgrade e2e CA")
	certFile, keyFile := ca.issue(t, "upgrade.test", "upgrade.test").writeFiles(t, t.TempDir(), "frontend")
	tlsCfg := &tls.Config{ServerName: "upgrade.test", RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}
	cp := startControlPlane(t, "", "")
	alpha, bravo := upgStartDemoBackend(t, "alpha"), upgStartDemoBackend(t, "bravo")
	slow := upgStartSlowBackend(t)
	wsb := lbStartWSBackend(t, "echo")

	addr, admin, tlsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	args := []string{"--controlplane", cp.addr, "--node-id", "dp-upgrade", "--listen", addr, "--admin-listen", admin,
		"--tls-listen", tlsAddr, "--tls-cert", certFile, "--tls-key", keyFile, "--log-level", "debug",
		"--drain-timeout", drain.String(), "--upgrade-socket", filepath.Join(t.TempDir(), "upgrade.sock")}
	a := &dataPlane{proc: start(t, "lb-dataplane", args...), addr: addr, admin: admin}
	lbFailOnRace(t, cp.proc, a.proc)
	waitFor(t, 20*time.Second, "data plane A to answer /healthz and listen on "+tlsAddr, func() bool {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		c, err := tls.Dial("tcp", tlsAddr, tlsCfg)
		if err != nil {
			return false
		}
		c.Close()
		return resp.StatusCode == http.StatusOK
	})
	lbApply(t, cp.addr, []*dataPlane{a}, "pool", "create", "web", "--backend", alpha, "--backend", bravo)
	lbApply(t, cp.addr, []*dataPlane{a}, "pool", "create", "slow", "--path-prefix", "/slow/", "--backend", slow.addr)
	version := lbApply(t, cp.addr, []*dataPlane{a}, "pool", "create", "ws", "--path-prefix", "/echo", "--backend", wsb.addr)
	before := opsScrape(t, admin)
	startA := before.sum("process_start_time_seconds")
	if got := before.sum("lb_dataplane_config_version"); got != float64(version) || startA == 0 {
		t.Fatalf("A's /metrics: lb_dataplane_config_version %v (want %d), process_start_time_seconds %v", got, version, startA)
	}

	// A WebSocket session, idle connections and an idle keep-alive client,
	// all on A.
	const wsID = "upgrade-ws"
	ws, via := lbWSDial(t, addr, wsID)
	if via != "echo" {
		t.Fatalf("the WebSocket session went to %q, want echo", via)
	}
	wsRoundTrip(t, ws, websocket.MessageText, []byte("before the upgrade"), 5*time.Second)
	idle := make([]*upgIdleConn, idleConns)
	for i := range idle {
		idle[i] = upgOpenIdle(t, addr, fmt.Sprintf("/idle/%d", i), time.Minute)
	}
	var traceMu sync.Mutex
	var gotConns []httptrace.GotConnInfo
	keepAlive := newClient()
	defer keepAlive.CloseIdleConnections()
	keepAliveGet := func(uri string) opsResult {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			traceMu.Lock()
			defer traceMu.Unlock()
			gotConns = append(gotConns, i)
		}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+uri, nil)
		resp, err := keepAlive.Do(req)
		if err != nil {
			return opsResult{err: err}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return opsResult{code: resp.StatusCode, proto: resp.Proto, hdr: resp.Header, body: string(b), err: err}
	}
	if r := keepAliveGet("/keepalive/0"); r.err != nil || r.code != http.StatusOK {
		t.Fatalf("keep-alive client, first request: %d %q %v", r.code, r.body, r.err)
	}

	// Steady load: 4 HTTP/1.1 clients, 2 h2c clients and one TLS client
	// (HTTP/2 by ALPN), each on keep-alive connections.
	var clients []upgClient
	for i := 0; i < 4; i++ {
		c := newClient()
		defer c.CloseIdleConnections()
		clients = append(clients, upgClient{name: fmt.Sprintf("h1-%d", i), url: "http://" + addr, proto: "HTTP/1.1", c: c})
	}
	for i := 0; i < 2; i++ {
		c, tr := opsH2CClient()
		defer tr.CloseIdleConnections()
		clients = append(clients, upgClient{name: fmt.Sprintf("h2c-%d", i), url: "http://" + addr, proto: "HTTP/2.0", c: c})
	}
	newTLSClient := func() *http.Client {
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			TLSClientConfig: tlsCfg.Clone(), ForceAttemptHTTP2: true, DisableCompression: true}}
	}
	tlsLoad := newTLSClient()
	defer tlsLoad.CloseIdleConnections()
	clients = append(clients, upgClient{name: "tls-h2", url: "https://" + tlsAddr, proto: "HTTP/2.0", c: tlsLoad})
	load := upgStartLoad(t, []string{"alpha", "bravo"}, clients, perClient, 90*time.Second)
	aExited := make(chan time.Time, 1)
	go func() {
		<-a.done
		load.after.Store(true)
		aExited <- time.Now()
	}()

	// Slow requests held by the backend until after the handover: three
	// over HTTP/1.1 (three connections), three over one h2c connection and
	// one over TLS (HTTP/2).
	type slowResult struct {
		id, proto string
		r         opsResult
	}
	h1Slow := newClient()
	defer h1Slow.CloseIdleConnections()
	h2cSlow, h2cSlowTr := opsH2CClient()
	defer h2cSlowTr.CloseIdleConnections()
	tlsSlow := newTLSClient()
	defer tlsSlow.CloseIdleConnections()
	slowClients := []struct {
		id, url, proto string
		c              *http.Client
	}{
		{"h1-0", "http://" + addr, "HTTP/1.1", h1Slow}, {"h1-1", "http://" + addr, "HTTP/1.1", h1Slow},
		{"h1-2", "http://" + addr, "HTTP/1.1", h1Slow},
		{"h2c-0", "http://" + addr, "HTTP/2.0", h2cSlow}, {"h2c-1", "http://" + addr, "HTTP/2.0", h2cSlow},
		{"h2c-2", "http://" + addr, "HTTP/2.0", h2cSlow},
		{"tls-0", "https://" + tlsAddr, "HTTP/2.0", tlsSlow},
	}
	slowResults := make(chan slowResult, len(slowClients))
	for _, sc := range slowClients {
		go func() {
			r := opsDo(sc.c, http.MethodGet, fmt.Sprintf("%s/slow/?id=%s&size=%d", sc.url, sc.id, slowSize), "", nil)
			slowResults <- slowResult{id: sc.id, proto: sc.proto, r: r}
		}()
	}
	arrivedTimer := time.NewTimer(10 * time.Second)
	defer arrivedTimer.Stop()
	for n := 0; n < len(slowClients); n++ {
		select {
		case <-slow.arrived:
		case <-arrivedTimer.C:
			t.Fatalf("only %d of %d slow requests reached the backend within 10s", n, len(slowClients))
		}
	}
	time.Sleep(300 * time.Millisecond) // some load on A before the upgrade
	for i, ic := range idle {
		select {
		case <-ic.done:
			t.Fatalf("idle connection %d ended before the upgrade: %v", i, ic.err)
		default:
		}
	}

	// The upgrade.
	bStarted := time.Now()
	b := &dataPlane{proc: start(t, "lb-dataplane", append(args, "--upgrade")...), addr: addr, admin: admin}
	lbFailOnRace(t, b.proc)
	handover := upgWaitLog(t, a.proc, "a new data plane took over the listening sockets; draining", 40*time.Second)
	upgWaitLog(t, b.proc, "handover complete", 10*time.Second)
	t.Logf("A began draining %v after B started", handover.Sub(bStarted).Round(time.Millisecond))

	// The WebSocket session on A goes on during A's drain.
	for i := 0; i < msgs; i++ {
		time.Sleep(time.Until(handover.Add(200*time.Millisecond + time.Duration(i)*300*time.Millisecond)))
		msg := fmt.Sprintf("during the drain %d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := ws.Write(ctx, websocket.MessageText, []byte(msg))
		var got []byte
		if err == nil {
			_, got, err = ws.Read(ctx)
		}
		cancel()
		if err != nil || string(got) != msg {
			t.Fatalf("WebSocket message %d, %v after the handover: echo %q, error %v; want %q echoed during A's drain",
				i, time.Since(handover).Round(time.Millisecond), got, err, msg)
		}
	}
	for n := 0; n < len(slowClients); n++ {
		select {
		case r := <-slowResults:
			t.Fatalf("slow request %s completed before the backend let it (%d %v)", r.id, r.r.code, r.r.err)
		default:
		}
	}
	slow.release()
	time.Sleep(time.Until(handover.Add(200*time.Millisecond + msgs*300*time.Millisecond)))
	select {
	case <-a.done:
		t.Fatalf("A exited (%v) before the WebSocket session ended", a.err)
	default:
	}
	if err := ws.Close(websocket.StatusNormalClosure, "exchange done"); err != nil {
		t.Fatalf("closing the WebSocket session %v after the handover: %v; want the close handshake completed",
			time.Since(handover).Round(time.Millisecond), err)
	}
	wsClosed := time.Now()
	if end := wsb.awaitEnd(t, wsID, 5*time.Second); websocket.CloseStatus(end) != websocket.StatusNormalClosure {
		t.Errorf("the backend's session ended with %v, want the client's close frame %d (normal closure)", end, websocket.StatusNormalClosure)
	}

	slowTimer := time.NewTimer(15 * time.Second)
	defer slowTimer.Stop()
	for n := 0; n < len(slowClients); n++ {
		select {
		case res := <-slowResults:
			want := string(opsSlowBody(res.id, slowSize))
			if res.r.err != nil || res.r.code != http.StatusOK || res.r.proto != res.proto || res.r.body != want {
				t.Errorf("slow request %s: %d over %s, %d body bytes (complete and correct: %v), error %v; want 200 over %s with the %d-byte body",
					res.id, res.r.code, res.r.proto, len(res.r.body), res.r.body == want, res.r.err, res.proto, slowSize)
			}
		case <-slowTimer.C:
			t.Fatalf("only %d of %d slow requests completed within 15s of their release", n, len(slowClients))
		}
	}
	if got := slow.requests.Load(); got != int64(len(slowClients)) {
		t.Errorf("the slow backend got %d requests, want %d (each once)", got, len(slowClients))
	}

	// A exits 0 once its work is done, well before its drain deadline.
	opsAwaitExit(t, a.proc, time.Until(handover.Add(drain+5*time.Second)))
	exitTimer := time.NewTimer(5 * time.Second)
	defer exitTimer.Stop()
	var exited time.Time
	select {
	case exited = <-aExited:
	case <-exitTimer.C:
		t.Fatal("A's exit was not observed")
	}
	t.Logf("A exited %v after the handover, %v after the WebSocket session closed (drain timeout %v)",
		exited.Sub(handover).Round(time.Millisecond), exited.Sub(wsClosed).Round(time.Millisecond), drain)
	if exited.Sub(handover) >= drain-time.Second {
		t.Errorf("A exited %v after the handover: it (nearly) waited out its %v drain timeout although its work was done %v in",
			exited.Sub(handover), drain, wsClosed.Sub(handover))
	}
	for _, bad := range []string{"drain timed out", "closing WebSocket tunnels still open"} {
		if strings.Contains(a.log.String(), bad) {
			t.Errorf("A logged %q during its drain", bad)
		}
	}

	// Idle connections were closed cleanly by A, not reset, and not before
	// the upgrade.
	resets, others := 0, 0
	var lastEOF time.Time
	for i, ic := range idle {
		select {
		case <-ic.done:
		default:
			t.Errorf("idle connection %d still open after A exited", i)
			others++
			continue
		}
		switch {
		case errors.Is(ic.err, io.EOF) && ic.extra == 0 && ic.at.After(bStarted):
			if ic.at.After(lastEOF) {
				lastEOF = ic.at
			}
		case upgIsReset(ic.err):
			resets++
			t.Errorf("idle connection %d was reset (%v) %v after the handover; want a clean close (EOF)", i, ic.err, ic.at.Sub(handover))
		default:
			others++
			t.Errorf("idle connection %d: read %d bytes then %v, %v after the handover; want EOF after the upgrade began",
				i, ic.extra, ic.err, ic.at.Sub(handover))
		}
	}
	t.Logf("idle connections: %d closed cleanly (the last %v after B started, A logged its drain %v after B started), %d reset, %d otherwise",
		idleConns-resets-others, lastEOF.Sub(bStarted).Round(time.Millisecond), handover.Sub(bStarted).Round(time.Millisecond), resets, others)

	// The load goes on against B for a second, then stops.
	time.Sleep(time.Second)
	res := load.finish()
	t.Logf("load: %d requests succeeded (%d sent after A exited), %d failed; by backend %v (after A exited: %v)",
		res.ok, res.okAfter, len(res.failures), res.byBackend, res.after)
	if len(res.failures) > 0 {
		t.Errorf("%d of %d load requests failed; the first: %s", len(res.failures), len(res.failures)+res.ok,
			strings.Join(lbFirst(res.failures, 10), "\n  "))
	}
	for _, be := range []string{"alpha", "bravo"} {
		if res.after[be] == 0 {
			t.Errorf("backend %s answered no load request sent after A exited (%v)", be, res.after)
		}
	}

	// The keep-alive client's connection to A is gone; its next request
	// goes over a new connection, to B.
	traceMu.Lock()
	gotConns = nil
	traceMu.Unlock()
	if r := keepAliveGet("/keepalive/1"); r.err != nil || r.code != http.StatusOK || r.body != upgDemoBody(r.hdr.Get("X-Backend"), "/keepalive/1") {
		t.Errorf("keep-alive client, request after the upgrade: %d %q %v; want 200 from a demo backend", r.code, r.body, r.err)
	}
	traceMu.Lock()
	if len(gotConns) == 0 || gotConns[len(gotConns)-1].Reused {
		t.Errorf("keep-alive client, request after the upgrade: connections %+v; want it answered over a new connection", gotConns)
	}
	traceMu.Unlock()

	// B accepts new connections on every socket: the proxy (both backends,
	// in turn), TLS and admin.
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		uri := fmt.Sprintf("/after/%d", i)
		r := opsMustDo(t, fresh, http.MethodGet, "http://"+addr+uri, "", nil, http.StatusOK)
		be := r.hdr.Get("X-Backend")
		if r.body != upgDemoBody(be, uri) {
			t.Errorf("GET %s on a new connection: X-Backend %q, body %q", uri, be, r.body)
		}
		seen[be]++
	}
	if seen["alpha"] != 10 || seen["bravo"] != 10 {
		t.Errorf("20 requests on new connections after the upgrade went to %v; want 10 to alpha and 10 to bravo (round robin)", seen)
	}
	tlsFresh := newTLSClient()
	if r := opsMustDo(t, tlsFresh, http.MethodGet, "https://"+tlsAddr+"/after/tls", "", nil, http.StatusOK); r.proto != "HTTP/2.0" {
		t.Errorf("TLS request after the upgrade answered over %s, want HTTP/2.0", r.proto)
	}
	tlsFresh.CloseIdleConnections()
	after := opsScrape(t, admin)
	if got := after.sum("lb_dataplane_config_version"); got != float64(version) {
		t.Errorf("B's lb_dataplane_config_version = %v, want %d (the control plane's)", got, version)
	}
	if startB := after.sum("process_start_time_seconds"); startB <= startA {
		t.Errorf("the admin listener after the upgrade reports process_start_time_seconds %v, A's was %v; want B's, later", startB, startA)
	}
	if !strings.Contains(b.log.String(), "took over listening sockets from the running data plane") {
		t.Errorf("B did not log that it took the listening sockets over")
	}

	// B stops cleanly on SIGTERM.
	for _, cl := range clients {
		cl.c.CloseIdleConnections()
	}
	opsSignal(t, b.proc, syscall.SIGTERM)
	opsAwaitExit(t, b.proc, 15*time.Second)
}
