package discovery_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/store"
)

// recorder is a discovery.Observer that records every event.
type recorder struct {
	mu                                sync.Mutex
	opened, closed, sent, acks, nacks int
	published                         []uint64
	propagated                        []uint64
	durations                         []time.Duration
}

var _ discovery.Observer = (*recorder)(nil)

func (r *recorder) StreamOpened() { r.mu.Lock(); r.opened++; r.mu.Unlock() }
func (r *recorder) StreamClosed() { r.mu.Lock(); r.closed++; r.mu.Unlock() }
func (r *recorder) Published(v uint64) {
	r.mu.Lock()
	r.published = append(r.published, v)
	r.mu.Unlock()
}
func (r *recorder) Sent(uint64)   { r.mu.Lock(); r.sent++; r.mu.Unlock() }
func (r *recorder) Acked(uint64)  { r.mu.Lock(); r.acks++; r.mu.Unlock() }
func (r *recorder) Nacked(uint64) { r.mu.Lock(); r.nacks++; r.mu.Unlock() }
func (r *recorder) Propagated(v uint64, d time.Duration) {
	r.mu.Lock()
	r.propagated = append(r.propagated, v)
	r.durations = append(r.durations, d)
	r.mu.Unlock()
}

// counts is a snapshot of a recorder.
type counts struct {
	opened, closed, sent, acks, nacks int
	published, propagated             []uint64
	durations                         []time.Duration
}

func (r *recorder) counts() counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return counts{opened: r.opened, closed: r.closed, sent: r.sent, acks: r.acks, nacks: r.nacks,
		published: slices.Clone(r.published), propagated: slices.Clone(r.propagated), durations: slices.Clone(r.durations)}
}

// waitCounts polls the recorder until cond holds, for up to 5s.
func waitCounts(t *testing.T, r *recorder, what string, cond func(c counts) bool) counts {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := r.counts()
		if cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; recorder: %+v", what, c)
		}
		time.Sleep(time.Millisecond)
	}
}

// observedServer starts a discovery server with rec as its Observer on a
// loopback gRPC listener and returns a client of it; everything stops when
// the test ends.
func observedServer(t *testing.T, rec *recorder) (*discovery.Server, lbv1.DiscoveryServiceClient) {
	t.Helper()
	e := newServer(t, func(d *discovery.Server) { d.Observer = rec })
	return e.disc, e.client
}

