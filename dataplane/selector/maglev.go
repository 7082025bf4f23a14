package selector

import (
	"github.com/lb-project/lb/dataplane/backend"
)

// FNV-1a 64-bit parameters.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// HashString returns the 64-bit FNV-1a hash of s, the hash key a proxy passes
// to Pick for a consistent-hash pool. It is the same in every process and
// version, so every data plane maps a key to the same backend.
func HashString(s string) uint64 {
	return fnv1a(fnvOffset64, s)
}

// fnv1a continues an FNV-1a 64 hash from state h over s.
func fnv1a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// skipSalt starts the second address hash, from which a backend's skip is
// derived, so that it is independent of the first (its offset).
const skipSalt = "maglev-skip\x00"

// tableSizes are the Maglev table sizes: primes, the smallest at least 100
// times the number of backends is used (the largest for more than 65,536
// backends).
var tableSizes = [...]uint64{65537, 655373, 6553621}

// tableSize returns the lookup table size for n backends.
func tableSize(n int) uint64 {
	for _, m := range tableSizes {
		if m >= 100*uint64(n) {
			return m
		}
	}
	return tableSizes[len(tableSizes)-1]
}

// Maglev is a consistent-hash selector: a request's hash key picks an entry
// of a lookup table built as in Google's Maglev load balancer (Eisenbud et
// al., NSDI 2016). Each backend owns a share of the entries proportional to
// its weight, and a change of membership reassigns little more than the
// entries of the backends added or removed, so most keys keep their backend.
// The table depends only on the backends' addresses, order and weights, never
// on a random seed, so every data plane builds the same one.
//
// A key whose backend is unusable or tried goes to the backend of the next
// table entry that is usable and untried; the other keys stay put. There is
// no slow start: ramping a backend's share up would move keys back and forth.
//
// The table takes 4 bytes per entry (256 KiB for up to 655 backends, 25 MiB
// from 6,554) and building it takes about M·ln M steps for M entries
// (milliseconds up to 655 backends, around half a second for 10,000).
type Maglev struct {
	states []*backend.State
	// table maps entries to backend indexes; its length is a prime.
	table []uint32
	// size is len(table).
	size uint64
	// probes bounds the entries a pick looks at past the key's own before
	// scanning the backends.
	probes int
}

// NewConsistentHash returns a Maglev selector over the backends with the
// given states and weights, index-aligned (weights of 0 count as 1; empty
// weights means all 1; other lengths panic). Backends are identified by
// State.Address.
//
// The table has 65,537, 655,373 or 6,553,621 entries, the smallest at least
// 100 times the number of backends. It is populated in turns: backend i
// takes the next free entry of its own permutation of the table (offset and
// skip from two FNV-1a hashes of its address) weight[i]/gcd times per round,
// the rounds following the smooth weighted round-robin order (scaled down
// like RoundRobin's when the reduced weights sum to more than 65,536).
func NewConsistentHash(states []*backend.State, weights []uint32) *Maglev {
	checkLen(states, weights)
	n := len(states)
	m := &Maglev{states: states}
	if n == 0 {
		return m
	}
	m.size = tableSize(n)
	m.probes = int(min(m.size, 8*uint64(n)+64))
	m.table = make([]uint32, m.size)
	// taken marks the filled entries; a bitmap, much smaller than the table,
	// keeps the many probes of a nearly full table in cache.
	taken := make([]uint64, (m.size+63)/64)
	// pos[i] and skip[i] walk backend i's permutation
	// offset_i, offset_i+skip_i, offset_i+2·skip_i, … (mod size).
	pos := make([]uint64, n)
	skip := make([]uint64, n)
	for i, st := range states {
		pos[i] = fnv1a(fnvOffset64, st.Address) % m.size
		skip[i] = fnv1a(fnv1a(fnvOffset64, skipSalt), st.Address)%(m.size-1) + 1
	}
	var turns []uint32 // nil: 0, 1, …, n-1
	if len(weights) > 1 && !allEqual(weights) {
		turns = weightedSequence(weights)
	}
	perRound := n
	if turns != nil {
		perRound = len(turns)
	}
	for filled := uint64(0); ; {
		for t := range perRound {
			i := t
			if turns != nil {
				i = int(turns[t])
			}
			// The permutation visits every entry (size is prime), so a free
			// one is found while the table is not full.
			p := pos[i]
			for taken[p/64]&(1<<(p%64)) != 0 {
				if p += skip[i]; p >= m.size {
					p -= m.size
				}
			}
			taken[p/64] |= 1 << (p % 64)
			m.table[p] = uint32(i)
			pos[i] = p
			if filled++; filled == m.size {
				return m
			}
		}
	}
}

// Pick implements Selector: the backend of table entry key mod table size
// or, if it is unusable or tried, of the next usable untried entry (looking
// at a bounded number of entries, then scanning the backends from key mod
// n). In panic mode the same walk ignores health.
func (m *Maglev) Pick(key uint64, tried uint64, now int64) (int, bool) {
	n := len(m.states)
	if n == 0 {
		return -1, false
	}
	tried = normTried(tried, n)
	if i := m.lookup(key, tried, now, true); i >= 0 {
		return i, false
	}
	return m.lookup(key, tried, now, false), true
}

// lookup returns the backend for key among the untried ones, usable ones
// only if healthy, or -1 when there is none.
func (m *Maglev) lookup(key, tried uint64, now int64, healthy bool) int {
	ok := func(i int) bool {
		return !isTried(tried, i) && (!healthy || m.states[i].Usable(now))
	}
	e := key % m.size
	for range m.probes {
		if i := int(m.table[e]); ok(i) {
			return i
		}
		if e++; e == m.size {
			e = 0
		}
	}
	n := uint64(len(m.states))
	start := key % n
	for k := range n {
		if i := int((start + k) % n); ok(i) {
			return i
		}
	}
	return -1
}
