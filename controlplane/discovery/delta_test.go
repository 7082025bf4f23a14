package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/controlplane/store/boltstore"
	"github.com/lb-project/lb/internal/poolspec"
)

// vpool is pool(name, addrs...) as stored at version v.
func vpool(name string, v uint64, addrs ...string) poolspec.Pool {
	p := pool(name, addrs...)
	p.Version = v
	return p
}

// A delta carries the pools that changed, whatever else is configured: one
// backend more in one pool costs the same next to 200 other pools as alone.
func TestDeltaSizeDoesNotDependOnOtherPools(t *testing.T) {
	const target = "target"
	backends := func(n int) []string {
		var out []string
		for i := range 3 {
			out = append(out, fmt.Sprintf("10.%d.0.%d:8080", n, i+1))
		}
		return out
	}
	type sizes struct{ full, change, deletion int }
	measure := func(t *testing.T, others int) sizes {
		e := newEnv(t, func(ctx context.Context, st *boltstore.Store) error {
			_, err := st.Update(ctx, func(tx store.Tx) error {
				tx.Put(pool(target, backends(0)...))
				for i := range others {
					tx.Put(pool(fmt.Sprintf("other-%03d", i), backends(i+1)...))
				}
				return nil
			})
			return err
		})
		var got sizes
		s := e.connect(t, "node-1")
		r := newReplica(store.State{})
		prev := e.state(t)
		got.full = proto.Size(s.recvApply(t, "first message", r, full(prev), prev))

		e.update(t, func(tx store.Tx) {
			p, _ := tx.Pool(target)
			p.Backends = append(p.Backends, poolspec.Backend{Address: "10.0.0.99:8080", Weight: 1})
			tx.Put(p)
		})
		next := e.state(t)
		m := s.recvApply(t, "a backend added", r, delta(prev, next), next)
		if len(m.GetPools()) != 1 || m.GetPools()[0].GetName() != target || len(m.GetRemovedPools()) != 0 || m.GetFull() {
			t.Errorf("a backend added: update %v, want a delta of pool %q alone", m, target)
		}
		got.change = proto.Size(m)

		v := e.update(t, func(tx store.Tx) { tx.Delete(target) })
		next = e.state(t)
		m = s.recvApply(t, "the pool deleted", r, &lbv1.StreamConfigResponse{Version: v, RemovedPools: []string{target}}, next)
		got.deletion = proto.Size(m)
		return got
	}
	var alone, crowded sizes
	t.Run("alone", func(t *testing.T) { alone = measure(t, 0) })
	t.Run("with 200 other pools", func(t *testing.T) { crowded = measure(t, 200) })
	if t.Failed() {
		return
	}
	t.Logf("sizes alone %+v, with 200 other pools %+v", alone, crowded)
	// Versions are varints: allow a few bytes for larger ones.
	const slack = 4
	if d := crowded.change - alone.change; d < -slack || d > slack {
		t.Errorf("delta of one backend change: %d bytes next to 200 pools, %d alone", crowded.change, alone.change)
	}
	if d := crowded.deletion - alone.deletion; d < -slack || d > slack {
		t.Errorf("delta of one pool deletion: %d bytes next to 200 pools, %d alone", crowded.deletion, alone.deletion)
	}
	if crowded.change*100 > crowded.full {
		t.Errorf("delta of one backend change is %d bytes, the full configuration %d", crowded.change, crowded.full)
	}
}

// history publishes (or, for versions in skip, only records) a sequence of
// states:
//
//	5: a b c d          (the control plane's first: its horizon)
//	6: b changed
//	7: c deleted
//	8: d deleted, e created   (never published: coalesced with 9)
//	9: a changed
func history(e *env) map[uint64]store.State {
	a5, b5, c5, d5 := vpool("a", 5, "10.0.0.1:80"), vpool("b", 5, "10.0.0.2:80"), vpool("c", 5), vpool("d", 5)
	b6 := vpool("b", 6, "10.0.0.2:80", "10.0.0.3:80")
	e8 := vpool("e", 8, "10.0.0.8:80")
	a9 := vpool("a", 9)
	states := map[uint64]store.State{
		5: {Version: 5, Pools: []poolspec.Pool{a5, b5, c5, d5}},
		6: {Version: 6, Pools: []poolspec.Pool{a5, b6, c5, d5}},
		7: {Version: 7, Pools: []poolspec.Pool{a5, b6, d5}},
		8: {Version: 8, Pools: []poolspec.Pool{a5, b6, e8}},
		9: {Version: 9, Pools: []poolspec.Pool{a9, b6, e8}},
	}
	for _, v := range []uint64{5, 6, 7, 9} {
		e.disc.Publish(states[v])
	}
	return states
}

