// Package selector picks which backend of a pool serves the next request.
//
// A selector is built once per backend set, from the backends' runtime
// states (package backend) and weights, and is immutable afterwards except
// for atomic counters, so a pick takes no lock and allocates nothing.
// Selectors deal in indexes into the pool's backend slice; apart from the
// addresses that ConsistentHash hashes, they know nothing of addresses or
// wire formats.
//
// Four policies are offered:
//
//   - RoundRobin (NewRoundRobin) walks a precomputed smooth weighted order.
//   - Random (NewRandom) draws a backend with probability proportional to its
//     weight.
//   - LeastRequest (NewLeastRequest) draws two distinct backends by weight and
//     takes the one with fewer requests in flight per unit of weight ("power
//     of two choices").
//   - Maglev (NewConsistentHash) maps a request's hash key (see HashString)
//     through a Maglev lookup table, so a key keeps its backend and a change
//     of membership moves few keys.
//
// Every policy skips backends that are not usable (unhealthy or ejected)
// and those a request already tried (a retry); when no untried backend is
// usable it falls back to an untried one regardless of health and says so
// ("panic mode"), so that a pool whose checks all fail still serves. With a
// slow-start window, RoundRobin, Random and LeastRequest give a backend that
// just joined or recovered a share of its weight that ramps up over the
// window (backend.State.RampFactor).
package selector

import (
	"github.com/lb-project/lb/dataplane/backend"
)

// Selector picks the index of a backend. Implementations are immutable after
// construction except for atomic counters, safe for concurrent use, and
// allocate nothing per pick.
type Selector interface {
	// Pick returns the index of the backend for the next request, or -1 when
	// there are none.
	//
	// key is the request's hash key (used by ConsistentHash only; others
	// ignore it).
	//
	// tried is a bitmask of indexes already tried by this request (bit i for
	// index i < 64); Pick avoids them when any other backend is usable.
	//
	// now is the current time in unix nanoseconds.
	//
	// Unusable backends (State.Usable(now) false) are skipped; if no untried
	// backend is usable, Pick falls back to any untried backend regardless of
	// health ("panic mode") and reports panic=true; if every backend was
	// tried, it may return a tried one.
	Pick(key uint64, tried uint64, now int64) (index int, panic bool)
}

// Interface guards.
var (
	_ Selector = (*RoundRobin)(nil)
	_ Selector = (*Random)(nil)
	_ Selector = (*LeastRequest)(nil)
	_ Selector = (*Maglev)(nil)
)

// checkLen panics unless weights is empty (meaning all weights 1) or
// index-aligned with states.
func checkLen(states []*backend.State, weights []uint32) {
	if len(weights) != 0 && len(weights) != len(states) {
		panic("selector: len(weights) != len(states)")
	}
}

// weightAt returns backend i's weight: weights[i], or 1 when weights is empty
// or weights[i] is 0.
func weightAt(weights []uint32, i int) uint32 {
	if len(weights) == 0 {
		return 1
	}
	return max(weights[i], 1)
}

// normTried returns the tried mask for a pool of n ≥ 1 backends with the bits
// of nonexistent indexes cleared, or 0 when every backend was tried, so that
// a request that tried them all may try one again. Pools of more than 64
// backends always have untracked, hence untried, backends.
func normTried(tried uint64, n int) uint64 {
	if n > 64 {
		return tried
	}
	all := ^uint64(0) >> (64 - n)
	if tried&all == all {
		return 0
	}
	return tried & all
}

// isTried reports whether bit i of tried is set; indexes from 64 on are never
// tried.
func isTried(tried uint64, i int) bool {
	return tried>>uint(i)&1 != 0 // shifts of 64 or more give 0
}
