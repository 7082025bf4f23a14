package selector_test

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/dataplane/selector"
)

// newRR returns a round robin selector over healthy backends with the given
// weights, without slow start.
func newRR(weights []uint32) *selector.RoundRobin {
	return selector.NewRoundRobin(newStates(len(weights)), weights, 0)
}

// pick returns s's next pick with no tried backends at now.
func pick(s selector.Selector) int {
	i, _ := s.Pick(0, 0, now)
	return i
}

// repeat returns cycle repeated n times.
func repeat(cycle []int, n int) []int {
	var out []int
	for range n {
		out = append(out, cycle...)
	}
	return out
}

func TestRoundRobinSequence(t *testing.T) {
	tests := []struct {
		weights []uint32
		cycle   []int
	}{
		{nil, []int{-1}},
		{[]uint32{}, []int{-1}},
		{[]uint32{1}, []int{0}},
		{[]uint32{0}, []int{0}},
		{[]uint32{10000}, []int{0}},
		{[]uint32{1, 1}, []int{0, 1}},
		{[]uint32{1, 1, 1}, []int{0, 1, 2}},
		{[]uint32{7, 7, 7}, []int{0, 1, 2}},
		{[]uint32{0, 1, 0}, []int{0, 1, 2}},
		{[]uint32{2, 1}, []int{0, 1, 0}},
		{[]uint32{4, 2}, []int{0, 1, 0}},
		{[]uint32{2000, 1000}, []int{0, 1, 0}},
		{[]uint32{1, 2}, []int{1, 0, 1}},
		{[]uint32{0, 2}, []int{1, 0, 1}},
		{[]uint32{3, 1}, []int{0, 0, 1, 0}},
		{[]uint32{1, 2, 3}, []int{2, 1, 0, 2, 1, 2}},
		{[]uint32{2, 4, 6}, []int{2, 1, 0, 2, 1, 2}},
		{[]uint32{5, 1, 1}, []int{0, 0, 1, 0, 2, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			const cycles = 4
			got := picks(t, newRR(tt.weights), cycles*len(tt.cycle))
			if want := repeat(tt.cycle, cycles); !slices.Equal(got, want) {
				t.Fatalf("picks = %v, want %v", got, want)
			}
		})
	}
}

// TestRoundRobinWindows checks that weights 2:1 give, in every window of three
// picks starting at a multiple of three, two picks of backend 0 and one of 1.
func TestRoundRobinWindows(t *testing.T) {
	for _, weights := range [][]uint32{{2, 1}, {4, 2}, {200, 100}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			got := picks(t, newRR(weights), 300)
			for start := 0; start < len(got); start += 3 {
				var n [2]int
				for _, i := range got[start : start+3] {
					n[i]++
				}
				if n != [2]int{2, 1} {
					t.Fatalf("picks %d-%d = %v: counts %v, want [2 1]", start, start+2, got[start:start+3], n)
				}
			}
		})
	}
}

// TestRoundRobinCounts checks that every cycle of sum(weights)/gcd(weights)
// picks holds exactly weight/gcd picks of each backend.
func TestRoundRobinCounts(t *testing.T) {
	tests := []struct {
		weights  []uint32
		cycleLen int
		counts   []int
	}{
		{[]uint32{1, 1, 1}, 3, []int{1, 1, 1}},
		{[]uint32{5, 1, 1}, 7, []int{5, 1, 1}},
		{[]uint32{4, 2}, 3, []int{2, 1}},
		{[]uint32{6, 4}, 5, []int{3, 2}},
		{[]uint32{10, 20, 30}, 6, []int{1, 2, 3}},
		{[]uint32{7, 5, 3, 2}, 17, []int{7, 5, 3, 2}},
		{[]uint32{0, 1, 3}, 5, []int{1, 1, 3}},
		{[]uint32{10000, 1}, 10001, []int{10000, 1}},
		{[]uint32{9999, 10000, 1}, 20000, []int{9999, 10000, 1}},
		{[]uint32{65535, 1}, 65536, []int{65535, 1}},
	}
	// A large pool, whose sequence is built by the cheaper deadline order.
	large := unequal(5000)
	largeCounts := make([]int, len(large))
	for i, w := range large {
		largeCounts[i] = int(w)
	}
	tests = append(tests, struct {
		weights  []uint32
		cycleLen int
		counts   []int
	}{large, 5000 / 10 * 55, largeCounts})
	for _, tt := range tests {
		name := fmt.Sprint(tt.weights)
		if len(tt.weights) > 10 {
			name = fmt.Sprintf("%d backends", len(tt.weights))
		}
		t.Run(name, func(t *testing.T) {
			rr := newRR(tt.weights)
			if got := selector.CycleLen(rr); got != tt.cycleLen {
				t.Fatalf("cycle length = %d, want %d", got, tt.cycleLen)
			}
			for c := range 3 {
				counts := make([]int, len(tt.weights))
				for range tt.cycleLen {
					counts[pick(rr)]++
				}
				if !slices.Equal(counts, tt.counts) {
					t.Fatalf("cycle %d: counts = %v, want %v", c, counts, tt.counts)
				}
			}
		})
	}
}