// A data plane that reconnects gets only what it lacks when this control
// plane knows the version it holds, else the full configuration; after that
// first update, each is a delta from the one before.
func TestResume(t *testing.T) {
	e := newServer(t)
	states := history(e)
	latest := states[9]
	tests := []struct {
		name string
		held uint64
		want *lbv1.StreamConfigResponse
	}{
		{"latest version", 9, &lbv1.StreamConfigResponse{Version: 9}},
		// Version 8 was never published here (another replica's, or one a
		// store watch coalesced): a pool created and deleted around it could
		// be missing from the tombstones, so only a full snapshot is safe.
		{"version never published here", 8, full(latest)},
		{"one version behind a deletion", 7, delta(states[7], latest)},
		{"two versions behind", 6, &lbv1.StreamConfigResponse{Version: 9, Pools: []*lbv1.Pool{full(latest).Pools[0], full(latest).Pools[2]}, RemovedPools: []string{"c", "d"}}},
		{"at the horizon", 5, delta(states[5], latest)},
		{"version 0, below the horizon", 0, full(latest)},
		{"just below the horizon", 4, full(latest)},
		{"just above the latest", 10, full(latest)},
		{"far above the latest", 1 << 63, full(latest)},
	}
	type resumed struct {
		s *stream
		r *replica
	}
	var streams []resumed
	for _, tt := range tests {
		// A node at a version this control plane does not know may hold
		// anything.
		r := newReplica(store.State{Version: tt.held, Pools: []poolspec.Pool{vpool("stale", tt.held)}})
		if st, ok := states[tt.held]; ok {
			r = newReplica(st)
		}
		s := e.open(t, hello("node-1", tt.held))
		s.recvApply(t, tt.name+": first message", r, tt.want, latest)
		streams = append(streams, resumed{s, r})
	}
	// Every stream is now at 9: the next version is the same delta for all.
	f10 := vpool("f", 10)
	st10 := store.State{Version: 10, Pools: append(slices.Clone(latest.Pools), f10)}
	e.disc.Publish(st10)
	for i, rs := range streams {
		rs.s.recvApply(t, fmt.Sprintf("%s: next update", tests[i].name), rs.r, delta(latest, st10), st10)
	}
}

// A data plane that held the latest version resumes with an empty delta
// after the control plane restarts over the same store: the new process's
// horizon is the version the store holds.
func TestResumeAfterRestart(t *testing.T) {
	dir := t.TempDir()
	seed := func(ctx context.Context, st *boltstore.Store) error {
		_, err := st.Update(ctx, func(tx store.Tx) error {
			tx.Put(pool("a", "10.0.0.1:80"))
			tx.Put(pool("b", "10.0.0.2:80"))
			return nil
		})
		return err
	}
	first := newEnvIn(t, dir, seed)
	s := first.connect(t, "node-1")
	r := newReplica(store.State{})
	st1 := first.state(t)
	s.recvApply(t, "first message", r, full(st1), st1)
	first.update(t, func(tx store.Tx) { tx.Put(pool("a", "10.0.0.1:80", "10.0.0.3:80")) })
	st2 := first.state(t)
	s.recvApply(t, "a change", r, delta(st1, st2), st2)
	s.send(t, ack(2))
	waitFor(t, "the ack", func() bool { ns := first.disc.Nodes(); return len(ns) == 1 && ns[0].AckedVersion == 2 })

	first.close()
	if err := s.recvErr(t); err == nil {
		t.Fatal("the stream outlived its server")
	}

	second := newEnvIn(t, dir, nil)
	if got := second.state(t); !proto.Equal(full(got), full(st2)) {
		t.Fatalf("the store after the restart holds %v, want %v", full(got), full(st2))
	}
	s = second.open(t, hello("node-1", r.version))
	s.recvApply(t, "first message after the restart", r, &lbv1.StreamConfigResponse{Version: 2}, st2)
	// A data plane at a version before the restart gets everything.
	old := second.open(t, hello("node-2", 1))
	old.recvApply(t, "first message from before the restart", newReplica(st1), full(st2), st2)
	// Later changes are deltas again.
	second.update(t, func(tx store.Tx) { tx.Delete("b") })
	st3 := second.state(t)
	s.recvApply(t, "a deletion after the restart", r, delta(st2, st3), st3)
	if v := second.disc.Version(); v != 3 {
		t.Errorf("Version() = %d, want 3", v)
	}
}

