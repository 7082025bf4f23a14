package routing_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/routing"
)

// pool returns a pool config with backends of weight 1 at the given addresses.
func pool(name string, hosts []string, prefix string, addrs ...string) routing.PoolConfig {
	pc := routing.PoolConfig{Name: name, Hosts: hosts, PathPrefix: prefix}
	for _, a := range addrs {
		pc.Backends = append(pc.Backends, routing.Backend{Address: a, Weight: 1})
	}
	return pc
}

// build builds cfg on prev and fails the test on error.
func build(t testing.TB, prev *routing.Table, cfg routing.Config) *routing.Table {
	t.Helper()
	tbl, err := routing.Build(prev, cfg, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if tbl == nil {
		t.Fatal("Build returned a nil table and no error")
	}
	return tbl
}

// nextAddrs returns the addresses of the next n picks of p; "" for nil.
func nextAddrs(p *routing.Pool, n int) []string {
	out := make([]string, n)
	for i := range out {
		if idx, _, _ := p.Pick(0, 0, time.Now().UnixNano()); idx >= 0 {
			out[i] = p.Backends[idx].Address
		}
	}
	return out
}

// matchTable has pools at every host level, with and without path prefixes.
var matchTable = routing.Config{Version: 1, Pools: []routing.PoolConfig{
	pool("any", nil, "", "10.0.0.1:80"),
	pool("any-static", nil, "/static", "10.0.0.2:80"),
	pool("exact-root", []string{"a.b.example.com"}, "", "10.0.1.1:80"),
	pool("exact-api", []string{"a.b.example.com"}, "/api", "10.0.1.2:80"),
	pool("exact-api-v2", []string{"a.b.example.com"}, "/api/v2", "10.0.1.3:80"),
	pool("api-only", []string{"api-only.example.com"}, "/api", "10.0.1.4:80"),
	pool("wild-b", []string{"*.b.example.com"}, "", "10.0.2.1:80"),
	pool("wild-c", []string{"*.c.example.com"}, "/c", "10.0.2.2:80"),
	pool("wild-example", []string{"*.example.com"}, "", "10.0.2.3:80"),
	pool("wild-example-v2", []string{"*.example.com"}, "/v2", "10.0.2.4:80"),
	pool("multi", []string{"m1.org", "*.m2.org"}, "/", "10.0.3.1:80"),
	pool("wild-net", []string{"*.net"}, "", "10.0.3.2:80"),
}}

func TestMatch(t *testing.T) {
	tbl := build(t, nil, matchTable)
	tests := []struct {
		host, path string
		want       string // pool name; "" for no match
	}{
		// An exact host beats a wildcard, which beats any host.
		{"a.b.example.com", "/", "exact-root"},
		{"x.b.example.com", "/", "wild-b"},
		{"zzz.org", "/", "any"},
		{"", "/", "any"},
		// The longest prefix wins within a host level.
		{"a.b.example.com", "/api", "exact-api"},
		{"a.b.example.com", "/api/v1/users", "exact-api"},
		{"a.b.example.com", "/api/v2/users", "exact-api-v2"},
		{"a.b.example.com", "/static/x.css", "exact-root"},
		{"zzz.org", "/static/x.css", "any-static"},
		{"zzz.org", "/stat", "any"},
		{"x.example.com", "/v2/users", "wild-example-v2"},
		{"x.example.com", "/v1/users", "wild-example"},
		// The longest wildcard wins, at any depth below it.
		{"c.d.b.example.com", "/", "wild-b"},
		{"x.y.example.com", "/", "wild-example"},
		{"x.net", "/", "wild-net"},
		{"a.b.c.net", "/", "wild-net"},
		{"net", "/", "any"},
		// A wildcard does not match its bare domain.
		{"b.example.com", "/", "wild-example"},
		{"example.com", "/", "any"},
		{"example.com", "/v2", "any"},
		{"m2.org", "/", "any"},
		// With no matching prefix at a level, the next level is tried.
		{"api-only.example.com", "/api/x", "api-only"},
		{"api-only.example.com", "/other", "wild-example"},
		{"api-only.example.com", "/v2/x", "wild-example-v2"},
		{"x.c.example.com", "/c/1", "wild-c"},
		{"x.c.example.com", "/other", "wild-example"},
		// A pool with several hosts matches each of them.
		{"m1.org", "/x", "multi"},
		{"a.m2.org", "/x", "multi"},
		{"a.m1.org", "/x", "any"},
		// Hosts are matched as given: callers pass them lower case.
		{"A.B.EXAMPLE.COM", "/", "any"},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			got := ""
			if p := tbl.Match(tt.host, tt.path); p != nil {
				got = p.Name
			}
			if got != tt.want {
				t.Fatalf("Match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestMatchNone(t *testing.T) {
	tests := []struct {
		name       string
		cfg        routing.Config
		host, path string
	}{
		{"empty table", routing.Config{}, "a.com", "/"},
		{"empty table, no host", routing.Config{}, "", "/"},
		{"other host", routing.Config{Pools: []routing.PoolConfig{pool("a", []string{"a.com"}, "")}}, "b.com", "/"},
		{"no host", routing.Config{Pools: []routing.PoolConfig{pool("a", []string{"a.com"}, "")}}, "", "/"},
		{"other prefix", routing.Config{Pools: []routing.PoolConfig{pool("a", []string{"a.com"}, "/api")}}, "a.com", "/ap"},
		{"bare domain", routing.Config{Pools: []routing.PoolConfig{pool("a", []string{"*.a.com"}, "")}}, "a.com", "/"},
		{"any host, other prefix", routing.Config{Pools: []routing.PoolConfig{pool("a", nil, "/api")}}, "a.com", "/"},
		{"empty path", routing.Config{Pools: []routing.PoolConfig{pool("a", nil, "")}}, "a.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl := build(t, nil, tt.cfg)
			if p := tbl.Match(tt.host, tt.path); p != nil {
				t.Fatalf("Match(%q, %q) = pool %q, want nil", tt.host, tt.path, p.Name)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name  string
		pools []routing.PoolConfig
		want  string
	}{
		{
			"duplicate name",
			[]routing.PoolConfig{pool("web", nil, "/a"), pool("api", nil, "/b"), pool("web", []string{"x.com"}, "/c")},
			`pool "web" appears twice`,
		},
		{
			"same exact host and prefix",
			[]routing.PoolConfig{pool("a", []string{"x.com", "y.com"}, "/api"), pool("b", []string{"y.com"}, "/api")},
			`pools "a" and "b" both claim host "y.com" path prefix "/api"`,
		},
		{
			"empty prefix is /",
			[]routing.PoolConfig{pool("b", []string{"x.com"}, ""), pool("a", []string{"x.com"}, "/")},
			`pools "b" and "a" both claim host "x.com" path prefix "/"`,
		},
		{
			"same wildcard",
			[]routing.PoolConfig{pool("a", []string{"*.x.com"}, ""), pool("b", []string{"*.x.com"}, "")},
			`pools "a" and "b" both claim host "*.x.com" path prefix "/"`,
		},
		{
			"any host",
			[]routing.PoolConfig{pool("a", nil, "/api"), pool("b", nil, "/api")},
			`pools "a" and "b" both claim host "" path prefix "/api"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, err := routing.Build(nil, routing.Config{Version: 3, Pools: tt.pools}, nil)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Build error = %v, want %q", err, tt.want)
			}
			if tbl != nil {
				t.Fatalf("Build returned a table with an error")
			}
		})
	}
}

// TestBuildAccepts checks configurations that look alike but claim different
// routes.
func TestBuildAccepts(t *testing.T) {
	tbl := build(t, nil, routing.Config{Version: 9, Pools: []routing.PoolConfig{
		pool("c", []string{"x.com"}, "/api"),
		pool("a", []string{"x.com"}, "/"),
		pool("b", []string{"*.x.com"}, "/"),
		pool("e", nil, "/"),
		pool("d", nil, "/api"),
		pool("f", []string{"y.com"}, "/api"),
	}})
	if got := tbl.Version(); got != 9 {
		t.Errorf("Version = %d, want 9", got)
	}
	var names []string
	for _, p := range tbl.Pools() {
		names = append(names, p.Name)
	}
	if want := []string{"a", "b", "c", "d", "e", "f"}; !slices.Equal(names, want) {
		t.Errorf("Pools = %v, want %v", names, want)
	}
}

func TestPick(t *testing.T) {
	tbl := build(t, nil, routing.Config{Version: 1, Pools: []routing.PoolConfig{
		pool("empty", []string{"empty.com"}, ""),
		pool("rr", []string{"rr.com"}, "", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"),
		{Name: "weighted", Hosts: []string{"w.com"}, Backends: []routing.Backend{
			{Address: "10.0.1.1:80", Weight: 2}, {Address: "10.0.1.2:80", Weight: 1},
		}},
	}})
	tests := []struct {
		host string
		want []string
	}{
		{"empty.com", []string{"", "", ""}},
		{"rr.com", []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}},
		{"w.com", []string{"10.0.1.1:80", "10.0.1.2:80", "10.0.1.1:80", "10.0.1.1:80", "10.0.1.2:80", "10.0.1.1:80"}},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			p := tbl.Match(tt.host, "/")
			if p == nil {
				t.Fatalf("Match(%q, \"/\") = nil", tt.host)
			}
			if got := nextAddrs(p, len(tt.want)); !slices.Equal(got, tt.want) {
				t.Fatalf("picks = %q, want %q", got, tt.want)
			}
		})
	}
	p := tbl.Match("rr.com", "/")
	if idx, _, _ := p.Pick(0, 0, time.Now().UnixNano()); idx != 0 {
		t.Errorf("Pick = %d, want 0", idx)
	}
	now := time.Now().UnixNano()
	if n := testing.AllocsPerRun(1000, func() { p.Pick(0, 0, now) }); n != 0 {
		t.Errorf("Pick allocates %v times, want 0", n)
	}
}

// TestBuildCarriesRotation checks that a pool whose backends are unchanged
// keeps its place in the rotation across tables, and that any change to its
// backends (addresses, weights or order) restarts the rotation.
func TestBuildCarriesRotation(t *testing.T) {
	web := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
	v1 := routing.Config{Version: 1, Pools: []routing.PoolConfig{
		pool("web", []string{"web.com"}, "", web...),
		pool("api", []string{"api.com"}, "", "10.0.1.1:80"),
	}}
	tests := []struct {
		name string
		web  routing.PoolConfig // web's configuration in version 2
		want []string           // web's picks on the version 2 table
	}{
		{
			"same backends",
			pool("web", []string{"web.com"}, "", web...),
			[]string{"10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"},
		},
		{
			"same backends, other routes",
			pool("web", []string{"web.com", "www.web.com"}, "/app", web...),
			[]string{"10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"},
		},
		{
			"backend added",
			pool("web", []string{"web.com"}, "", append(slices.Clone(web), "10.0.0.4:80")...),
			[]string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"},
		},
		{
			"backend removed",
			pool("web", []string{"web.com"}, "", web[1:]...),
			[]string{"10.0.0.2:80", "10.0.0.3:80", "10.0.0.2:80"},
		},
		{
			"backends reordered",
			pool("web", []string{"web.com"}, "", web[2], web[0], web[1]),
			[]string{"10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"},
		},
		{
			"weight changed",
			routing.PoolConfig{Name: "web", Hosts: []string{"web.com"}, Backends: []routing.Backend{
				{Address: web[0], Weight: 2}, {Address: web[1], Weight: 1}, {Address: web[2], Weight: 1},
			}},
			[]string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t1 := build(t, nil, v1)
			if got, want := nextAddrs(t1.Match("web.com", "/"), 2), web[:2]; !slices.Equal(got, want) {
				t.Fatalf("version 1 picks = %q, want %q", got, want)
			}
			v2 := routing.Config{Version: 2, Pools: []routing.PoolConfig{
				tt.web,
				pool("api", []string{"api.com"}, "", "10.0.1.1:80", "10.0.1.2:80"),
			}}
			t2 := build(t, t1, v2)
			if t2.Version() != 2 {
				t.Fatalf("Version = %d, want 2", t2.Version())
			}
			p := t2.Match("web.com", "/app")
			if p == nil || p.Name != "web" {
				t.Fatalf("Match(\"web.com\", \"/app\") = %v, want pool web", p)
			}
			if got := nextAddrs(p, len(tt.want)); !slices.Equal(got, tt.want) {
				t.Fatalf("version 2 picks = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestBuildRestartsWithoutPrev checks that a pool's rotation starts afresh
// when Build is given no previous table, or one without a pool of that name
// (even one whose pool of another name has the same backends).
func TestBuildRestartsWithoutPrev(t *testing.T) {
	addrs := []string{"10.0.0.1:80", "10.0.0.2:80"}
	other := build(t, nil, routing.Config{Version: 1, Pools: []routing.PoolConfig{pool("api", nil, "", addrs...)}})
	if got := nextAddrs(other.Match("", "/"), 1); got[0] != addrs[0] {
		t.Fatalf("api pick = %q, want %q", got[0], addrs[0])
	}
	cfg := routing.Config{Version: 2, Pools: []routing.PoolConfig{pool("web", nil, "", addrs...)}}
	for _, prev := range []*routing.Table{nil, other} {
		tbl := build(t, prev, cfg)
		if got := nextAddrs(tbl.Match("", "/"), 3); !slices.Equal(got, []string{addrs[0], addrs[1], addrs[0]}) {
			t.Fatalf("Build on %p: picks = %q, want %q", prev, got, []string{addrs[0], addrs[1], addrs[0]})
		}
	}
}

func TestCurrent(t *testing.T) {
	var c routing.Current
	if got := c.Load(); got != nil {
		t.Fatalf("zero Current Load = %p, want nil", got)
	}
	t1 := build(t, nil, routing.Config{Version: 1})
	t2 := build(t, t1, routing.Config{Version: 2})
	c.Store(t1)
	if got := c.Load(); got != t1 {
		t.Fatalf("Load = %p, want the first table %p", got, t1)
	}
	c.Store(t2)
	if got := c.Load(); got != t2 {
		t.Fatalf("Load = %p, want the second table %p", got, t2)
	}
}

// TestCurrentConcurrent checks that readers racing one writer see each
// stored table whole and in order (run it with -race).
func TestCurrentConcurrent(t *testing.T) {
	const versions = 200
	tables := make([]*routing.Table, versions)
	for i := range tables {
		v := uint64(i + 1)
		tables[i] = build(t, nil, routing.Config{Version: v, Pools: []routing.PoolConfig{
			pool(fmt.Sprintf("p%d", v), nil, "", "10.0.0.1:80"),
		}})
	}
	var c routing.Current
	c.Store(tables[0])
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			var last uint64
			for last < versions {
				tbl := c.Load()
				v := tbl.Version()
				if v < last {
					errs <- fmt.Errorf("version went back from %d to %d", last, v)
					return
				}
				if p := tbl.Match("any.com", "/"); p == nil || p.Name != fmt.Sprintf("p%d", v) {
					errs <- fmt.Errorf("table of version %d matched %v, want pool p%d", v, p, v)
					return
				}
				last = v
			}
		})
	}
	for _, tbl := range tables[1:] {
		c.Store(tbl)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMatchAllocs(t *testing.T) {
	tbl := build(t, nil, matchTable)
	for _, tt := range []struct{ host, path string }{
		{"a.b.example.com", "/api/v2/x"},
		{"x.y.b.example.com", "/"},
		{"api-only.example.com", "/other"},
		{"zzz.org", "/static/x"},
		{"", "/"},
	} {
		if n := testing.AllocsPerRun(1000, func() { tbl.Match(tt.host, tt.path) }); n != 0 {
			t.Errorf("Match(%q, %q) allocates %v times, want 0", tt.host, tt.path, n)
		}
	}
}

// benchConfig returns n pools: a third with exact hosts, a third with
// wildcard hosts and a third with any host, each with a distinct prefix.
func benchConfig(n int) routing.Config {
	cfg := routing.Config{Version: 1}
	for i := range n {
		var hosts []string
		switch i % 3 {
		case 0:
			hosts = []string{fmt.Sprintf("svc%d.example.com", i)}
		case 1:
			hosts = []string{fmt.Sprintf("*.tenant%d.example.com", i)}
		}
		cfg.Pools = append(cfg.Pools, pool(fmt.Sprintf("pool%d", i), hosts, fmt.Sprintf("/p%d", i), "10.0.0.1:80", "10.0.0.2:80"))
	}
	cfg.Pools = append(cfg.Pools, pool("default", nil, "", "10.0.0.3:80"))
	return cfg
}

var sinkPool *routing.Pool

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 1000} {
		tbl := build(b, nil, benchConfig(n))
		last := (n - 1) / 3 * 3 // the last exact-host pool
		for _, req := range []struct{ name, host, path, want string }{
			{"exact", fmt.Sprintf("svc%d.example.com", last), fmt.Sprintf("/p%d/x", last), fmt.Sprintf("pool%d", last)},
			{"wildcard", "a.b.tenant1.example.com", "/p1/x", "pool1"},
			{"anyhost", "other.org", "/p2/x", "pool2"},
			{"default", "other.org", "/nothing", "default"},
		} {
			b.Run(fmt.Sprintf("pools=%d/%s", n, req.name), func(b *testing.B) {
				if p := tbl.Match(req.host, req.path); p == nil || p.Name != req.want {
					b.Fatalf("Match(%q, %q) = %v, want pool %s", req.host, req.path, p, req.want)
				}
				b.ReportAllocs()
				for b.Loop() {
					sinkPool = tbl.Match(req.host, req.path)
				}
			})
		}
	}
}

func BenchmarkMatchPick(b *testing.B) {
	tbl := build(b, nil, benchConfig(1000))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if p := tbl.Match("svc0.example.com", "/p0/x"); p != nil {
				p.Pick(0, 0, time.Now().UnixNano())
			}
		}
	})
}
