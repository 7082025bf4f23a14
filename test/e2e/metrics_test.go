package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestDataPlaneMetrics sends known traffic through a data plane and checks
// that its /metrics add up exactly: requests by pool, backend, method and
// status class, upstream requests and connections (the connection reuse
// ratio), body bytes, durations, unrouted requests, retries and connect
// failures, downstream connections by protocol, the configuration version
// and the served certificate's expiry.
func TestDataPlaneMetrics(t *testing.T) {
	testStart := time.Now()
	ca := newTestCA(t, "metrics e2e CA")
	leaf := ca.issue(t, "metrics.test", "metrics.test")
	certFile, keyFile := leaf.writeFiles(t, t.TempDir(), "frontend")
	blk, _ := pem.Decode(leaf.certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	e := opsStart(t, "dp-metrics", "--tls-listen", freeAddr(t), "--tls-cert", certFile, "--tls-key", keyFile)
	// Names of different lengths, so that the bytes of each backend differ.
	a, b, c := startBackend(t, "alpha"), startBackend(t, "bravo-backend"), startBackend(t, "charlie")
	byName := map[string]*backend{a.name: a, b.name: b}
	dead := freeAddr(t) // nothing listens there: connects are refused
	e.apply(t, "pool", "create", "web", "--host", "web.test", "--backend", a.addr, "--backend", b.addr)
	version := e.apply(t, "pool", "create", "flaky", "--host", "flaky.test", "--backend", dead, "--backend", c.addr)

	const (
		reqs     = "lb_dataplane_requests_total"
		upReqs   = "lb_dataplane_upstream_requests_total"
		upConns  = "lb_dataplane_upstream_connections_total"
		upFails  = "lb_dataplane_upstream_connect_failures_total"
		respB    = "lb_dataplane_response_body_bytes_total"
		reqB     = "lb_dataplane_request_body_bytes_total"
		duration = "lb_dataplane_request_duration_seconds"
		upDur    = "lb_dataplane_upstream_response_duration_seconds"
		downConn = "lb_dataplane_downstream_connections"
		accepted = "lb_dataplane_downstream_connections_accepted_total"
		retries  = "lb_dataplane_retries_total"
	)

	// What the clients saw of pool web, per backend name.
	gets := map[string]int{}      // GET requests answered 200
	bodyBytes := map[string]int{} // response body bytes read
	webTotal := 0                 // requests of any method to pool web
	record := func(r opsResult, get bool) {
		t.Helper()
		be := byName[r.body]
		if be == nil || r.hdr.Get("X-Backend") != r.body {
			t.Fatalf("pool web answered %q (X-Backend %q); want alpha or bravo-backend", r.body, r.hdr.Get("X-Backend"))
		}
		if get {
			gets[r.body]++
		}
		bodyBytes[r.body] += len(r.body)
		webTotal++
	}
	// checkWeb checks the counters of pool web against what the clients saw.
	checkWeb := func(m opsMetrics, phase string) {
		t.Helper()
		for name, be := range byName {
			if got := m.sum(reqs, "pool", "web", "backend", be.addr, "method", "GET", "code", "2xx"); got != float64(gets[name]) {
				t.Errorf("%s: %s{pool=web,backend=%s(%s),method=GET,code=2xx} = %v, want %d (the 200s the client got from it)%s",
					phase, reqs, be.addr, name, got, gets[name], m.describe(reqs))
			}
			if got := m.sum(respB, "pool", "web", "backend", be.addr); got != float64(bodyBytes[name]) {
				t.Errorf("%s: %s{pool=web,backend=%s(%s)} = %v, want %d (the body bytes the client read from it)",
					phase, respB, be.addr, name, got, bodyBytes[name])
			}
			if got, want := m.sum(upConns, "backend", be.addr), be.conns.Load(); got != float64(want) {
				t.Errorf("%s: %s{backend=%s(%s)} = %v, want %d (the connections the backend accepted)", phase, upConns, be.addr, name, got, want)
			}
		}
		if got := m.sum(upReqs, "pool", "web"); got != float64(webTotal) {
			t.Errorf("%s: %s{pool=web} sums to %v, want %d%s", phase, upReqs, got, webTotal, m.describe(upReqs))
		}
		if got := m.histCount(duration, "pool", "web"); got != uint64(webTotal) {
			t.Errorf("%s: %s{pool=web} count = %d, want %d", phase, duration, got, webTotal)
		}
		if got := m.histCount(upDur, "pool", "web"); got != uint64(webTotal) {
			t.Errorf("%s: %s{pool=web} count = %d, want %d", phase, upDur, got, webTotal)
		}
	}

	// 100 GETs over one keep-alive connection: 50 to each backend.
	c1 := newClient()
	for i := 0; i < 100; i++ {
		record(opsMustDo(t, c1, http.MethodGet, e.url+"/seq", "web.test", nil, http.StatusOK), true)
	}
	m := opsScrape(t, e.dp.admin)
	web2xx := m.series(reqs, "pool", "web", "method", "GET", "code", "2xx")
	if len(web2xx) != 2 || m.sum(reqs, "pool", "web", "method", "GET", "code", "2xx") != 100 {
		t.Fatalf("after 100 GETs: want two %s{pool=web,method=GET,code=2xx} series summing to 100;%s", reqs, m.describe(reqs))
	}
	for name, be := range byName {
		if got := m.sum(reqs, "pool", "web", "backend", be.addr, "method", "GET", "code", "2xx"); got != 50 || gets[name] != 50 {
			t.Errorf("after 100 GETs: %s(%s) counted %v requests, the client got %d answers from it; want 50 and 50 (round robin)",
				name, be.addr, got, gets[name])
		}
		if got := m.sum(upConns, "backend", be.addr); got != 1 {
			t.Errorf("after 100 sequential GETs over one client connection: %s{backend=%s} = %v, want 1 (one reused connection)", upConns, be.addr, got)
		}
	}
	checkWeb(m, "after 100 GETs")
	if got := m.sum(reqB, "pool", "web"); got != 0 {
		t.Errorf("after 100 GETs: %s{pool=web} = %v, want 0 (no bodies sent)", reqB, got)
	}
	if got := m.sum(downConn, "listener", "http", "protocol", "http1"); got != 1 {
		t.Errorf("with one keep-alive client: %s{listener=http,protocol=http1} = %v, want 1%s", downConn, got, m.describe(downConn))
	}
	if got := m.sum(downConn, "listener", "http", "protocol", "h2"); got != 0 {
		t.Errorf("with no HTTP/2 client: %s{listener=http,protocol=h2} = %v, want 0", downConn, got)
	}
	if got := m.sum(accepted, "listener", "http"); got != 1 {
		t.Errorf("after one client connection: %s{listener=http} = %v, want 1", accepted, got)
	}

	// An h2c client holds a second connection, counted as h2.
	h2c, h2tr := opsH2CClient()
	r := opsMustDo(t, h2c, http.MethodGet, e.url+"/h2", "web.test", nil, http.StatusOK)
	if r.proto != "HTTP/2.0" {
		t.Fatalf("h2c client got %s, want HTTP/2.0", r.proto)
	}
	record(r, true)
	m = opsScrape(t, e.dp.admin)
	if got := m.sum(downConn, "listener", "http", "protocol", "h2"); got != 1 {
		t.Errorf("with an h2c client: %s{listener=http,protocol=h2} = %v, want 1%s", downConn, got, m.describe(downConn))
	}
	if got := m.sum(downConn, "listener", "http", "protocol", "http1"); got != 1 {
		t.Errorf("with an h2c client and an HTTP/1.1 client: %s{listener=http,protocol=http1} = %v, want 1", downConn, got)
	}
	if got := m.sum(accepted, "listener", "http"); got != 2 {
		t.Errorf("after two client connections: %s{listener=http} = %v, want 2", accepted, got)
	}
	checkWeb(m, "after the h2c request")

	// A host no pool serves: 404, counted without pool or backend.
	opsMustDo(t, c1, http.MethodGet, e.url+"/nowhere", "other.test", nil, http.StatusNotFound)
	m = opsScrape(t, e.dp.admin)
	if got := m.sum(reqs, "pool", "", "backend", "", "method", "GET", "code", "4xx"); got != 1 {
		t.Errorf("after one unrouted GET: %s{pool=\"\",backend=\"\",method=GET,code=4xx} = %v, want 1%s", reqs, got, m.describe(reqs))
	}
	if got := m.sum(reqs, "pool", ""); got != 1 {
		t.Errorf("after one unrouted request: %s{pool=\"\"} sums to %v, want 1", reqs, got)
	}

	// A POST with a 10-byte body.
	post := []byte("0123456789")
	r = opsMustDo(t, c1, http.MethodPost, e.url+"/post", "web.test", post, http.StatusOK)
	record(r, false)
	posted := byName[r.body]
	m = opsScrape(t, e.dp.admin)
	for name, be := range byName {
		want := 0.0
		if be == posted {
			want = float64(len(post))
		}
		if got := m.sum(reqB, "pool", "web", "backend", be.addr); got != want {
			t.Errorf("after a POST of %d bytes answered by %s: %s{pool=web,backend=%s(%s)} = %v, want %v",
				len(post), posted.name, reqB, be.addr, name, got, want)
		}
	}
	if got := m.sum(reqs, "pool", "web", "backend", posted.addr, "method", "POST", "code", "2xx"); got != 1 {
		t.Errorf("after one POST: %s{pool=web,backend=%s,method=POST,code=2xx} = %v, want 1", reqs, posted.addr, got)
	}
	checkWeb(m, "after the POST")

	// A steady keep-alive load: 4 clients, 250 GETs each.
	const clients, perClient = 4, 250
	type tally struct {
		gets, bytes map[string]int
		failures    []string
	}
	tallies := make([]tally, clients)
	loadClients := make([]*http.Client, clients)
	var wg sync.WaitGroup
	loadStart := time.Now()
	for i := range clients {
		loadClients[i] = newClient()
		tallies[i] = tally{gets: map[string]int{}, bytes: map[string]int{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tl := &tallies[i]
			for n := 0; n < perClient; n++ {
				r := opsDo(loadClients[i], http.MethodGet, e.url+"/load", "web.test", nil)
				if r.err != nil || r.code != http.StatusOK || byName[r.body] == nil {
					tl.failures = append(tl.failures, fmt.Sprintf("client %d request %d: %d %q %v", i, n, r.code, r.body, r.err))
					if len(tl.failures) >= 5 {
						return
					}
					continue
				}
				tl.gets[r.body]++
				tl.bytes[r.body] += len(r.body)
			}
		}()
	}
	wg.Wait()
	loadTime := time.Since(loadStart)
	for _, tl := range tallies {
		if len(tl.failures) > 0 {
			t.Fatalf("load requests failed: %v", tl.failures)
		}
		for name, n := range tl.gets {
			gets[name] += n
			bodyBytes[name] += tl.bytes[name]
			webTotal += n
		}
	}
	m = opsScrape(t, e.dp.admin)
	checkWeb(m, "after the load")
	var conns, upstream float64
	for name, be := range byName {
		n := m.sum(upConns, "backend", be.addr)
		if n > 8 {
			t.Errorf("after the load: %s{backend=%s(%s)} = %v, want at most 8 (4 concurrent keep-alive clients)", upConns, be.addr, name, n)
		}
		conns += n
		upstream += m.sum(upReqs, "pool", "web", "backend", be.addr)
	}
	reuse := 1 - conns/upstream
	t.Logf("%d requests to pool web (%d from 4 concurrent keep-alive clients in %v): %v upstream connections for %v upstream requests, reuse ratio %.4f; GETs per backend %v",
		webTotal, clients*perClient, loadTime.Round(time.Millisecond), conns, upstream, reuse, gets)
	if reuse < 0.99 {
		t.Errorf("connection reuse ratio 1 - %v/%v = %.4f, want at least 0.99", conns, upstream, reuse)
	}
	if got := a.requests.Load() + b.requests.Load(); got != int64(webTotal) {
		t.Errorf("the backends of pool web served %d requests, want %d", got, webTotal)
	}
	if got := m.sum(retries, "pool", "web"); got != 0 {
		t.Errorf("%s{pool=web} = %v, want 0 (no backend failed)", retries, got)
	}

	// Pool flaky has a backend that refuses connections: a request that
	// tries it first is retried on charlie.
	for i := 0; i < 2; i++ {
		if r := opsMustDo(t, c1, http.MethodGet, e.url+"/flaky", "flaky.test", nil, http.StatusOK); r.body != c.name {
			t.Fatalf("flaky request %d answered by %q, want %s", i, r.body, c.name)
		}
	}
	m = opsScrape(t, e.dp.admin)
	nRetries := m.sum(retries, "pool", "flaky")
	nFails := m.sum(upFails, "backend", dead)
	t.Logf("2 requests to pool flaky: %v retries, %v connect failures to %s", nRetries, nFails, dead)
	if nRetries < 1 || nRetries > 2 {
		t.Errorf("after 2 requests to a round-robin pool with one refusing backend: %s{pool=flaky} = %v, want 1 or 2%s", retries, nRetries, m.describe(retries))
	}
	if nFails != nRetries {
		t.Errorf("%s{backend=%s} = %v, want %v (one per retry)%s", upFails, dead, nFails, nRetries, m.describe(upFails))
	}
	if got := m.sum(upConns, "backend", dead); got != nFails {
		t.Errorf("%s{backend=%s} = %v, want %v (every connect failed)", upConns, dead, got, nFails)
	}
	if got := m.sum(upReqs, "pool", "flaky", "backend", dead); got != nFails {
		t.Errorf("%s{pool=flaky,backend=%s} = %v, want %v (one per failed attempt)", upReqs, dead, got, nFails)
	}
	if got := m.sum(upReqs, "pool", "flaky", "backend", c.addr); got != 2 {
		t.Errorf("%s{pool=flaky,backend=%s} = %v, want 2", upReqs, c.addr, got)
	}
	if got := m.sum(reqs, "pool", "flaky", "backend", c.addr, "method", "GET", "code", "2xx"); got != 2 {
		t.Errorf("%s{pool=flaky,backend=%s,method=GET,code=2xx} = %v, want 2%s", reqs, c.addr, got, m.describe(reqs))
	}
	if got := m.sum(reqs, "pool", "flaky", "backend", dead); got != 0 {
		t.Errorf("%s{pool=flaky,backend=%s} = %v, want 0 (it answered nothing)", reqs, dead, got)
	}
	for name, be := range byName {
		if got := m.sum(upFails, "backend", be.addr); got != 0 {
			t.Errorf("%s{backend=%s(%s)} = %v, want 0", upFails, be.addr, name, got)
		}
	}

	// Backend state, configuration and certificate gauges.
	for name, be := range byName {
		for _, g := range []struct {
			metric string
			want   float64
		}{
			{"lb_dataplane_backend_healthy", 1},
			{"lb_dataplane_backend_ejected", 0},
			{"lb_dataplane_backend_draining", 0},
			{"lb_dataplane_backend_requests_in_flight", 0},
			{"lb_dataplane_backend_ejections_total", 0},
		} {
			if s := m.series(g.metric, "pool", "web", "backend", be.addr); len(s) != 1 || opsValue(s[0]) != g.want {
				t.Errorf("%s{pool=web,backend=%s(%s)}: want one series = %v;%s", g.metric, be.addr, name, g.want, m.describe(g.metric))
			}
		}
	}
	if got := m.sum("lb_dataplane_websocket_tunnels"); got != 0 {
		t.Errorf("lb_dataplane_websocket_tunnels = %v, want 0", got)
	}
	applied := e.dp.config(t).Version
	if s := m.series("lb_dataplane_config_version"); len(s) != 1 || opsValue(s[0]) != float64(version) || applied != version {
		t.Errorf("lb_dataplane_config_version: want one series = %d (the control plane's last version; /config says %d);%s",
			version, applied, m.describe("lb_dataplane_config_version"))
	}
	if got := m.sum("lb_dataplane_controlplane_connected"); got != 1 {
		t.Errorf("lb_dataplane_controlplane_connected = %v, want 1", got)
	}
	at := m.sum("lb_dataplane_config_applied_timestamp_seconds")
	if lo, hi := float64(testStart.Unix()), float64(time.Now().Unix()+1); at < lo || at > hi {
		t.Errorf("lb_dataplane_config_applied_timestamp_seconds = %v, want between %v and %v (during the test)", at, lo, hi)
	}
	const expiry = "lb_dataplane_certificate_expiry_timestamp_seconds"
	if s := m.series(expiry); len(s) != 1 || opsLabel(s[0], "source") != certFile || opsLabel(s[0], "name") != "metrics.test" ||
		opsValue(s[0]) != float64(cert.NotAfter.Unix()) {
		t.Errorf("%s: want one series {source=%q,name=\"metrics.test\"} = %d (the certificate's NotAfter, %v);%s",
			expiry, certFile, cert.NotAfter.Unix(), cert.NotAfter, m.describe(expiry))
	}

	// Closing the clients closes their connections: the gauges go to 0.
	c1.CloseIdleConnections()
	h2tr.CloseIdleConnections()
	for _, lc := range loadClients {
		lc.CloseIdleConnections()
	}
	var open float64
	for i := 0; i < 250; i++ { // at most ~5s
		m = opsScrape(t, e.dp.admin)
		if open = m.sum(downConn, "listener", "http"); open == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if open != 0 {
		t.Errorf("5s after every client closed its connections: %s{listener=http} still sums to %v%s", downConn, open, m.describe(downConn))
	}
	if got := m.sum(accepted, "listener", "http"); got != 2+clients {
		t.Errorf("%s{listener=http} = %v, want %d (one HTTP/1.1 client, one h2c client, %d load clients)", accepted, got, 2+clients, clients)
	}
}
