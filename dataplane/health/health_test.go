package health_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lb-project/lb/dataplane/health"
	"github.com/lb-project/lb/dataplane/upstream"
	"github.com/lb-project/lb/internal/poolspec"
)

// TestHTTPFlips drives a backend from healthy to unhealthy and back and
// checks the thresholds, the State, onChange and the log.
func TestHTTPFlips(t *testing.T) {
	b := newHTTPBackend(t)
	rec := &recorder{}
	c, logs := newChecker(t, rec.onChange)
	check := fastCheck(poolspec.CheckHTTP)
	check.Path = "/healthz"
	st := newState(b.addr)
	c.Sync([]health.Target{{Pool: "web", Address: b.addr, Check: check, State: st, Scheme: "http"}})

	okAtLeast := func(n int) func() bool {
		return func() bool { s, _ := statusOf(c, b.addr); return s.ConsecutiveOK >= n }
	}
	failAtLeast := func(n int) func() bool {
		return func() bool { s, _ := statusOf(c, b.addr); return s.ConsecutiveFail >= n }
	}
	eventually(t, "first successes", okAtLeast(2))

	// One failure is below the unhealthy threshold of 2.
	b.failN.Store(1)
	eventually(t, "the single 503 to be served", func() bool { return b.failN.Load() == 0 })
	served := time.Now()
	// Probes run one after another: a probe that started after the 503 was
	// served comes after the failure was counted.
	eventually(t, "successes after the single failure", func() bool {
		s, _ := statusOf(c, b.addr)
		return s.LastCheck.After(served) && s.ConsecutiveOK >= 2
	})
	if !st.Healthy() || len(rec.get()) != 0 {
		t.Fatalf("one failure flipped the backend: healthy=%v events=%v", st.Healthy(), rec.get())
	}
	if err := hasAll(logs.String(), "probe failed", `error="status 503"`); err != nil {
		t.Errorf("the single failure was not seen: %v", err)
	}

	b.status.Store(http.StatusServiceUnavailable)
	eventually(t, "backend unhealthy", func() bool { return !st.Healthy() })
	eventually(t, "more failures", failAtLeast(4))
	// (On a loaded machine a probe can time out instead of getting its 503.)
	s := waitStatus(t, c, b.addr, "a 503 reported", func(s health.TargetStatus) bool { return s.LastError == "status 503" })
	if s.Healthy || s.LastCheck.IsZero() || s.ConsecutiveOK != 0 || s.Pool != "web" || s.Type != "http" {
		t.Fatalf("status while failing: %+v", s)
	}
	if got, want := rec.get(), []event{{"web", b.addr, false}}; !slices.Equal(got, want) {
		t.Fatalf("onChange calls = %v, want %v", got, want)
	}
	if err := hasAll(logs.String(), "[WARN]", "pool=web", "backend="+b.addr, "check=http", `error="status 503"`); err != nil {
		t.Errorf("failure log: %v", err)
	}

	b.status.Store(http.StatusOK)
	eventually(t, "backend healthy again", st.Healthy)
	s = waitStatus(t, c, b.addr, "more successes", func(s health.TargetStatus) bool { return s.ConsecutiveOK >= 4 })
	if !s.Healthy || s.LastError != "" || s.ConsecutiveFail != 0 {
		t.Fatalf("status after recovery: %+v", s)
	}
	if got, want := rec.get(), []event{{"web", b.addr, false}, {"web", b.addr, true}}; !slices.Equal(got, want) {
		t.Fatalf("onChange calls = %v, want %v", got, want)
	}
	if err := hasAll(logs.String(), "[INFO]", "back in rotation", "pool=web", "backend="+b.addr, "check=http"); err != nil {
		t.Errorf("recovery log: %v", err)
	}
	if n := b.pathHits("/healthz"); n != int(b.hits.Load()) {
		t.Errorf("%d of %d requests asked for /healthz", n, b.hits.Load())
	}
}

