package selector_test

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/lb-project/lb/dataplane/selector"
)

var _ selector.Selector = selector.NewRoundRobin(nil)

// picks returns the next n picks of s.
func picks(s selector.Selector, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = s.Pick()
	}
	return out
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
			got := picks(selector.NewRoundRobin(tt.weights), cycles*len(tt.cycle))
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
			got := picks(selector.NewRoundRobin(weights), 300)
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
			rr := selector.NewRoundRobin(tt.weights)
			if got := selector.CycleLen(rr); got != tt.cycleLen {
				t.Fatalf("cycle length = %d, want %d", got, tt.cycleLen)
			}
			for c := range 3 {
				counts := make([]int, len(tt.weights))
				for range tt.cycleLen {
					counts[rr.Pick()]++
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
			rr := selector.NewRoundRobin(tt.weights)
			seq := picks(rr, 5*selector.CycleLen(rr))
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
			rr := selector.NewRoundRobin(tt.weights)
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
					counts[rr.Pick()]++
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
			rr := selector.NewRoundRobin(tt.weights)
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
						local[rr.Pick()]++
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
		rr := selector.NewRoundRobin(weights)
		if n := testing.AllocsPerRun(1000, func() { rr.Pick() }); n != 0 {
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

var sink int

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{2, 100, 10000} {
		for _, kind := range []struct {
			name    string
			weights func(int) []uint32
		}{{"equal", equal}, {"unequal", unequal}} {
			b.Run(fmt.Sprintf("backends=%d/%s", n, kind.name), func(b *testing.B) {
				rr := selector.NewRoundRobin(kind.weights(n))
				b.ReportAllocs()
				for b.Loop() {
					sink = rr.Pick()
				}
			})
		}
	}
}

func BenchmarkPickParallel(b *testing.B) {
	for _, kind := range []struct {
		name    string
		weights []uint32
	}{{"equal", equal(100)}, {"unequal", unequal(100)}} {
		b.Run("backends=100/"+kind.name, func(b *testing.B) {
			rr := selector.NewRoundRobin(kind.weights)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var s int
				for pb.Next() {
					s += rr.Pick()
				}
				_ = s
			})
		})
	}
}

// BenchmarkNewRoundRobin measures building a selector, which happens once per
// changed pool per configuration version. (Building one for 10,000 unequal
// backends takes milliseconds, too long for a fixed -benchtime=2000x run.)
func BenchmarkNewRoundRobin(b *testing.B) {
	for _, n := range []int{100} {
		b.Run(fmt.Sprintf("backends=%d/unequal", n), func(b *testing.B) {
			ws := unequal(n)
			b.ReportAllocs()
			for b.Loop() {
				selector.NewRoundRobin(ws)
			}
		})
	}
}
