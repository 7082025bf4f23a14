package discovery

import (
	"sort"
	"sync"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/internal/apiconv"
)

// maxTombstones bounds the remembered pool deletions; data planes further
// behind get a full snapshot.
const maxTombstones = 10000

// tombstone records that a pool was deleted in a version.
type tombstone struct {
	version uint64
	name    string
}

// snapshot is one published configuration version with what is needed to
// send any data plane just what it lacks. It is immutable but for its cache
// of built deltas.
type snapshot struct {
	version uint64
	// pools ordered by name; each carries the version it last changed in.
	pools []*lbv1.Pool
	// tombstones since horizon, ascending by version.
	tombstones []tombstone
	// horizon is the oldest version a delta can start from: the first
	// version this control plane published, or later once old tombstones
	// were forgotten.
	horizon uint64
	// published lists, ascending, the versions this control plane published
	// since horizon. A delta is only computed from one of them: a version
	// it never saw (another replica's, or one its store watch coalesced)
	// may hide a pool created and deleted in between, which only a full
	// snapshot removes. Appended in place by the next snapshot; each
	// snapshot reads only its own length.
	published []uint64

	// mu guards deltas.
	mu sync.Mutex
	// deltas caches the update from a version to this one: data planes at
	// the same version share one message.
	deltas map[uint64]*lbv1.StreamConfigResponse
	full   *lbv1.StreamConfigResponse
}

// newSnapshot builds the snapshot of st after prev (nil for the first).
// Pools unchanged since prev reuse prev's messages.
func newSnapshot(prev *snapshot, st store.State) *snapshot {
	s := &snapshot{version: st.Version, horizon: st.Version, deltas: make(map[uint64]*lbv1.StreamConfigResponse)}
	var old map[string]*lbv1.Pool
	s.published = []uint64{st.Version}
	if prev != nil {
		s.horizon = prev.horizon
		s.tombstones = prev.tombstones
		s.published = append(prev.published, st.Version)
		old = make(map[string]*lbv1.Pool, len(prev.pools))
		for _, p := range prev.pools {
			old[p.GetName()] = p
		}
	}
	s.pools = make([]*lbv1.Pool, len(st.Pools))
	present := make(map[string]bool, len(st.Pools))
	for i, p := range st.Pools {
		present[p.Name] = true
		if o, ok := old[p.Name]; ok && o.GetVersion() == p.Version {
			s.pools[i] = o
			continue
		}
		s.pools[i] = apiconv.PoolToProto(p)
	}
	sort.Slice(s.pools, func(i, j int) bool { return s.pools[i].GetName() < s.pools[j].GetName() })
	if prev != nil {
		var gone []tombstone
		for _, p := range prev.pools {
			if !present[p.GetName()] {
				gone = append(gone, tombstone{version: st.Version, name: p.GetName()})
			}
		}
		if len(gone) > 0 {
			s.tombstones = append(append([]tombstone(nil), prev.tombstones...), gone...)
		}
		if n := len(s.tombstones) - maxTombstones; n > 0 {
			s.horizon = s.tombstones[n-1].version
			s.tombstones = s.tombstones[n:]
		}
		if n := len(s.published) - maxTombstones; n > 0 {
			s.published = append([]uint64(nil), s.published[n:]...)
			s.horizon = max(s.horizon, s.published[0])
		}
	}
	s.full = &lbv1.StreamConfigResponse{Version: s.version, Full: true, Pools: s.pools}
	return s
}

// knows reports whether this control plane published version v.
func (s *snapshot) knows(v uint64) bool {
	i := sort.Search(len(s.published), func(i int) bool { return s.published[i] >= v })
	return i < len(s.published) && s.published[i] == v
}

// has reports whether the snapshot holds a pool of that name.
func (s *snapshot) has(name string) bool {
	i := sort.Search(len(s.pools), func(i int) bool { return s.pools[i].GetName() >= name })
	return i < len(s.pools) && s.pools[i].GetName() == name
}

// from returns the update that takes a data plane holding version held to
// this snapshot: a delta when held is known to this control plane's history,
// else the full configuration.
func (s *snapshot) from(held uint64) *lbv1.StreamConfigResponse {
	if held < s.horizon || held > s.version || !s.knows(held) {
		return s.full
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.deltas[held]; ok {
		return d
	}
	d := &lbv1.StreamConfigResponse{Version: s.version}
	for _, p := range s.pools {
		if p.GetVersion() > held {
			d.Pools = append(d.Pools, p)
		}
	}
	i := sort.Search(len(s.tombstones), func(i int) bool { return s.tombstones[i].version > held })
	for _, t := range s.tombstones[i:] {
		// A pool deleted and created again since held is simply sent
		// whole; listing it as removed too would depend on the order a
		// data plane applies the two lists in.
		if !s.has(t.name) {
			d.RemovedPools = append(d.RemovedPools, t.name)
		}
	}
	s.deltas[held] = d
	return d
}