// TestHTTPStatusRange checks the expected status range, and that redirects
// are judged by their own status rather than followed.
func TestHTTPStatusRange(t *testing.T) {
	for _, tc := range []struct {
		code int
		ok   bool
	}{
		{http.StatusNoContent, true},
		{http.StatusMovedPermanently, true}, // Location points at a 500
		{399, true},
		{http.StatusBadRequest, false},
		{http.StatusServiceUnavailable, false},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			b := newHTTPBackend(t)
			b.status.Store(int32(tc.code))
			rec := &recorder{}
			c, _ := newChecker(t, rec.onChange)
			check := fastCheck(poolspec.CheckHTTP)
			check.StatusMin, check.StatusMax = 200, 399
			check.HealthyThreshold, check.UnhealthyThreshold = 1, 1
			st := newState(b.addr)
			// Start from the opposite of the expected verdict.
			st.SetHealthy(!tc.ok, time.Now())
			c.Sync([]health.Target{{Pool: "p", Address: b.addr, Check: check, State: st}})
			eventually(t, "the verdict", func() bool { return st.Healthy() == tc.ok })
			// Probes run one after another, so the flip's onChange has
			// returned once later probes are counted.
			eventually(t, "later probes", func() bool {
				s, _ := statusOf(c, b.addr)
				return s.ConsecutiveOK >= 3 || s.ConsecutiveFail >= 3
			})
			if got := rec.get(); len(got) != 1 || got[0].healthy != tc.ok {
				t.Fatalf("onChange calls = %v", got)
			}
			if n := b.pathHits("/elsewhere"); n != 0 {
				t.Fatalf("redirect followed %d times", n)
			}
		})
	}
}

// TestHTTPHostHeader checks the Host header and User-Agent the backend sees.
func TestHTTPHostHeader(t *testing.T) {
	b1, b2 := newHTTPBackend(t), newHTTPBackend(t)
	c, _ := newChecker(t, nil)
	withHost := fastCheck(poolspec.CheckHTTP)
	withHost.Host = "health.example.com"
	c.Sync([]health.Target{
		{Pool: "p", Address: b1.addr, Check: withHost, State: newState(b1.addr)},
		{Pool: "p", Address: b2.addr, Check: fastCheck(poolspec.CheckHTTP), State: newState(b2.addr)},
	})
	eventually(t, "checks on both backends", func() bool { return b1.hits.Load() >= 2 && b2.hits.Load() >= 2 })
	for _, tc := range []struct {
		b    *httpBackend
		host string
	}{{b1, "health.example.com"}, {b2, b2.addr}} {
		hosts, uas, _, _ := tc.b.seen()
		for i := range hosts {
			if hosts[i] != tc.host || uas[i] != health.UserAgent {
				t.Fatalf("backend %s saw Host %q, User-Agent %q; want %q, %q", tc.b.addr, hosts[i], uas[i], tc.host, health.UserAgent)
			}
		}
	}
}

// TestHTTPTimeout checks that a backend slower than the timeout fails.
func TestHTTPTimeout(t *testing.T) {
	b := newHTTPBackend(t)
	b.slow.Store(true)
	c, _ := newChecker(t, nil)
	st := newState(b.addr)
	c.Sync([]health.Target{{Pool: "p", Address: b.addr, Check: fastCheck(poolspec.CheckHTTP), State: st}})
	eventually(t, "slow backend unhealthy", func() bool { return !st.Healthy() })
	s, _ := statusOf(c, b.addr)
	if s.LastError != "timeout after 40ms" {
		t.Fatalf("LastError = %q", s.LastError)
	}
}

// TestHTTPLargeBody checks that a big body is cut off without failing the
// check.
func TestHTTPLargeBody(t *testing.T) {
	b := newHTTPBackend(t)
	b.bigBody.Store(true)
	c, _ := newChecker(t, nil)
	st := newState(b.addr)
	st.SetHealthy(false, time.Now())
	c.Sync([]health.Target{{Pool: "p", Address: b.addr, Check: fastCheck(poolspec.CheckHTTP), State: st}})
	eventually(t, "healthy", st.Healthy)
}

// TestHTTPConnectionRefused checks the reason given for a dead backend.
func TestHTTPConnectionRefused(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c, _ := newChecker(t, nil)
	st := newState(addr)
	c.Sync([]health.Target{{Pool: "p", Address: addr, Check: fastCheck(poolspec.CheckHTTP), State: st}})
	eventually(t, "unhealthy", func() bool { return !st.Healthy() })
	waitStatus(t, c, addr, "connection refused reported", func(s health.TargetStatus) bool {
		return s.LastError == "dial tcp: connect: connection refused"
	})
}