// A pool deleted and created again between two updates a data plane gets
// must be there after it applies the delta.
func TestDeletedAndRecreatedPoolInOneDelta(t *testing.T) {
	e := newServer(t)
	st1 := store.State{Version: 1, Pools: []poolspec.Pool{vpool("a", 1, "10.0.0.1:80"), vpool("b", 1)}}
	st2 := store.State{Version: 2, Pools: []poolspec.Pool{vpool("b", 1)}}
	st3 := store.State{Version: 3, Pools: []poolspec.Pool{vpool("a", 3, "10.0.0.9:80"), vpool("b", 1)}}
	e.disc.Publish(st1)
	e.disc.Publish(st2)
	e.disc.Publish(st3)
	s := e.open(t, hello("node-1", 1))
	r := newReplica(st1)
	m := s.recv(t)
	r.apply(t, m)
	r.check(t, "delta from version 1", st3)
	if len(m.GetPools()) != 1 || m.GetPools()[0].GetName() != "a" || m.GetPools()[0].GetVersion() != 3 || m.GetFull() {
		t.Errorf("delta from version 1 = %v, want pool a of version 3", m)
	}
}

// waitAcked runs WaitAcked in the background.
func waitAcked(ctx context.Context, e *env, v uint64) <-chan waitResult {
	done := make(chan waitResult, 1)
	go func() {
		all, lag, err := e.disc.WaitAcked(ctx, v)
		done <- waitResult{all, lag, err}
	}()
	return done
}

type waitResult struct {
	all, lag []discovery.NodeStatus
	err      error
}

func (w waitResult) String() string {
	return fmt.Sprintf("all %q, lagging %q, error %v", nodeIDs(w.all), nodeIDs(w.lag), w.err)
}

// notYet fails if done delivers within a moment.
func notYet(t *testing.T, what string, done <-chan waitResult) {
	t.Helper()
	select {
	case res := <-done:
		t.Fatalf("%s: WaitAcked returned early: %v", what, res)
	case <-time.After(50 * time.Millisecond):
	}
}

func result(t *testing.T, what string, done <-chan waitResult) waitResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: WaitAcked did not return within 5s", what)
		return waitResult{}
	}
}

// pair connects node-a and node-b to a server that published version 1 and
// reads that from both.
func pair(t *testing.T) (e *env, a, b *stream) {
	e = newServer(t)
	e.disc.Publish(store.State{Version: 1, Pools: []poolspec.Pool{vpool("web", 1)}})
	a, b = e.connect(t, "node-a"), e.connect(t, "node-b")
	a.recv(t)
	b.recv(t)
	waitFor(t, "both nodes", func() bool { return len(e.disc.Nodes()) == 2 })
	return e, a, b
}

