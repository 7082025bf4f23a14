package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// lbWaitBackend polls /backends every 20ms until cond holds for addr in
// pool, for at most timeout, and returns how long that took.
func lbWaitBackend(t *testing.T, dp *dataPlane, pool, addr string, timeout time.Duration, what string, cond func(lbBackendView) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		v := lbBackendOf(t, dp, pool, addr)
		if cond(v) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; /backends says %+v", timeout, what, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailoverActiveHealthCheck stops one of three backends under a steady
// load from 4 clients: no client request fails, active checks mark it
// unhealthy within about interval x threshold, no request is sent to it
// afterwards, and once it listens again on the same address it is back in
// rotation.
func TestFailoverActiveHealthCheck(t *testing.T) {
	e := lbStart(t, "dp-failover")
	bs := []*lbBackend{lbStartBackend(t, "b1", nil), lbStartBackend(t, "b2", nil), lbStartBackend(t, "b3", nil)}
	dead := bs[1]
	e.apply(t, "pool", "create", "web", "--backend", bs[0].addr, "--backend", bs[1].addr, "--backend", bs[2].addr,
		"--health-check", "http:/", "--health-interval", "200ms", "--health-timeout", "100ms",
		"--unhealthy-threshold", "2", "--healthy-threshold", "2", "--retries", "2")
	waitFor(t, 10*time.Second, "health checks of every backend", func() bool {
		return bs[0].probes.Load() > 0 && bs[1].probes.Load() > 0 && bs[2].probes.Load() > 0
	})

	load := lbStartLoad(t, e.url+"/", 4, 20*time.Second)
	time.Sleep(time.Second)
	if dead.requests.Load() == 0 {
		t.Fatalf("b2 got no requests in 1s of load")
	}

	dead.stop()
	detect := lbWaitBackend(t, e.dp, "web", dead.addr, 10*time.Second, "b2 to be marked unhealthy",
		func(v lbBackendView) bool { return !v.Healthy })
	t.Logf("stopped backend marked unhealthy on /backends after %v (interval 200ms, unhealthy threshold 2)", detect.Round(time.Millisecond))
	if detect > 2*time.Second {
		t.Errorf("detection took %v; want about 1s (interval 200ms x threshold 2)", detect)
	}
	// Requests whose pick raced with the verdict are logged before it is
	// read here; give them a moment, then watch the data plane's attempts.
	time.Sleep(50 * time.Millisecond)
	mark := len(e.dp.log.String())
	time.Sleep(1500 * time.Millisecond)
	attempts := strings.Count(e.dp.log.String()[mark:], "upstream peer is: backend="+dead.addr+" ")
	others := strings.Count(e.dp.log.String()[mark:], "upstream peer is: backend=")
	t.Logf("in 1.5s after detection the data plane made %d attempts, %d of them to the stopped backend", others, attempts)
	if others == 0 {
		t.Fatalf("no attempts logged in 1.5s of load; is the data plane logging at debug level?")
	}
	if attempts != 0 {
		t.Errorf("the data plane sent %d attempts to the backend after marking it unhealthy", attempts)
	}

	before := dead.requests.Load()
	dead.restart(t)
	recoverHealthy := lbWaitBackend(t, e.dp, "web", dead.addr, 10*time.Second, "restarted b2 to be marked healthy",
		func(v lbBackendView) bool { return v.Healthy })
	start := time.Now()
	for dead.requests.Load() == before {
		if time.Since(start) > 10*time.Second {
			// Keep the evidence: what the data plane thinks of the backend
			// and what it logged about it (other than each attempt).
			var lines []string
			for _, l := range strings.Split(e.dp.log.String(), "\n") {
				if strings.Contains(l, dead.addr) && !strings.Contains(l, "upstream peer is") && !strings.Contains(l, "retrying on another backend") {
					lines = append(lines, l)
				}
			}
			t.Errorf("the restarted backend, healthy on /backends after %v, got no request within 10s more; /backends: %+v; "+
				"data plane log lines about it:\n%s", recoverHealthy.Round(time.Millisecond), lbBackendOf(t, e.dp, "web", dead.addr),
				strings.Join(lbFirst(lines, 10), "\n"))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dead.requests.Load() > before {
		t.Logf("restarted backend healthy on /backends after %v, serving requests after %v (healthy threshold 2)",
			recoverHealthy.Round(time.Millisecond), (recoverHealthy + time.Since(start)).Round(time.Millisecond))
	}
	time.Sleep(300 * time.Millisecond)

	ok, failures, seen := load.finish()
	t.Logf("%d requests succeeded, %d failed; per backend %v", ok, len(failures), seen)
	if len(failures) > 0 {
		t.Fatalf("%d client requests failed, first: %v", len(failures), lbFirst(failures, 5))
	}
}

// TestFailoverPassiveEjection: without active checks, a backend that answers
// 500 to everything is ejected after 3 failures in a row, requests go to the
// healthy one meanwhile, and it is tried again once the 2s ejection ends.
func TestFailoverPassiveEjection(t *testing.T) {
	e := lbStart(t, "dp-eject")
	bad := lbStartBackend(t, "bad", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad", http.StatusInternalServerError)
	})
	good := lbStartBackend(t, "good", nil)
	e.apply(t, "pool", "create", "web", "--backend", bad.addr, "--backend", good.addr,
		"--outlier-failures", "3", "--outlier-ejection-time", "2s")
	c := newClient()

	var statuses []int
	ejected := false
	var ejectedAt time.Time
	for i := 0; i < 20 && !ejected; i++ {
		code, _, err := lbGet(c, e.url+"/", nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		statuses = append(statuses, code)
		ejectedAt = time.Now()
		ejected = lbBackendOf(t, e.dp, "web", bad.addr).Ejected
	}
	if !ejected {
		t.Fatalf("bad backend not ejected after 20 requests (statuses %v); /backends: %+v", statuses, lbBackends(t, e.dp))
	}
	t.Logf("ejected after %d requests (statuses %v); the bad backend got %d", len(statuses), statuses, bad.requests.Load())
	if n := bad.requests.Load(); n != 3 {
		t.Errorf("the bad backend got %d requests before its ejection, want 3 (--outlier-failures 3)", n)
	}
	if v := lbBackendOf(t, e.dp, "web", good.addr); v.Ejected || !v.Healthy {
		t.Errorf("good backend: %+v, want healthy and not ejected", v)
	}

	// While it is ejected, everything goes to the good backend.
	badBefore := bad.requests.Load()
	for i := 0; i < 20; i++ {
		code, body, err := lbGet(c, e.url+"/", nil)
		if err != nil || code != http.StatusOK || body != "good" {
			t.Fatalf("request %d during the ejection: %d %q %v, want 200 \"good\"", i, code, body, err)
		}
	}
	if n := bad.requests.Load() - badBefore; n != 0 {
		t.Fatalf("the ejected backend got %d requests during its ejection", n)
	}

	// After the ejection time it is tried again.
	deadline := time.Now().Add(8 * time.Second)
	for bad.requests.Load() == badBefore {
		if time.Now().After(deadline) {
			t.Fatalf("the bad backend was not tried again within %v of its ejection", time.Since(ejectedAt))
		}
		code, body, err := lbGet(c, e.url+"/", nil)
		if err != nil || (code != http.StatusOK && code != http.StatusInternalServerError) {
			t.Fatalf("request after the ejection: %d %q %v", code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	back := time.Since(ejectedAt)
	t.Logf("the ejected backend got a request again %v after its ejection (ejection time 2s)", back.Round(time.Millisecond))
	if back < 1500*time.Millisecond {
		t.Errorf("the ejected backend was tried again after %v, before the 2s ejection time", back)
	}
}

// TestFailoverPanicMode: when active checks fail for every backend (the
// health path answers 503) although they serve requests, requests are still
// sent to them, and the data plane logs "panic mode".
func TestFailoverPanicMode(t *testing.T) {
	e := lbStart(t, "dp-panic")
	h := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, w.Header().Get("X-Backend"))
	}
	a, b := lbStartBackend(t, "a", h), lbStartBackend(t, "b", h)
	e.apply(t, "pool", "create", "web", "--backend", a.addr, "--backend", b.addr,
		"--health-check", "http:/health", "--health-interval", "200ms", "--health-timeout", "100ms", "--unhealthy-threshold", "2")
	for _, be := range []*lbBackend{a, b} {
		d := lbWaitBackend(t, e.dp, "web", be.addr, 10*time.Second, be.name+" to be marked unhealthy",
			func(v lbBackendView) bool { return !v.Healthy })
		t.Logf("%s unhealthy after %v", be.name, d.Round(time.Millisecond))
	}
	c := newClient()
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		code, body, err := lbGet(c, e.url+"/", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("request %d with every backend unhealthy: %d %q %v, want 200", i, code, body, err)
		}
		seen[body]++
	}
	t.Logf("20 requests with every backend unhealthy: %v", seen)
	waitFor(t, 5*time.Second, `"panic mode" in the data plane log`, func() bool {
		return strings.Contains(e.dp.log.String(), "panic mode")
	})
}

// TestFailoverTimeouts: a backend slower than --response-timeout gives 504
// after about the timeout, without a retry; a backend whose connects hang
// gives 504 after about --connect-timeout, and with another backend and a
// retry the request succeeds there.
func TestFailoverTimeouts(t *testing.T) {
	e := lbStart(t, "dp-timeouts")
	slow := lbStartBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/sleep") {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "slow")
	})
	good := lbStartBackend(t, "good", nil)
	hole := lbBlackholeAddr(t)
	e.apply(t, "pool", "create", "resp", "--path-prefix", "/resp/", "--response-timeout", "300ms", "--backend", slow.addr)
	e.apply(t, "pool", "create", "conn", "--path-prefix", "/conn/", "--connect-timeout", "300ms", "--retries", "0", "--backend", hole)
	e.apply(t, "pool", "create", "connretry", "--path-prefix", "/connretry/", "--connect-timeout", "300ms", "--retries", "1",
		"--no-outlier-detection", "--backend", hole, "--backend", good.addr)
	c := newClient()

	t.Run("response", func(t *testing.T) {
		if code, body, err := lbGet(c, e.url+"/resp/fast", nil); err != nil || code != http.StatusOK || body != "slow" {
			t.Fatalf("fast request: %d %q %v, want 200", code, body, err)
		}
		before := slow.requests.Load()
		start := time.Now()
		code, body, err := lbGet(c, e.url+"/resp/sleep", nil)
		took := time.Since(start)
		t.Logf("request to a backend sleeping 2s with --response-timeout 300ms: %d after %v", code, took.Round(time.Millisecond))
		if err != nil || code != http.StatusGatewayTimeout {
			t.Fatalf("slow request: %d %q %v, want 504", code, body, err)
		}
		if took < 250*time.Millisecond || took > 1500*time.Millisecond {
			t.Errorf("504 after %v, want about 300ms", took)
		}
		if n := slow.requests.Load() - before; n != 1 {
			t.Errorf("the backend got the timed-out request %d times, want 1 (no retry after a response timeout)", n)
		}
	})

	t.Run("connect", func(t *testing.T) {
		start := time.Now()
		code, body, err := lbGet(c, e.url+"/conn/x", nil)
		took := time.Since(start)
		t.Logf("request to a backend whose connects hang, --connect-timeout 300ms: %d %q after %v", code, strings.TrimSpace(body), took.Round(time.Millisecond))
		if err != nil || code != http.StatusGatewayTimeout {
			t.Fatalf("got %d %q %v, want 504", code, body, err)
		}
		if took < 250*time.Millisecond || took > 2*time.Second {
			t.Errorf("504 after %v, want about 300ms", took)
		}
	})

	t.Run("connect-retry", func(t *testing.T) {
		var slowest time.Duration
		for i := 0; i < 6; i++ {
			start := time.Now()
			code, body, err := lbGet(c, e.url+"/connretry/x", nil)
			took := time.Since(start)
			slowest = max(slowest, took)
			if err != nil || code != http.StatusOK || body != "good" {
				t.Fatalf("request %d: %d %q %v after %v, want 200 \"good\"", i, code, body, err, took)
			}
		}
		t.Logf("6 requests, every other one retried after a connect timeout: all 200, slowest %v", slowest.Round(time.Millisecond))
		if slowest < 250*time.Millisecond || slowest > 2*time.Second {
			t.Errorf("slowest request took %v; want about 300ms (one connect timeout, then the retry)", slowest)
		}
	})
}

// TestFailoverRetryNeverSameBackend: with one of two backends refusing
// connections, --retries 1 and no health checks, every request succeeds on
// the live backend: a retry never goes back to the backend that failed.
func TestFailoverRetryNeverSameBackend(t *testing.T) {
	e := lbStart(t, "dp-retry")
	live := lbStartBackend(t, "live", nil)
	dead := freeAddr(t) // nothing listens: connections are refused
	algorithms := []string{"round-robin", "random", "least-request"}
	for _, alg := range algorithms {
		e.apply(t, "pool", "create", alg, "--path-prefix", "/"+alg+"/", "--algorithm", alg, "--retries", "1",
			"--no-outlier-detection", "--backend", dead, "--backend", live.addr)
	}
	c := newClient()
	for _, alg := range algorithms {
		t.Run(alg, func(t *testing.T) {
			mark := len(e.dp.log.String())
			for i := 0; i < 40; i++ {
				code, body, err := lbGet(c, e.url+"/"+alg+"/x", nil)
				if err != nil || code != http.StatusOK || body != "live" {
					t.Fatalf("request %d: %d %q %v, want 200 \"live\"", i, code, body, err)
				}
			}
			retries := strings.Count(e.dp.log.String()[mark:], "retrying on another backend")
			t.Logf("40 requests all served by the live backend; %d were retried after the dead one refused", retries)
			if retries == 0 {
				t.Fatalf("no request was retried: the dead backend was never tried")
			}
		})
	}
}

// TestFailoverPoolGetDataPlaneCounts: with two data planes checking the
// backends, "lbctl pool get" shows "2/2 data planes" for each backend, and
// "0/2 data planes" for a backend once both have found it dead.
func TestFailoverPoolGetDataPlaneCounts(t *testing.T) {
	cp := startControlPlane(t, "", "")
	dps := []*dataPlane{startDataPlane(t, cp.addr, "dp-a"), startDataPlane(t, cp.addr, "dp-b")}
	lbFailOnRace(t, cp.proc, dps[0].proc, dps[1].proc)
	b1, b2 := lbStartBackend(t, "b1", nil), lbStartBackend(t, "b2", nil)
	lbApply(t, cp.addr, dps, "pool", "create", "web", "--backend", b1.addr, "--backend", b2.addr,
		"--health-check", "http:/", "--health-interval", "200ms", "--health-timeout", "100ms",
		"--unhealthy-threshold", "2", "--healthy-threshold", "2")

	healthyText := func(row []string) string {
		if len(row) >= 6 {
			return strings.Join(row[3:6], " ")
		}
		return strings.Join(row, " ")
	}
	waitRows := func(want1, want2 string) time.Duration {
		t.Helper()
		start := time.Now()
		var r1, r2 []string
		for time.Since(start) < 10*time.Second {
			r1, r2 = lbPoolRow(t, cp.addr, "web", b1.addr), lbPoolRow(t, cp.addr, "web", b2.addr)
			if healthyText(r1) == want1 && healthyText(r2) == want2 {
				return time.Since(start)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("lbctl pool get: rows %q and %q; want HEALTHY %q and %q", r1, r2, want1, want2)
		return 0
	}
	took := waitRows("2/2 data planes", "2/2 data planes")
	t.Logf("both backends shown as 2/2 data planes %v after the pool was applied: %q", took.Round(time.Millisecond), lbPoolRow(t, cp.addr, "web", b2.addr))

	b2.stop()
	took = waitRows("2/2 data planes", "0/2 data planes")
	t.Logf("stopped backend shown as 0/2 data planes after %v: %q", took.Round(time.Millisecond), lbPoolRow(t, cp.addr, "web", b2.addr))
	st := lbStatusOf(lbPoolGet(t, cp.addr, "web"), b2.addr)
	if st.GetHealthyDataPlanes() != 0 || st.GetUnhealthyDataPlanes() != 2 || len(st.GetDataPlanes()) != 2 {
		t.Fatalf("backend_status of the stopped backend: %v; want 0 healthy, 2 unhealthy, 2 data planes", st)
	}
	nodes := map[string]bool{}
	for _, d := range st.GetDataPlanes() {
		if d.GetHealthy() {
			t.Errorf("data plane %s still sees the stopped backend healthy", d.GetNodeId())
		}
		nodes[d.GetNodeId()] = true
	}
	if !nodes["dp-a"] || !nodes["dp-b"] {
		t.Errorf("backend_status data planes %v; want dp-a and dp-b", nodes)
	}
}
