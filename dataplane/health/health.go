// Package health runs the active health checks of a data plane: HTTP, TCP
// and gRPC probes against every backend of every pool that configures one.
//
// # Flow
//
// The data plane builds one Target per (pool, backend) whose pool has an
// active check, and hands the whole set to Checker.Sync after each
// configuration update. Sync diffs the set against the running checks,
// keyed by (Pool, Address):
//
//   - a new key starts a checking goroutine;
//   - a key no longer present has its goroutine stopped, and Sync waits for
//     it to exit, so a removed backend gets no more probes and its State no
//     more verdicts once Sync returns;
//   - a key whose Check, Transport, TLS, Scheme or State changed is
//     restarted (stopped, waited for, started afresh with zero counters);
//   - an unchanged key keeps running, with its consecutive counters.
//
// Each goroutine owns its target: it waits a random delay in [0, interval)
// so that checks of many backends spread out, then probes every interval
// with ±10% jitter, each probe bounded by the check's timeout. A probe's
// result moves two counters, consecutive successes and consecutive
// failures. A healthy backend turns unhealthy after UnhealthyThreshold
// consecutive failures; an unhealthy one recovers after HealthyThreshold
// consecutive successes. The starting point is whatever the backend's State
// says (a new backend starts healthy; a backend kept across configuration
// versions keeps its verdict). A flip is written to the State with
// backend.State.SetHealthy, logged (Warn on failure, Info on recovery) and
// reported to the Checker's onChange callback.
//
// Close stops every goroutine and waits for them; gRPC connections and the
// idle connections of transports the Checker built itself are closed on the
// way out. Transports passed in a Target belong to the caller and are never
// closed here.
package health

import (
	"cmp"
	"context"
	"crypto/tls"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/internal/poolspec"
)

// Target is one backend of one pool to check.
type Target struct {
	// Pool names the pool the backend belongs to.
	Pool string
	// Address is the backend's HOST:PORT.
	Address string
	// Check configures the probe, with defaults applied by the caller
	// (Type != ""). A target whose Type is empty is ignored.
	Check poolspec.HealthCheck
	// State receives the verdicts. It must be the same object across Syncs
	// while the backend stays; a different State restarts the check. A
	// target with a nil State is ignored.
	State *backend.State
	// Transport sends HTTP checks: the pool's upstream transport, so that
	// checks speak TLS and HTTP/2 as the pool's traffic does. Nil means a
	// plain HTTP/1.1 transport owned by the check. The Checker never closes
	// a Transport it was given.
	Transport http.RoundTripper
	// TLS configures gRPC checks over TLS; nil means plaintext (h2c) gRPC.
	TLS *tls.Config
	// Scheme is "http" or "https" for HTTP checks; empty means "http".
	Scheme string
}

// key identifies a target across Syncs.
type key struct{ pool, addr string }

func (t Target) key() key { return key{t.Pool, t.Address} }

// sameTarget reports whether a running check for a can serve b unchanged.
func sameTarget(a, b Target) bool {
	return a.Check == b.Check && a.State == b.State && a.TLS == b.TLS &&
		a.Scheme == b.Scheme && sameTransport(a.Transport, b.Transport)
}

// sameTransport compares round trippers without panicking on dynamic types
// that are not comparable (such as function adapters): those count as
// changed unless they are the same function.
func sameTransport(a, b http.RoundTripper) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb {
		return false
	}
	if ta.Comparable() {
		return a == b
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if ta.Kind() == reflect.Func {
		return va.Pointer() == vb.Pointer()
	}
	return false
}

// TargetStatus is a snapshot of one running check, for admin pages.
type TargetStatus struct {
	// Pool and Address identify the target.
	Pool    string
	Address string
	// Type is the check type: "http", "tcp" or "grpc".
	Type string
	// Healthy is the backend's current active-check verdict.
	Healthy bool
	// LastError describes the last failed probe; empty after a success.
	LastError string
	// LastCheck is when the last probe started; zero before the first.
	LastCheck time.Time
	// ConsecutiveOK and ConsecutiveFail count the probes that succeeded or
	// failed in a row; one of them is always zero.
	ConsecutiveOK   int
	ConsecutiveFail int
}

// Checker runs the active checks of a set of targets: one goroutine per
// target, each owned by the Checker and stopped by Sync or Close. Create it
// with New.
type Checker struct {
	log      hclog.Logger
	onChange func(t Target, healthy bool)

	// lifeMu serialises Sync and Close; it is held while they wait for
	// goroutines to exit, so onChange must not call them.
	lifeMu sync.Mutex
	closed bool

	// mu guards runners. It is never held while waiting for a goroutine.
	mu      sync.Mutex
	runners map[key]*runner
}

// New returns a Checker with no targets. log receives flips and probe
// failures (nil: discard). onChange, which may be nil, is called from the
// target's checking goroutine each time a target's health flips (after the
// thresholds), with the new verdict; it must not call Sync or Close.
func New(log hclog.Logger, onChange func(t Target, healthy bool)) *Checker {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Checker{log: log, onChange: onChange, runners: make(map[key]*runner)}
}