func TestWaitAcked(t *testing.T) {
	t.Run("no data planes", func(t *testing.T) {
		e := newServer(t)
		e.disc.Publish(store.State{Version: 3})
		res := result(t, "no nodes", waitAcked(t.Context(), e, 3))
		if res.err != nil || len(res.all) != 0 || len(res.lag) != 0 {
			t.Errorf("WaitAcked with no data planes: %v, want none and no error", res)
		}
	})

	t.Run("both ack", func(t *testing.T) {
		e, a, b := pair(t)
		done := waitAcked(t.Context(), e, 1)
		notYet(t, "no acks", done)
		a.send(t, ack(1))
		notYet(t, "node-a acked", done)
		b.send(t, ack(2)) // a later version counts too
		res := result(t, "both acked", done)
		if res.err != nil || len(res.lag) != 0 || !slices.Equal(nodeIDs(res.all), []string{"node-a", "node-b"}) ||
			res.all[0].AckedVersion != 1 || res.all[1].AckedVersion != 2 {
			t.Errorf("WaitAcked after both acked: %v (%+v)", res, res.all)
		}
		// Already acked: at once.
		if res := result(t, "again", waitAcked(t.Context(), e, 1)); res.err != nil {
			t.Errorf("WaitAcked once acked: %v", res)
		}
	})

	t.Run("times out naming the laggard", func(t *testing.T) {
		e, a, _ := pair(t)
		a.send(t, ack(1))
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		res := result(t, "node-b lags", waitAcked(ctx, e, 1))
		if !errors.Is(res.err, context.DeadlineExceeded) || len(res.lag) != 1 || res.lag[0].NodeID != "node-b" ||
			res.lag[0].AckedVersion != 0 || res.lag[0].SentVersion != 1 || len(res.all) != 2 {
			t.Errorf("WaitAcked with node-b silent: %v (lagging %+v)", res, res.lag)
		}
	})

	t.Run("a laggard that leaves no longer counts", func(t *testing.T) {
		e, a, b := pair(t)
		done := waitAcked(t.Context(), e, 1)
		a.send(t, ack(1))
		notYet(t, "node-b silent", done)
		b.cancel()
		res := result(t, "node-b gone", done)
		if res.err != nil || !slices.Equal(nodeIDs(res.all), []string{"node-a"}) {
			t.Errorf("WaitAcked after node-b left: %v", res)
		}
	})

	t.Run("fails fast when one refuses", func(t *testing.T) {
		e, a, b := pair(t)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		done := waitAcked(ctx, e, 1)
		a.send(t, ack(1))
		b.send(t, nack(0, "an older version refused earlier")) // not this one
		notYet(t, "an older version refused", done)
		b.send(t, nack(1, "pool web: no backends"))
		res := result(t, "node-b refused", done)
		const msg = "data plane node-b refused version 1: pool web: no backends: refused by a data plane"
		if !errors.Is(res.err, discovery.ErrRefused) || res.err.Error() != msg ||
			len(res.lag) != 1 || res.lag[0].NodeID != "node-b" || res.lag[0].NackedVersion != 1 {
			t.Errorf("WaitAcked after node-b refused: %v, want error %q and node-b", res, msg)
		}
		// An older refusal does not fail a wait for a newer version.
		ctx2, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel2()
		if res := result(t, "version 2", waitAcked(ctx2, e, 2)); !errors.Is(res.err, context.DeadlineExceeded) ||
			!slices.Equal(nodeIDs(res.lag), []string{"node-a", "node-b"}) {
			t.Errorf("WaitAcked(2) after node-b refused version 1: %v, want both lagging", res)
		}
	})

	t.Run("a refusal of a later version fails it too", func(t *testing.T) {
		e, a, b := pair(t)
		e.disc.Publish(store.State{Version: 2})
		a.recv(t)
		b.recv(t)
		done := waitAcked(t.Context(), e, 1)
		a.send(t, ack(2))
		notYet(t, "node-b silent", done)
		b.send(t, nack(2, "no")) // node-b never acked 1, and will not get past 2
		if res := result(t, "node-b refused 2", done); !errors.Is(res.err, discovery.ErrRefused) ||
			len(res.lag) != 1 || res.lag[0].NodeID != "node-b" {
			t.Errorf("WaitAcked(1) after node-b refused version 2: %v, want ErrRefused naming node-b", res)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		e, _, _ := pair(t)
		ctx, cancel := context.WithCancel(t.Context())
		done := waitAcked(ctx, e, 1)
		notYet(t, "no acks", done)
		cancel()
		if res := result(t, "cancelled", done); !errors.Is(res.err, context.Canceled) || len(res.lag) != 2 {
			t.Errorf("WaitAcked cancelled: %v", res)
		}
	})
}

func healthReport(backends ...*lbv1.BackendHealth) *lbv1.StreamConfigRequest {
	return &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_HealthReport{HealthReport: &lbv1.HealthReport{Backends: backends}}}
}