// TestRoundRobinInterleaves checks that heavy backends are spread over the
// cycle rather than picked in runs, also across the end of one cycle and the
// start of the next: weights 5:1:1 never give five picks of backend 0 in a
// row, as the RoundRobin documentation promises.
func TestRoundRobinInterleaves(t *testing.T) {
	tests := []struct {
		weights []uint32
		maxRun  int // longest allowed run of one backend
	}{
		{[]uint32{1, 1, 1}, 1},
		{[]uint32{2, 1}, 2},
		{[]uint32{1, 2}, 2},
		{[]uint32{2, 2, 1}, 1},
		{[]uint32{5, 1, 1}, 4},
		{[]uint32{1, 5, 1}, 4},
		{[]uint32{1, 1, 5}, 4},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			rr := newRR(tt.weights)
			seq := picks(t, rr, 5*selector.CycleLen(rr))
			run, longest, at := 1, 1, 0
			for i := 1; i < len(seq); i++ {
				if seq[i] == seq[i-1] {
					run++
				} else {
					run = 1
				}
				if run > longest {
					longest, at = run, i-run+1
				}
			}
			if longest > tt.maxRun {
				t.Fatalf("backend %d picked %d times in a row from pick %d, want at most %d; picks: %v",
					seq[at], longest, at, tt.maxRun, seq)
			}
		})
	}
}

// TestRoundRobinScaled checks weights whose reduced sum exceeds 65,536: the
// cycle is bounded (by 65,536 plus one per backend, since each scaled weight
// is kept at least 1), every backend is picked at least once per cycle and
// each backend's share of a cycle is close to its share of the weights.
func TestRoundRobinScaled(t *testing.T) {
	many := make([]uint32, 20000)
	for i := range many {
		many[i] = 1
	}
	many[0] = 50000
	tests := []struct {
		name    string
		weights []uint32
		tol     float64 // allowed |share - weight share|, as a fraction of the cycle
	}{
		{"sum 65537", []uint32{65536, 1}, 1e-4},
		{"four", []uint32{60000, 30000, 7, 1}, 1e-4},
		{"max uint32", []uint32{math.MaxUint32, 1, 2}, 1e-4},
		{"ten", []uint32{10000, 9999, 9998, 9997, 9996, 9995, 9994, 9993, 9992, 9991}, 1e-4},
		{"one heavy, many light", many, 0.02},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := newRR(tt.weights)
			n := selector.CycleLen(rr)
			if maxLen := 1<<16 + len(tt.weights); n > maxLen || n < len(tt.weights) {
				t.Fatalf("cycle length = %d, want %d to %d", n, len(tt.weights), maxLen)
			}
			var sum float64
			for _, w := range tt.weights {
				sum += float64(w)
			}
			for c := range 2 {
				counts := make([]int, len(tt.weights))
				for range n {
					counts[pick(rr)]++
				}
				for i, got := range counts {
					if got < 1 {
						t.Fatalf("cycle %d: backend %d (weight %d) was not picked", c, i, tt.weights[i])
					}
					share, want := float64(got)/float64(n), float64(tt.weights[i])/sum
					if math.Abs(share-want) > tt.tol {
						t.Fatalf("cycle %d: backend %d (weight %d) has share %.5f, want %.5f ± %g",
							c, i, tt.weights[i], share, want, tt.tol)
					}
				}
			}
		})
	}
}

