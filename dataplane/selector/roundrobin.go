package selector

import (
	"container/heap"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/lb-project/lb/dataplane/backend"
)

// maxSequence bounds the precomputed weighted sequence (entries of 4 bytes).
const maxSequence = 1 << 16

// RoundRobin cycles through the backends in order, honouring integer weights:
// over every cycle of sum(weights)/gcd(weights) picks, backend i is picked
// exactly weight[i]/gcd times, interleaved rather than in runs (weights 5:1:1
// give a a b a c a a, never five a in a row, also across cycles).
//
// A pick that lands on an unusable or tried backend moves on to the next
// entry of the order and advances the rotation past it, so the remaining
// backends keep their exact relative order (5:1:1 with b unusable gives
// a a a c a a). Under slow start, a backend with ramp factor f < 1 is passed
// over in the same way with probability 1-f.
type RoundRobin struct {
	states []*backend.State
	// n is the number of backends.
	n uint64
	// seq is the precomputed weighted order; nil when all weights are equal.
	seq []uint32
	// slowStart is the ramp window; 0 disables slow start.
	slowStart time.Duration
	// next counts positions in the order; the only mutable state.
	next atomic.Uint64
}

// NewRoundRobin returns a round-robin selector over the backends with the
// given states and weights, index-aligned (weights of 0 count as 1; empty
// weights means all 1; other lengths panic). When the reduced weights sum to
// more than 65,536, they are scaled down proportionally (each kept at least
// 1), so the shares are approximate for such extreme configurations.
// slowStart is the slow-start window; 0 disables slow start.
func NewRoundRobin(states []*backend.State, weights []uint32, slowStart time.Duration) *RoundRobin {
	checkLen(states, weights)
	rr := &RoundRobin{states: states, n: uint64(len(states)), slowStart: slowStart}
	if len(weights) < 2 || allEqual(weights) {
		return rr
	}
	rr.seq = weightedSequence(weights)
	return rr
}

// cycle returns the length of the order.
func (r *RoundRobin) cycle() uint64 {
	if r.seq == nil {
		return r.n
	}
	return uint64(len(r.seq))
}

// at returns the backend at position p of the (repeating) order.
func (r *RoundRobin) at(p uint64) int {
	if r.seq == nil {
		return int(p % r.n)
	}
	return int(r.seq[p%uint64(len(r.seq))])
}

// Pick implements Selector. It looks at most one cycle of the order ahead
// for a usable untried backend, then falls back to panic mode.
func (r *RoundRobin) Pick(_ uint64, tried uint64, now int64) (int, bool) {
	if r.n == 0 {
		return -1, false
	}
	tried = normTried(tried, int(r.n))
	p := r.next.Add(1) - 1
	cycle := r.cycle()
	// passed is the first usable untried backend passed over by slow start,
	// taken if nothing else is found; passedAt is its distance from p.
	passed, passedAt := -1, uint64(0)
	for k := range cycle {
		i := r.at(p + k)
		if isTried(tried, i) || !r.states[i].Usable(now) {
			continue
		}
		if r.slowStart > 0 {
			if f := r.states[i].RampFactor(now, r.slowStart); f < 1 && rand.Float64() >= f {
				if passed < 0 {
					passed, passedAt = i, k
				}
				continue
			}
		}
		r.skip(k)
		return i, false
	}
	if passed >= 0 {
		r.skip(passedAt)
		return passed, false
	}
	// Panic mode: the next untried backend in the order, whatever its health.
	for k := range cycle {
		if i := r.at(p + k); !isTried(tried, i) {
			r.skip(k)
			return i, true
		}
	}
	return r.at(p), true // unreachable: normTried leaves an untried backend
}

// skip advances the rotation past k positions that a pick passed over.
func (r *RoundRobin) skip(k uint64) {
	if k > 0 {
		r.next.Add(k)
	}
}

func allEqual(ws []uint32) bool {
	for _, w := range ws[1:] {
		if max(w, 1) != max(ws[0], 1) {
			return false
		}
	}
	return true
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// smoothBudget bounds the work of building a sequence with smooth weighted
// round robin (backends × sequence length); beyond it the cheaper
// earliest-deadline order is used.
const smoothBudget = 1 << 24

// weightedSequence returns one cycle of the weighted order. Weights are
// reduced by their gcd (and scaled down past maxSequence). The order is
// nginx's smooth weighted round robin, which spreads each backend's picks
// evenly even across cycle boundaries (5:1:1 gives a a b a c a a); for very
// large pools, where that costs too much to build, an earliest-deadline
// order with the same counts.
func weightedSequence(weights []uint32) []uint32 {
	ws := make([]uint64, len(weights))
	var g, total uint64
	for i, w := range weights {
		ws[i] = uint64(max(w, 1))
		g = gcd(g, ws[i])
	}
	for i := range ws {
		ws[i] /= g
		total += ws[i]
	}
	if total > maxSequence {
		var scaled uint64
		for i := range ws {
			ws[i] = max(1, ws[i]*maxSequence/total)
			scaled += ws[i]
		}
		total = scaled
	}
	if total*uint64(len(ws)) <= smoothBudget {
		return smoothSequence(ws, total)
	}
	return deadlineSequence(ws, total)
}

// smoothSequence runs smooth weighted round robin for one cycle: every step
// each backend's current value grows by its weight, the largest is picked
// (ties by index) and reduced by the total.
func smoothSequence(ws []uint64, total uint64) []uint32 {
	cur := make([]int64, len(ws))
	seq := make([]uint32, 0, total)
	for uint64(len(seq)) < total {
		best := 0
		for i, w := range ws {
			cur[i] += int64(w)
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(total)
		seq = append(seq, uint32(best))
	}
	return seq
}

// deadlineSequence lists, in order, the times (k+½)/w_i at which backend i
// is due, for k = 0..w_i-1 (ties by index), using a heap.
func deadlineSequence(ws []uint64, total uint64) []uint32 {
	h := make(dueHeap, len(ws))
	for i, w := range ws {
		h[i] = due{index: uint32(i), weight: w}
	}
	heap.Init(&h)
	seq := make([]uint32, 0, total)
	for uint64(len(seq)) < total {
		d := &h[0]
		seq = append(seq, d.index)
		d.picks++
		if d.picks == d.weight {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return seq
}

// due is one backend's position in the sequence being built: it is next due
// at (2*picks+1)/(2*weight).
type due struct {
	index  uint32
	weight uint64
	picks  uint64
}

type dueHeap []due

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	// Compare (2p_i+1)/w_i with (2p_j+1)/w_j without division.
	a := (2*h[i].picks + 1) * h[j].weight
	b := (2*h[j].picks + 1) * h[i].weight
	if a != b {
		return a < b
	}
	return h[i].index < h[j].index
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
