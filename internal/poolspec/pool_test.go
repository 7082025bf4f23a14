package poolspec_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/lb-project/lb/internal/poolspec"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name     string
		prefix   string
		in       poolspec.Pool
		want     poolspec.Pool
		wantErrs []poolspec.FieldError // nil when valid
	}{
		{
			name:   "minimal",
			prefix: "pool",
			in:     poolspec.Pool{Name: "web"},
			want:   poolspec.Pool{Name: "web"},
		},
		{
			name:   "canonical form",
			prefix: "pool",
			in: poolspec.Pool{
				Name:       "web",
				Hosts:      []string{"WWW.Example.com", "api.example.com.", "*.example.com", "10.0.0.9"},
				PathPrefix: "/app",
				Backends: []poolspec.Backend{
					{Address: "10.0.0.2:08080", Weight: 3},
					{Address: "Backend.Example.com:80", Weight: 1},
					{Address: "[2001:DB8::1]:443", Weight: 10000},
				},
				Version: 7,
			},
			want: poolspec.Pool{
				Name:       "web",
				Hosts:      []string{"*.example.com", "10.0.0.9", "api.example.com", "www.example.com"},
				PathPrefix: "/app",
				Backends: []poolspec.Backend{
					{Address: "10.0.0.2:8080", Weight: 3},
					{Address: "backend.example.com:80", Weight: 1},
					{Address: "[2001:db8::1]:443", Weight: 10000},
				},
				Version: 7,
			},
		},
		{
			name:   "every error collected",
			prefix: "pool",
			in: poolspec.Pool{
				Name:       "Bad",
				Hosts:      []string{"a.example.com", "A.Example.com.", "b..example.com", "c.example.com:80"},
				PathPrefix: "x",
				Backends: []poolspec.Backend{
					{Address: "10.0.0.1:80", Weight: 1},
					{Address: "10.0.0.1:0080", Weight: 2},
					{Address: "nope", Weight: 1},
					{Address: "10.0.0.2:80", Weight: 0},
					{Address: "10.0.0.3:80", Weight: 10001},
					{Address: "10.0.0.4:80", Weight: 10000},
				},
			},
			wantErrs: []poolspec.FieldError{
				{Field: "pool.name", Value: "Bad", Reason: nameCharsReason},
				{Field: "pool.path_prefix", Value: "x", Reason: `must begin with "/"`},
				{Field: "pool.hosts[1]", Value: "A.Example.com.", Reason: "is listed twice"},
				{Field: "pool.hosts[2]", Value: "b..example.com", Reason: emptyLabelReason},
				{Field: "pool.hosts[3]", Value: "c.example.com:80", Reason: "must be a host name without a port"},
				{Field: "pool.backends[1].address", Value: "10.0.0.1:0080", Reason: "is listed twice in the pool"},
				{Field: "pool.backends[2].address", Value: "nope", Reason: hostPortReason},
				{Field: "pool.backends[3].weight", Value: "0", Reason: weightReason},
				{Field: "pool.backends[4].weight", Value: "10001", Reason: weightReason},
			},
		},
		{
			name:   "nested prefix",
			prefix: "pools[3]",
			in: poolspec.Pool{
				Name:     "ok",
				Hosts:    []string{""},
				Backends: []poolspec.Backend{{Address: "x.example.com:80", Weight: 1}, {Address: "X.example.com.:80", Weight: 1}},
			},
			wantErrs: []poolspec.FieldError{
				{Field: "pools[3].hosts[0]", Value: "", Reason: "must not be empty"},
				{Field: "pools[3].backends[1].address", Value: "X.example.com.:80", Reason: "is listed twice in the pool"},
			},
		},
		{
			name:   "too many hosts",
			prefix: "pool",
			in:     poolspec.Pool{Name: "web", Hosts: hosts(poolspec.MaxHosts + 1)},
			wantErrs: []poolspec.FieldError{
				{Field: "pool.hosts", Value: "101", Reason: "at most 100 hosts per pool"},
			},
		},
		{
			name:   "too many backends",
			prefix: "pool",
			in:     poolspec.Pool{Name: "web", Backends: backends(poolspec.MaxBackends + 1)},
			wantErrs: []poolspec.FieldError{
				{Field: "pool.backends", Value: "10001", Reason: "at most 10000 backends per pool"},
			},
		},
		{
			name:   "limits",
			prefix: "pool",
			in:     poolspec.Pool{Name: "web", Hosts: hosts(poolspec.MaxHosts), Backends: backends(poolspec.MaxBackends)},
			want:   poolspec.Pool{Name: "web", Hosts: sortedHosts(poolspec.MaxHosts), Backends: backends(poolspec.MaxBackends)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := poolspec.Normalize(tt.prefix, tt.in)
			if tt.wantErrs == nil {
				if err != nil {
					t.Fatalf("Normalize error = %v, want nil", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("Normalize = %#v,\nwant %#v", got, tt.want)
				}
				return
			}
			if !reflect.DeepEqual(got, poolspec.Pool{}) {
				t.Errorf("Normalize returned %#v with an error, want the zero Pool", got)
			}
			var es poolspec.Errors
			if !errors.As(err, &es) {
				t.Fatalf("Normalize error = %v (%T), want poolspec.Errors", err, err)
			}
			gotErrs := make([]poolspec.FieldError, len(es))
			for i, e := range es {
				gotErrs[i] = *e
			}
			if !reflect.DeepEqual(gotErrs, tt.wantErrs) {
				t.Fatalf("Normalize errors:\n%v\nwant:\n%v", gotErrs, tt.wantErrs)
			}
			wantMsg := tt.wantErrs[0].Error()
			if n := len(tt.wantErrs); n > 1 {
				wantMsg += fmt.Sprintf(" (and %d more invalid fields)", n-1)
			}
			if err.Error() != wantMsg {
				t.Errorf("Normalize error message = %q, want %q", err.Error(), wantMsg)
			}
		})
	}
}

