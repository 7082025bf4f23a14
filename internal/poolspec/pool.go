package poolspec

import (
	"fmt"
	"sort"
)

// Pool is a pool's specification in plain Go types, free of any wire format.
type Pool struct {
	// Name identifies the pool.
	Name string `json:"name"`
	// Hosts the pool serves; empty means any host.
	Hosts []string `json:"hosts,omitempty"`
	// PathPrefix the pool serves; empty means "/".
	PathPrefix string `json:"path_prefix,omitempty"`
	// Backends in the order they were added.
	Backends []Backend `json:"backends,omitempty"`
	// Version is the configuration version in which the pool last changed.
	Version uint64 `json:"version"`
	// Upstream says how to connect to the backends.
	Upstream Upstream `json:"upstream,omitzero"`
	// LoadBalancing is the selection policy.
	LoadBalancing LoadBalancing `json:"load_balancing,omitzero"`
	// HealthCheck configures active checks; zero Type means none.
	HealthCheck HealthCheck `json:"health_check,omitzero"`
	// OutlierDetection configures passive checks.
	OutlierDetection OutlierDetection `json:"outlier_detection,omitzero"`
	// Retries after a failed attempt; nil means DefaultRetries.
	Retries *uint32 `json:"retries,omitempty"`
	// Timeouts towards the backends.
	Timeouts Timeouts `json:"timeouts,omitzero"`
}

// Backend is one upstream server of a pool.
type Backend struct {
	// Address is the canonical HOST:PORT.
	Address string `json:"address"`
	// Weight is the relative share of requests, MinWeight to MaxWeight.
	Weight uint32 `json:"weight"`
	// Draining backends get no new requests.
	Draining bool `json:"draining,omitempty"`
}

// Clone returns a deep copy of p.
func (p Pool) Clone() Pool {
	c := p
	c.Hosts = append([]string(nil), p.Hosts...)
	c.Backends = append([]Backend(nil), p.Backends...)
	if p.Retries != nil {
		r := *p.Retries
		c.Retries = &r
	}
	return c
}

// Normalize validates every field of p (prefixing field paths with prefix,
// e.g. "pool") and returns p in canonical form. It reports every invalid field.
func Normalize(prefix string, p Pool) (Pool, error) {
	var errs Errors
	add := func(err error) {
		if err != nil {
			errs = append(errs, AsFieldErrors(err)...)
		}
	}
	out := Pool{Name: p.Name, PathPrefix: p.PathPrefix, Version: p.Version,
		LoadBalancing: p.LoadBalancing, HealthCheck: p.HealthCheck, OutlierDetection: p.OutlierDetection,
		Retries: p.Retries, Timeouts: p.Timeouts}
	if out.LoadBalancing.Algorithm == AlgorithmRoundRobin {
		out.LoadBalancing.Algorithm = "" // one spelling for the default
	}
	validatePolicies(prefix, p, add)
	if up, err := NormalizeUpstream(prefix+".upstream", p.Upstream); err != nil {
		add(err)
	} else {
		out.Upstream = up
	}
	add(ValidateName(prefix+".name", p.Name))
	add(ValidatePathPrefix(prefix+".path_prefix", p.PathPrefix))
	if len(p.Hosts) > MaxHosts {
		add(fieldErr(prefix+".hosts", fmt.Sprint(len(p.Hosts)), "at most %d hosts per pool", MaxHosts))
	}
	seenHost := make(map[string]bool, len(p.Hosts))
	for i, h := range p.Hosts {
		field := fmt.Sprintf("%s.hosts[%d]", prefix, i)
		n, err := NormalizeHost(field, h)
		if err != nil {
			add(err)
			continue
		}
		if seenHost[n] {
			add(fieldErr(field, h, "is listed twice"))
			continue
		}
		seenHost[n] = true
		out.Hosts = append(out.Hosts, n)
	}
	sort.Strings(out.Hosts)
	if len(p.Backends) > MaxBackends {
		add(fieldErr(prefix+".backends", fmt.Sprint(len(p.Backends)), "at most %d backends per pool", MaxBackends))
	}
	seenAddr := make(map[string]bool, len(p.Backends))
	for i, b := range p.Backends {
		field := fmt.Sprintf("%s.backends[%d]", prefix, i)
		addr, err := NormalizeAddress(field+".address", b.Address)
		if err != nil {
			add(err)
			continue
		}
		if seenAddr[addr] {
			add(fieldErr(field+".address", b.Address, "is listed twice in the pool"))
			continue
		}
		seenAddr[addr] = true
		if err := ValidateWeight(field+".weight", int64(b.Weight)); err != nil {
			add(err)
			continue
		}
		out.Backends = append(out.Backends, Backend{Address: addr, Weight: b.Weight, Draining: b.Draining})
	}
	if len(errs) > 0 {
		return Pool{}, errs
	}
	return out, nil
}

// Route is one (host, path prefix) pair a pool claims. Host "" means any host.
type Route struct {
	Host       string
	PathPrefix string
}

// Routes lists the routes p claims.
func (p Pool) Routes() []Route {
	prefix := p.PathPrefix
	if prefix == "" {
		prefix = "/"
	}
	if len(p.Hosts) == 0 {
		return []Route{{Host: "", PathPrefix: prefix}}
	}
	rs := make([]Route, 0, len(p.Hosts))
	for _, h := range p.Hosts {
		rs = append(rs, Route{Host: h, PathPrefix: prefix})
	}
	return rs
}

// RouteConflict returns the first route that p claims and that some pool in
// others (other than p itself, by name) already claims, with that pool's name.
func RouteConflict(p Pool, others []Pool) (Route, string, bool) {
	claimed := make(map[Route]string)
	for _, o := range others {
		if o.Name == p.Name {
			continue
		}
		for _, r := range o.Routes() {
			claimed[r] = o.Name
		}
	}
	for _, r := range p.Routes() {
		if owner, ok := claimed[r]; ok {
			return r, owner, true
		}
	}
	return Route{}, "", false
}

// String renders a route as host+prefix, "*" standing for any host.
func (r Route) String() string {
	h := r.Host
	if h == "" {
		h = "*"
	}
	return h + r.PathPrefix
}
