package selector_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/dataplane/selector"
)

// t0 is the tests' clock: every test picks at t0 unless it says otherwise.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// now is t0 in unix nanoseconds.
var now = t0.UnixNano()

// addr returns the address of test backend i.
func addr(i int) string { return fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255) }

// newStates returns n healthy backends that joined long before t0 (so fully
// ramped up).
func newStates(n int) []*backend.State {
	states := make([]*backend.State, n)
	for i := range states {
		states[i] = backend.New(addr(i), t0.Add(-24*time.Hour))
	}
	return states
}

// unhealthy marks the backends at the given indexes unhealthy and returns
// states.
func unhealthy(states []*backend.State, idx ...int) []*backend.State {
	for _, i := range idx {
		states[i].SetHealthy(false, t0)
	}
	return states
}

// mask returns a tried mask with the given bits set.
func mask(idx ...int) uint64 {
	var m uint64
	for _, i := range idx {
		m |= 1 << i
	}
	return m
}

// kind is a selector policy under test.
type kind struct {
	name string
	new  func(states []*backend.State, weights []uint32, slowStart time.Duration) selector.Selector
	// slowStart is whether the policy honours a slow-start window.
	slowStart bool
}

var kinds = []kind{
	{"roundrobin", func(s []*backend.State, w []uint32, d time.Duration) selector.Selector {
		return selector.NewRoundRobin(s, w, d)
	}, true},
	{"random", func(s []*backend.State, w []uint32, d time.Duration) selector.Selector {
		return selector.NewRandom(s, w, d)
	}, true},
	{"leastrequest", func(s []*backend.State, w []uint32, d time.Duration) selector.Selector {
		return selector.NewLeastRequest(s, w, d)
	}, true},
	{"maglev", func(s []*backend.State, w []uint32, _ time.Duration) selector.Selector {
		return selector.NewConsistentHash(s, w)
	}, false},
}

// picks returns the next n picks of s at now with no tried backends,
// failing the test on panic mode.
func picks(t testing.TB, s selector.Selector, n int) []int {
	t.Helper()
	out := make([]int, n)
	for k := range out {
		var panicking bool
		out[k], panicking = s.Pick(uint64(k), 0, now)
		if panicking {
			t.Fatalf("pick %d = %d in panic mode", k, out[k])
		}
	}
	return out
}

// TestEmpty checks that selectors over no backends pick -1.
func TestEmpty(t *testing.T) {
	for _, k := range kinds {
		for _, states := range [][]*backend.State{nil, {}} {
			s := k.new(states, nil, time.Minute)
			for key := range uint64(3) {
				if i, p := s.Pick(key, key, now); i != -1 || p {
					t.Errorf("%s: Pick = %d, %v; want -1, false", k.name, i, p)
				}
			}
		}
	}
}

// TestWeightsLength checks that weights not aligned with states panic.
func TestWeightsLength(t *testing.T) {
	for _, k := range kinds {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: 3 states, 2 weights: no panic", k.name)
				}
			}()
			k.new(newStates(3), []uint32{1, 2}, 0)
		}()
	}
}

