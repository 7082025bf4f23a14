package admin_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// stale is the refusal of a change to pool whose version is at, not expected.
func stale(pool string, expected, at uint64) wantErr {
	return wantErr{codes.FailedPrecondition,
		fmt.Sprintf("pool %q changed since version %d (it is now at version %d); read it again and retry", pool, expected, at),
		[]proto.Message{&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
			Type: "VERSION", Subject: "pool/" + pool, Description: fmt.Sprintf("expected version %d, found %d", expected, at),
		}}}}}
}

// The five mutations of one pool, each made only if the pool is still at
// the version given.
func updatePoolAt(p *lbv1.Pool, v uint64) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.UpdatePool(ctx, &lbv1.UpdatePoolRequest{Pool: p, UpdateMask: mask("backends"), ExpectedVersion: v})
		return err
	}
}

func deletePoolAt(name string, v uint64) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.DeletePool(ctx, &lbv1.DeletePoolRequest{Name: name, ExpectedVersion: v})
		return err
	}
}

func addBackendAt(pool, addr string, v uint64) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: pool, Address: addr, ExpectedVersion: v})
		return err
	}
}

func removeBackendAt(pool, addr string, v uint64) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.RemoveBackend(ctx, &lbv1.RemoveBackendRequest{Pool: pool, Address: addr, ExpectedVersion: v})
		return err
	}
}

func updateBackendAt(pool, addr string, draining bool, v uint64) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: pool, Address: addr, Draining: proto.Bool(draining), ExpectedVersion: v})
		return err
	}
}

// A mutation with an expected_version other than the pool's own is refused
// with FAILED_PRECONDITION and changes nothing.
func TestExpectedVersionRefused(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx) // web at 1
	if _, err := e.c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.3:80"}); err != nil {
		t.Fatal(err) // web at 2
	}
	e.create(t, ctx, &lbv1.Pool{Name: "api", PathPrefix: "/api"}) // api at 3; web still at 2

	newBackends := &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("10.0.0.9:80", 1)}}
	var cases []refusedCase
	// 1: web's version before its last change; 3: the configuration's
	// version, which is not web's; 4: a version yet to come.
	for _, v := range []uint64{1, 3, 4} {
		cases = append(cases,
			refusedCase{fmt.Sprintf("update pool at %d", v), updatePoolAt(newBackends, v), stale("web", v, 2)},
			refusedCase{fmt.Sprintf("delete pool at %d", v), deletePoolAt("web", v), stale("web", v, 2)},
			refusedCase{fmt.Sprintf("add backend at %d", v), addBackendAt("web", "10.0.0.9:80", v), stale("web", v, 2)},
			refusedCase{fmt.Sprintf("remove backend at %d", v), removeBackendAt("web", "10.0.0.1:80", v), stale("web", v, 2)},
			refusedCase{fmt.Sprintf("update backend at %d", v), updateBackendAt("web", "10.0.0.1:80", true, v), stale("web", v, 2)},
		)
	}
	cases = append(cases,
		// A missing pool is missing, whatever version is expected.
		refusedCase{"update missing pool at 2", updatePoolAt(&lbv1.Pool{Name: "missing"}, 2), poolNotFound("missing")},
		refusedCase{"delete missing pool at 2", deletePoolAt("missing", 2), poolNotFound("missing")},
		refusedCase{"add backend to missing pool at 2", addBackendAt("missing", "10.0.0.9:80", 2), poolNotFound("missing")},
		// The expected version is checked in the same transaction as the
		// change, not instead of it.
		refusedCase{"add existing backend at the right version", addBackendAt("web", "10.0.0.1:80", 2),
			wantErr{codes.AlreadyExists, `backend 10.0.0.1:80 is already in pool "web"`, []proto.Message{resourceInfo("backend", "10.0.0.1:80")}}},
		refusedCase{"remove unknown backend at the right version", removeBackendAt("web", "10.0.0.9:80", 2), backendNotFound("web", "10.0.0.9:80")},
	)
	runRefused(t, e, cases)
	if got := e.get(t, ctx, "web"); got.GetPool().GetVersion() != 2 || got.GetVersion() != 3 {
		t.Errorf("after the refused calls, GetPool = %v; want web at 2 in version 3", got)
	}
}

// A mutation with the pool's own version as expected_version is made, and
// moves the pool to the new version the next one must expect.
func TestExpectedVersionAccepted(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx)                                                // web at 1
	e.create(t, ctx, &lbv1.Pool{Name: "api", PathPrefix: "/api"}) // version 2; web still at 1

	steps := []struct {
		name string
		do   func(expected uint64) (*lbv1.Pool, uint64, error)
		want []*lbv1.Backend // web's backends after the step
	}{
		{"update pool", func(v uint64) (*lbv1.Pool, uint64, error) {
			r, err := e.c.UpdatePool(ctx, &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("10.0.0.1:80", 2)}}, UpdateMask: mask("backends"), ExpectedVersion: v})
			return r.GetPool(), r.GetVersion(), err
		}, []*lbv1.Backend{be("10.0.0.1:80", 2)}},
		{"add backend", func(v uint64) (*lbv1.Pool, uint64, error) {
			r, err := e.c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.5:80", Weight: proto.Uint32(3), ExpectedVersion: v})
			return r.GetPool(), r.GetVersion(), err
		}, []*lbv1.Backend{be("10.0.0.1:80", 2), be("10.0.0.5:80", 3)}},
		{"update backend", func(v uint64) (*lbv1.Pool, uint64, error) {
			r, err := e.c.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.1:80", Draining: proto.Bool(true), ExpectedVersion: v})
			return r.GetPool(), r.GetVersion(), err
		}, []*lbv1.Backend{{Address: "10.0.0.1:80", Weight: 2, Draining: true}, be("10.0.0.5:80", 3)}},
		{"remove backend", func(v uint64) (*lbv1.Pool, uint64, error) {
			r, err := e.c.RemoveBackend(ctx, &lbv1.RemoveBackendRequest{Pool: "web", Address: "10.0.0.1:80", ExpectedVersion: v})
			return r.GetPool(), r.GetVersion(), err
		}, []*lbv1.Backend{be("10.0.0.5:80", 3)}},
	}
	at := uint64(1) // web's version
	for i, step := range steps {
		wantVersion := uint64(i + 3)
		p, v, err := step.do(at)
		if err != nil {
			t.Fatalf("%s expecting version %d: %v", step.name, at, err)
		}
		want := &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"}, Backends: step.want, Version: wantVersion}
		if v != wantVersion {
			t.Errorf("%s: version %d, want %d", step.name, v, wantVersion)
		}
		equal(t, step.name+": pool", p, want)
		equal(t, step.name+": GetPool", e.get(t, ctx, "web"), &lbv1.GetPoolResponse{Pool: want, Version: wantVersion})
		// The version just replaced is stale now.
		checkErr(t, addBackendAt("web", "10.0.0.7:80", at)(ctx, e.c), stale("web", at, wantVersion))
		at = wantVersion
	}
	d, err := e.c.DeletePool(ctx, &lbv1.DeletePoolRequest{Name: "web", ExpectedVersion: at})
	if err != nil {
		t.Fatalf("delete pool expecting version %d: %v", at, err)
	}
	equal(t, "DeletePool", d, &lbv1.DeletePoolResponse{Version: at + 1})
	equal(t, "ListPools", e.list(t, ctx), &lbv1.ListPoolsResponse{
		Pools: []*lbv1.Pool{{Name: "api", PathPrefix: "/api", Version: 2}}, Version: at + 1})
}
