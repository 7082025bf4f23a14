package admin_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

func TestCreateGetList(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	equal(t, "ListPools on an empty store", e.list(t, ctx), &lbv1.ListPoolsResponse{Version: 0})

	resp := e.create(t, ctx, &lbv1.Pool{
		Name:       "web",
		Hosts:      []string{"WWW.Example.com.", "api.example.com"},
		PathPrefix: "/api/",
		Backends:   []*lbv1.Backend{be("LOCALHOST:080", 0), be("[2001:DB8::1]:8080", 7), be("10.0.0.1:80", 10000)},
		Version:    42, // ignored
	})
	want := &lbv1.Pool{
		Name:       "web",
		Hosts:      []string{"api.example.com", "www.example.com"},
		PathPrefix: "/api/",
		Backends:   []*lbv1.Backend{be("localhost:80", 1), be("[2001:db8::1]:8080", 7), be("10.0.0.1:80", 10000)},
		Version:    1,
	}
	equal(t, "CreatePool", resp, &lbv1.CreatePoolResponse{Pool: want, Version: 1})
	equal(t, "GetPool", e.get(t, ctx, "web"), &lbv1.GetPoolResponse{Pool: want, Version: 1})

	// Boundary values that are valid.
	long := strings.Repeat("x", 63)
	edge := &lbv1.Pool{
		Name:       long,
		Hosts:      []string{"*.example.com", "[::1]", "10.0.0.1"},
		PathPrefix: "/" + strings.Repeat("p", 1023),
		Backends:   []*lbv1.Backend{be("10.0.0.1:1", 1), be("10.0.0.1:65535", 10000)},
	}
	resp = e.create(t, ctx, edge)
	wantEdge := proto.Clone(edge).(*lbv1.Pool)
	wantEdge.Hosts = []string{"*.example.com", "10.0.0.1", "::1"}
	wantEdge.Version = 2
	equal(t, "CreatePool with boundary values", resp, &lbv1.CreatePoolResponse{Pool: wantEdge, Version: 2})
	punct := e.create(t, ctx, &lbv1.Pool{Name: "a.b-c_d", PathPrefix: "/other"}).GetPool()

	// Pools come ordered by name; GetPool reports the current version with
	// the pool's own.
	equal(t, "ListPools", e.list(t, ctx), &lbv1.ListPoolsResponse{Pools: []*lbv1.Pool{punct, want, wantEdge}, Version: 3})
	equal(t, "GetPool after later changes", e.get(t, ctx, "web"), &lbv1.GetPoolResponse{Pool: want, Version: 3})
}