// TestSkipTriedPanic checks, for every policy, which backends may be picked
// given unusable and tried backends, and when panic mode is reported.
func TestSkipTriedPanic(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		weights   []uint32
		unusable  []int
		ejected   []int
		tried     uint64
		allowed   []int // every pick is one of these
		panicking bool
	}{
		{name: "all usable", n: 3, allowed: []int{0, 1, 2}},
		{name: "one backend", n: 1, allowed: []int{0}},
		{name: "one unhealthy", n: 3, unusable: []int{1}, allowed: []int{0, 2}},
		{name: "one ejected", n: 3, ejected: []int{0}, allowed: []int{1, 2}},
		{name: "heavy unhealthy", n: 3, weights: []uint32{100, 1, 1}, unusable: []int{0}, allowed: []int{1, 2}},
		{name: "only light usable", n: 3, weights: []uint32{1000, 1000, 1}, unusable: []int{0, 1}, allowed: []int{2}},
		{name: "two unusable", n: 3, unusable: []int{0, 2}, allowed: []int{1}},
		{name: "all unhealthy", n: 3, unusable: []int{0, 1, 2}, allowed: []int{0, 1, 2}, panicking: true},
		{name: "single unhealthy", n: 1, unusable: []int{0}, allowed: []int{0}, panicking: true},
		{name: "all ejected", n: 2, ejected: []int{0, 1}, allowed: []int{0, 1}, panicking: true},
		{name: "tried one", n: 3, tried: mask(0), allowed: []int{1, 2}},
		{name: "tried two", n: 3, tried: mask(0, 2), allowed: []int{1}},
		{name: "tried heavy", n: 3, weights: []uint32{1000, 1, 1}, tried: mask(0), allowed: []int{1, 2}},
		{name: "tried all", n: 3, tried: mask(0, 1, 2), allowed: []int{0, 1, 2}},
		{name: "tried all but unusable", n: 3, unusable: []int{1}, tried: mask(0, 1, 2), allowed: []int{0, 2}},
		{name: "tried bits beyond n", n: 2, tried: mask(0, 5, 63), allowed: []int{1}},
		{name: "tried and unusable", n: 3, unusable: []int{1}, tried: mask(0), allowed: []int{2}},
		{name: "untried unusable: panic", n: 3, unusable: []int{1, 2}, tried: mask(0), allowed: []int{1, 2}, panicking: true},
		{name: "all unusable, tried one", n: 3, unusable: []int{0, 1, 2}, tried: mask(1), allowed: []int{0, 2}, panicking: true},
		{name: "64 backends tried 63", n: 64, tried: ^uint64(0) &^ mask(17), allowed: []int{17}},
		{name: "64 backends tried all", n: 64, tried: ^uint64(0), allowed: seq(64)},
		{name: "65 backends tried 64", n: 65, tried: ^uint64(0), allowed: []int{64}},
		{name: "65 backends, 64 unusable", n: 65, unusable: seq(64), allowed: []int{64}},
		{name: "100 backends, 99 unusable", n: 100, unusable: seq(99), weights: unequal(100), allowed: []int{99}},
		{name: "100 backends, 99 unusable, tried", n: 100, unusable: seq(99), tried: mask(5, 50), allowed: []int{99}},
		{name: "100 backends, all unusable, last tried", n: 100, unusable: seq(100), tried: mask(0), allowed: seq(100)[1:], panicking: true},
	}
	for _, k := range kinds {
		for _, tt := range tests {
			for _, slowStart := range []time.Duration{0, time.Hour} {
				if slowStart > 0 && !k.slowStart {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/slowstart=%v", k.name, tt.name, slowStart), func(t *testing.T) {
					states := unhealthy(newStates(tt.n), tt.unusable...)
					for _, i := range tt.ejected {
						states[i].Eject(t0.Add(-time.Second), time.Minute)
					}
					if slowStart > 0 {
						// Half of the backends are ramping up.
						for i := 0; i < tt.n; i += 2 {
							states[i] = backend.New(states[i].Address, t0)
							states[i].SetHealthy(!slices.Contains(tt.unusable, i), t0)
						}
						for _, i := range tt.ejected {
							states[i].Eject(t0.Add(-time.Second), time.Minute)
						}
					}
					s := k.new(states, tt.weights, slowStart)
					for key := range uint64(300) {
						i, p := s.Pick(key*0x9e3779b97f4a7c15, tt.tried, now)
						if !slices.Contains(tt.allowed, i) || p != tt.panicking {
							t.Fatalf("pick %d = %d, panic %v; want one of %v, panic %v", key, i, p, tt.allowed, tt.panicking)
						}
					}
				})
			}
		}
	}
}