// TestTCP closes the backend's listener and opens it again on the same port.
func TestTCP(t *testing.T) {
	b := newTCPBackend(t)
	rec := &recorder{}
	c, _ := newChecker(t, rec.onChange)
	st := newState(b.addr)
	c.Sync([]health.Target{{Pool: "db", Address: b.addr, Check: fastCheck(poolspec.CheckTCP), State: st}})
	eventually(t, "connections", func() bool { return b.n.Load() >= 2 })
	if !st.Healthy() {
		t.Fatal("unhealthy while listening")
	}

	b.stop()
	eventually(t, "unhealthy", func() bool { return !st.Healthy() })
	waitStatus(t, c, b.addr, "connection refused reported", func(s health.TargetStatus) bool {
		return s.LastError == "dial tcp: connect: connection refused"
	})
	b.restart(t)
	eventually(t, "healthy again", st.Healthy)
	eventually(t, "later probes", func() bool { s, _ := statusOf(c, b.addr); return s.ConsecutiveOK >= 3 })
	if got, want := rec.get(), []event{{"db", b.addr, false}, {"db", b.addr, true}}; !slices.Equal(got, want) {
		t.Fatalf("onChange calls = %v, want %v", got, want)
	}
}

// startGRPC serves the standard health service on 127.0.0.1:0 with opts.
func startGRPC(t *testing.T, opts ...grpc.ServerOption) (*grpchealth.Server, *countingListener) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &countingListener{Listener: inner}
	srv := grpc.NewServer(opts...)
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("grpc server: %v", err)
		}
	})
	return hs, lis
}

// TestGRPC flips a named service between SERVING and NOT_SERVING.
func TestGRPC(t *testing.T) {
	hs, lis := startGRPC(t)
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_SERVING)
	addr := lis.Addr().String()
	rec := &recorder{}
	c, logs := newChecker(t, rec.onChange)
	check := fastCheck(poolspec.CheckGRPC)
	check.GRPCService = "shop.Cart"
	st := newState(addr)
	c.Sync([]health.Target{{Pool: "cart", Address: addr, Check: check, State: st}})
	eventually(t, "successes", func() bool { s, _ := statusOf(c, addr); return s.ConsecutiveOK >= 3 })

	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_NOT_SERVING)
	eventually(t, "unhealthy", func() bool { return !st.Healthy() })
	eventually(t, "later probes", func() bool { s, _ := statusOf(c, addr); return s.ConsecutiveFail >= 3 })
	waitStatus(t, c, addr, "NOT_SERVING reported", func(s health.TargetStatus) bool { return s.LastError == "status NOT_SERVING" })
	if err := hasAll(logs.String(), "[WARN]", "check=grpc", `error="status NOT_SERVING"`); err != nil {
		t.Errorf("failure log: %v", err)
	}
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_SERVING)
	eventually(t, "healthy again", st.Healthy)
	eventually(t, "more successes", func() bool { s, _ := statusOf(c, addr); return s.ConsecutiveOK >= 3 })
	if got, want := rec.get(), []event{{"cart", addr, false}, {"cart", addr, true}}; !slices.Equal(got, want) {
		t.Fatalf("onChange calls = %v, want %v", got, want)
	}
	if n := lis.n.Load(); n != 1 {
		t.Errorf("checks opened %d connections, want 1 kept for the target's life", n)
	}

	// A service the server does not know fails.
	unknown := check
	unknown.GRPCService = "shop.Nope"
	c.Sync([]health.Target{{Pool: "cart", Address: addr, Check: unknown, State: st}})
	eventually(t, "unknown service unhealthy", func() bool { return !st.Healthy() })
	// (The new connection's first dial can also time out on a loaded machine.)
	waitStatus(t, c, addr, "NotFound reported", func(s health.TargetStatus) bool {
		return strings.HasPrefix(s.LastError, "grpc NotFound: unknown service")
	})
}

