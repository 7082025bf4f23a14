package selector_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/dataplane/selector"
)

// shares returns the share of picks of each of n backends over picks picks
// of s, failing the test on panic mode.
func shares(t *testing.T, s selector.Selector, n, picks int, tried uint64) []float64 {
	t.Helper()
	counts := make([]int, n)
	for k := range picks {
		i, p := s.Pick(uint64(k), tried, now)
		if p {
			t.Fatalf("pick %d = %d in panic mode", k, i)
		}
		counts[i]++
	}
	out := make([]float64, n)
	for i, c := range counts {
		out[i] = float64(c) / float64(picks)
	}
	return out
}

// checkShares fails the test unless got is want within ±tol.
func checkShares(t *testing.T, got, want []float64, tol float64) {
	t.Helper()
	for i := range want {
		if got[i] < want[i]-tol || got[i] > want[i]+tol {
			t.Fatalf("backend %d: share %.4f, want %.4f ± %g (all shares %.4f)", i, got[i], want[i], tol, got)
		}
	}
}

// TestRandomDistribution checks that over 100,000 picks each backend's share
// is its share of the weights ± 2%, the shares of unusable and tried backends
// going to the others in proportion to their weights.
func TestRandomDistribution(t *testing.T) {
	tests := []struct {
		weights   []uint32
		unhealthy []int
		tried     uint64
		want      []float64
	}{
		{[]uint32{1, 1}, nil, 0, []float64{0.5, 0.5}},
		{[]uint32{0, 0, 0, 0}, nil, 0, []float64{0.25, 0.25, 0.25, 0.25}},
		{[]uint32{1, 2, 3, 4}, nil, 0, []float64{0.1, 0.2, 0.3, 0.4}},
		{[]uint32{10, 1}, nil, 0, []float64{10.0 / 11, 1.0 / 11}},
		{[]uint32{1000000, 1, 1}, nil, 0, []float64{1, 0, 0}},
		{[]uint32{1, 2, 3, 4}, []int{3}, 0, []float64{1.0 / 6, 2.0 / 6, 3.0 / 6, 0}},
		{[]uint32{1, 2, 3, 4}, []int{0}, mask(2), []float64{0, 2.0 / 6, 0, 4.0 / 6}},
		{[]uint32{100, 1, 1}, []int{0}, 0, []float64{0, 0.5, 0.5}},
		{[]uint32{100, 1, 3}, nil, mask(0), []float64{0, 0.25, 0.75}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/unhealthy=%v/tried=%b", tt.weights, tt.unhealthy, tt.tried), func(t *testing.T) {
			states := unhealthy(newStates(len(tt.weights)), tt.unhealthy...)
			for _, slowStart := range []time.Duration{0, time.Minute} { // all ramped up
				s := selector.NewRandom(states, tt.weights, slowStart)
				checkShares(t, shares(t, s, len(tt.weights), 100000, tt.tried), tt.want, 0.02)
			}
		})
	}
}

// TestRandomPanicDistribution checks that in panic mode the picks still
// follow the weights, over the untried backends.
func TestRandomPanicDistribution(t *testing.T) {
	weights := []uint32{1, 2, 3, 4}
	s := selector.NewRandom(unhealthy(newStates(4), 0, 1, 2, 3), weights, 0)
	counts := make([]int, 4)
	const n = 100000
	for k := range n {
		i, p := s.Pick(0, mask(3), now)
		if !p {
			t.Fatalf("pick %d = %d not in panic mode", k, i)
		}
		counts[i]++
	}
	got := make([]float64, 4)
	for i, c := range counts {
		got[i] = float64(c) / n
	}
	checkShares(t, got, []float64{1.0 / 6, 2.0 / 6, 3.0 / 6, 0}, 0.02)
}

// TestRandomLarge checks the binary search over many unequal weights: the
// share of each weight class (1 to 10) matches.
func TestRandomLarge(t *testing.T) {
	const n = 1000
	weights := unequal(n)
	s := selector.NewRandom(newStates(n), weights, 0)
	got := make([]float64, 10)
	const picks = 100000
	for k := range picks {
		i, _ := s.Pick(uint64(k), 0, now)
		got[weights[i]-1] += 1.0 / picks
	}
	want := make([]float64, 10)
	for c := range want {
		want[c] = float64(c+1) / 55
	}
	checkShares(t, got, want, 0.02)
}