// TestObserverPropagation plays a script of publications, connections,
// acknowledgements, refusals and disconnections, and checks after each
// step which versions were reported propagated, and the event counts.
func TestObserverPropagation(t *testing.T) {
	type step struct {
		do   string // publish, connect, ack, nack, leave
		node string
		v    uint64
		// wantPropagated is every version reported so far; nil: as
		// after the step before.
		wantPropagated []uint64
	}
	steps := []step{
		// Published with nobody connected: never reported.
		{do: "publish", v: 1},
		{do: "connect", node: "a"},
		{do: "connect", node: "b"},
		{do: "ack", node: "a", v: 1},
		{do: "ack", node: "b", v: 1},
		// Reported when the last of the two acknowledges.
		{do: "publish", v: 2},
		{do: "ack", node: "a", v: 2},
		{do: "ack", node: "b", v: 2, wantPropagated: []uint64{2}},
		// A refusal holds a version back; it is superseded, never reported.
		{do: "publish", v: 3},
		{do: "ack", node: "a", v: 3},
		{do: "nack", node: "b", v: 3, wantPropagated: []uint64{2}},
		{do: "publish", v: 4},
		{do: "ack", node: "b", v: 4, wantPropagated: []uint64{2}},
		{do: "ack", node: "a", v: 4, wantPropagated: []uint64{2, 4}},
		// The last laggard leaves: reported at the acknowledgement before.
		{do: "publish", v: 5},
		{do: "ack", node: "a", v: 5, wantPropagated: []uint64{2, 4}},
		{do: "leave", node: "b", wantPropagated: []uint64{2, 4, 5}},
		// A data plane joining before the last acknowledgement is waited for.
		{do: "publish", v: 6},
		{do: "connect", node: "c", wantPropagated: []uint64{2, 4, 5}},
		{do: "ack", node: "a", v: 6, wantPropagated: []uint64{2, 4, 5}},
		{do: "ack", node: "c", v: 6, wantPropagated: []uint64{2, 4, 5, 6}},
		// Acknowledging a later version than the one followed counts.
		{do: "publish", v: 7},
		{do: "ack", node: "a", v: 7},
		{do: "publish", v: 8},
		{do: "ack", node: "c", v: 8, wantPropagated: []uint64{2, 4, 5, 6}},
		{do: "ack", node: "a", v: 8, wantPropagated: []uint64{2, 4, 5, 6, 8}},
		// Every laggard leaves before any acknowledgement: not reported.
		{do: "publish", v: 9},
		{do: "leave", node: "a", wantPropagated: []uint64{2, 4, 5, 6, 8}},
		{do: "leave", node: "c", wantPropagated: []uint64{2, 4, 5, 6, 8}},
	}

	rec := &recorder{}
	disc, client := observedServer(t, rec)
	streams := make(map[string]*stream)
	var acks, nacks, opened, closed int
	var want []uint64
	for i, s := range steps {
		what := fmt.Sprintf("step %d (%s %s %d)", i, s.do, s.node, s.v)
		switch s.do {
		case "publish":
			disc.Publish(store.State{Version: s.v})
			// Every connected data plane receives it.
			for _, st := range streams {
				if got := st.recv(t).GetVersion(); got != s.v {
					t.Fatalf("%s: a stream received version %d", what, got)
				}
			}
		case "connect":
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			t.Cleanup(cancel)
			cs, err := client.StreamConfig(ctx)
			if err != nil {
				t.Fatalf("%s: StreamConfig: %v", what, err)
			}
			st := &stream{cs, cancel}
			st.send(t, hello(s.node, 0))
			st.recv(t) // the latest version
			streams[s.node] = st
			opened++
			waitCounts(t, rec, what, func(c counts) bool { return c.opened == opened })
		case "ack", "nack":
			m := ack(s.v)
			if s.do == "nack" {
				m = nack(s.v, "refused in a test")
				nacks++
			} else {
				acks++
			}
			streams[s.node].send(t, m)
			waitCounts(t, rec, what, func(c counts) bool { return c.acks == acks && c.nacks == nacks })
		case "leave":
			streams[s.node].cancel()
			delete(streams, s.node)
			closed++
			waitCounts(t, rec, what, func(c counts) bool { return c.closed == closed })
		}
		if s.wantPropagated != nil {
			want = s.wantPropagated
		}
		if c := rec.counts(); !slices.Equal(c.propagated, want) {
			t.Fatalf("%s: propagated %v, want %v", what, c.propagated, want)
		}
	}
	c := rec.counts()
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(c.published, want) {
		t.Errorf("published %v, want %v", c.published, want)
	}
	for i, d := range c.durations {
		if d <= 0 || d > 5*time.Second {
			t.Errorf("version %d propagated in %v, want a small positive duration", c.propagated[i], d)
		}
	}
	// a and b got 1-5 (b not 5: it left after it; a all 9), c 6-9.
	waitCounts(t, rec, "every send counted", func(c counts) bool { return c.sent == 9+5+4 })
}

// TestObserverConcurrent pushes versions quickly to many data planes that
// acknowledge whatever they receive, and checks under the race detector
// that the last version is reported propagated once and that reports come
// in increasing version order, each version at most once.
func TestObserverConcurrent(t *testing.T) {
	const (
		planes   = 16
		versions = 50
	)
	rec := &recorder{}
	disc, client := observedServer(t, rec)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i := range planes {
		cs, err := client.StreamConfig(ctx)
		if err != nil {
			t.Fatalf("StreamConfig: %v", err)
		}
		if err := cs.Send(hello(fmt.Sprintf("n%02d", i), 0)); err != nil {
			t.Fatalf("hello: %v", err)
		}
		wg.Go(func() {
			for {
				m, err := cs.Recv()
				if err != nil {
					return
				}
				if err := cs.Send(ack(m.GetVersion())); err != nil {
					return
				}
			}
		})
	}
	waitCounts(t, rec, "every stream open", func(c counts) bool { return c.opened == planes })
	for v := uint64(1); v <= versions; v++ {
		disc.Publish(store.State{Version: v})
	}
	c := waitCounts(t, rec, "the last version propagated", func(c counts) bool {
		return len(c.propagated) > 0 && c.propagated[len(c.propagated)-1] == versions
	})
	if !slices.IsSorted(c.propagated) || len(slices.Compact(slices.Clone(c.propagated))) != len(c.propagated) {
		t.Errorf("propagated %v, want strictly increasing versions", c.propagated)
	}
	cancel()
	wg.Wait()
	waitCounts(t, rec, "every stream closed", func(c counts) bool { return c.closed == planes })
	if c := rec.counts(); c.acks > c.sent || c.sent < planes {
		t.Errorf("%d acknowledgements for %d messages sent to %d data planes", c.acks, c.sent, planes)
	}
}
