package discovery

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/internal/poolspec"
)

// publisher publishes store states straight to a Server, no store needed,
// keeping the pools as a store would: each stamped with the version of the
// commit that last wrote it.
type publisher struct {
	srv   *Server
	pools map[string]poolspec.Pool
	ver   uint64
}

func newPublisher() *publisher {
	return &publisher{srv: New(hclog.NewNullLogger()), pools: make(map[string]poolspec.Pool)}
}

// commit applies put and del as version ver+1 and publishes the result.
func (p *publisher) commit(put []string, del []string) store.State {
	p.ver++
	for _, name := range put {
		p.pools[name] = poolspec.Pool{Name: name, Hosts: []string{name + ".example.com"}, Version: p.ver,
			Backends: []poolspec.Backend{{Address: "10.0.0.1:80", Weight: uint32(p.ver%100 + 1)}}}
	}
	for _, name := range del {
		delete(p.pools, name)
	}
	st := store.State{Version: p.ver}
	for _, pl := range p.pools {
		st.Pools = append(st.Pools, pl)
	}
	slices.SortFunc(st.Pools, func(a, b poolspec.Pool) int { return strings.Compare(a.Name, b.Name) })
	p.srv.Publish(st)
	return st
}

func (p *publisher) latest(t *testing.T) *snapshot {
	t.Helper()
	s := p.srv.latest.Load()
	if s == nil || s.version != p.ver {
		t.Fatalf("latest snapshot %v, want version %d", s, p.ver)
	}
	return s
}

func names(n int, format string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

func poolNames(m *lbv1.StreamConfigResponse) []string {
	var out []string
	for _, p := range m.GetPools() {
		out = append(out, p.GetName())
	}
	return out
}

// Data planes at the same version share one message: the delta from a
// version is built once, the full configuration once per snapshot.
func TestDeltasAreShared(t *testing.T) {
	p := newPublisher()
	p.commit([]string{"a", "b", "c"}, nil)
	p.commit([]string{"b"}, nil)
	p.commit(nil, []string{"c"})
	snap := p.latest(t)

	// Two streams at version 1, concurrently as streams do.
	var wg sync.WaitGroup
	got := make([]*lbv1.StreamConfigResponse, 8)
	for i := range got {
		wg.Go(func() { got[i] = snap.from(1) })
	}
	wg.Wait()
	for i, d := range got {
		if d != got[0] {
			t.Fatalf("from(1) call %d returned %p, call 0 %p: deltas from one version are not shared", i, d, got[0])
		}
	}
	want := &lbv1.StreamConfigResponse{Version: 3, Pools: []*lbv1.Pool{snap.pools[1]}, RemovedPools: []string{"c"}}
	if !proto.Equal(got[0], want) {
		t.Errorf("from(1) = %v, want %v", got[0], want)
	}
	if d2 := snap.from(2); d2 == got[0] || !proto.Equal(d2, &lbv1.StreamConfigResponse{Version: 3, RemovedPools: []string{"c"}}) {
		t.Errorf("from(2) = %v (shared with from(1): %v)", d2, d2 == got[0])
	}
	if d3 := snap.from(3); d3 != snap.from(3) || !proto.Equal(d3, &lbv1.StreamConfigResponse{Version: 3}) {
		t.Errorf("from(3) = %v, want an empty delta, shared", d3)
	}
	// Versions unknown here all get the one full message.
	if f := snap.from(0); f != snap.from(4) || !f.GetFull() || !slices.Equal(poolNames(f), []string{"a", "b"}) {
		t.Errorf("from(0) = %v, from(4) = %v: want the one full configuration", f, snap.from(4))
	}

	// The next snapshot reuses the messages of the pools it did not change,
	// and builds its own deltas.
	p.commit([]string{"d"}, nil)
	next := p.latest(t)
	if next.pools[0] != snap.pools[0] || next.pools[1] != snap.pools[1] {
		t.Errorf("unchanged pools a and b were rebuilt")
	}
	if d := next.from(1); d == got[0] || !slices.Equal(poolNames(d), []string{"b", "d"}) || !slices.Equal(d.GetRemovedPools(), []string{"c"}) {
		t.Errorf("next from(1) = %v", d)
	}
}

// Tombstones are bounded: past maxTombstones deletions the oldest are
// forgotten, and a data plane at a version before them gets everything.
func TestTombstoneHorizon(t *testing.T) {
	p := newPublisher()
	all := names(maxTombstones+1, "p%05d")
	p.commit(all, nil) // version 1
	// Version 2 deletes all but the last: exactly maxTombstones tombstones.
	p.commit(nil, all[:maxTombstones])
	snap := p.latest(t)
	if snap.horizon != 1 || len(snap.tombstones) != maxTombstones {
		t.Fatalf("after %d deletions: horizon %d, %d tombstones, want 1 and %d", maxTombstones, snap.horizon, len(snap.tombstones), maxTombstones)
	}
	if d := snap.from(1); d.GetFull() || len(d.GetPools()) != 0 || !slices.Equal(d.GetRemovedPools(), all[:maxTombstones]) {
		t.Errorf("from(1) with %d tombstones: full %v, %d pools, %d removed; want a delta removing them all",
			maxTombstones, d.GetFull(), len(d.GetPools()), len(d.GetRemovedPools()))
	}

	// Version 3 deletes one more: the oldest tombstone, of version 2, is
	// forgotten, so a data plane at version 1 can no longer be sent a delta;
	// one at version 2 needs none of version 2's deletions.
	p.commit(nil, all[maxTombstones:])
	snap = p.latest(t)
	if snap.horizon != 2 {
		t.Errorf("horizon after %d deletions = %d, want 2", maxTombstones+1, snap.horizon)
	}
	if len(snap.tombstones) > maxTombstones {
		t.Errorf("%d tombstones kept, more than %d", len(snap.tombstones), maxTombstones)
	}
	if d := snap.from(1); d != snap.full || !d.GetFull() || d.GetVersion() != 3 || len(d.GetPools()) != 0 {
		t.Errorf("from(1) past the horizon = full %v, version %d, %d pools; want the full (empty) configuration",
			d.GetFull(), d.GetVersion(), len(d.GetPools()))
	}
	if d := snap.from(0); d != snap.full {
		t.Errorf("from(0) is not the full configuration")
	}
	if d := snap.from(2); d.GetFull() || !slices.Equal(d.GetRemovedPools(), all[maxTombstones:]) {
		t.Errorf("from(2), at the horizon: full %v, removed %q; want a delta removing %q", d.GetFull(), d.GetRemovedPools(), all[maxTombstones:])
	}

	// The horizon stays where it is while no more is forgotten.
	p.commit([]string{"new"}, nil)
	snap = p.latest(t)
	if snap.horizon != 2 {
		t.Errorf("horizon after a creation = %d, want 2", snap.horizon)
	}
	if d := snap.from(2); d.GetFull() || !slices.Equal(poolNames(d), []string{"new"}) || !slices.Equal(d.GetRemovedPools(), all[maxTombstones:]) {
		t.Errorf("from(2) = pools %q, removed %q, full %v", poolNames(d), d.GetRemovedPools(), d.GetFull())
	}
	if d := snap.from(1); !d.GetFull() {
		t.Errorf("from(1) is a delta again")
	}
}
