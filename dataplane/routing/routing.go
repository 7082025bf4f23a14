// Package routing holds the data plane's routing table: an immutable snapshot
// of every pool, its routes, backends and selector, built once per
// configuration version and published with one atomic pointer store.
//
// A request does one Load of the current table and uses only that snapshot, so
// it sees either the old configuration or the new one, never a mix, and
// requests in flight finish on the table they started with.
//
// Matching: a pool may name host names (exact, or "*.example.com" for any
// subdomain) and a path prefix. The most specific match wins: an exact host,
// then the longest matching wildcard, then pools with no host; within a host
// the longest path prefix. If no pool of a host level has a matching prefix,
// the next level is tried.
package routing

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/dataplane/selector"
	"github.com/lb-project/lb/dataplane/stats"
	"github.com/lb-project/lb/dataplane/upstream"
	"github.com/lb-project/lb/internal/poolspec"
)

// Backend is one upstream server of a pool, as configured.
type Backend struct {
	// Address is HOST:PORT.
	Address string `json:"address"`
	// Weight is the backend's relative share of requests.
	Weight uint32 `json:"weight"`
	// Draining backends get no new requests.
	Draining bool `json:"draining,omitempty"`
}

// PoolConfig is a pool as the routing table is built from it.
type PoolConfig struct {
	// Name identifies the pool.
	Name string `json:"name"`
	// Hosts are lower-case exact names or "*.suffix" wildcards; empty: any host.
	Hosts []string `json:"hosts,omitempty"`
	// PathPrefix the pool serves; empty means "/".
	PathPrefix string `json:"path_prefix,omitempty"`
	// Backends in configured order.
	Backends []Backend `json:"backends"`
	// Version in which the pool last changed.
	Version uint64 `json:"version"`
	// Upstream says how to connect to the backends.
	Upstream upstream.Settings `json:"upstream"`
	// HostHeader replaces the client's Host header when set.
	HostHeader string `json:"host_header,omitempty"`
	// LoadBalancing is the selection policy.
	LoadBalancing poolspec.LoadBalancing `json:"load_balancing"`
	// HealthCheck configures active checks, defaults applied; Type "" is none.
	HealthCheck poolspec.HealthCheck `json:"health_check"`
	// Outlier configures passive checks, defaults applied.
	Outlier poolspec.OutlierDetection `json:"outlier_detection"`
	// Retries after a failed attempt.
	Retries uint32 `json:"retries"`
}

// TransportSource provides the shared transport for upstream settings.
type TransportSource interface {
	Transport(s upstream.Settings) (*upstream.Transport, error)
}

// Config is one whole configuration version.
type Config struct {
	// Version of the configuration.
	Version uint64 `json:"version"`
	// Pools, in any order.
	Pools []PoolConfig `json:"pools"`
}

// Pool is a pool of a built table. It is immutable but for its selector's
// counters and its backends' runtime states.
type Pool struct {
	PoolConfig
	// Transport reaches the pool's backends; nil when the table was built
	// without a TransportSource (the proxy then uses its default).
	Transport *upstream.Transport
	// Scheme is "https" for TLS backends, else "http".
	Scheme string
	// States holds each backend's runtime state, index-aligned with
	// Backends (draining backends included). States carry over from the
	// previous table for backends it had.
	States []*backend.State
	// Stats are the pool's counters; they carry over from the previous
	// table's pool of the same name.
	Stats *stats.Pool

	prefix string // PathPrefix, "/" when empty
	// active maps selector indexes to Backends indexes: the backends that
	// are not draining.
	active   []int
	selector selector.Selector
	// panicLogged is when panic mode was last logged (unix ns).
	panicLogged atomic.Int64
}

// Pick chooses the backend for a request with hash key key (consistent
// hash only), avoiding the selector indexes in tried (bit i for index i)
// when another backend is usable. It returns the index into Backends and
// States, the selector index to add to tried for a retry, and whether no
// usable backend was left (panic mode: a backend was chosen regardless of
// health). It returns -1 when the pool has no backend to offer (none, or
// all draining). It takes no lock and does not allocate.
func (p *Pool) Pick(key, tried uint64, now int64) (idx, sel int, panicking bool) {
	sel, panicking = p.selector.Pick(key, tried, now)
	if sel < 0 {
		return -1, -1, false
	}
	return p.active[sel], sel, panicking
}