// TestNormalizeDoesNotModifyInput checks that Normalize leaves its argument's
// slices as they were, even though it sorts and rewrites what it returns.
func TestNormalizeDoesNotModifyInput(t *testing.T) {
	in := poolspec.Pool{
		Name:     "web",
		Hosts:    []string{"B.example.com", "a.example.com"},
		Backends: []poolspec.Backend{{Address: "X.example.com:080", Weight: 1}},
	}
	orig := in.Clone()
	if _, err := poolspec.Normalize("pool", in); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	if !reflect.DeepEqual(in, orig) {
		t.Fatalf("Normalize modified its input: %#v, was %#v", in, orig)
	}
}

// hosts returns n distinct host names, in an order that is not sorted.
func hosts(n int) []string {
	hs := make([]string, n)
	for i := range hs {
		hs[i] = fmt.Sprintf("h%d.example.com", n-1-i)
	}
	return hs
}

// sortedHosts returns hosts(n) in sorted order.
func sortedHosts(n int) []string {
	hs := hosts(n)
	slices.Sort(hs)
	return hs
}

// backends returns n distinct canonical backends of weight 1.
func backends(n int) []poolspec.Backend {
	bs := make([]poolspec.Backend, n)
	for i := range bs {
		bs[i] = poolspec.Backend{Address: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1), Weight: 1}
	}
	return bs
}