func TestVersionsGrowByOne(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	c := e.c

	type result struct {
		pool    *lbv1.Pool
		version uint64
	}
	// mutation steps, run in order; want is pool "web" as the step leaves it
	// (without its version, which must be the step's own).
	steps := []struct {
		name string
		do   func() (result, error)
		want *lbv1.Pool
	}{
		{"create web", func() (result, error) {
			r, err := c.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.1:80", 1)}}})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.1:80", 1)}}},
		{"add backend without weight", func() (result, error) {
			r, err := c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.2:80"})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 1)}}},
		{"add backend with weight 10000", func() (result, error) {
			r, err := c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.3:80", Weight: proto.Uint32(10000)})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 1), be("10.0.0.3:80", 10000)}}},
		{"set weight", func() (result, error) {
			r, err := c.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.2:80", Weight: proto.Uint32(7)})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 7), be("10.0.0.3:80", 10000)}}},
		{"remove first backend", func() (result, error) {
			r, err := c.RemoveBackend(ctx, &lbv1.RemoveBackendRequest{Pool: "web", Address: "10.0.0.1:80"})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.2:80", 7), be("10.0.0.3:80", 10000)}}},
		{"create another pool", func() (result, error) {
			r, err := c.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", PathPrefix: "/api"}})
			return result{nil, r.GetVersion()}, err
		}, nil},
		{"update path prefix by mask", func() (result, error) {
			r, err := c.UpdatePool(ctx, &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", PathPrefix: "/web"}, UpdateMask: mask("path_prefix")})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, PathPrefix: "/web", Backends: []*lbv1.Backend{be("10.0.0.2:80", 7), be("10.0.0.3:80", 10000)}}},
		{"replace pool without mask", func() (result, error) {
			r, err := c.UpdatePool(ctx, &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", Hosts: []string{"a.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.4:80", 0)}}})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"a.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.4:80", 1)}}},
		{"delete the other pool", func() (result, error) {
			r, err := c.DeletePool(ctx, &lbv1.DeletePoolRequest{Name: "api"})
			return result{nil, r.GetVersion()}, err
		}, nil},
		{"set the weight it already has", func() (result, error) {
			r, err := c.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.4:80", Weight: proto.Uint32(1)})
			return result{r.GetPool(), r.GetVersion()}, err
		}, &lbv1.Pool{Name: "web", Hosts: []string{"a.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.4:80", 1)}}},
	}
	var web *lbv1.Pool
	for i, step := range steps {
		wantVersion := uint64(i + 1)
		r, err := step.do()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if r.version != wantVersion {
			t.Errorf("%s: version %d, want %d", step.name, r.version, wantVersion)
		}
		if step.want != nil {
			web = proto.Clone(step.want).(*lbv1.Pool)
			web.Version = wantVersion
			equal(t, step.name+": returned pool", r.pool, web)
		}
		equal(t, step.name+": GetPool", e.get(t, ctx, "web"), &lbv1.GetPoolResponse{Pool: web, Version: wantVersion})
	}
	equal(t, "final ListPools", e.list(t, ctx), &lbv1.ListPoolsResponse{Pools: []*lbv1.Pool{web}, Version: uint64(len(steps))})
}

func TestUpdatePool(t *testing.T) {
	seed := &lbv1.Pool{
		Name:       "web",
		Hosts:      []string{"www.example.com"},
		PathPrefix: "/app",
		Backends:   []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 5)},
	}
	tests := []struct {
		name string
		pool *lbv1.Pool
		mask *fieldmaskpb.FieldMask
		want *lbv1.Pool // without version
	}{
		{
			name: "no mask replaces every field",
			pool: &lbv1.Pool{Name: "web", Hosts: []string{"New.Example.com"}, Backends: []*lbv1.Backend{be("10.0.0.3:80", 2)}},
			want: &lbv1.Pool{Name: "web", Hosts: []string{"new.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.3:80", 2)}},
		},
		{
			name: "empty mask replaces every field",
			pool: &lbv1.Pool{Name: "web", PathPrefix: "/b"},
			mask: mask(),
			want: &lbv1.Pool{Name: "web", PathPrefix: "/b"},
		},
		{
			name: "mask backends",
			pool: &lbv1.Pool{Name: "web", Hosts: []string{"ignored.example.com"}, PathPrefix: "/ignored", Backends: []*lbv1.Backend{be("10.0.0.3:080", 0), be("10.0.0.1:80", 9)}},
			mask: mask("backends"),
			want: &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, PathPrefix: "/app", Backends: []*lbv1.Backend{be("10.0.0.3:80", 1), be("10.0.0.1:80", 9)}},
		},
		{
			name: "mask backends to none",
			pool: &lbv1.Pool{Name: "web"},
			mask: mask("backends"),
			want: &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, PathPrefix: "/app"},
		},
		{
			name: "mask hosts and path_prefix",
			pool: &lbv1.Pool{Name: "web", Hosts: []string{"b.example.com", "A.example.com"}, PathPrefix: "/v2", Backends: []*lbv1.Backend{be("10.0.0.9:80", 1)}},
			mask: mask("hosts", "path_prefix"),
			want: &lbv1.Pool{Name: "web", Hosts: []string{"a.example.com", "b.example.com"}, PathPrefix: "/v2", Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 5)}},
		},
		{
			name: "mask path_prefix clears it",
			pool: &lbv1.Pool{Name: "web"},
			mask: mask("path_prefix"),
			want: &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 5)}},
		},
		{
			name: "request version is ignored",
			pool: &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, PathPrefix: "/app", Version: 99},
			mask: mask("hosts"),
			want: &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, PathPrefix: "/app", Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 5)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			e := newEnv(t)
			e.create(t, ctx, seed)
			resp, err := e.c.UpdatePool(ctx, &lbv1.UpdatePoolRequest{Pool: tt.pool, UpdateMask: tt.mask})
			if err != nil {
				t.Fatalf("UpdatePool: %v", err)
			}
			want := proto.Clone(tt.want).(*lbv1.Pool)
			want.Version = 2
			equal(t, "UpdatePool", resp, &lbv1.UpdatePoolResponse{Pool: want, Version: 2})
			equal(t, "GetPool", e.get(t, ctx, "web"), &lbv1.GetPoolResponse{Pool: want, Version: 2})
		})
	}
}