// seq returns 0, 1, …, n-1.
func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestSlowStartShares checks that a backend halfway through its slow-start
// window gets half its weight: with two equal backends, one ramping at
// factor 0.5, it gets 1/3 of the picks.
func TestSlowStartShares(t *testing.T) {
	const (
		window = time.Minute
		n      = 100000
	)
	for _, k := range kinds {
		if !k.slowStart {
			continue
		}
		for _, weights := range [][]uint32{nil, {2, 2}, {1, 2}} {
			t.Run(fmt.Sprintf("%s/%v", k.name, weights), func(t *testing.T) {
				states := newStates(2)
				states[0] = backend.New(addr(0), t0.Add(-window/2))
				if f := states[0].RampFactor(now, window); f != 0.5 {
					t.Fatalf("test setup: ramp factor %v, want 0.5", f)
				}
				w0, w1 := 1.0, 1.0
				if weights != nil {
					w0, w1 = float64(weights[0]), float64(weights[1])
				}
				want := 0.5 * w0 / (0.5*w0 + w1)
				var zero int
				for _, i := range picks(t, k.new(states, weights, window), n) {
					if i == 0 {
						zero++
					}
				}
				if got := float64(zero) / n; got < want-0.02 || got > want+0.02 {
					t.Fatalf("ramping backend's share = %.4f, want %.4f ± 0.02", got, want)
				}
				// Without slow start, the weights alone count.
				zero = 0
				for _, i := range picks(t, k.new(states, weights, 0), n) {
					if i == 0 {
						zero++
					}
				}
				if got, want := float64(zero)/n, w0/(w0+w1); got < want-0.02 || got > want+0.02 {
					t.Fatalf("without slow start: share = %.4f, want %.4f ± 0.02", got, want)
				}
			})
		}
	}
}

// TestConcurrent picks from many goroutines while backends flap, for the
// race detector, and checks that every pick is in range and that panic mode
// picks come only when no backend was usable.
func TestConcurrent(t *testing.T) {
	for _, k := range kinds {
		for _, slowStart := range []time.Duration{0, time.Hour} {
			t.Run(fmt.Sprintf("%s/slowstart=%v", k.name, slowStart), func(t *testing.T) {
				const n = 10
				states := newStates(n)
				states[0] = backend.New(addr(0), t0) // ramping
				s := k.new(states, unequal(n), slowStart)
				var wg sync.WaitGroup
				stop := make(chan struct{})
				wg.Go(func() {
					for j := 0; ; j++ {
						select {
						case <-stop:
							return
						default:
						}
						states[j%(n-1)].SetHealthy(j%3 != 0, t0) // backend n-1 stays healthy
					}
				})
				var pickers sync.WaitGroup
				for g := range 8 {
					pickers.Go(func() {
						for j := range 5000 {
							i, p := s.Pick(uint64(g*5000+j), mask(j%n), now)
							if i < 0 || i >= n || p {
								t.Errorf("Pick = %d, %v", i, p)
								return
							}
							states[i].Begin()
							states[i].End()
						}
					})
				}
				pickers.Wait()
				close(stop)
				wg.Wait()
			})
		}
	}
}

// TestPickAllocs checks that Pick does not allocate, in every mode: all
// backends healthy, half of them unhealthy, all unhealthy (panic mode); half
// of them ramping up.
func TestPickAllocs(t *testing.T) {
	for _, k := range kinds {
		for _, slowStart := range []time.Duration{0, time.Hour} {
			if slowStart > 0 && !k.slowStart {
				continue
			}
			for _, n := range []int{0, 1, 3, 100, 10000} {
				if n == 10000 && k.name == "maglev" {
					// Building a 6,553,621-entry table takes seconds under
					// the race detector; 1,000 backends get a 655,373-entry
					// one, as large as a cache miss per pick.
					n = 1000
				}
				states := newStates(n)
				for i := 0; i < n; i += 2 {
					states[i] = backend.New(addr(i), t0) // ramping
				}
				s := k.new(states, unequal(n), slowStart)
				for _, health := range []string{"healthy", "half unhealthy", "all unhealthy"} {
					for i, st := range states {
						st.SetHealthy(health == "healthy" || health == "half unhealthy" && i%2 == 0, t0)
					}
					runs := 200
					if n == 10000 && health == "all unhealthy" {
						runs = 5 // every pick looks at every backend
					}
					var key uint64
					allocs := testing.AllocsPerRun(runs, func() {
						key++
						s.Pick(key*0x9e3779b97f4a7c15, key&7, now)
					})
					if allocs != 0 {
						t.Errorf("%s, slow start %v, %d backends, %s: Pick allocates %v times, want 0",
							k.name, slowStart, n, health, allocs)
					}
				}
			}
		}
	}
}