// TestLeastRequest checks that of two distinct candidates the one with fewer
// requests in flight per unit of weight always wins.
func TestLeastRequest(t *testing.T) {
	tests := []struct {
		name     string
		weights  []uint32
		inFlight []int
		never    []int // backends never picked
	}{
		{"2 backends, 10:0", nil, []int{10, 0}, []int{0}},
		{"2 backends, 0:10", nil, []int{0, 10}, []int{1}},
		{"2 backends, 1:0", nil, []int{1, 0}, []int{0}},
		{"3 backends, 5:0:0", nil, []int{5, 0, 0}, []int{0}},
		{"3 backends, 5:3:0", nil, []int{5, 3, 0}, []int{0}},
		{"4 backends, 9:8:7:0", nil, []int{9, 8, 7, 0}, []int{0}},
		// Per unit of weight: 5/10 < 1/1.
		{"weighted 10:1, 5:1", []uint32{10, 1}, []int{5, 1}, []int{1}},
		// 4/2 > 1/1.
		{"weighted 2:1, 4:1", []uint32{2, 1}, []int{4, 1}, []int{0}},
		{"weighted 3:1:1, 20:1:1", []uint32{3, 1, 1}, []int{20, 1, 1}, []int{0}},
	}
	for _, tt := range tests {
		for _, slowStart := range []time.Duration{0, time.Minute} { // ramped up
			t.Run(fmt.Sprintf("%s/slowstart=%v", tt.name, slowStart), func(t *testing.T) {
				states := newStates(len(tt.inFlight))
				for i, n := range tt.inFlight {
					for range n {
						states[i].Begin()
					}
				}
				s := selector.NewLeastRequest(states, tt.weights, slowStart)
				seen := make([]int, len(states))
				for _, i := range picks(t, s, 1000) {
					seen[i]++
				}
				for _, i := range tt.never {
					if seen[i] != 0 {
						t.Fatalf("backend %d picked %d times of 1000, want never (picks per backend %v)", i, seen[i], seen)
					}
				}
			})
		}
	}
}

// TestLeastRequestTies checks that between equally loaded backends (per
// unit of weight) the first drawn wins, so the picks follow the weights.
func TestLeastRequestTies(t *testing.T) {
	states := newStates(3)
	for _, st := range states {
		st.Begin()
	}
	states[2].Begin() // 2 in flight for weight 2
	s := selector.NewLeastRequest(states, []uint32{1, 1, 2}, 0)
	// Backend 2 wins when drawn first: 2/4 of the time; 0 and 1 share the
	// rest.
	checkShares(t, shares(t, s, 3, 100000, 0), []float64{0.25, 0.25, 0.5}, 0.02)
}

// TestLeastRequestSkip checks that unusable and tried backends are not
// candidates, however idle, and that one candidate left is picked.
func TestLeastRequestSkip(t *testing.T) {
	states := newStates(4)
	for i, n := range []int{0, 0, 7, 9} {
		for range n {
			states[i].Begin()
		}
	}
	unhealthy(states, 0)
	s := selector.NewLeastRequest(states, nil, 0)
	tests := []struct {
		tried     uint64
		want      []int
		panicking bool
	}{
		{0, []int{1, 2}, false},                // 1 unless 2 and 3 are drawn
		{mask(1), []int{2}, false},             // 2 beats 3
		{mask(1, 2), []int{3}, false},          // the only candidate
		{mask(1, 2, 3), []int{0}, true},        // only the unhealthy one is left
		{mask(0, 1, 2, 3), []int{1, 2}, false}, // all tried: as with none
	}
	for _, tt := range tests {
		for range 200 {
			if i, p := s.Pick(0, tt.tried, now); !slices.Contains(tt.want, i) || p != tt.panicking {
				t.Fatalf("tried %04b: Pick = %d, %v; want one of %v, %v", tt.tried, i, p, tt.want, tt.panicking)
			}
		}
	}
}

// TestLeastRequestSlowStart checks that the load is compared per unit of
// effective weight: a backend at ramp factor 0.5 with 2 requests in flight
// counts as loaded as a ramped-up one with 4.
func TestLeastRequestSlowStart(t *testing.T) {
	const window = time.Minute
	for _, tt := range []struct {
		inFlight1 int
		never     int
	}{{3, 0}, {5, 1}} {
		states := newStates(2)
		states[0] = backend.New(addr(0), t0.Add(-window/2)) // factor 0.5
		for range 2 {
			states[0].Begin()
		}
		for range tt.inFlight1 {
			states[1].Begin()
		}
		s := selector.NewLeastRequest(states, nil, window)
		for _, i := range picks(t, s, 1000) {
			if i == tt.never {
				t.Fatalf("in flight 2 (factor 0.5) and %d: backend %d picked", tt.inFlight1, i)
			}
		}
	}
}

// TestLeastRequestPairs checks the distribution of the second draw, which
// excludes the first: with weights 1:1:2 and one idle backend (the others
// loaded), the idle one is picked exactly when it is one of the two drawn,
// P(a) + Σ P(b)·P(a)/(1-P(b)).
func TestLeastRequestPairs(t *testing.T) {
	weights := []uint32{1, 1, 2}
	for _, tt := range []struct {
		idle int
		want float64
	}{
		{0, 0.25 + 0.25*0.25/0.75 + 0.5*0.25/0.5},
		{2, 0.5 + 2*0.25*0.5/0.75},
	} {
		states := newStates(3)
		for i, st := range states {
			if i != tt.idle {
				st.Begin()
			}
		}
		got := shares(t, selector.NewLeastRequest(states, weights, 0), 3, 100000, 0)
		if g := got[tt.idle]; g < tt.want-0.02 || g > tt.want+0.02 {
			t.Errorf("idle backend %d: share %.4f, want %.4f ± 0.02", tt.idle, g, tt.want)
		}
	}
}