// Sync makes the running checks match targets: it starts checks for new
// targets, stops those of removed targets, and restarts a target whose
// Check, Transport, TLS, Scheme or State changed. Targets are keyed by
// (Pool, Address); of duplicates the first wins. A target that keeps
// running keeps its consecutive counters. When Sync returns, stopped checks
// have exited. Sync is safe to call while checks run, but not concurrently
// with itself; after Close it does nothing.
func (c *Checker) Sync(targets []Target) {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return
	}

	want := make(map[key]Target, len(targets))
	for _, t := range targets {
		k := t.key()
		if _, dup := want[k]; dup {
			continue
		}
		switch {
		case t.Check.Type == "":
			continue
		case t.State == nil:
			c.log.Warn("health check target has no backend state; not checking it", "pool", t.Pool, "backend", t.Address)
			continue
		case t.Check.Type != poolspec.CheckHTTP && t.Check.Type != poolspec.CheckTCP && t.Check.Type != poolspec.CheckGRPC:
			c.log.Warn("unknown health check type; not checking", "pool", t.Pool, "backend", t.Address, "check", t.Check.Type)
			continue
		}
		want[k] = t
	}

	var stop, start []*runner
	c.mu.Lock()
	for k, r := range c.runners {
		if t, ok := want[k]; !ok || !sameTarget(r.target, t) {
			stop = append(stop, r)
			delete(c.runners, k)
		}
	}
	for k, t := range want {
		if _, ok := c.runners[k]; !ok {
			r := newRunner(c, t)
			c.runners[k] = r
			start = append(start, r)
		}
	}
	c.mu.Unlock()

	// Stop the old checks before starting their replacements, so that two
	// goroutines never write the same backend's verdict.
	stopAll(stop)
	for _, r := range start {
		r.start()
	}
}

// Close stops every check and waits for their goroutines to exit. It is
// idempotent; after it, Sync does nothing.
func (c *Checker) Close() {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.mu.Lock()
	all := make([]*runner, 0, len(c.runners))
	for _, r := range c.runners {
		all = append(all, r)
	}
	clear(c.runners)
	c.mu.Unlock()
	stopAll(all)
}

// stopAll cancels every runner, then waits for all of them.
func stopAll(rs []*runner) {
	for _, r := range rs {
		r.cancel()
	}
	for _, r := range rs {
		<-r.done
	}
}

// Status returns a snapshot of every running check, sorted by pool and
// address.
func (c *Checker) Status() []TargetStatus {
	c.mu.Lock()
	rs := make([]*runner, 0, len(c.runners))
	for _, r := range c.runners {
		rs = append(rs, r)
	}
	c.mu.Unlock()
	out := make([]TargetStatus, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.status())
	}
	slices.SortFunc(out, func(a, b TargetStatus) int {
		return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Address, b.Address))
	})
	return out
}

// runner is the checking goroutine of one target and its counters.
type runner struct {
	c      *Checker
	target Target
	// check is target.Check with defaults filled defensively.
	check poolspec.HealthCheck

	ctx    context.Context
	cancel context.CancelFunc
	// done is closed when the goroutine has exited.
	done chan struct{}

	// mu guards the fields below, which the goroutine writes and Status
	// reads.
	mu        sync.Mutex
	lastErr   string
	lastCheck time.Time
	okRun     int
	failRun   int
}

func newRunner(c *Checker, t Target) *runner {
	check := t.Check.WithDefaults()
	if check.Interval <= 0 {
		check.Interval = poolspec.DefaultCheckInterval
	}
	if check.Timeout <= 0 {
		check.Timeout = min(poolspec.DefaultCheckTimeout, check.Interval/2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &runner{
		c:      c,
		target: t,
		check:  check,
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
}

// start launches the goroutine. The runner is already in the Checker's map,
// so Close (which cannot run during Sync) always finds it started.
func (r *runner) start() {
	go r.run()
}

func (r *runner) status() TargetStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return TargetStatus{
		Pool:            r.target.Pool,
		Address:         r.target.Address,
		Type:            r.check.Type,
		Healthy:         r.target.State.Healthy(),
		LastError:       r.lastErr,
		LastCheck:       r.lastCheck,
		ConsecutiveOK:   r.okRun,
		ConsecutiveFail: r.failRun,
	}
}

// record applies one probe's result and returns the verdict to publish, if
// the thresholds say the backend's health flips.
func (r *runner) record(err error, started time.Time) (flip, healthy bool, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastCheck = started
	current := r.target.State.Healthy()
	if err == nil {
		r.lastErr = ""
		r.okRun++
		r.failRun = 0
		return !current && r.okRun >= threshold(r.check.HealthyThreshold), true, ""
	}
	r.lastErr = describe(err, r.check.Timeout)
	r.failRun++
	r.okRun = 0
	return current && r.failRun >= threshold(r.check.UnhealthyThreshold), false, r.lastErr
}

func threshold(n uint32) int { return max(int(n), 1) }
