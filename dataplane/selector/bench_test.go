package selector_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/dataplane/selector"
)

var sink int

// benchStates returns n backends for a benchmark: healthy and ramped up, or
// in the given condition.
func benchStates(n int, cond string) []*backend.State {
	states := newStates(n)
	for i, st := range states {
		switch cond {
		case "slowstart": // every other backend ramping up
			if i%2 == 0 {
				states[i] = backend.New(st.Address, t0.Add(-time.Minute))
			}
		case "half-unhealthy":
			if i%2 == 0 {
				st.SetHealthy(false, t0)
			}
		case "all-unhealthy":
			st.SetHealthy(false, t0)
		}
	}
	return states
}

// benchCases lists the selectors benchmarked: every policy, with unequal
// weights unless named "equal", and slow start (window 1h, half of the
// backends at a tenth of it) where the policy supports it.
func benchCases(n int) []struct {
	name string
	sel  func() selector.Selector
} {
	type bc = struct {
		name string
		sel  func() selector.Selector
	}
	var out []bc
	for _, k := range kinds {
		out = append(out,
			bc{k.name + "/equal", func() selector.Selector { return k.new(benchStates(n, ""), nil, 0) }},
			bc{k.name + "/unequal", func() selector.Selector { return k.new(benchStates(n, ""), unequal(n), 0) }},
		)
		if k.slowStart {
			out = append(out, bc{k.name + "/slowstart", func() selector.Selector {
				return k.new(benchStates(n, "slowstart"), unequal(n), time.Hour)
			}})
		}
		if n == 100 {
			out = append(out,
				bc{k.name + "/half-unhealthy", func() selector.Selector { return k.new(benchStates(n, "half-unhealthy"), unequal(n), 0) }},
				bc{k.name + "/all-unhealthy", func() selector.Selector { return k.new(benchStates(n, "all-unhealthy"), unequal(n), 0) }},
			)
		}
	}
	return out
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{2, 100, 10000} {
		for _, c := range benchCases(n) {
			b.Run(fmt.Sprintf("%s/backends=%d", c.name, n), func(b *testing.B) {
				s := c.sel()
				b.ReportAllocs()
				var key uint64
				for b.Loop() {
					key += 0x9e3779b97f4a7c15
					sink, _ = s.Pick(key, 0, now)
				}
			})
		}
	}
}

func BenchmarkPickParallel(b *testing.B) {
	for _, c := range benchCases(100) {
		b.Run(c.name+"/backends=100", func(b *testing.B) {
			s := c.sel()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var key uint64
				var sum int
				for pb.Next() {
					key += 0x9e3779b97f4a7c15
					i, _ := s.Pick(key, 0, now)
					sum += i
				}
				_ = sum
			})
		})
	}
}

// BenchmarkNew measures building a selector, which happens once per changed
// pool per configuration version. Maglev is left out: its table of at least
// 65,537 entries takes milliseconds to build, too long for a fixed
// -benchtime=20000x run (TestMaglevTableSize builds a 655,373-entry one).
func BenchmarkNew(b *testing.B) {
	for _, k := range kinds[:3] {
		b.Run(k.name+"/backends=100/unequal", func(b *testing.B) {
			states, ws := newStates(100), unequal(100)
			b.ReportAllocs()
			for b.Loop() {
				k.new(states, ws, 0)
			}
		})
	}
}
