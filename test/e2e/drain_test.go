package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// lbWaitQuiet waits, for at most timeout, until b's request counter stays
// unchanged for a whole window, and returns when that window started
// (relative to the call) and the counter.
func lbWaitQuiet(t *testing.T, b *lbBackend, window, timeout time.Duration) (time.Duration, int64) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		from := time.Since(start)
		n := b.requests.Load()
		time.Sleep(window)
		if b.requests.Load() == n {
			return from, n
		}
	}
	t.Fatalf("backend %s still got requests %v after the drain was applied", b.name, timeout)
	return 0, 0
}

// TestDrainUnderLoad drains one of two backends under a steady load from 4
// clients: it stops getting requests, "lbctl pool get" shows it draining,
// it is removed, and no client request fails throughout.
func TestDrainUnderLoad(t *testing.T) {
	e := lbStart(t, "dp-drain")
	a, b := lbStartBackend(t, "a", nil), lbStartBackend(t, "b", nil)
	e.apply(t, "pool", "create", "web", "--backend", a.addr, "--backend", b.addr)

	load := lbStartLoad(t, e.url+"/", 4, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	if a.requests.Load() == 0 || b.requests.Load() == 0 {
		t.Fatalf("before the drain: a got %d requests, b %d; want both serving", a.requests.Load(), b.requests.Load())
	}
	start := time.Now()
	e.apply(t, "drain-backend", "--pool", "web", a.addr)
	applied := time.Since(start)
	quietFrom, stoppedAt := lbWaitQuiet(t, a, 300*time.Millisecond, 5*time.Second)
	t.Logf("lbctl drain-backend ran and the data plane applied the drain in %v; a got no request from %v after that on (300ms windows)",
		applied.Round(time.Millisecond), quietFrom.Round(time.Millisecond))
	if row := lbPoolRow(t, e.cp.addr, "web", a.addr); len(row) < 3 || row[2] != "draining" {
		t.Fatalf("lbctl pool get: row %q, want STATE draining", row)
	}
	if v := lbBackendOf(t, e.dp, "web", a.addr); !v.Draining {
		t.Fatalf("/backends: %+v, want draining", v)
	}
	bBefore := b.requests.Load()
	time.Sleep(500 * time.Millisecond)
	if b.requests.Load() == bBefore {
		t.Fatalf("b got no requests while a was draining")
	}

	e.apply(t, "remove-backend", "--pool", "web", a.addr)
	time.Sleep(500 * time.Millisecond)
	ok, failures, seen := load.finish()
	t.Logf("%d requests succeeded, %d failed; per backend %v", ok, len(failures), seen)
	if len(failures) > 0 {
		t.Fatalf("%d client requests failed, first: %v", len(failures), lbFirst(failures, 5))
	}
	if n := a.requests.Load(); n != stoppedAt {
		t.Fatalf("a got %d requests after it was drained and removed", n-stoppedAt)
	}
}

// TestDrainInFlightVisible holds a request on backend a, drains a, and
// checks that the data plane's /backends and "lbctl pool get" show it
// draining with 1 request in flight, that new requests go to b, and that the
// held request completes with 200 once released, the count going to 0.
func TestDrainInFlightVisible(t *testing.T) {
	e := lbStart(t, "dp-drain-inflight")
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	a := lbStartBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		}
		_, _ = io.WriteString(w, "a")
	})
	b := lbStartBackend(t, "b", nil)
	e.apply(t, "pool", "create", "web", "--backend", a.addr, "--backend", b.addr)

	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The first pick of a new round-robin pool is its first backend, a.
		code, body, err := lbGet(newClient(), e.url+"/hold", nil)
		done <- result{code, body, err}
	}()
	select {
	case <-held:
	case r := <-done:
		t.Fatalf("the /hold request was not held by a: %d %q %v", r.code, r.body, r.err)
	case <-time.After(10 * time.Second):
		t.Fatalf("the /hold request did not reach a within 10s")
	}

	e.apply(t, "drain-backend", "--pool", "web", a.addr)
	if v := lbBackendOf(t, e.dp, "web", a.addr); !v.Draining || v.InFlight != 1 {
		t.Fatalf("/backends for a: %+v, want draining with in_flight 1", v)
	}
	start := time.Now()
	var dpView string
	waitFor(t, 10*time.Second, "lbctl pool get to report a draining with 1 in flight", func() bool {
		resp := lbPoolGet(t, e.cp.addr, "web")
		st := lbStatusOf(resp, a.addr)
		draining := false
		for _, be := range resp.GetPool().GetBackends() {
			if be.GetAddress() == a.addr {
				draining = be.GetDraining()
			}
		}
		if !draining || len(st.GetDataPlanes()) != 1 {
			return false
		}
		d := st.GetDataPlanes()[0]
		dpView = fmt.Sprintf("node %s healthy %v ejected %v in_flight %d", d.GetNodeId(), d.GetHealthy(), d.GetEjected(), d.GetInFlight())
		return d.GetNodeId() == "dp-drain-inflight" && d.GetInFlight() == 1
	})
	reported := time.Since(start)
	t.Logf("lbctl pool get -o json shows a draining, %s, %v after the drain was applied", dpView, reported.Round(time.Millisecond))
	if reported > 3*time.Second {
		t.Errorf("the control plane showed the in-flight request %v after the drain; want within about 2s (1s health reports)", reported)
	}
	if row := lbPoolRow(t, e.cp.addr, "web", a.addr); len(row) != 7 || row[2] != "draining" || row[6] != "1" {
		t.Errorf("lbctl pool get: row %q, want STATE draining and IN-FLIGHT 1", row)
	}

	c := newClient()
	for i := 0; i < 10; i++ {
		if code, body, err := lbGet(c, e.url+"/", nil); err != nil || code != http.StatusOK || body != "b" {
			t.Fatalf("request %d while a drains: %d %q %v, want 200 \"b\"", i, code, body, err)
		}
	}

	close(release)
	select {
	case r := <-done:
		if r.err != nil || r.code != http.StatusOK || r.body != "a" {
			t.Fatalf("held request: %d %q %v, want 200 \"a\"", r.code, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the held request did not complete within 10s of its release")
	}
	waitFor(t, 5*time.Second, "/backends to show a with 0 in flight", func() bool {
		return lbBackendOf(t, e.dp, "web", a.addr).InFlight == 0
	})
	start = time.Now()
	waitFor(t, 10*time.Second, "lbctl pool get to report 0 in flight for a", func() bool {
		st := lbStatusOf(lbPoolGet(t, e.cp.addr, "web"), a.addr)
		return len(st.GetDataPlanes()) == 1 && st.GetDataPlanes()[0].GetInFlight() == 0
	})
	t.Logf("lbctl pool get shows 0 in flight for a %v after the held request completed", time.Since(start).Round(time.Millisecond))
}

// TestDrainWebSocketSessions opens 3 WebSocket sessions to a, adds b and
// drains a: the sessions keep exchanging messages every 100ms for 1.5s and
// then close normally, none cut, while new sessions go to b.
func TestDrainWebSocketSessions(t *testing.T) {
	e := lbStart(t, "dp-drain-ws")
	a, b := lbStartWSBackend(t, "a"), lbStartWSBackend(t, "b")
	e.apply(t, "pool", "create", "ws", "--backend", a.addr)

	const sessions = 3
	conns := make([]*websocket.Conn, sessions)
	for i := range conns {
		var via string
		conns[i], via = lbWSDial(t, e.dp.addr, fmt.Sprintf("old-%d", i))
		if via != "a" {
			t.Fatalf("session %d went to %q, want a (the only backend)", i, via)
		}
	}
	e.apply(t, "add-backend", "--pool", "ws", b.addr)
	e.apply(t, "drain-backend", "--pool", "ws", a.addr)
	if v := lbBackendOf(t, e.dp, "ws", a.addr); !v.Draining || v.InFlight != sessions {
		t.Errorf("/backends for a after the drain: %+v, want draining with in_flight %d (the open sessions)", v, sessions)
	}

	// Each old session exchanges a message every 100ms for 1.5s, then
	// closes normally.
	const exchanges = 15
	var wg sync.WaitGroup
	errs := make([]error, sessions)
	counts := make([]int, sessions)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := 0; n < exchanges; n++ {
				<-tick.C
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				msg := fmt.Sprintf("session %d message %d", i, n)
				err := c.Write(ctx, websocket.MessageText, []byte(msg))
				var got []byte
				if err == nil {
					_, got, err = c.Read(ctx)
				}
				cancel()
				if err == nil && string(got) != msg {
					err = fmt.Errorf("echo %q, want %q", got, msg)
				}
				if err != nil {
					errs[i] = fmt.Errorf("exchange %d: %w", n, err)
					return
				}
				counts[i]++
			}
			if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				errs[i] = fmt.Errorf("close: %w", err)
			}
		}()
	}

	// Meanwhile, new sessions go to b.
	for i := 0; i < 3; i++ {
		c, via := lbWSDial(t, e.dp.addr, fmt.Sprintf("new-%d", i))
		if via != "b" {
			t.Errorf("new session %d went to %q while a drains, want b", i, via)
		}
		wsRoundTrip(t, c, websocket.MessageText, []byte("hello"), 5*time.Second)
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Errorf("close new session %d: %v", i, err)
		}
	}
	wg.Wait()

	for i := range conns {
		if errs[i] != nil {
			t.Errorf("old session %d after %d of %d exchanges: %v", i, counts[i], exchanges, errs[i])
		}
		end := a.awaitEnd(t, fmt.Sprintf("old-%d", i), 5*time.Second)
		if st := websocket.CloseStatus(end); st != websocket.StatusNormalClosure {
			t.Errorf("old session %d ended on a with %v (status %v), want a normal closure", i, end, st)
		}
	}
	t.Logf("%d sessions on the draining backend completed %v exchanges each and closed normally; a had %d sessions, b %d",
		sessions, counts, a.sessions.Load(), b.sessions.Load())
	waitFor(t, 5*time.Second, "a to have nothing in flight", func() bool {
		return lbBackendOf(t, e.dp, "ws", a.addr).InFlight == 0
	})
}

