package configclient_test

import (
	"context"
	"errors"
	"github.com/lb-project/lb/internal/poolspec"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/dataplane/configclient"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/upstream"
)

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     configclient.Config
		wantErr string // "" when valid
	}{
		{"valid", configclient.Config{Address: "127.0.0.1:1", NodeID: "n", Table: &routing.Current{}}, ""},
		{"no address", configclient.Config{NodeID: "n", Table: &routing.Current{}}, "address is required"},
		{"no node id", configclient.Config{Address: "127.0.0.1:1", Table: &routing.Current{}}, "node id is required"},
		{"no table", configclient.Config{Address: "127.0.0.1:1", NodeID: "n"}, "table holder is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := configclient.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New = %v, %v; want a client", c, err)
				}
				if st := c.Status(); st.Connected || st.Config.Version != 0 || !st.AppliedAt.IsZero() || st.LastError != "" {
					t.Errorf("Status of a new client = %+v, want the zero status", st)
				}
				// New does not connect; Run owns the connection and closes it.
				ctx, cancel := contextCanceled()
				defer cancel()
				if err := c.Run(ctx); err != nil {
					t.Errorf("Run with a canceled context = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFullUpdateAppliedAndAcked(t *testing.T) {
	h := newHarness(t)
	fs := h.nextStream()
	if hello := fs.hello(t); hello.GetNodeId() != "node-1" || hello.GetVersion() != 0 {
		t.Fatalf("hello = %v, want node id node-1 and version 0", hello)
	}
	if h.table.Load() != nil {
		t.Fatal("a table is published before any configuration arrived")
	}
	if st := h.cl.Status(); st.Connected {
		t.Errorf("Status().Connected = true before any message arrived")
	}

	web := pbPool("web", []string{"WWW.Example.com", "api.example.com."}, "/", "10.0.0.1:80")
	web.Backends = append(web.Backends, &lbv1.Backend{Address: "10.0.0.2:08080", Weight: 3})
	web.Version = 2
	api := pbPool("api", nil, "/api", "backend.example.com:443")
	api.Version = 3
	before := time.Now()
	tbl := h.apply(fs, full(3, web, api))
	after := time.Now()

	if tbl == nil || tbl.Version() != 3 {
		t.Fatalf("table after version 3 = %v, want version 3", tbl)
	}
	if got, want := poolNames(tbl), []string{"api", "web"}; !slices.Equal(got, want) {
		t.Errorf("table pools = %v, want %v", got, want)
	}
	if p := tbl.Match("www.example.com", "/x"); p == nil || p.Name != "web" {
		t.Errorf("Match(www.example.com, /x) = %v, want web", p)
	}
	if p := tbl.Match("other.example", "/api/v1"); p == nil || p.Name != "api" {
		t.Errorf("Match(other.example, /api/v1) = %v, want api", p)
	}
	for _, p := range tbl.Pools() {
		if p.Transport == nil || p.Scheme != "http" {
			t.Errorf("pool %s: transport %v, scheme %q; want a transport and http", p.Name, p.Transport, p.Scheme)
		}
	}

	st := h.cl.Status()
	want := routing.Config{Version: 3, Pools: []routing.PoolConfig{
		{Name: "api", PathPrefix: "/api", Version: 3, Backends: []routing.Backend{{Address: "backend.example.com:443", Weight: 1}}},
		{Name: "web", Hosts: []string{"api.example.com", "www.example.com"}, PathPrefix: "/", Version: 2,
			Backends: []routing.Backend{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:8080", Weight: 3}}},
	}}
	// Unset policies arrive with their defaults filled in.
	for i := range want.Pools {
		t := poolspec.Timeouts{}.WithDefaults()
		want.Pools[i].Upstream = upstream.Settings{ConnectTimeout: t.Connect, ResponseHeaderTimeout: t.ResponseHeader, IdleTimeout: t.Idle}
		want.Pools[i].Outlier = poolspec.OutlierDetection{}.WithDefaults()
		want.Pools[i].Retries = poolspec.DefaultRetries
	}
	if !reflect.DeepEqual(st.Config, want) {
		t.Errorf("Status().Config =\n%+v\nwant\n%+v", st.Config, want)
	}
	if st.AppliedAt.Before(before) || st.AppliedAt.After(after) {
		t.Errorf("Status().AppliedAt = %v, want between %v and %v", st.AppliedAt, before, after)
	}
	if !st.Connected {
		t.Error("Status().Connected = false on an open stream that delivered a version")
	}
	if st.LastError != "" {
		t.Errorf("Status().LastError = %q, want none", st.LastError)
	}

	// A later full update replaces the whole configuration.
	tbl = h.apply(fs, full(4, pbPool("other", nil, "", "10.0.9.9:80")))
	if tbl.Version() != 4 || !slices.Equal(poolNames(tbl), []string{"other"}) {
		t.Errorf("after full version 4: table version %d pools %v, want 4 [other]", tbl.Version(), poolNames(tbl))
	}
	if got := configNames(h.cl.Status().Config); !slices.Equal(got, []string{"other"}) {
		t.Errorf("Status().Config pools after full version 4 = %v, want [other]", got)
	}

	// An empty full update removes every pool.
	tbl = h.apply(fs, full(5))
	if tbl.Version() != 5 || len(tbl.Pools()) != 0 || len(h.cl.Status().Config.Pools) != 0 {
		t.Errorf("after empty full version 5: table version %d pools %v, status pools %v; want 5, none, none",
			tbl.Version(), poolNames(tbl), configNames(h.cl.Status().Config))
	}
}

func TestInvalidUpdateNacked(t *testing.T) {
	base := func() *lbv1.StreamConfigResponse {
		return full(1,
			pbPool("a", nil, "/", "10.0.0.1:80"),
			pbPool("b", []string{"b.example"}, "/", "10.0.0.2:80"))
	}
	badWeight := pbPool("a", nil, "/", "10.0.0.1:80")
	badWeight.Backends[0].Weight = 0

	tests := []struct {
		name   string
		update *lbv1.StreamConfigResponse // version 2
		want   []string                   // in the reason
	}{
		{
			name:   "backend address",
			update: full(2, pbPool("a", nil, "/", "nonsense")),
			want:   []string{"pools[0].backends[0].address", `"nonsense"`},
		},
		{
			name:   "weight 0",
			update: full(2, badWeight),
			want:   []string{"pools[0].backends[0].weight", `"0"`},
		},
		{
			name:   "two pools claim the same route",
			update: full(2, pbPool("a", nil, "/", "10.0.0.1:80"), pbPool("x", nil, "", "10.0.0.3:80")),
			want:   []string{`"a"`, `"x"`, "both claim", `path prefix "/"`},
		},
		{
			name: "unknown protocol",
			update: full(2, withUpstream(pbPool("a", nil, "/", "10.0.0.1:80"),
				&lbv1.Upstream{Protocol: lbv1.UpstreamProtocol(99)})),
			want: []string{"pools[0].upstream.protocol", `"99"`},
		},
		{
			name: "h2 without tls",
			update: full(2, withUpstream(pbPool("a", nil, "/", "10.0.0.1:80"),
				&lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2})),
			want: []string{"pools[0].upstream.protocol", "needs tls"},
		},
		{
			name: "h2c with tls",
			update: full(2, withUpstream(pbPool("a", nil, "/", "10.0.0.1:80"),
				&lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C, Tls: true})),
			want: []string{"pools[0].upstream.protocol", "cannot be used with tls"},
		},
		{
			name: "sni without tls",
			update: full(2, withUpstream(pbPool("a", nil, "/", "10.0.0.1:80"),
				&lbv1.Upstream{Sni: "origin.example"})),
			want: []string{"pools[0].upstream.sni", "only applies with tls"},
		},
		{
			name: "ca bundle without a certificate",
			update: full(2, withUpstream(pbPool("a", nil, "/", "10.0.0.1:80"),
				&lbv1.Upstream{Tls: true, CaPem: "not a certificate"})),
			want: []string{"pools[0].upstream.ca_pem", "no PEM certificate"},
		},
		{
			name:   "invalid second pool of a delta",
			update: delta(2, nil, pbPool("c", []string{"c.example"}, "/", "10.0.0.3:80"), pbPool("Bad", nil, "/bad", "10.0.0.4:80")),
			want:   []string{"pools[1].name", `"Bad"`},
		},
		{
			name:   "delta claims the route of an untouched pool",
			update: delta(2, nil, pbPool("c", []string{"b.example"}, "/", "10.0.0.3:80")),
			want:   []string{`"b"`, `"c"`, "both claim", `host "b.example"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			fs := h.nextStream()
			good := h.apply(fs, base())
			goodStatus := h.cl.Status()

			h.push(fs, tt.update)
			reason := h.expectNack(fs, 2)
			for _, w := range tt.want {
				if !strings.Contains(reason, w) {
					t.Errorf("Nack reason %q does not contain %q", reason, w)
				}
			}
			if got := h.table.Load(); got != good {
				t.Errorf("table after the refused version = version %d %p, want the previous table %p", got.Version(), got, good)
			}
			st := h.cl.Status()
			if st.LastError != reason {
				t.Errorf("Status().LastError = %q, want the Nack reason %q", st.LastError, reason)
			}
			if !reflect.DeepEqual(st.Config, goodStatus.Config) || !st.AppliedAt.Equal(goodStatus.AppliedAt) {
				t.Errorf("Status() after the refused version = %+v, want the configuration of version 1 as before", st)
			}
			if !st.Connected {
				t.Error("Status().Connected = false after a Nack; the stream stays open")
			}

			// The next good version applies on top of version 1 and clears the error.
			tbl := h.apply(fs, delta(3, []string{"b"}))
			if tbl.Version() != 3 || !slices.Equal(poolNames(tbl), []string{"a"}) {
				t.Errorf("after version 3: table version %d pools %v, want 3 [a]", tbl.Version(), poolNames(tbl))
			}
			if st := h.cl.Status(); st.LastError != "" || st.Config.Version != 3 {
				t.Errorf("Status() after version 3 = %+v, want version 3 and no error", st)
			}
		})
	}
}

// A full update that names one pool twice is malformed: routing.Build refuses
// it ("pool %q appears twice"), but merge folds the pools into a map by name
// first, so the client applies the last of the two and Acks.
func TestDuplicatePoolNameNacked(t *testing.T) {
	tests := []struct {
		name   string
		update *lbv1.StreamConfigResponse
	}{
		{"full", full(2, pbPool("a", []string{"one.example"}, "/", "10.0.0.1:80"), pbPool("a", []string{"two.example"}, "/", "10.0.0.2:80"))},
		{"delta", delta(2, nil, pbPool("c", []string{"one.example"}, "/", "10.0.0.1:80"), pbPool("c", []string{"two.example"}, "/", "10.0.0.2:80"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			fs := h.nextStream()
			good := h.apply(fs, full(1, pbPool("a", nil, "/", "10.0.0.9:80")))
			h.push(fs, tt.update)
			m := h.reply(fs)
			if m.GetNack() == nil {
				t.Fatalf("client answered %v to an update naming a pool twice (table now has %v), want a Nack",
					m, configNames(h.cl.Status().Config))
			}
			if reason := m.GetNack().GetReason(); !strings.Contains(reason, "twice") {
				t.Errorf("Nack reason %q, want it to say the pool is named twice", reason)
			}
			if h.table.Load() != good {
				t.Error("table replaced after a refused version")
			}
		})
	}
}

func TestDeltaUpdates(t *testing.T) {
	h := newHarness(t)
	fs := h.nextStream()
	tbl := h.apply(fs, full(1,
		pbPool("a", []string{"a.example"}, "/", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"),
		pbPool("b", []string{"b.example"}, "/", "10.0.1.1:80"),
		pbPool("c", []string{"c.example"}, "/", "10.0.2.1:80"),
	))
	if got, want := picks(poolOf(t, tbl, "a"), 2), []string{"10.0.0.1:80", "10.0.0.2:80"}; !slices.Equal(got, want) {
		t.Fatalf("picks of a in version 1 = %v, want %v", got, want)
	}

	// Replace b, remove c, add d; a is untouched.
	b2 := pbPool("b", []string{"b.example"}, "/", "10.0.1.1:80", "10.0.1.2:80")
	b2.Version = 2
	tbl = h.apply(fs, delta(2, []string{"c"}, b2, pbPool("d", []string{"d.example"}, "/", "10.0.3.1:80")))
	if tbl.Version() != 2 {
		t.Fatalf("table version = %d, want 2", tbl.Version())
	}
	if got, want := poolNames(tbl), []string{"a", "b", "d"}; !slices.Equal(got, want) {
		t.Fatalf("pools after delta 2 = %v, want %v", got, want)
	}
	if p := tbl.Match("c.example", "/"); p != nil {
		t.Errorf("removed pool c still matches: %s", p.Name)
	}
	if got, want := picks(poolOf(t, tbl, "a"), 2), []string{"10.0.0.3:80", "10.0.0.1:80"}; !slices.Equal(got, want) {
		t.Errorf("picks of untouched a in version 2 = %v, want %v (rotation carried on)", got, want)
	}
	if got, want := picks(poolOf(t, tbl, "b"), 3), []string{"10.0.1.1:80", "10.0.1.2:80", "10.0.1.1:80"}; !slices.Equal(got, want) {
		t.Errorf("picks of replaced b = %v, want %v", got, want)
	}
	st := h.cl.Status()
	if got, want := configNames(st.Config), []string{"a", "b", "d"}; !slices.Equal(got, want) || st.Config.Version != 2 {
		t.Errorf("Status().Config = version %d pools %v, want 2 %v", st.Config.Version, got, want)
	}
	for _, p := range st.Config.Pools {
		if p.Name == "b" && (len(p.Backends) != 2 || p.Version != 2) {
			t.Errorf("Status().Config pool b = %+v, want the replacement's two backends and version 2", p)
		}
	}

	// A delta that only removes.
	tbl = h.apply(fs, delta(3, []string{"b"}))
	if got, want := poolNames(tbl), []string{"a", "d"}; !slices.Equal(got, want) {
		t.Fatalf("pools after delta 3 = %v, want %v", got, want)
	}
	if got, want := picks(poolOf(t, tbl, "a"), 1), []string{"10.0.0.2:80"}; !slices.Equal(got, want) {
		t.Errorf("picks of untouched a in version 3 = %v, want %v", got, want)
	}
	if got, want := picks(poolOf(t, tbl, "d"), 2), []string{"10.0.3.1:80", "10.0.3.1:80"}; !slices.Equal(got, want) {
		t.Errorf("picks of d = %v, want %v", got, want)
	}

	// New backends for a: its rotation starts afresh.
	tbl = h.apply(fs, delta(4, nil, pbPool("a", []string{"a.example"}, "/", "10.0.0.9:80", "10.0.0.1:80")))
	if got, want := picks(poolOf(t, tbl, "a"), 3), []string{"10.0.0.9:80", "10.0.0.1:80", "10.0.0.9:80"}; !slices.Equal(got, want) {
		t.Errorf("picks of a with new backends = %v, want %v", got, want)
	}
	if got, want := configNames(h.cl.Status().Config), []string{"a", "d"}; !slices.Equal(got, want) {
		t.Errorf("Status().Config pools after delta 4 = %v, want %v", got, want)
	}
}

func TestReconnect(t *testing.T) {
	h := newHarness(t)
	fs := h.nextStream()
	tbl := h.apply(fs, full(5, pbPool("a", nil, "/", "10.0.0.1:80")))
	if !h.cl.Status().Connected {
		t.Fatal("Status().Connected = false after version 5 was applied")
	}

	ends := []struct {
		name    string
		err     error
		wantErr string // in Status().LastError once disconnected
		pool    string // added on the new stream
	}{
		{"error status", status.Error(codes.Unavailable, "control plane restarting"), "control plane restarting", "p1"},
		{"clean end", nil, "EOF", "p2"},
		{"unexpected error", errors.New("boom"), "boom", "p3"},
	}
	version := uint64(5)
	for _, end := range ends {
		fs.end <- end.err
		next := h.nextStream()
		// The new stream's hello is sent only after the client marked itself
		// disconnected, and it is connected again only once a message arrives.
		if hello := next.hello(t); hello.GetNodeId() != "node-1" || hello.GetVersion() != version {
			t.Fatalf("%s: hello on the new stream = %v, want node-1 and the held version %d", end.name, hello, version)
		}
		st := h.cl.Status()
		if st.Connected {
			t.Errorf("%s: Status().Connected = true between streams", end.name)
		}
		if !strings.Contains(st.LastError, end.wantErr) {
			t.Errorf("%s: Status().LastError = %q, want it to contain %q", end.name, st.LastError, end.wantErr)
		}
		if got := h.table.Load(); got != tbl {
			t.Errorf("%s: table replaced while disconnected", end.name)
		}
		if st.Config.Version != version {
			t.Errorf("%s: Status().Config.Version = %d while disconnected, want %d", end.name, st.Config.Version, version)
		}

		version++
		fs = next
		tbl = h.apply(fs, delta(version, nil, pbPool(end.pool, []string{end.pool + ".example"}, "/", "10.0.1.1:80")))
		if tbl.Version() != version {
			t.Errorf("%s: table version %d after reconnect, want %d", end.name, tbl.Version(), version)
		}
		if !h.cl.Status().Connected {
			t.Errorf("%s: Status().Connected = false after a version arrived on the new stream", end.name)
		}
	}

	// A refused version is not held: the next hello carries the last applied.
	h.push(fs, full(version+1, pbPool("a", nil, "/", "nonsense")))
	h.expectNack(fs, version+1)
	fs.end <- status.Error(codes.Unavailable, "again")
	if hello := h.nextStream().hello(t); hello.GetVersion() != version {
		t.Errorf("hello after a Nack of %d = version %d, want the applied %d", version+1, hello.GetVersion(), version)
	}
}

func TestRunReturnsWhileDisconnected(t *testing.T) {
	h := newHarness(t)
	fs := h.nextStream()
	tbl := h.apply(fs, full(1, pbPool("a", nil, "/", "10.0.0.1:80")))

	// The control plane goes away: listener and connections closed.
	h.gs.Stop()
	// Once a stream fails to open, the client is retrying with no server.
	h.waitFor("a failed attempt to open a stream", func() bool {
		st := h.cl.Status()
		return !st.Connected && strings.HasPrefix(st.LastError, "open stream")
	})
	if h.table.Load() != tbl {
		t.Error("table replaced while the control plane is gone")
	}
	if st := h.cl.Status(); st.Config.Version != 1 {
		t.Errorf("Status().Config.Version = %d while disconnected, want 1", st.Config.Version)
	}
	start := time.Now()
	h.stop() // fails the test unless Run returns within 2s
	t.Logf("Run returned %v after cancel", time.Since(start))
	if h.table.Load() != tbl {
		t.Error("table replaced when Run stopped")
	}
}

func TestRunReturnsWhileConnected(t *testing.T) {
	h := newHarness(t)
	fs := h.nextStream()
	h.apply(fs, full(1, pbPool("a", nil, "/", "10.0.0.1:80")))
	h.stop()
	if st := h.cl.Status(); st.Connected {
		t.Error("Status().Connected = true after Run returned")
	}
}

func TestUpstreamSettings(t *testing.T) {
	caPEM, certPEM, keyPEM := testPEM(t)
	tests := []struct {
		name       string
		upstream   *lbv1.Upstream
		want       upstream.Settings
		wantScheme string
	}{
		{
			name:       "no upstream",
			want:       upstream.Settings{},
			wantScheme: "http",
		},
		{
			name:       "tls, host header with port, no sni",
			upstream:   &lbv1.Upstream{Tls: true, HostHeader: "origin.example:8443"},
			want:       upstream.Settings{TLS: true, ServerName: "origin.example"},
			wantScheme: "https",
		},
		{
			name:       "tls, host header without port",
			upstream:   &lbv1.Upstream{Tls: true, HostHeader: "origin.example"},
			want:       upstream.Settings{TLS: true, ServerName: "origin.example"},
			wantScheme: "https",
		},
		{
			name:       "tls, ipv6 host header",
			upstream:   &lbv1.Upstream{Tls: true, HostHeader: "[2001:db8::1]:8443"},
			want:       upstream.Settings{TLS: true, ServerName: "2001:db8::1"},
			wantScheme: "https",
		},
		{
			name:       "sni wins over host header",
			upstream:   &lbv1.Upstream{Tls: true, HostHeader: "origin.example:8443", Sni: "SNI.Example."},
			want:       upstream.Settings{TLS: true, ServerName: "sni.example"},
			wantScheme: "https",
		},
		{
			name:       "host header without tls",
			upstream:   &lbv1.Upstream{HostHeader: "origin.example:8080"},
			want:       upstream.Settings{},
			wantScheme: "http",
		},
		{
			name:       "h2 with ca",
			upstream:   &lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2, Tls: true, Sni: "backend.test", CaPem: caPEM},
			want:       upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "backend.test", CAPEM: caPEM},
			wantScheme: "https",
		},
		{
			name:       "h2c",
			upstream:   &lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C},
			want:       upstream.Settings{Protocol: upstream.H2C},
			wantScheme: "http",
		},
		{
			name: "http1, tls without verification, client certificate",
			upstream: &lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_HTTP1, Tls: true,
				InsecureSkipVerify: true, ClientCertPem: certPEM, ClientKeyPem: keyPEM},
			want: upstream.Settings{Protocol: upstream.HTTP1, TLS: true, InsecureSkipVerify: true,
				ClientCertPEM: certPEM, ClientKeyPEM: keyPEM},
			wantScheme: "https",
		},
	}
	for _, tt := range tests {
		// Unset timeouts reach the transport settings as the defaults.
		tt.want.ConnectTimeout = poolspec.DefaultConnectTimeout
		tt.want.ResponseHeaderTimeout = poolspec.DefaultResponseHeaderTimeout
		tt.want.IdleTimeout = poolspec.DefaultIdleTimeout
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			fs := h.nextStream()
			tbl := h.apply(fs, full(1, withUpstream(pbPool("p", nil, "/", "10.0.0.1:443"), tt.upstream)))
			p := poolOf(t, tbl, "p")
			if p.Upstream != tt.want {
				t.Errorf("routing pool Upstream = %+v, want %+v", p.Upstream, tt.want)
			}
			if want := tt.upstream.GetHostHeader(); p.HostHeader != want {
				t.Errorf("routing pool HostHeader = %q, want %q", p.HostHeader, want)
			}
			if p.Scheme != tt.wantScheme {
				t.Errorf("routing pool Scheme = %q, want %q", p.Scheme, tt.wantScheme)
			}
			if st := h.cl.Status(); len(st.Config.Pools) != 1 || st.Config.Pools[0].Upstream != tt.want {
				t.Errorf("Status().Config pools = %+v, want one with Upstream %+v", st.Config.Pools, tt.want)
			}
			if p.Transport == nil {
				t.Fatal("routing pool has no transport")
			}
			if got := p.Transport.Settings(); got != tt.want {
				t.Errorf("transport settings = %+v, want %+v", got, tt.want)
			}
			// The pool's transport is the cache's for its settings.
			if tr, err := h.cache.Transport(tt.want); err != nil || tr != p.Transport {
				t.Errorf("cache.Transport(settings) = %p, %v; want the pool's %p", tr, err, p.Transport)
			}
		})
	}
}

func TestUnusedTransportsReleased(t *testing.T) {
	h := newHarness(t)
	fs := h.nextStream()
	tlsUp := &lbv1.Upstream{Tls: true, Sni: "origin.example"}
	tbl := h.apply(fs, full(1,
		pbPool("plain", []string{"plain.example"}, "/", "10.0.0.1:80"),
		withUpstream(pbPool("secure", []string{"secure.example"}, "/", "10.0.0.2:443"), tlsUp)))
	plainTr, secureTr := poolOf(t, tbl, "plain").Transport, poolOf(t, tbl, "secure").Transport
	if plainTr == secureTr {
		t.Fatal("pools with different upstream settings share a transport")
	}

	// Version 2 keeps plain's settings (in a new pool too) and drops secure's.
	tbl = h.apply(fs, full(2,
		pbPool("plain", []string{"plain.example"}, "/", "10.0.0.1:80"),
		pbPool("plain2", []string{"plain2.example"}, "/", "10.0.0.3:80")))
	for _, name := range []string{"plain", "plain2"} {
		if got := poolOf(t, tbl, name).Transport; got != plainTr {
			t.Errorf("pool %s transport %p, want the shared %p kept across versions", name, got, plainTr)
		}
	}
	secureSettings := upstream.Settings{TLS: true, ServerName: "origin.example"}
	if tr, err := h.cache.Transport(secureSettings); err != nil || tr == secureTr {
		t.Errorf("cache.Transport(dropped settings) = %p, %v; want a new transport, not the released %p", tr, err, secureTr)
	}
}

// contextCanceled returns an already canceled context.
func contextCanceled() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx, cancel
}

// A control plane that accepts connections but never speaks HTTP/2 leaves
// the client connecting; Run still returns promptly when canceled.
func TestRunReturnsWhileConnecting(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-acceptDone
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	})

	c, err := configclient.New(configclient.Config{
		Address: lis.Addr().String(), NodeID: "node-1", Table: &routing.Current{},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	select {
	case conn := <-accepted:
		accepted <- conn // closed at cleanup
	case <-deadline.C:
		t.Fatal("the client never connected")
	}
	cancel()
	stop := time.NewTimer(2 * time.Second)
	defer stop.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-stop.C:
		t.Fatal("Run did not return within 2s of cancel while connecting")
	}
	if st := c.Status(); st.Connected {
		t.Error("Status().Connected = true though no message ever arrived")
	}
}
