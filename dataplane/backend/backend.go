// Package backend holds the runtime state of one backend of one pool on a
// data plane: requests in flight, active-check health, passive-check
// failures and ejection, and the clock of its slow-start ramp.
//
// A State outlives configuration versions: when a new routing table keeps a
// backend, it keeps the backend's State object, so counters and health carry
// over and are published together with the new membership in one atomic
// swap of the table. Every field is atomic; the request path reads and
// updates State without locks.
package backend

import (
	"sync/atomic"
	"time"

	"github.com/lb-project/lb/dataplane/stats"
)

// State is one backend's runtime state. Create it with New.
type State struct {
	// Address is the backend's HOST:PORT.
	Address string
	// Stats are the request counters of the backend in its pool.
	Stats stats.Backend

	inFlight atomic.Int64
	// unhealthy is set by active health checks.
	unhealthy atomic.Bool
	// consecutiveFailures counts failed requests since the last success.
	consecutiveFailures atomic.Int32
	// ejectedUntil is when the current ejection ends (unix ns); 0 if none.
	ejectedUntil atomic.Int64
	// ejections counts ejections so far; each lasts longer.
	ejections atomic.Int32
	// since is when the backend joined or last recovered (unix ns), the
	// start of its slow-start ramp.
	since atomic.Int64
}

// New returns the state of a backend that just joined, healthy.
func New(addr string, now time.Time) *State {
	s := &State{Address: addr}
	s.since.Store(now.UnixNano())
	return s
}

// InFlight returns the requests in flight to the backend.
func (s *State) InFlight() int64 { return s.inFlight.Load() }

// Begin counts a request (or tunnel) starting; call End when it ends.
func (s *State) Begin() { s.inFlight.Add(1) }

// End counts a request (or tunnel) ending.
func (s *State) End() { s.inFlight.Add(-1) }

// Healthy reports whether active checks (if any) pass.
func (s *State) Healthy() bool { return !s.unhealthy.Load() }

// SetHealthy records the active checks' verdict. It reports whether the
// state changed. A recovery restarts the slow-start ramp and ends a passive
// ejection: the active checks have just seen the backend work again.
func (s *State) SetHealthy(healthy bool, now time.Time) bool {
	changed := s.unhealthy.Swap(!healthy) == healthy
	if changed && healthy {
		s.since.Store(now.UnixNano())
		s.ejectedUntil.Store(0)
		s.consecutiveFailures.Store(0)
	}
	return changed
}

// Ejected reports whether passive checks have ejected the backend at now.
func (s *State) Ejected(now int64) bool { return s.ejectedUntil.Load() > now }

// Usable reports whether the backend should get new requests at now (unix
// ns): healthy and not ejected.
func (s *State) Usable(now int64) bool {
	return !s.unhealthy.Load() && s.ejectedUntil.Load() <= now
}

// RecordSuccess notes a request that reached the backend and got a non-5xx
// answer.
func (s *State) RecordSuccess() {
	if s.consecutiveFailures.Load() != 0 {
		s.consecutiveFailures.Store(0)
	}
}

// RecordFailure notes a failed request (connection failure or 5xx) and
// returns the consecutive failures so far.
func (s *State) RecordFailure() int32 { return s.consecutiveFailures.Add(1) }

// Eject takes the backend out of rotation from now for base time the
// number of its previous ejections doubled, at most 10 × base. It returns
// the ejection's length. The consecutive-failure count restarts.
func (s *State) Eject(now time.Time, base time.Duration) time.Duration {
	n := s.ejections.Add(1) - 1
	s.Stats.Ejections.Add(1)
	d := base << min(n, 4)
	d = min(d, 10*base)
	s.ejectedUntil.Store(now.Add(d).UnixNano())
	s.consecutiveFailures.Store(0)
	s.since.Store(now.Add(d).UnixNano()) // the ramp starts when it returns
	return d
}

// RampFactor returns the share of its weight the backend gets at now under a
// slow-start window: from 0.1 right after it joined or recovered up to 1
// at the end of the window. A window of 0 gives 1.
func (s *State) RampFactor(now int64, window time.Duration) float64 {
	if window <= 0 {
		return 1
	}
	elapsed := now - s.since.Load()
	if elapsed >= int64(window) {
		return 1
	}
	if elapsed <= 0 {
		return 0.1
	}
	return max(0.1, float64(elapsed)/float64(window))
}