// TestDrainUndrain: a drained backend gets no requests; after
// "lbctl undrain-backend" it is back in rotation with its share.
func TestDrainUndrain(t *testing.T) {
	e := lbStart(t, "dp-undrain")
	a, b := lbStartBackend(t, "a", nil), lbStartBackend(t, "b", nil)
	e.apply(t, "pool", "create", "web", "--backend", a.addr, "--backend", b.addr)
	c := newClient()

	e.apply(t, "drain-backend", "--pool", "web", a.addr)
	for i, got := range sequence(t, c, e.url+"/", 10) {
		if got != "b" {
			t.Fatalf("request %d with a drained went to %q, want b", i, got)
		}
	}

	e.apply(t, "undrain-backend", "--pool", "web", a.addr)
	if v := lbBackendOf(t, e.dp, "web", a.addr); v.Draining {
		t.Fatalf("/backends after undrain: %+v, want not draining", v)
	}
	if row := lbPoolRow(t, e.cp.addr, "web", a.addr); len(row) < 3 || row[2] != "active" {
		t.Fatalf("lbctl pool get after undrain: row %q, want STATE active", row)
	}
	got := sequence(t, c, e.url+"/", 20)
	n := 0
	for _, g := range got {
		if g == "a" {
			n++
		}
	}
	if n != 10 {
		t.Fatalf("after undrain a answered %d of 20 requests, want 10 (round robin): %v", n, got)
	}
}