func TestRouteConflict(t *testing.T) {
	tests := []struct {
		name      string
		p         poolspec.Pool
		others    []poolspec.Pool
		wantRoute poolspec.Route
		wantOwner string
		wantOK    bool
	}{
		{
			name: "no others",
			p:    poolspec.Pool{Name: "a"},
		},
		{
			name:   "itself by name",
			p:      poolspec.Pool{Name: "a", Hosts: []string{"x.com"}, PathPrefix: "/api"},
			others: []poolspec.Pool{{Name: "a", Hosts: []string{"x.com"}, PathPrefix: "/api"}},
		},
		{
			name:      "any host, empty prefix equals /",
			p:         poolspec.Pool{Name: "a"},
			others:    []poolspec.Pool{{Name: "b", PathPrefix: "/"}},
			wantRoute: poolspec.Route{Host: "", PathPrefix: "/"},
			wantOwner: "b",
			wantOK:    true,
		},
		{
			name:   "any host, other prefix",
			p:      poolspec.Pool{Name: "a", PathPrefix: "/api"},
			others: []poolspec.Pool{{Name: "b", PathPrefix: "/ap"}, {Name: "c"}},
		},
		{
			name:   "host versus any host",
			p:      poolspec.Pool{Name: "a", Hosts: []string{"x.com"}},
			others: []poolspec.Pool{{Name: "b"}},
		},
		{
			name:   "wildcard versus exact",
			p:      poolspec.Pool{Name: "a", Hosts: []string{"*.x.com"}},
			others: []poolspec.Pool{{Name: "b", Hosts: []string{"x.com", "a.x.com"}}},
		},
		{
			name:      "shared host",
			p:         poolspec.Pool{Name: "a", Hosts: []string{"x.com", "y.com"}, PathPrefix: "/api"},
			others:    []poolspec.Pool{{Name: "b", Hosts: []string{"z.com"}, PathPrefix: "/api"}, {Name: "c", Hosts: []string{"y.com"}, PathPrefix: "/api"}},
			wantRoute: poolspec.Route{Host: "y.com", PathPrefix: "/api"},
			wantOwner: "c",
			wantOK:    true,
		},
		{
			name: "first route of p wins",
			p:    poolspec.Pool{Name: "a", Hosts: []string{"x.com", "y.com"}},
			others: []poolspec.Pool{
				{Name: "b", Hosts: []string{"y.com"}},
				{Name: "c", Hosts: []string{"*.w.com", "x.com"}},
			},
			wantRoute: poolspec.Route{Host: "x.com", PathPrefix: "/"},
			wantOwner: "c",
			wantOK:    true,
		},
		{
			name:      "shared wildcard",
			p:         poolspec.Pool{Name: "a", Hosts: []string{"*.x.com"}, PathPrefix: "/"},
			others:    []poolspec.Pool{{Name: "b", Hosts: []string{"*.x.com"}}},
			wantRoute: poolspec.Route{Host: "*.x.com", PathPrefix: "/"},
			wantOwner: "b",
			wantOK:    true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, owner, ok := poolspec.RouteConflict(tt.p, tt.others)
			if r != tt.wantRoute || owner != tt.wantOwner || ok != tt.wantOK {
				t.Fatalf("RouteConflict = %#v, %q, %v; want %#v, %q, %v", r, owner, ok, tt.wantRoute, tt.wantOwner, tt.wantOK)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	tests := []struct {
		name string
		p    poolspec.Pool
		want []poolspec.Route
		strs []string
	}{
		{"any host", poolspec.Pool{Name: "a"}, []poolspec.Route{{Host: "", PathPrefix: "/"}}, []string{"*/"}},
		{"any host with prefix", poolspec.Pool{Name: "a", PathPrefix: "/api"}, []poolspec.Route{{Host: "", PathPrefix: "/api"}}, []string{"*/api"}},
		{
			"hosts",
			poolspec.Pool{Name: "a", Hosts: []string{"x.com", "*.y.com"}, PathPrefix: "/v1/"},
			[]poolspec.Route{{Host: "x.com", PathPrefix: "/v1/"}, {Host: "*.y.com", PathPrefix: "/v1/"}},
			[]string{"x.com/v1/", "*.y.com/v1/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.p.Routes()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Routes = %#v, want %#v", got, tt.want)
			}
			for i, r := range got {
				if s := r.String(); s != tt.strs[i] {
					t.Errorf("Routes[%d].String() = %q, want %q", i, s, tt.strs[i])
				}
			}
		})
	}
}

func TestClone(t *testing.T) {
	p := poolspec.Pool{
		Name:       "web",
		Hosts:      []string{"a.com"},
		PathPrefix: "/x",
		Backends:   []poolspec.Backend{{Address: "10.0.0.1:80", Weight: 2}},
		Version:    3,
	}
	c := p.Clone()
	if !reflect.DeepEqual(c, p) {
		t.Fatalf("Clone = %#v, want %#v", c, p)
	}
	c.Hosts[0] = "b.com"
	c.Backends[0].Weight = 9
	if p.Hosts[0] != "a.com" || p.Backends[0].Weight != 2 {
		t.Fatalf("changing the clone changed the original: %#v", p)
	}
}