func TestBackendStatusFromHealthReports(t *testing.T) {
	e := newServer(t)
	e.disc.Publish(store.State{Version: 1, Pools: []poolspec.Pool{vpool("web", 1, "10.0.0.1:80", "10.0.0.2:80"), vpool("api", 1, "10.0.0.1:80")}})
	if got := e.disc.BackendStatus("web"); len(got) != 0 {
		t.Errorf("BackendStatus before any report = %v", got)
	}
	b, a := e.connect(t, "node-b"), e.connect(t, "node-a")
	a.recv(t)
	b.recv(t)
	a.send(t, healthReport(
		&lbv1.BackendHealth{Pool: "web", Address: "10.0.0.1:80", Healthy: true, InFlight: 3},
		&lbv1.BackendHealth{Pool: "web", Address: "10.0.0.2:80", Healthy: true, Ejected: true},
		&lbv1.BackendHealth{Pool: "api", Address: "10.0.0.1:80", Healthy: false},
	))
	b.send(t, healthReport(
		&lbv1.BackendHealth{Pool: "web", Address: "10.0.0.1:80", Healthy: false},
		&lbv1.BackendHealth{Pool: "api", Address: "10.0.0.1:80", Healthy: true, InFlight: 7},
	))
	check := func(what, pool string, want map[string][]*lbv1.DataPlaneBackendStatus) {
		t.Helper()
		var got map[string][]*lbv1.DataPlaneBackendStatus
		same := func() bool {
			got = e.disc.BackendStatus(pool)
			if len(got) != len(want) {
				return false
			}
			for addr, views := range want {
				if !slices.EqualFunc(got[addr], views, func(x, y *lbv1.DataPlaneBackendStatus) bool { return proto.Equal(x, y) }) {
					return false
				}
			}
			return true
		}
		deadline := time.Now().Add(5 * time.Second)
		for !same() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: BackendStatus(%q) = %v, want %v", what, pool, got, want)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	check("both reported", "web", map[string][]*lbv1.DataPlaneBackendStatus{
		"10.0.0.1:80": {{NodeId: "node-a", Healthy: true, InFlight: 3}, {NodeId: "node-b"}},
		"10.0.0.2:80": {{NodeId: "node-a", Healthy: true, Ejected: true}},
	})
	check("both reported", "api", map[string][]*lbv1.DataPlaneBackendStatus{
		"10.0.0.1:80": {{NodeId: "node-a"}, {NodeId: "node-b", Healthy: true, InFlight: 7}},
	})
	check("no such pool", "missing", map[string][]*lbv1.DataPlaneBackendStatus{})

	// A report replaces the node's last one.
	b.send(t, healthReport(&lbv1.BackendHealth{Pool: "web", Address: "10.0.0.2:80", Healthy: true}))
	check("node-b reported again", "web", map[string][]*lbv1.DataPlaneBackendStatus{
		"10.0.0.1:80": {{NodeId: "node-a", Healthy: true, InFlight: 3}},
		"10.0.0.2:80": {{NodeId: "node-a", Healthy: true, Ejected: true}, {NodeId: "node-b", Healthy: true}},
	})
	check("node-b reported again", "api", map[string][]*lbv1.DataPlaneBackendStatus{
		"10.0.0.1:80": {{NodeId: "node-a"}},
	})
	// A node that leaves takes its views along.
	a.cancel()
	checkStatus(t, a.recvErr(t), codes.Canceled, "context canceled")
	check("node-a left", "web", map[string][]*lbv1.DataPlaneBackendStatus{
		"10.0.0.2:80": {{NodeId: "node-b", Healthy: true}},
	})
	if ns := e.disc.Nodes(); len(ns) != 1 || len(ns[0].Health.GetBackends()) != 1 {
		t.Errorf("Nodes() = %+v, want node-b with its last report", ns)
	}
}