// ShouldLogPanic reports, at most once per interval, that the pool is in
// panic mode, so the proxy logs it without flooding.
func (p *Pool) ShouldLogPanic(now int64, interval time.Duration) bool {
	last := p.panicLogged.Load()
	return now-last >= int64(interval) && p.panicLogged.CompareAndSwap(last, now)
}

// RecordFailure notes a failed request to backend idx (a connection failure
// or a 5xx answer) and ejects the backend when it has failed too many times
// in a row and the pool's ejection budget allows. It returns the ejection
// time, or 0 when the backend was not ejected.
func (p *Pool) RecordFailure(idx int, now time.Time) time.Duration {
	st := p.States[idx]
	n := st.RecordFailure()
	o := p.Outlier
	if o.Disabled || n < int32(o.ConsecutiveFailures) {
		return 0
	}
	nowNS := now.UnixNano()
	if st.Ejected(nowNS) {
		return 0
	}
	ejected := 0
	for _, s := range p.States {
		if s.Ejected(nowNS) {
			ejected++
		}
	}
	if (ejected+1)*100 > int(o.MaxEjectionPercent)*len(p.States) {
		return 0
	}
	return st.Eject(now, o.BaseEjectionTime)
}

// Table is an immutable routing table.
type Table struct {
	version  uint64
	pools    []*Pool            // ordered by name
	exact    map[string][]*Pool // host → pools, longest prefix first
	wildcard map[string][]*Pool // suffix of "*.suffix" → pools, longest prefix first
	anyHost  []*Pool            // pools without hosts, longest prefix first
}

// Build builds the table for cfg, taking each pool's transport from tp (which
// may be nil). Pools whose backends (addresses and weights,
// in order) are the same as in prev keep prev's selector, so their rotation
// carries on rather than restarting. prev may be nil. Build refuses a
// configuration in which two pools claim the same host and path prefix, or
// names a pool twice.
func Build(prev *Table, cfg Config, tp TransportSource) (*Table, error) {
	t := &Table{
		version:  cfg.Version,
		exact:    make(map[string][]*Pool),
		wildcard: make(map[string][]*Pool),
	}
	now := time.Now()
	type route struct{ host, prefix string }
	owner := make(map[route]string)
	seen := make(map[string]bool, len(cfg.Pools))
	for _, pc := range cfg.Pools {
		if seen[pc.Name] {
			return nil, fmt.Errorf("pool %q appears twice", pc.Name)
		}
		seen[pc.Name] = true
		p := &Pool{PoolConfig: pc, prefix: pc.PathPrefix, Scheme: pc.Upstream.Scheme()}
		if p.prefix == "" {
			p.prefix = "/"
		}
		if tp != nil {
			t, err := tp.Transport(pc.Upstream)
			if err != nil {
				return nil, fmt.Errorf("pool %q: %w", pc.Name, err)
			}
			p.Transport = t
		}
		old := prev.pool(pc.Name)
		if old != nil {
			p.Stats = old.Stats
		} else {
			p.Stats = new(stats.Pool)
		}
		oldStates := old.statesByAddress()
		p.States = make([]*backend.State, len(pc.Backends))
		var weights []uint32
		for i, b := range pc.Backends {
			if st := oldStates[b.Address]; st != nil {
				p.States[i] = st
			} else {
				p.States[i] = backend.New(b.Address, now)
			}
			if !b.Draining {
				p.active = append(p.active, i)
				weights = append(weights, b.Weight)
			}
		}
		if old != nil && slices.Equal(old.Backends, pc.Backends) && old.LoadBalancing == pc.LoadBalancing {
			p.selector = old.selector
		} else {
			states := make([]*backend.State, len(p.active))
			for i, bi := range p.active {
				states[i] = p.States[bi]
			}
			p.selector = newSelector(pc.LoadBalancing, states, weights)
		}
		t.pools = append(t.pools, p)

		hosts := pc.Hosts
		if len(hosts) == 0 {
			hosts = []string{""}
		}
		for _, h := range hosts {
			r := route{h, p.prefix}
			if o, ok := owner[r]; ok {
				return nil, fmt.Errorf("pools %q and %q both claim host %q path prefix %q", o, pc.Name, h, p.prefix)
			}
			owner[r] = pc.Name
			switch {
			case h == "":
				t.anyHost = append(t.anyHost, p)
			case strings.HasPrefix(h, "*."):
				t.wildcard[h[2:]] = append(t.wildcard[h[2:]], p)
			default:
				t.exact[h] = append(t.exact[h], p)
			}
		}
	}
	sort.Slice(t.pools, func(i, j int) bool { return t.pools[i].Name < t.pools[j].Name })
	byPrefix := func(ps []*Pool) {
		sort.SliceStable(ps, func(i, j int) bool {
			if len(ps[i].prefix) != len(ps[j].prefix) {
				return len(ps[i].prefix) > len(ps[j].prefix)
			}
			return ps[i].Name < ps[j].Name
		})
	}
	for _, ps := range t.exact {
		byPrefix(ps)
	}
	for _, ps := range t.wildcard {
		byPrefix(ps)
	}
	byPrefix(t.anyHost)
	return t, nil
}

