package selector

import (
	"math/bits"
	"math/rand/v2"
	"time"

	"github.com/lb-project/lb/dataplane/backend"
)

// maxDraws bounds the random draws of one weighted draw before it falls back
// to a linear scan.
const maxDraws = 32

// Random picks a backend at random with probability proportional to its
// weight, among the usable backends the request has not tried. Under slow
// start, a backend's weight is scaled by its ramp factor.
type Random struct {
	pool weightedPool
}

// NewRandom returns a weighted random selector over the backends with the
// given states and weights, index-aligned (weights of 0 count as 1; empty
// weights means all 1; other lengths panic). slowStart is the slow-start
// window; 0 disables slow start.
func NewRandom(states []*backend.State, weights []uint32, slowStart time.Duration) *Random {
	return &Random{pool: newWeightedPool(states, weights, slowStart)}
}

// Pick implements Selector.
func (r *Random) Pick(_ uint64, tried uint64, now int64) (int, bool) {
	n := len(r.pool.states)
	if n == 0 {
		return -1, false
	}
	tried = normTried(tried, n)
	if i := r.pool.draw(tried, now, -1, true); i >= 0 {
		return i, false
	}
	return r.pool.draw(tried, now, -1, false), true
}

// LeastRequest draws two distinct backends as Random does and picks the one
// with fewer requests in flight per unit of (effective) weight, the first
// drawn on a tie ("power of two choices"): a loaded backend is avoided
// without every data plane herding to the same least-loaded one.
type LeastRequest struct {
	pool weightedPool
}

// NewLeastRequest returns a least-request selector over the backends with
// the given states and weights, index-aligned (weights of 0 count as 1;
// empty weights means all 1; other lengths panic). slowStart is the
// slow-start window; 0 disables slow start.
func NewLeastRequest(states []*backend.State, weights []uint32, slowStart time.Duration) *LeastRequest {
	return &LeastRequest{pool: newWeightedPool(states, weights, slowStart)}
}

// Pick implements Selector. When only one candidate is left, it is picked.
func (l *LeastRequest) Pick(_ uint64, tried uint64, now int64) (int, bool) {
	p := &l.pool
	n := len(p.states)
	if n == 0 {
		return -1, false
	}
	tried = normTried(tried, n)
	healthy := true
	a := p.draw(tried, now, -1, true)
	if a < 0 {
		healthy = false
		a = p.draw(tried, now, -1, false)
	}
	b := p.draw(tried, now, a, healthy)
	if b >= 0 && p.lessLoaded(b, a, now) {
		return b, !healthy
	}
	return a, !healthy
}

// weightedPool draws backends at random by weight; it is shared by Random and
// LeastRequest.
type weightedPool struct {
	states []*backend.State
	// weights holds each backend's weight (at least 1).
	weights []uint64
	// cum holds the cumulative weights (cum[i] = weights[0]+…+weights[i]);
	// nil when all weights are equal.
	cum []uint64
	// total is the sum of the weights.
	total uint64
	// slowStart is the ramp window; 0 disables slow start.
	slowStart time.Duration
}

func newWeightedPool(states []*backend.State, weights []uint32, slowStart time.Duration) weightedPool {
	checkLen(states, weights)
	p := weightedPool{states: states, weights: make([]uint64, len(states)), slowStart: slowStart}
	for i := range states {
		p.weights[i] = uint64(weightAt(weights, i))
		p.total += p.weights[i]
	}
	if len(weights) > 1 && !allEqual(weights) {
		p.cum = make([]uint64, len(states))
		var sum uint64
		for i, w := range p.weights {
			sum += w
			p.cum[i] = sum
		}
	}
	return p
}