func TestRoutesThatDoNotConflict(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.create(t, ctx, &lbv1.Pool{Name: "catchall"})
	e.create(t, ctx, &lbv1.Pool{Name: "api", Hosts: []string{"api.example.com"}, PathPrefix: "/v1"})

	for i, p := range []*lbv1.Pool{
		{Name: "other-prefix", Hosts: []string{"api.example.com"}, PathPrefix: "/v2"},
		{Name: "slash-suffix", Hosts: []string{"api.example.com"}, PathPrefix: "/v1/"},
		{Name: "any-host-v1", PathPrefix: "/v1"},
		{Name: "wildcard", Hosts: []string{"*.example.com"}, PathPrefix: "/v1"},
	} {
		if got := e.create(t, ctx, p).GetVersion(); got != uint64(i+3) {
			t.Errorf("CreatePool(%s): version %d, want %d", p.GetName(), got, i+3)
		}
	}
	// A pool keeps its own routes through an update.
	r, err := e.c.UpdatePool(ctx, &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "api", Hosts: []string{"api.example.com"}, PathPrefix: "/v1", Backends: []*lbv1.Backend{be("10.0.0.1:80", 1)}}})
	if err != nil {
		t.Fatalf("UpdatePool keeping its own routes: %v", err)
	}
	if r.GetVersion() != 7 {
		t.Errorf("UpdatePool: version %d, want 7", r.GetVersion())
	}
	// A deleted pool's route is free again.
	if _, err := e.c.DeletePool(ctx, &lbv1.DeletePoolRequest{Name: "catchall"}); err != nil {
		t.Fatal(err)
	}
	if got := e.create(t, ctx, &lbv1.Pool{Name: "new-catchall", PathPrefix: "/"}).GetVersion(); got != 9 {
		t.Errorf("CreatePool on a freed route: version %d, want 9", got)
	}
}

func TestBackendAddressNormalisation(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.create(t, ctx, &lbv1.Pool{Name: "web"})

	add, err := e.c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "LOCALHOST:080"})
	if err != nil {
		t.Fatalf("AddBackend: %v", err)
	}
	equal(t, "AddBackend LOCALHOST:080", add, &lbv1.AddBackendResponse{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("localhost:80", 1)}, Version: 2}, Version: 2})

	runRefused(t, e, []refusedCase{
		{"add it again in canonical form", addBackend("web", "localhost:80", nil), wantErr{codes.AlreadyExists, `backend localhost:80 is already in pool "web"`,
			[]proto.Message{resourceInfo("backend", "localhost:80")}}},
	})

	add, err = e.c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "[2001:DB8:0::1]:0443", Weight: proto.Uint32(3)})
	if err != nil {
		t.Fatalf("AddBackend IPv6: %v", err)
	}
	equal(t, "AddBackend IPv6", add.GetPool(), &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("localhost:80", 1), be("[2001:db8::1]:443", 3)}, Version: 3})

	upd, err := e.c.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: "web", Address: "LocalHost:0080", Weight: proto.Uint32(9)})
	if err != nil {
		t.Fatalf("UpdateBackend: %v", err)
	}
	equal(t, "UpdateBackend", upd, &lbv1.UpdateBackendResponse{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("localhost:80", 9), be("[2001:db8::1]:443", 3)}, Version: 4}, Version: 4})

	rm, err := e.c.RemoveBackend(ctx, &lbv1.RemoveBackendRequest{Pool: "web", Address: "localhost.:80"})
	if err != nil {
		t.Fatalf("RemoveBackend: %v", err)
	}
	equal(t, "RemoveBackend", rm, &lbv1.RemoveBackendResponse{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("[2001:db8::1]:443", 3)}, Version: 5}, Version: 5})
}