// TestGRPCTLS checks gRPC over TLS verified against a test CA.
func TestGRPCTLS(t *testing.T) {
	ca := newCA(t, "test CA")
	cert := ca.serverCert(t, "grpc.backend.test")
	hs, lis := startGRPC(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	addr := lis.Addr().String()
	c, _ := newChecker(t, nil)

	good := newState(addr)
	good.SetHealthy(false, time.Now())
	c.Sync([]health.Target{{Pool: "g", Address: addr, Check: fastCheck(poolspec.CheckGRPC), State: good,
		TLS: &tls.Config{RootCAs: ca.pool(), ServerName: "grpc.backend.test", MinVersion: tls.VersionTLS12}}})
	eventually(t, "healthy over TLS", good.Healthy)

	// Plaintext against a TLS server, and TLS with the wrong name, fail.
	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{
		{"plaintext", nil},
		{"wrong name", &tls.Config{RootCAs: ca.pool(), ServerName: "other.test", MinVersion: tls.VersionTLS12}},
	} {
		st := newState(addr)
		c.Sync([]health.Target{{Pool: "g", Address: addr, Check: fastCheck(poolspec.CheckGRPC), State: st, TLS: tc.tls}})
		eventually(t, tc.name+" unhealthy", func() bool { return !st.Healthy() })
	}
}

// TestHTTPSUpstreamTransport checks HTTPS through transports built by the
// upstream cache: HTTP/1.1 and h2, SNI, and a failed verification.
func TestHTTPSUpstreamTransport(t *testing.T) {
	ca := newCA(t, "test CA")
	b := newTLSBackend(t, ca.serverCert(t, "api.backend.test"))
	cache := upstream.NewCache(upstream.Options{})
	t.Cleanup(cache.CloseIdleConnections) // runs after the checker closes

	transport := func(s upstream.Settings) *upstream.Transport {
		t.Helper()
		tr, err := cache.Transport(s)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	c, _ := newChecker(t, nil)
	for _, tc := range []struct {
		protocol upstream.Protocol
		major    int
	}{{upstream.Auto, 1}, {upstream.H2, 2}} {
		settings := upstream.Settings{Protocol: tc.protocol, TLS: true, ServerName: "api.backend.test", CAPEM: ca.pem}
		st := newState(b.addr)
		st.SetHealthy(false, time.Now())
		c.Sync([]health.Target{{Pool: "api", Address: b.addr, Check: fastCheck(poolspec.CheckHTTP), State: st,
			Transport: transport(settings), Scheme: settings.Scheme()}})
		eventually(t, tc.protocol.String()+" healthy", st.Healthy)
		_, _, snis, protos := b.seen()
		if len(snis) == 0 || snis[len(snis)-1] != "api.backend.test" || protos[len(protos)-1] != tc.major {
			t.Fatalf("%v: backend saw SNIs %q, protocol versions %v; want the last %q over HTTP/%d",
				tc.protocol, snis, protos, "api.backend.test", tc.major)
		}
	}

	other := newCA(t, "other CA")
	settings := upstream.Settings{TLS: true, ServerName: "api.backend.test", CAPEM: other.pem}
	st := newState(b.addr)
	c.Sync([]health.Target{{Pool: "api", Address: b.addr, Check: fastCheck(poolspec.CheckHTTP), State: st,
		Transport: transport(settings), Scheme: "https"}})
	eventually(t, "unverified backend unhealthy", func() bool { return !st.Healthy() })
	// (A handshake can also overrun the 40ms timeout on a loaded machine.)
	waitStatus(t, c, b.addr, "a verification failure reported", func(s health.TargetStatus) bool {
		return strings.HasPrefix(s.LastError, "TLS certificate verification failed: x509: certificate signed by unknown authority")
	})
}

// TestSyncAddRemove checks that Sync starts and stops checks.
func TestSyncAddRemove(t *testing.T) {
	a, b := newHTTPBackend(t), newHTTPBackend(t)
	c, _ := newChecker(t, nil)
	ta := health.Target{Pool: "p", Address: a.addr, Check: fastCheck(poolspec.CheckHTTP), State: newState(a.addr)}
	tb := health.Target{Pool: "p", Address: b.addr, Check: fastCheck(poolspec.CheckHTTP), State: newState(b.addr)}
	addrs := func() []string {
		var out []string
		for _, s := range c.Status() {
			out = append(out, s.Address)
		}
		return out
	}

	c.Sync([]health.Target{ta})
	if got := addrs(); !slices.Equal(got, []string{a.addr}) {
		t.Fatalf("Status after adding a: %v", got)
	}
	eventually(t, "checks on a", func() bool { return a.hits.Load() >= 2 })

	c.Sync([]health.Target{ta, tb, {Pool: "p", Address: "ignored:1"} /* no check type */})
	if got := addrs(); len(got) != 2 {
		t.Fatalf("Status after adding b: %v", got)
	}
	eventually(t, "checks on b", func() bool { return b.hits.Load() >= 2 })

	c.Sync([]health.Target{tb})
	if got := addrs(); !slices.Equal(got, []string{b.addr}) {
		t.Fatalf("Status after removing a: %v", got)
	}
	// Let a request that was on the wire when a's check stopped land, then
	// make sure no more come while b keeps being checked.
	waitHits := func(be *httpBackend, n int64) {
		from := be.hits.Load()
		eventually(t, "more checks on b", func() bool { return be.hits.Load() >= from+n })
	}
	waitHits(b, 2)
	settled := a.hits.Load()
	waitHits(b, 4)
	if n := a.hits.Load(); n != settled {
		t.Fatalf("removed backend got %d more checks", n-settled)
	}

	c.Sync(nil)
	if got := addrs(); len(got) != 0 {
		t.Fatalf("Status after removing all: %v", got)
	}
}

// TestSyncKeepAndRestart checks that an unchanged target keeps its counters
// and a changed one restarts.
func TestSyncKeepAndRestart(t *testing.T) {
	b := newHTTPBackend(t)
	c, _ := newChecker(t, nil)
	check := fastCheck(poolspec.CheckHTTP)
	check.Path = "/v1"
	st := newState(b.addr)
	target := health.Target{Pool: "p", Address: b.addr, Check: check, State: st}
	c.Sync([]health.Target{target})
	eventually(t, "successes", func() bool { s, _ := statusOf(c, b.addr); return s.ConsecutiveOK >= 3 })

	before, _ := statusOf(c, b.addr)
	c.Sync([]health.Target{target})
	if after, _ := statusOf(c, b.addr); after.ConsecutiveOK < before.ConsecutiveOK {
		t.Fatalf("same target lost its counters: %d → %d", before.ConsecutiveOK, after.ConsecutiveOK)
	}

	changed := target
	changed.Check.Path = "/v2"
	c.Sync([]health.Target{changed})
	// The first probe of the restarted check comes within one interval; a
	// second cannot have followed yet.
	if s, _ := statusOf(c, b.addr); s.ConsecutiveOK > 1 {
		t.Fatalf("changed target kept its counters: %+v", s)
	}
	eventually(t, "checks on the new path", func() bool { return b.pathHits("/v2") >= 2 })
	settled := b.pathHits("/v1")
	from := b.pathHits("/v2")
	eventually(t, "more checks on the new path", func() bool { return b.pathHits("/v2") >= from+3 })
	if n := b.pathHits("/v1"); n != settled {
		t.Fatalf("old check still running: %d more requests on /v1", n-settled)
	}
}

// TestCloseIdempotent checks Close twice and Sync after Close; goleak in
// TestMain checks that Close waited for the goroutines.
func TestCloseIdempotent(t *testing.T) {
	b := newHTTPBackend(t)
	tcp := newTCPBackend(t)
	hs, lis := startGRPC(t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	c := health.New(nil, nil)
	targets := []health.Target{
		{Pool: "p", Address: b.addr, Check: fastCheck(poolspec.CheckHTTP), State: newState(b.addr)},
		{Pool: "p", Address: tcp.addr, Check: fastCheck(poolspec.CheckTCP), State: newState(tcp.addr)},
		{Pool: "p", Address: lis.Addr().String(), Check: fastCheck(poolspec.CheckGRPC), State: newState(lis.Addr().String())},
	}
	c.Sync(targets)
	eventually(t, "every check running", func() bool {
		for _, s := range c.Status() {
			if s.ConsecutiveOK < 1 {
				return false
			}
		}
		return true
	})
	c.Close()
	c.Close()
	c.Sync(targets)
	if s := c.Status(); len(s) != 0 {
		t.Fatalf("Status after Close: %v", s)
	}
}