// sample returns a backend index other than exclude (-1 for none) drawn by
// static weight, or -1 when there is no other backend.
func (p *weightedPool) sample(exclude int) int {
	n := len(p.states)
	if p.cum == nil {
		if exclude < 0 {
			return rand.IntN(n)
		}
		if n == 1 {
			return -1
		}
		i := rand.IntN(n - 1)
		if i >= exclude {
			i++
		}
		return i
	}
	// Draw r from the total weight less exclude's, then step over exclude's
	// range [cum[exclude]-w, cum[exclude]).
	total, from, w := p.total, uint64(0), uint64(0)
	if exclude >= 0 {
		w = p.weights[exclude]
		from = p.cum[exclude] - w
		total -= w
	}
	r := rand.Uint64N(total) // total > 0: cum != nil means n ≥ 2
	if exclude >= 0 && r >= from {
		r += w
	}
	// The first i with cum[i] > r, by a binary search without branches on
	// the data (which would be mispredicted half the time).
	cum := p.cum
	base, size := 0, len(cum)
	for size > 1 {
		half := size >> 1
		_, borrow := bits.Sub64(r, cum[base+half-1], 0) // 0 iff cum[…] <= r
		base += half & (int(borrow) - 1)
		size -= half
	}
	return base
}

// candidate reports whether backend i may be drawn: not tried, not exclude,
// and usable unless healthy is false.
func (p *weightedPool) candidate(i int, tried uint64, now int64, exclude int, healthy bool) bool {
	return i != exclude && !isTried(tried, i) && (!healthy || p.states[i].Usable(now))
}

// factor returns backend i's slow-start ramp factor (1 without slow start).
func (p *weightedPool) factor(i int, now int64) float64 {
	if p.slowStart <= 0 {
		return 1
	}
	return p.states[i].RampFactor(now, p.slowStart)
}

// draw returns a candidate backend (see candidate) drawn with probability
// proportional to its effective weight (weight × ramp factor), or -1 when
// there is none. It draws by static weight among the backends other than
// exclude and rejects tried and (if healthy) unusable ones and, with
// probability 1-f, ramping ones; after min(2n, maxDraws) rejections it draws
// from a linear scan. Either way the distribution is exact.
func (p *weightedPool) draw(tried uint64, now int64, exclude int, healthy bool) int {
	for range min(2*len(p.states), maxDraws) {
		i := p.sample(exclude)
		if i < 0 {
			return -1
		}
		if !p.candidate(i, tried, now, exclude, healthy) {
			continue
		}
		if p.slowStart > 0 {
			if f := p.factor(i, now); f < 1 && rand.Float64() >= f {
				continue
			}
		}
		return i
	}
	return p.scan(tried, now, exclude, healthy)
}

// scan is draw by linear scan over all backends.
func (p *weightedPool) scan(tried uint64, now int64, exclude int, healthy bool) int {
	var sum float64
	for i := range p.states {
		if p.candidate(i, tried, now, exclude, healthy) {
			sum += float64(p.weights[i]) * p.factor(i, now)
		}
	}
	if sum == 0 {
		return -1
	}
	x := rand.Float64() * sum
	last := -1
	for i := range p.states {
		if !p.candidate(i, tried, now, exclude, healthy) {
			continue
		}
		w := float64(p.weights[i]) * p.factor(i, now)
		if x < w {
			return i
		}
		x -= w
		last = i
	}
	return last // rounding, or states changed between the passes
}

// lessLoaded reports whether backend a has strictly fewer requests in flight
// per unit of effective weight than backend b.
func (p *weightedPool) lessLoaded(a, b int, now int64) bool {
	ia := uint64(max(p.states[a].InFlight(), 0))
	ib := uint64(max(p.states[b].InFlight(), 0))
	if p.slowStart > 0 {
		wa := float64(p.weights[a]) * p.factor(a, now)
		wb := float64(p.weights[b]) * p.factor(b, now)
		return float64(ia)*wb < float64(ib)*wa
	}
	// ia/wa < ib/wb ⇔ ia·wb < ib·wa, in 128 bits.
	ha, la := bits.Mul64(ia, p.weights[b])
	hb, lb := bits.Mul64(ib, p.weights[a])
	return ha < hb || ha == hb && la < lb
}