// newSelector builds the selector a pool's policy asks for.
func newSelector(lb poolspec.LoadBalancing, states []*backend.State, weights []uint32) selector.Selector {
	switch lb.Algorithm {
	case poolspec.AlgorithmLeastRequest:
		return selector.NewLeastRequest(states, weights, lb.SlowStart)
	case poolspec.AlgorithmRandom:
		return selector.NewRandom(states, weights, lb.SlowStart)
	case poolspec.AlgorithmConsistentHash:
		return selector.NewConsistentHash(states, weights)
	default:
		return selector.NewRoundRobin(states, weights, lb.SlowStart)
	}
}

// statesByAddress indexes the pool's backend states by address; nil for a
// nil pool.
func (p *Pool) statesByAddress() map[string]*backend.State {
	if p == nil {
		return nil
	}
	m := make(map[string]*backend.State, len(p.Backends))
	for i, b := range p.Backends {
		m[b.Address] = p.States[i]
	}
	return m
}

// pool returns the named pool, or nil (also for a nil table).
func (t *Table) pool(name string) *Pool {
	if t == nil {
		return nil
	}
	i := sort.Search(len(t.pools), func(i int) bool { return t.pools[i].Name >= name })
	if i < len(t.pools) && t.pools[i].Name == name {
		return t.pools[i]
	}
	return nil
}

// Version returns the configuration version the table was built from.
func (t *Table) Version() uint64 { return t.version }

// Pools returns the table's pools ordered by name. The slice must not be modified.
func (t *Table) Pools() []*Pool { return t.pools }

// Match returns the pool for a request to host (lower case, without port)
// and path, or nil when no pool matches.
func (t *Table) Match(host, path string) *Pool {
	if host != "" {
		if p := matchPrefix(t.exact[host], path); p != nil {
			return p
		}
		if len(t.wildcard) > 0 {
			// Longest wildcard first: for a.b.example.com try b.example.com,
			// then example.com, then com.
			for rest := host; ; {
				dot := strings.IndexByte(rest, '.')
				if dot < 0 {
					break
				}
				rest = rest[dot+1:]
				if p := matchPrefix(t.wildcard[rest], path); p != nil {
					return p
				}
			}
		}
	}
	return matchPrefix(t.anyHost, path)
}

func matchPrefix(ps []*Pool, path string) *Pool {
	for _, p := range ps {
		if strings.HasPrefix(path, p.prefix) {
			return p
		}
	}
	return nil
}

// Current holds the table in use. The zero value holds no table.
type Current struct {
	p atomic.Pointer[Table]
}

// Load returns the table in use, or nil before the first Store.
func (c *Current) Load() *Table { return c.p.Load() }

// Store publishes t for every request that starts from now on.
func (c *Current) Store(t *Table) { c.p.Store(t) }