func TestDeletePool(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx)
	api := e.create(t, ctx, &lbv1.Pool{Name: "api", PathPrefix: "/api"}).GetPool()

	d, err := e.c.DeletePool(ctx, &lbv1.DeletePoolRequest{Name: "web"})
	if err != nil {
		t.Fatalf("DeletePool: %v", err)
	}
	equal(t, "DeletePool", d, &lbv1.DeletePoolResponse{Version: 3})
	equal(t, "ListPools", e.list(t, ctx), &lbv1.ListPoolsResponse{Pools: []*lbv1.Pool{api}, Version: 3})
	runRefused(t, e, []refusedCase{
		{"get deleted", getPool("web"), poolNotFound("web")},
		{"delete again", deletePool("web"), poolNotFound("web")},
		{"add backend to deleted", addBackend("web", "10.0.0.1:80", nil), poolNotFound("web")},
	})
	// The name can be used again, and starts from the new version.
	re := e.create(t, ctx, &lbv1.Pool{Name: "web"})
	equal(t, "recreate", re, &lbv1.CreatePoolResponse{Pool: &lbv1.Pool{Name: "web", Version: 4}, Version: 4})
}

func TestMaxBackends(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	backends := make([]*lbv1.Backend, 10000)
	for i := range backends {
		backends[i] = be(fmt.Sprintf("10.1.%d.%d:80", i/256, i%256), 1)
	}
	if got := len(e.create(t, ctx, &lbv1.Pool{Name: "big", Backends: backends}).GetPool().GetBackends()); got != 10000 {
		t.Fatalf("created pool holds %d backends, want 10000", got)
	}
	runRefused(t, e, []refusedCase{
		{"add the 10001st backend", addBackend("big", "10.2.0.1:80", nil),
			wantErr{codes.ResourceExhausted, `pool "big" already holds 10000 backends, the most a pool may hold`, nil}},
	})
}

func TestConcurrentMutations(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx)
	const n = 20

	versions := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := e.c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: fmt.Sprintf("10.9.0.%d:80", i+1)})
			if err != nil {
				t.Errorf("AddBackend %d: %v", i, err)
				return
			}
			versions[i] = r.GetVersion()
		})
	}
	wg.Wait()
	slices.Sort(versions)
	for i, v := range versions {
		if v != uint64(i+2) {
			t.Fatalf("versions returned = %v, want 2..%d once each", versions, n+1)
		}
	}
	got := e.get(t, ctx, "web")
	if len(got.GetPool().GetBackends()) != n+2 || got.GetPool().GetVersion() != n+1 || got.GetVersion() != n+1 {
		t.Errorf("after %d concurrent adds: %v", n, got)
	}
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx)
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	unavailable := wantErr{codes.Unavailable, "control plane is shutting down", nil}
	for name, c := range map[string]call{
		"ListPools": func(ctx context.Context, c lbv1.AdminServiceClient) error {
			_, err := c.ListPools(ctx, &lbv1.ListPoolsRequest{})
			return err
		},
		"GetPool":    getPool("web"),
		"CreatePool": createPool(&lbv1.Pool{Name: "new"}),
		"AddBackend": addBackend("web", "10.0.0.9:80", nil),
		"DeletePool": deletePool("web"),
	} {
		t.Run(name, func(t *testing.T) {
			checkErr(t, c(testCtx(t), e.c), unavailable)
		})
	}
}