// TestRoundRobinConcurrent checks that picks from many goroutines share one
// rotation: a whole number of cycles, however interleaved, gives exact counts.
func TestRoundRobinConcurrent(t *testing.T) {
	tests := []struct {
		weights []uint32
		counts  []int // per cycle
	}{
		{[]uint32{1, 1, 1, 1}, []int{1, 1, 1, 1}},
		{[]uint32{3, 2, 1}, []int{3, 2, 1}},
		{[]uint32{5, 1, 1}, []int{5, 1, 1}},
	}
	const (
		goroutines = 8
		cycles     = 2000
	)
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			rr := newRR(tt.weights)
			total := cycles * selector.CycleLen(rr)
			if total%goroutines != 0 {
				t.Fatalf("test setup: %d picks do not split over %d goroutines", total, goroutines)
			}
			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				counts = make([]int, len(tt.weights))
			)
			for range goroutines {
				wg.Go(func() {
					local := make([]int, len(tt.weights))
					for range total / goroutines {
						local[pick(rr)]++
					}
					mu.Lock()
					defer mu.Unlock()
					for i, n := range local {
						counts[i] += n
					}
				})
			}
			wg.Wait()
			want := make([]int, len(tt.counts))
			for i, n := range tt.counts {
				want[i] = n * cycles
			}
			if !slices.Equal(counts, want) {
				t.Fatalf("counts = %v, want %v", counts, want)
			}
		})
	}
}

func TestRoundRobinPickAllocs(t *testing.T) {
	for _, weights := range [][]uint32{nil, {1}, {1, 1, 1}, {5, 1, 1}, unequal(10000)} {
		rr := newRR(weights)
		if n := testing.AllocsPerRun(1000, func() { pick(rr) }); n != 0 {
			t.Errorf("Pick with %d backends allocates %v times, want 0", len(weights), n)
		}
	}
}

// equal returns n weights of 1.
func equal(n int) []uint32 {
	ws := make([]uint32, n)
	for i := range ws {
		ws[i] = 1
	}
	return ws
}

// unequal returns n weights cycling through 1 to 10.
func unequal(n int) []uint32 {
	ws := make([]uint32, n)
	for i := range ws {
		ws[i] = uint32(i%10 + 1)
	}
	return ws
}

// TestRoundRobinSkip checks that unusable backends (unhealthy or ejected) are
// skipped while the others keep their exact order: the picks are the
// weighted order with the unusable backends left out.
func TestRoundRobinSkip(t *testing.T) {
	tests := []struct {
		weights   []uint32
		unhealthy []int
		ejected   []int
		cycle     []int
	}{
		{[]uint32{1, 1, 1}, []int{0}, nil, []int{1, 2}},
		{[]uint32{1, 1, 1}, []int{1}, nil, []int{0, 2}},
		{[]uint32{1, 1, 1}, nil, []int{2}, []int{0, 1}},
		{[]uint32{1, 1, 1}, []int{0}, []int{2}, []int{1}},
		{[]uint32{1, 1, 1, 1, 1}, []int{1, 2}, nil, []int{0, 3, 4}},
		{[]uint32{2, 1}, []int{0}, nil, []int{1}},
		{[]uint32{2, 1}, []int{1}, nil, []int{0}},
		{[]uint32{5, 1, 1}, []int{1}, nil, []int{0, 0, 0, 2, 0, 0}},
		{[]uint32{5, 1, 1}, nil, []int{0}, []int{1, 2}},
		{[]uint32{1, 2, 3}, []int{2}, nil, []int{1, 0, 1}},
		{[]uint32{1, 2, 3}, []int{1}, nil, []int{2, 0, 2, 2}},
		{[]uint32{1, 2, 3}, []int{0}, nil, []int{2, 1, 2, 1, 2}},
		{[]uint32{7, 5, 3, 2}, []int{0, 2}, nil, []int{1, 3, 1, 1, 1, 3, 1}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/unhealthy=%v/ejected=%v", tt.weights, tt.unhealthy, tt.ejected), func(t *testing.T) {
			states := unhealthy(newStates(len(tt.weights)), tt.unhealthy...)
			for _, i := range tt.ejected {
				states[i].Eject(t0, time.Minute)
			}
			const cycles = 4
			got := picks(t, selector.NewRoundRobin(states, tt.weights, 0), cycles*len(tt.cycle))
			if want := repeat(tt.cycle, cycles); !slices.Equal(got, want) {
				t.Fatalf("picks = %v, want %v", got, want)
			}
		})
	}
}

// TestRoundRobinRecovery checks that a backend that becomes unusable drops
// out of the order at once and comes back when it is usable again.
func TestRoundRobinRecovery(t *testing.T) {
	states := newStates(3)
	rr := selector.NewRoundRobin(states, nil, 0)
	if got, want := picks(t, rr, 6), []int{0, 1, 2, 0, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("healthy: picks = %v, want %v", got, want)
	}
	states[1].Eject(t0.Add(-time.Second), 10*time.Second) // until t0+9s
	if got, want := picks(t, rr, 4), []int{0, 2, 0, 2}; !slices.Equal(got, want) {
		t.Fatalf("ejected: picks = %v, want %v", got, want)
	}
	// Past the ejection, backend 1 is back in its place.
	var got []int
	for range 6 {
		i, p := rr.Pick(0, 0, t0.Add(10*time.Second).UnixNano())
		if p {
			t.Fatal("panic mode")
		}
		got = append(got, i)
	}
	if want := []int{0, 1, 2, 0, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("after ejection: picks = %v, want %v", got, want)
	}
}

