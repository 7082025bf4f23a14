package selector_test

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"testing"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/dataplane/selector"
)

func TestHashString(t *testing.T) {
	// Published FNV-1a 64 test vectors.
	for s, want := range map[string]uint64{
		"":       0xcbf29ce484222325,
		"a":      0xaf63dc4c8601ec8c,
		"foobar": 0x85944171f73967e8,
	} {
		if got := selector.HashString(s); got != want {
			t.Errorf("HashString(%q) = %#x, want %#x", s, got, want)
		}
	}
	for _, s := range []string{"x", "user-42", "/api/v1/items?id=7", "\x00\xff", "ünïcödé"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := selector.HashString(s), h.Sum64(); got != want {
			t.Errorf("HashString(%q) = %#x, want %#x (hash/fnv)", s, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { selector.HashString("some key") }); n != 0 {
		t.Errorf("HashString allocates %v times", n)
	}
}

func TestMaglevTableSize(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want uint64
	}{
		{1, 65537}, {10, 65537}, {655, 65537}, {656, 655373}, {6553, 655373},
		{6554, 6553621}, {10000, 6553621}, {65536, 6553621}, {100000, 6553621},
	} {
		if got := selector.TableSize(tt.n); got != tt.want {
			t.Errorf("TableSize(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
	if got := len(selector.Table(selector.NewConsistentHash(newStates(656), nil))); got != 655373 {
		t.Errorf("656 backends: table of %d entries, want 655373", got)
	}
}

// keys returns the hash keys of n request keys.
func keys(n int) []uint64 {
	out := make([]uint64, n)
	for k := range out {
		out[k] = selector.HashString(fmt.Sprintf("user-%d", k))
	}
	return out
}

// addresses returns the addresses the keys map to with nothing tried, failing
// the test on panic mode.
func addresses(t *testing.T, m *selector.Maglev, states []*backend.State, keys []uint64) []string {
	t.Helper()
	out := make([]string, len(keys))
	for k, key := range keys {
		i, p := m.Pick(key, 0, now)
		if i < 0 || p {
			t.Fatalf("key %d: Pick = %d, %v", k, i, p)
		}
		out[k] = states[i].Address
	}
	return out
}

// moved counts the keys whose address differs.
func moved(a, b []string) int {
	n := 0
	for k := range a {
		if a[k] != b[k] {
			n++
		}
	}
	return n
}

// count counts the keys on address a.
func count(addrs []string, a string) int {
	n := 0
	for _, x := range addrs {
		if x == a {
			n++
		}
	}
	return n
}

// TestMaglevTable checks each backend's share of the table: equal weights
// give counts within one of each other, unequal ones counts proportional to
// the weights.
func TestMaglevTable(t *testing.T) {
	for _, weights := range [][]uint32{nil, equal(10), equal(3), equal(700), {1, 2, 3, 4}, {0, 5, 1}, unequal(100), {1000, 1}} {
		n := len(weights)
		if n == 0 {
			n = 10
		}
		name := fmt.Sprint(weights)
		if len(weights) > 10 {
			name = fmt.Sprintf("%d backends", len(weights))
		}
		t.Run(name, func(t *testing.T) {
			table := selector.Table(selector.NewConsistentHash(newStates(n), weights))
			counts := make([]int, n)
			for _, i := range table {
				counts[i]++
			}
			var sum float64
			for i := range n {
				sum += float64(max(weightOf(weights, i), 1))
			}
			for i, c := range counts {
				want := float64(len(table)) * float64(max(weightOf(weights, i), 1)) / sum
				if d := float64(c) - want; d < -float64(weightOf(weights, i))-1 || d > float64(weightOf(weights, i))+1 {
					t.Fatalf("backend %d (weight %d): %d entries of %d, want %.1f", i, weightOf(weights, i), c, len(table), want)
				}
			}
		})
	}
}

// weightOf returns weights[i], or 1 for empty weights.
func weightOf(weights []uint32, i int) uint32 {
	if len(weights) == 0 {
		return 1
	}
	return max(weights[i], 1)
}

// TestMaglevConsistent checks that a key always maps to the same backend,
// within a build and across builds.
func TestMaglevConsistent(t *testing.T) {
	states := newStates(10)
	ks := keys(10000)
	a := addresses(t, selector.NewConsistentHash(states, nil), states, ks)
	if b := addresses(t, selector.NewConsistentHash(states, nil), states, ks); moved(a, b) != 0 {
		t.Fatalf("second build: %d keys moved", moved(a, b))
	}
	m := selector.NewConsistentHash(states, nil)
	for range 3 {
		if b := addresses(t, m, states, ks); moved(a, b) != 0 {
			t.Fatalf("repeated picks: %d keys moved", moved(a, b))
		}
	}
	// Fresh states with the same addresses (another process) map alike.
	other := newStates(10)
	if b := addresses(t, selector.NewConsistentHash(other, nil), other, ks); moved(a, b) != 0 {
		t.Fatalf("other states: %d keys moved", moved(a, b))
	}
}

// TestMaglevDeterministic pins the table built from fixed addresses, so every
// process and every version of the data plane maps keys alike: a change of
// the algorithm would move keys between data planes mid-rollout.
func TestMaglevDeterministic(t *testing.T) {
	for _, tt := range []struct {
		weights []uint32
		want    uint64
	}{
		{nil, 0x20323593db0e4fb3},
		{[]uint32{1, 2, 3, 4, 5, 1, 2, 3, 4, 5}, 0x7eb521740c045b5d},
	} {
		states := newStates(10)
		a := selector.Table(selector.NewConsistentHash(states, tt.weights))
		b := selector.Table(selector.NewConsistentHash(newStates(10), tt.weights))
		if !slices.Equal(a, b) {
			t.Fatalf("weights %v: two builds differ", tt.weights)
		}
		h := fnv.New64a()
		var buf [4]byte
		for _, i := range a {
			binary.LittleEndian.PutUint32(buf[:], i)
			h.Write(buf[:])
		}
		if got := h.Sum64(); got != tt.want {
			t.Errorf("weights %v: table hash %#x, want %#x", tt.weights, got, tt.want)
		}
	}
}

// TestMaglevDistribution checks that 10,000 keys spread over 10 backends
// with each getting 1,000 ± 30%.
func TestMaglevDistribution(t *testing.T) {
	for _, n := range []int{2, 3, 10} {
		t.Run(fmt.Sprintf("backends=%d", n), func(t *testing.T) {
			states := newStates(n)
			addrs := addresses(t, selector.NewConsistentHash(states, nil), states, keys(10000))
			want := 10000 / n
			for _, st := range states {
				if c := count(addrs, st.Address); c < want*7/10 || c > want*13/10 {
					t.Fatalf("%s has %d keys, want %d ± 30%%", st.Address, c, want)
				}
			}
		})
	}
}

// TestMaglevAdd checks that adding an 11th backend to 10 moves between 0.5/N
// and 1.5/N of the keys (N = 10).
func TestMaglevAdd(t *testing.T) {
	states := newStates(11)
	ks := keys(10000)
	before := addresses(t, selector.NewConsistentHash(states[:10], nil), states[:10], ks)
	after := addresses(t, selector.NewConsistentHash(states, nil), states, ks)
	n := moved(before, after)
	t.Logf("%d of %d keys moved; %d went to the new backend", n, len(ks), count(after, states[10].Address))
	if n < 500 || n > 1500 {
		t.Fatalf("%d keys moved, want 500 to 1500", n)
	}
}

// TestMaglevRemove checks that removing one backend of 10 moves few keys
// besides the removed backend's.
func TestMaglevRemove(t *testing.T) {
	for _, removed := range []int{0, 4, 9} {
		t.Run(fmt.Sprint(removed), func(t *testing.T) {
			states := newStates(10)
			ks := keys(10000)
			before := addresses(t, selector.NewConsistentHash(states, nil), states, ks)
			rest := slices.Delete(slices.Clone(states), removed, removed+1)
			after := addresses(t, selector.NewConsistentHash(rest, nil), rest, ks)
			own := count(before, states[removed].Address)
			n := moved(before, after)
			t.Logf("%d keys moved, the removed backend had %d", n, own)
			if n < own || float64(n) > 1.5*float64(own) {
				t.Fatalf("%d keys moved, want %d (the removed backend's) to %d", n, own, own*3/2)
			}
		})
	}
}

// TestMaglevUnusable checks that the keys of an unusable backend go to the
// others, spread over them, while every other key stays put, and that they
// come back when it recovers.
func TestMaglevUnusable(t *testing.T) {
	states := newStates(10)
	m := selector.NewConsistentHash(states, nil)
	ks := keys(10000)
	before := addresses(t, m, states, ks)
	states[3].SetHealthy(false, t0)
	during := addresses(t, m, states, ks)
	targets := map[string]int{}
	for k := range ks {
		switch {
		case during[k] == states[3].Address:
			t.Fatalf("key %d still on the unusable backend", k)
		case before[k] == states[3].Address:
			targets[during[k]]++
		case during[k] != before[k]:
			t.Fatalf("key %d moved from %s to %s", k, before[k], during[k])
		}
	}
	if len(targets) < 8 {
		t.Fatalf("the unusable backend's keys went to %d backends (%v), want them spread", len(targets), targets)
	}
	states[3].SetHealthy(true, t0)
	if after := addresses(t, m, states, ks); moved(before, after) != 0 {
		t.Fatalf("after recovery %d keys differ", moved(before, after))
	}
}

// TestMaglevTried checks that a retry goes to another backend, the same one
// for the same key and tried set, and that retries of one backend's keys
// spread over the others.
func TestMaglevTried(t *testing.T) {
	states := newStates(10)
	m := selector.NewConsistentHash(states, nil)
	targets := map[int]int{}
	for _, key := range keys(2000) {
		first, _ := m.Pick(key, 0, now)
		second, p := m.Pick(key, mask(first), now)
		if second == first || p {
			t.Fatalf("retry: Pick = %d, %v after %d", second, p, first)
		}
		if again, _ := m.Pick(key, mask(first), now); again != second {
			t.Fatalf("retry not stable: %d then %d", second, again)
		}
		third, p := m.Pick(key, mask(first, second), now)
		if third == first || third == second || p {
			t.Fatalf("second retry: Pick = %d, %v after %d, %d", third, p, first, second)
		}
		if first == 0 {
			targets[second]++
		}
	}
	if len(targets) < 8 {
		t.Fatalf("retries of backend 0's keys went to %d backends (%v), want them spread", len(targets), targets)
	}
}
