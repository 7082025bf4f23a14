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

	"github.com/lb-project/lb/dataplane/selector"
	"github.com/lb-project/lb/dataplane/upstream"
)

// Backend is one upstream server of a pool, as configured.
type Backend struct {
	// Address is HOST:PORT.
	Address string `json:"address"`
	// Weight is the backend's relative share of requests.
	Weight uint32 `json:"weight"`
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
// counter.
type Pool struct {
	PoolConfig
	// Transport reaches the pool's backends; nil when the table was built
	// without a TransportSource (the proxy then uses its default).
	Transport *upstream.Transport
	// Scheme is "https" for TLS backends, else "http".
	Scheme string

	prefix   string // PathPrefix, "/" when empty
	selector selector.Selector
}

// Pick returns the backend for the next request, or nil when the pool has no
// backends. It takes no lock and does not allocate.
func (p *Pool) Pick() *Backend {
	i := p.selector.Pick()
	if i < 0 {
		return nil
	}
	return &p.Backends[i]
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
	type route struct{ host, prefix string }
	owner := make(map[route]string)
	seen := make(map[string]bool, len(cfg.Pools))
	for _, pc := range cfg.Pools {
		if seen[pc.Name] {
			return nil, fmt.Errorf("pool %q appears twice", pc.Name)
		}
		seen[pc.Name] = true
		p := &Pool{PoolConfig: pc, prefix: pc.PathPrefix, Scheme: pc.Upstream.Scheme()}
		if tp != nil {
			t, err := tp.Transport(pc.Upstream)
			if err != nil {
				return nil, fmt.Errorf("pool %q: %w", pc.Name, err)
			}
			p.Transport = t
		}
		if p.prefix == "" {
			p.prefix = "/"
		}
		if old := prev.pool(pc.Name); old != nil && sameBackends(old.Backends, pc.Backends) {
			p.selector = old.selector
		} else {
			weights := make([]uint32, len(pc.Backends))
			for i, b := range pc.Backends {
				weights[i] = b.Weight
			}
			p.selector = selector.NewRoundRobin(weights)
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

func sameBackends(a, b []Backend) bool { return slices.Equal(a, b) }

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