// TestRoundRobinPanic checks that with no usable backend the picks follow
// the weighted order regardless of health, reporting panic mode, and that
// tried backends are still avoided.
func TestRoundRobinPanic(t *testing.T) {
	tests := []struct {
		weights []uint32
		tried   uint64
		cycle   []int
	}{
		{[]uint32{1, 1, 1}, 0, []int{0, 1, 2}},
		{[]uint32{1}, 0, []int{0}},
		{[]uint32{2, 1}, 0, []int{0, 1, 0}},
		{[]uint32{5, 1, 1}, 0, []int{0, 0, 1, 0, 2, 0, 0}},
		{[]uint32{1, 1, 1}, mask(1), []int{0, 2}},
		{[]uint32{5, 1, 1}, mask(0), []int{1, 2}},
		{[]uint32{5, 1, 1}, mask(0, 1, 2), []int{0, 0, 1, 0, 2, 0, 0}}, // all tried
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/tried=%b", tt.weights, tt.tried), func(t *testing.T) {
			states := newStates(len(tt.weights))
			unhealthy(states, seq(len(states))...)
			rr := selector.NewRoundRobin(states, tt.weights, 0)
			var got []int
			for range 3 * len(tt.cycle) {
				i, p := rr.Pick(0, tt.tried, now)
				if !p {
					t.Fatalf("pick %d = %d without panic mode", len(got), i)
				}
				got = append(got, i)
			}
			if want := repeat(tt.cycle, 3); !slices.Equal(got, want) {
				t.Fatalf("picks = %v, want %v", got, want)
			}
		})
	}
}

// TestRoundRobinTried checks that a retry avoids the backends it tried and
// takes the next in the order, and that the rotation goes on after it.
func TestRoundRobinTried(t *testing.T) {
	rr := selector.NewRoundRobin(newStates(3), nil, 0)
	type step struct {
		tried uint64
		want  int
	}
	steps := []step{
		{0, 0},
		{mask(1), 2}, // position 1 is tried: 2, and the rotation moves past it
		{0, 0},
		{mask(0), 1},
		{mask(0, 1), 2},
		{mask(0, 1, 2), 0}, // all tried: any
		{0, 1},
		{mask(1, 2), 0},
		{0, 1},
	}
	for k, s := range steps {
		i, p := rr.Pick(0, s.tried, now)
		if i != s.want || p {
			t.Fatalf("step %d (tried %03b): Pick = %d, %v; want %d, false", k, s.tried, i, p, s.want)
		}
	}
	// With backend 2 unusable and 0 tried, 1 is the only choice; with 1
	// tried too, panic mode offers 2.
	rr2 := selector.NewRoundRobin(unhealthy(newStates(3), 2), nil, 0)
	for range 5 {
		if i, p := rr2.Pick(0, mask(0), now); i != 1 || p {
			t.Fatalf("Pick = %d, %v; want 1, false", i, p)
		}
		if i, p := rr2.Pick(0, mask(0, 1), now); i != 2 || !p {
			t.Fatalf("Pick = %d, %v; want 2, true", i, p)
		}
	}
}

// TestRoundRobinSlowStart checks that a fully ramped backend keeps its exact
// place and that a ramping backend's skipped turns go to the next backend
// in the order (so no backend is picked twice in a row here), never in panic
// mode.
func TestRoundRobinSlowStart(t *testing.T) {
	const window = time.Minute
	states := newStates(3)
	rr := selector.NewRoundRobin(states, nil, window)
	if got, want := picks(t, rr, 6), []int{0, 1, 2, 0, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("ramped up: picks = %v, want %v", got, want)
	}
	// Backend 1 just joined: factor 0.1, so about 1 in 10 of its turns.
	states[1] = backend.New(addr(1), t0)
	rr = selector.NewRoundRobin(states, nil, window)
	got := picks(t, rr, 30000)
	var ones int
	for k, i := range got {
		if i == 1 {
			ones++
		}
		if k > 0 && i == got[k-1] {
			t.Fatalf("picks %d-%d: %d twice in a row", k-1, k, i)
		}
	}
	// Shares are 1:0.1:1 of 2.1.
	if want := 30000 * 0.1 / 2.1; float64(ones) < want*0.8 || float64(ones) > want*1.2 {
		t.Fatalf("ramping backend picked %d times of 30000, want about %.0f", ones, want)
	}
}
