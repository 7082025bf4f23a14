package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// TestFleetHA runs two control planes on one etcd: a change made through
// one reaches a data plane connected to the other, both report the same
// versions, and the survivor of a crash keeps serving every pool and change.
func TestFleetHA(t *testing.T) {
	etcd := etcdStartServer(t)
	a := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	b := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	x := startBackend(t, "x")
	dp := fleetStartDataPlane(t, b.addr, "dp-ha")

	v := versionOf(t, mustLbctl(t, a.addr, "--controlplane", a.addr, "-o", "json", "pool", "create", "web", "--backend", x.addr))
	dp.waitVersion(t, v)
	if got := fleetBodies(t, dp, "", 4); got["x"] != 4 {
		t.Fatalf("requests after a change through A reached %v, want 4 on x", got)
	}

	// Both replicas report the same version and pools.
	la, lb := fleetPoolList(t, a.addr), fleetPoolList(t, b.addr)
	if uint64(la.Version) != v || uint64(lb.Version) != v {
		t.Errorf("pool list version via A = %d, via B = %d; want both %d, the version lbctl printed", la.Version, lb.Version, v)
	}
	if !reflect.DeepEqual(la.summary(), lb.summary()) {
		t.Errorf("pool lists differ:\n via A %v\n via B %v", la.summary(), lb.summary())
	}
	if want := []string{fmt.Sprintf("web@%d[%s=1]", v, x.addr)}; !reflect.DeepEqual(lb.summary(), want) {
		t.Errorf("pools via B = %v, want %v", lb.summary(), want)
	}
	fleetWaitAcked(t, b.addr, "dp-ha", v)
	if cfg := fleetConfig(t, dp); cfg.Version != v || !cfg.Connected {
		t.Errorf("data plane /config: version %d, connected %v; want %d, true", cfg.Version, cfg.Connected, v)
	}

	// A crashes; B still has every pool and takes changes.
	a.kill()
	if got := fleetPoolList(t, b.addr); !reflect.DeepEqual(got.summary(), lb.summary()) || uint64(got.Version) != v {
		t.Errorf("after A crashed, B lists version %d %v; want %d %v", got.Version, got.summary(), v, lb.summary())
	}
	y := startBackend(t, "y")
	v2 := versionOf(t, mustLbctl(t, b.addr, "--controlplane", b.addr, "-o", "json", "add-backend", "--pool", "web", y.addr))
	if v2 <= v {
		t.Fatalf("change through B got version %d, want more than %d", v2, v)
	}
	dp.waitVersion(t, v2)
	if got := fleetBodies(t, dp, "", 6); got["x"] != 3 || got["y"] != 3 {
		t.Errorf("requests after the change through B reached %v, want 3 on x and 3 on y", got)
	}
	// A third replica started now agrees with B.
	c := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	if lc, lb := fleetPoolList(t, c.addr), fleetPoolList(t, b.addr); !reflect.DeepEqual(lc, lb) {
		t.Errorf("a new replica lists %d %v, B %d %v", lc.Version, lc.summary(), lb.Version, lb.summary())
	}
}

// TestFleetFailover gives a data plane two control planes on one etcd: when
// the first crashes it reconnects to the second, keeps serving meanwhile,
// and applies a change made through the second.
func TestFleetFailover(t *testing.T) {
	etcd := etcdStartServer(t)
	a := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	b := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	x := startBackend(t, "x")
	dp := fleetStartDataPlane(t, a.addr+","+b.addr, "dp-fo")

	v := versionOf(t, mustLbctl(t, a.addr, "-o", "json", "pool", "create", "web", "--backend", x.addr))
	dp.waitVersion(t, v)
	fleetWaitConfig(t, dp, "connected", func(c fleetConfigView) bool { return c.Connected })
	// The first address answers, so the data plane is A's.
	fleetWaitAcked(t, a.addr, "dp-fo", v)
	if _, ok := fleetList(t, b.addr).ackedBy("dp-fo"); ok {
		t.Errorf("dp-fo is connected to B too; want it on A only")
	}

	a.kill()
	fleetWaitAcked(t, b.addr, "dp-fo", v)
	fleetWaitConfig(t, dp, "connected again", func(c fleetConfigView) bool { return c.Connected })
	if got := fleetBodies(t, dp, "", 3); got["x"] != 3 {
		t.Errorf("requests after the failover reached %v, want 3 on x", got)
	}

	y := startBackend(t, "y")
	v2 := versionOf(t, mustLbctl(t, b.addr, "-o", "json", "add-backend", "--pool", "web", y.addr))
	dp.waitVersion(t, v2)
	cfg := fleetWaitConfig(t, dp, "connected at the new version", func(c fleetConfigView) bool { return c.Connected && c.Version >= v2 })
	if got, _ := cfg.pool("web"); !reflect.DeepEqual(got, []string{x.addr + "=1", y.addr + "=1"}) {
		t.Errorf("pool web on the data plane = %v, want x and y", got)
	}
	if got := fleetBodies(t, dp, "", 4); got["x"] != 2 || got["y"] != 2 {
		t.Errorf("requests after the change through B reached %v, want 2 on x and 2 on y", got)
	}
	if !strings.Contains(dp.log.String(), "connected to control plane") {
		t.Errorf("data plane log does not say it connected")
	}
}

// TestFleetCacheStaticStability restarts a data plane with its cache
// directory while the control plane is down: it serves the cached
// configuration at once, says so, and leaves the cache behind when the
// control plane is back.
func TestFleetCacheStaticStability(t *testing.T) {
	dataDir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	cpAddr := freeAddr(t)
	cp := fleetStartControlPlane(t, cpAddr, "--data-dir", dataDir)
	x := startBackend(t, "x")
	dp := fleetStartDataPlane(t, cpAddr, "dp-cache", "--cache-dir", cacheDir)

	v := versionOf(t, mustLbctl(t, cpAddr, "-o", "json", "pool", "create", "web", "--host", "web.example.com", "--backend", x.addr))
	dp.waitVersion(t, v)
	if code, body := fleetStatusOf(t, dp, "web.example.com"); code != 200 || body != "x" {
		t.Fatalf("request before the restart: %d %q", code, body)
	}
	entries, err := os.ReadDir(cacheDir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir %s after applying a version: %v entries, error %v", cacheDir, len(entries), err)
	}
	dp.stop()
	cp.stop()

	// The control plane is down: the data plane serves its cache.
	before := x.requests.Load()
	dp2 := fleetStartDataPlane(t, cpAddr, "dp-cache", "--cache-dir", cacheDir)
	// (TestFleetCacheStartupStatus checks the moments before this.)
	var readyBody string
	waitFor(t, 10*time.Second, "/readyz to answer 200 saying it serves the cache", func() bool {
		code, body, err := fleetReadyz(dp2)
		readyBody = body
		return err == nil && code == 200 && strings.Contains(body, "cached")
	})
	if want := fmt.Sprintf("cached configuration version %d", v); !strings.Contains(readyBody, want) {
		t.Errorf("/readyz body %q, want it to contain %q", readyBody, want)
	}
	cfg := fleetConfig(t, dp2)
	if !cfg.FromCache || cfg.Connected || cfg.Version != v {
		t.Errorf("/config from the cache: from_cache %v, connected %v, version %d; want true, false, %d", cfg.FromCache, cfg.Connected, cfg.Version, v)
	}
	if got, ok := cfg.pool("web"); !ok || !reflect.DeepEqual(got, []string{x.addr + "=1"}) {
		t.Errorf("cached pool web = %v (found %v), want [%s=1]", got, ok, x.addr)
	}
	for i := range 3 {
		if code, body := fleetStatusOf(t, dp2, "web.example.com"); code != 200 || body != "x" {
			t.Fatalf("request %d served from the cache: %d %q, want 200 from x", i, code, body)
		}
	}
	if got := x.requests.Load() - before; got != 3 {
		t.Errorf("backend x got %d requests from the cached configuration, want 3", got)
	}
	if log := dp2.log.String(); !strings.Contains(log, "serving cached configuration") {
		t.Errorf("data plane log does not say it serves the cached configuration:\n%s", log)
	}

	// The control plane comes back (same data): the data plane connects and
	// no longer runs on the cache.
	cp2 := fleetStartControlPlane(t, cpAddr, "--data-dir", dataDir)
	cfg = fleetWaitConfig(t, dp2, "connected, not from the cache", func(c fleetConfigView) bool { return c.Connected && !c.FromCache })
	if cfg.Version != v {
		t.Errorf("version after reconnecting = %d, want %d", cfg.Version, v)
	}
	if code, body, _ := fleetReadyz(dp2); code != 200 || strings.Contains(body, "cached") {
		t.Errorf("/readyz after reconnecting: %d %q, want 200 without \"cached\"", code, body)
	}
	y := startBackend(t, "y")
	v2 := versionOf(t, mustLbctl(t, cp2.addr, "-o", "json", "add-backend", "--pool", "web", y.addr))
	dp2.waitVersion(t, v2)
}

// TestFleetCacheStartupStatus starts a data plane on its cache, with no
// control plane, several times, polling /readyz and /config from several
// clients from the moment it starts: once ready, it must say that it serves
// the cached configuration, and /config must never show an applied
// configuration that is neither from the cache nor from a connected control
// plane. (The window where it does is a few milliseconds at start-up; each
// round is one chance to see it.)
func TestFleetCacheStartupStatus(t *testing.T) {
	cacheDir, cpAddr := filepath.Join(t.TempDir(), "cache"), freeAddr(t)
	cp := fleetStartControlPlane(t, cpAddr, "--data-dir", t.TempDir())
	x := startBackend(t, "x")
	dp := fleetStartDataPlane(t, cpAddr, "dp-startup", "--cache-dir", cacheDir)
	v := versionOf(t, mustLbctl(t, cpAddr, "-o", "json", "pool", "create", "web", "--backend", x.addr))
	dp.waitVersion(t, v)
	dp.stop()
	cp.stop()

	const rounds, pollers = 8, 4
	var mu sync.Mutex
	wrong := make(map[string]int) // what was seen, in which round: how often
	note := func(round int, what string) {
		mu.Lock()
		defer mu.Unlock()
		wrong[fmt.Sprintf("round %d: %s", round, what)]++
	}
	for round := range rounds {
		addr, admin := freeAddr(t), freeAddr(t)
		p := start(t, "lb-dataplane", "--controlplane", cpAddr, "--node-id", "dp-startup", "--listen", addr,
			"--admin-listen", admin, "--cache-dir", cacheDir, "--log-level", "debug")
		fleetFailOnRace(t, p)
		probe := &dataPlane{proc: p, addr: addr, admin: admin}
		deadline := time.Now().Add(15 * time.Second)
		var sawCached sync.WaitGroup
		var done sync.Once
		stop := make(chan struct{})
		sawCached.Add(1)
		var wg sync.WaitGroup
		for i := range pollers {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					select {
					case <-stop:
						return
					default:
					}
					if i%2 == 0 {
						code, body, err := fleetReadyz(probe)
						if err != nil || code != 200 {
							continue
						}
						if !strings.Contains(body, "cached") {
							note(round, fmt.Sprintf("/readyz answered 200 %q before any control plane was reached", strings.TrimSpace(body)))
						} else {
							done.Do(sawCached.Done)
						}
						continue
					}
					c, err := fleetTryConfig(probe)
					if err == nil && c.Version > 0 && !c.FromCache && !c.Connected {
						note(round, fmt.Sprintf("/config showed version %d with from_cache false and connected false", c.Version))
					}
				}
			})
		}
		waited := make(chan struct{})
		go func() { sawCached.Wait(); close(waited) }()
		select {
		case <-waited:
			time.Sleep(100 * time.Millisecond)
		case <-time.After(time.Until(deadline)):
			t.Errorf("round %d: /readyz never answered 200 with the cached configuration", round)
		}
		close(stop)
		wg.Wait()
		done.Do(sawCached.Done) // release the waiter if it never saw one
		p.stop()
	}
	if len(wrong) > 0 {
		var lines []string
		for what, n := range wrong {
			lines = append(lines, fmt.Sprintf("%s (%d times)", what, n))
		}
		sort.Strings(lines)
		t.Errorf("the data plane starting on its cache briefly reported an applied, live configuration:\n%s", strings.Join(lines, "\n"))
	}
}

// TestFleetDeltaPushes checks what the control plane sends: after 50 pools,
// a weight change is a delta of that one pool, a deletion a delta with one
// removal, and a data plane that reconnects to a restarted control plane
// with nothing changed gets an empty delta.
func TestFleetDeltaPushes(t *testing.T) {
	dataDir, cpAddr := t.TempDir(), freeAddr(t)
	cp := fleetStartControlPlane(t, cpAddr, "--data-dir", dataDir)
	x := startBackend(t, "x")
	dp := fleetStartDataPlane(t, cpAddr, "dp-delta")
	admin := grpcAdmin(t, cpAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var last uint64
	for i := range 50 {
		name := fmt.Sprintf("p%02d", i)
		resp, err := admin.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{
			Name: name, Hosts: []string{name + ".example.com"},
			Backends: []*lbv1.Backend{{Address: x.addr, Weight: 1}},
		}})
		if err != nil {
			t.Fatalf("CreatePool %s: %v", name, err)
		}
		last = resp.GetVersion()
	}
	dp.waitVersion(t, last)
	isDP := func(kv map[string]string) bool { return kv["node"] == "dp-delta" }
	// A data plane that joins now, holding nothing, is sent every pool.
	late := fleetStartDataPlane(t, cpAddr, "dp-late")
	late.waitVersion(t, last)
	first := fleetWaitLog(t, cp.proc, "configuration sent", func(kv map[string]string) bool { return kv["node"] == "dp-late" })
	if first.kv["version"] != strconv.FormatUint(last, 10) || first.kv["pools"] != "50" || first.kv["removed"] != "0" {
		t.Errorf("first message to a data plane joining at version %d: %s, want all 50 pools", last, first.raw)
	}
	late.stop()

	v := versionOf(t, mustLbctl(t, cpAddr, "-o", "json", "set-weight", "--pool", "p17", x.addr, "5"))
	dp.waitVersion(t, v)
	sent := fleetWaitLog(t, cp.proc, "configuration sent", func(kv map[string]string) bool {
		return isDP(kv) && kv["version"] == strconv.FormatUint(v, 10)
	})
	if sent.kv["full"] != "false" || sent.kv["pools"] != "1" || sent.kv["removed"] != "0" {
		t.Errorf("after a weight change of one pool of 50 the control plane sent: %s\nwant full=false pools=1 removed=0", sent.raw)
	}
	cfg := fleetConfig(t, dp)
	if len(cfg.Pools) != 50 {
		t.Errorf("data plane has %d pools after the delta, want 50", len(cfg.Pools))
	}
	if got, _ := cfg.pool("p17"); !reflect.DeepEqual(got, []string{x.addr + "=5"}) {
		t.Errorf("p17 on the data plane = %v, want weight 5", got)
	}
	if got, _ := cfg.pool("p18"); !reflect.DeepEqual(got, []string{x.addr + "=1"}) {
		t.Errorf("p18 on the data plane = %v, want weight 1", got)
	}

	del := versionOf(t, mustLbctl(t, cpAddr, "-o", "json", "pool", "delete", "p03"))
	dp.waitVersion(t, del)
	sent = fleetWaitLog(t, cp.proc, "configuration sent", func(kv map[string]string) bool {
		return isDP(kv) && kv["version"] == strconv.FormatUint(del, 10)
	})
	if sent.kv["full"] != "false" || sent.kv["pools"] != "0" || sent.kv["removed"] != "1" {
		t.Errorf("after deleting one pool of 50 the control plane sent: %s\nwant full=false pools=0 removed=1", sent.raw)
	}
	if cfg := fleetConfig(t, dp); len(cfg.Pools) != 49 || slices.Contains(cfg.poolNames(), "p03") {
		t.Errorf("data plane pools after the deletion: %v, want 49 without p03", cfg.poolNames())
	}
	fleetWaitAcked(t, cpAddr, "dp-delta", del)

	// Resume: restart the control plane on the same data, with no change
	// while it is down.
	cp.stop()
	fleetWaitConfig(t, dp, "disconnected", func(c fleetConfigView) bool { return !c.Connected })
	cp2 := fleetStartControlPlane(t, cpAddr, "--data-dir", dataDir)
	hello := fleetWaitLog(t, cp2.proc, "data plane connected", isDP)
	if hello.kv["held_version"] != strconv.FormatUint(del, 10) {
		t.Errorf("data plane's hello: %s, want held_version=%d", hello.raw, del)
	}
	resume := fleetWaitLog(t, cp2.proc, "configuration sent", isDP)
	if resume.kv["version"] != strconv.FormatUint(del, 10) || resume.kv["full"] != "false" || resume.kv["pools"] != "0" || resume.kv["removed"] != "0" {
		t.Errorf("first message after the restart: %s\nwant version=%d full=false pools=0 removed=0", resume.raw, del)
	}
	cfg = fleetWaitConfig(t, dp, "connected again", func(c fleetConfigView) bool { return c.Connected })
	if cfg.Version != del || len(cfg.Pools) != 49 {
		t.Errorf("after the resume the data plane has version %d and %d pools, want %d and 49", cfg.Version, len(cfg.Pools), del)
	}
}

// TestFleetStatusAndWait covers lbctl fleet, lbctl wait and --wait: in sync,
// then a data plane frozen with SIGSTOP that cannot acknowledge a change.
func TestFleetStatusAndWait(t *testing.T) {
	cp := fleetStartControlPlane(t, "", "--data-dir", t.TempDir())
	x := startBackend(t, "x")
	dp := fleetStartDataPlane(t, cp.addr, "dp-wait")

	v := versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "pool", "create", "web", "--backend", x.addr))
	dp.waitVersion(t, v)
	nodes := fleetWaitAcked(t, cp.addr, "dp-wait", v)
	if len(nodes.DataPlanes) != 1 || uint64(nodes.Version) != v || uint64(nodes.DataPlanes[0].SentVersion) != v {
		t.Errorf("lbctl fleet -o json = %+v, want dp-wait alone, sent and acked %d", nodes, v)
	}
	table := mustLbctl(t, cp.addr, "fleet")
	if !strings.Contains(table, fmt.Sprintf("configuration version %d, 1 data plane", v)) || !fleetRowHas(table, "dp-wait", strconv.FormatUint(v, 10), "in sync") {
		t.Errorf("lbctl fleet:\n%s\nwant dp-wait in sync at version %d", table, v)
	}
	r := lbctl(t, cp.addr, "wait", "--version", strconv.FormatUint(v, 10), "--timeout", "10s")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("all 1 data plane has applied version %d", v)) {
		t.Errorf("lbctl wait --version %d: exit %d\nstdout: %s\nstderr: %s", v, r.code, r.stdout, r.stderr)
	}
	// --wait on a change.
	y := startBackend(t, "y")
	r = lbctl(t, cp.addr, "add-backend", "--pool", "web", y.addr, "--wait", "--wait-timeout", "20s")
	if r.code != 0 || !strings.Contains(r.stdout, "all 1 data plane has applied version") {
		t.Errorf("add-backend --wait: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if got := fleetBodies(t, dp, "", 4); got["x"] != 2 || got["y"] != 2 {
		t.Errorf("right after add-backend --wait, requests reached %v; want 2 on x and 2 on y", got)
	}

	// A frozen data plane cannot acknowledge.
	fleetPause(t, dp.proc)
	v2 := versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "set-weight", "--pool", "web", x.addr, "3"))
	start := time.Now()
	r = lbctl(t, cp.addr, "wait", "--version", strconv.FormatUint(v2, 10), "--timeout", "1s")
	elapsed := time.Since(start)
	if r.code == 0 {
		t.Errorf("lbctl wait --version %d --timeout 1s succeeded with the data plane stopped\nstdout: %s", v2, r.stdout)
	}
	if !strings.Contains(r.stderr, "dp-wait") {
		t.Errorf("lbctl wait failure does not name the lagging data plane:\n%s", r.stderr)
	}
	if elapsed > 15*time.Second {
		t.Errorf("lbctl wait --timeout 1s took %v", elapsed)
	}
	table = mustLbctl(t, cp.addr, "fleet")
	if !fleetRowHas(table, "dp-wait", "behind") {
		t.Errorf("lbctl fleet with the data plane stopped:\n%s\nwant dp-wait behind", table)
	}
	r = lbctl(t, cp.addr, "-o", "json", "set-weight", "--pool", "web", x.addr, "4", "--wait", "--wait-timeout", "1s")
	if r.code == 0 || !strings.Contains(r.stderr, "dp-wait") {
		t.Errorf("set-weight --wait with the data plane stopped: exit %d, stderr %q; want a failure naming dp-wait", r.code, r.stderr)
	}
	v3 := versionOf(t, r.stdout) // the change itself is committed
	if got := fleetPoolList(t, cp.addr); uint64(got.Version) != v3 {
		t.Errorf("after a timed-out --wait, pool list version %d, want %d (the change committed)", got.Version, v3)
	}

	fleetResume(t, dp.proc)
	r = lbctl(t, cp.addr, "wait", "--version", strconv.FormatUint(v3, 10), "--timeout", "20s")
	if r.code != 0 {
		t.Errorf("lbctl wait after SIGCONT: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if got, _ := fleetConfig(t, dp).pool("web"); !reflect.DeepEqual(got, []string{x.addr + "=4", y.addr + "=1"}) {
		t.Errorf("pool web on the data plane = %v, want x weight 4 and y", got)
	}
}

// fleetRowHas reports whether a line of table mentions every one of words.
func fleetRowHas(table string, words ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		all := true
		for _, w := range words {
			if !strings.Contains(line, w) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// TestFleetOptimisticConcurrency reads a pool through one replica, changes
// it through the other, and checks that a change conditioned on the old
// version is refused with FailedPrecondition, through lbctl --if-version and
// every admin call's expected_version, and changes nothing.
func TestFleetOptimisticConcurrency(t *testing.T) {
	etcd := etcdStartServer(t)
	a := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	b := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	x, y := startBackend(t, "x"), startBackend(t, "y")

	mustLbctl(t, a.addr, "pool", "create", "web", "--host", "web.example.com", "--backend", x.addr, "--backend", y.addr)
	old := uint64(fleetPoolVersion(t, a.addr, "web"))
	cur := versionOf(t, mustLbctl(t, b.addr, "-o", "json", "set-weight", "--pool", "web", x.addr, "2"))
	if cur <= old {
		t.Fatalf("change through B got version %d, want more than %d", cur, old)
	}
	want := fleetPoolList(t, b.addr)

	r := lbctl(t, a.addr, "set-weight", "--pool", "web", x.addr, "7", "--if-version", strconv.FormatUint(old, 10))
	if r.code == 0 {
		t.Errorf("set-weight --if-version %d succeeded after the pool changed to %d", old, cur)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("changed since version %d", old)) {
		t.Errorf("set-weight --if-version %d: stderr %q, want it to say the pool changed since then", old, r.stderr)
	}
	r = lbctl(t, a.addr, "pool", "update", "web", "--path-prefix", "/v2/", "--if-version", strconv.FormatUint(old, 10))
	if r.code == 0 {
		t.Errorf("pool update --if-version %d succeeded after the pool changed", old)
	}

	admin := grpcAdmin(t, a.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	calls := map[string]func() error{
		"UpdateBackend": func() error {
			_, err := admin.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: "web", Address: x.addr, Weight: proto.Uint32(9), ExpectedVersion: old})
			return err
		},
		"AddBackend": func() error {
			_, err := admin.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "127.0.0.1:1", ExpectedVersion: old})
			return err
		},
		"RemoveBackend": func() error {
			_, err := admin.RemoveBackend(ctx, &lbv1.RemoveBackendRequest{Pool: "web", Address: y.addr, ExpectedVersion: old})
			return err
		},
		"UpdatePool": func() error {
			_, err := admin.UpdatePool(ctx, &lbv1.UpdatePoolRequest{
				Pool: &lbv1.Pool{Name: "web", PathPrefix: "/v3/"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"path_prefix"}},
				ExpectedVersion: old,
			})
			return err
		},
		"DeletePool": func() error {
			_, err := admin.DeletePool(ctx, &lbv1.DeletePoolRequest{Name: "web", ExpectedVersion: old})
			return err
		},
	}
	names := make([]string, 0, len(calls))
	for n := range calls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := calls[n](); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s with expected_version %d (pool at %d): %v, want FailedPrecondition", n, old, cur, err)
		}
	}
	// Nothing changed, seen through either replica.
	for _, cp := range []*controlPlane{a, b} {
		if got := fleetPoolList(t, cp.addr); !reflect.DeepEqual(got, want) {
			t.Errorf("after refused changes, %s lists version %d %v; want %d %v", cp.addr, got.Version, got.summary(), want.Version, want.summary())
		}
	}

	// With the current version the change goes through.
	resp, err := admin.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: "web", Address: x.addr, Weight: proto.Uint32(9), ExpectedVersion: cur})
	if err != nil {
		t.Fatalf("UpdateBackend with the current version %d: %v", cur, err)
	}
	if got := fleetPoolList(t, b.addr); uint64(got.Version) != resp.GetVersion() || !slices.Contains(got.summary(), fmt.Sprintf("web@%d[%s=9 %s=1]", resp.GetVersion(), x.addr, y.addr)) {
		t.Errorf("after the conditioned change: %d %v", got.Version, got.summary())
	}
}

// fleetPoolVersion returns the pool's version from "lbctl pool get -o json".
func fleetPoolVersion(t *testing.T, cp, name string) fleetUint {
	t.Helper()
	out := mustLbctl(t, cp, "-o", "json", "pool", "get", name)
	var v struct {
		Pool struct {
			Version fleetUint `json:"version"`
		} `json:"pool"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("decode lbctl pool get output %q: %v", out, err)
	}
	return v.Pool.Version
}

// TestFleetConcurrentChangesAcrossControlPlanes sends 100 changes at once, 50
// through each of two control planes on one etcd, each adding its own
// backend to the same pool: every change must be committed and kept.
func TestFleetConcurrentChangesAcrossControlPlanes(t *testing.T) {
	etcd := etcdStartServer(t)
	cps := []*controlPlane{
		fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...),
		fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...),
	}
	mustLbctl(t, cps[0].addr, "pool", "create", "shared")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const each = 50
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for i, cp := range cps {
		admin := grpcAdmin(t, cp.addr)
		for g := range each {
			addr := fmt.Sprintf("10.%d.0.%d:80", i, g+1)
			wg.Go(func() {
				<-begin
				_, err := admin.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "shared", Address: addr})
				if err != nil {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s via %s: %v", addr, cp.addr, err))
					mu.Unlock()
				}
			})
		}
	}
	close(begin)
	wg.Wait()
	sort.Strings(failed)
	if len(failed) > 0 {
		t.Errorf("%d of %d concurrent AddBackend calls failed:\n%s", len(failed), 2*each, strings.Join(failed, "\n"))
	}
	list := fleetPoolList(t, cps[1].addr)
	if len(list.Pools) != 1 || len(list.Pools[0].Backends) != 2*each-len(failed) {
		t.Fatalf("pool shared has %v; want the %d backends whose AddBackend succeeded", list.summary(), 2*each-len(failed))
	}
}

// TestFleetFailoverForgetsPoolDeletedMeanwhile: a data plane fails over to a
// replica that never saw a pool it holds, because the pool was created and
// deleted while that replica was not looking (here: stopped; in production:
// cut off from etcd, or slow, as its watch coalesces bursts). The replica's
// first message must still take the pool away.
//
//  1. A and B on one etcd; the data plane on A (its first address); pool keep.
//  2. B is frozen (SIGSTOP). Through A, pool gone is created: the data
//     plane applies it.
//  3. The data plane is frozen, A crashes, and gone is deleted through a
//     third replica C that no data plane uses.
//  4. B resumes and catches up on the current state (without gone); then
//     the data plane resumes and fails over to B, its hello holding the
//     version that had gone.
func TestFleetFailoverForgetsPoolDeletedMeanwhile(t *testing.T) {
	etcd := etcdStartServer(t)
	a := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	b := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	keep, goneBackend := startBackend(t, "keep"), startBackend(t, "gone")
	dp := fleetStartDataPlane(t, a.addr+","+b.addr, "dp-del")

	vKeep := versionOf(t, mustLbctl(t, a.addr, "-o", "json", "pool", "create", "keep", "--host", "keep.example.com", "--backend", keep.addr))
	dp.waitVersion(t, vKeep)
	fleetWaitAcked(t, a.addr, "dp-del", vKeep)
	published := func(v uint64) func(kv map[string]string) bool {
		return func(kv map[string]string) bool { return kv["version"] == strconv.FormatUint(v, 10) }
	}
	fleetWaitLog(t, b.proc, "configuration published", published(vKeep))

	fleetPause(t, b.proc)
	vGone := versionOf(t, mustLbctl(t, a.addr, "-o", "json", "pool", "create", "gone", "--host", "gone.example.com", "--backend", goneBackend.addr))
	dp.waitVersion(t, vGone)
	fleetWaitAcked(t, a.addr, "dp-del", vGone)
	if code, body := fleetStatusOf(t, dp, "gone.example.com"); code != 200 || body != "gone" {
		t.Fatalf("request to pool gone while it exists: %d %q", code, body)
	}

	fleetPause(t, dp.proc)
	a.kill()
	c := fleetStartControlPlane(t, "", fleetEtcdFlags(etcd)...)
	vDel := versionOf(t, mustLbctl(t, c.addr, "-o", "json", "pool", "delete", "gone"))
	fleetResume(t, b.proc)
	fleetWaitLog(t, b.proc, "configuration published", published(vDel))
	fleetResume(t, dp.proc)

	fleetWaitAcked(t, b.addr, "dp-del", vDel)
	cfg := fleetWaitConfig(t, dp, "connected at the version without gone", func(c fleetConfigView) bool { return c.Connected && c.Version >= vDel })
	sent := fleetWaitLog(t, b.proc, "configuration sent", func(kv map[string]string) bool { return kv["node"] == "dp-del" })
	hello := fleetWaitLog(t, b.proc, "data plane connected", func(kv map[string]string) bool { return kv["node"] == "dp-del" })
	t.Logf("B: %s\nB: %s", hello.raw, sent.raw)
	if names := cfg.poolNames(); !reflect.DeepEqual(names, []string{"keep"}) {
		t.Errorf("after failing over to B at version %d the data plane has pools %v, want only keep: pool gone (deleted in version %d) is still served", cfg.Version, names, vDel)
	}
	if code, body := fleetStatusOf(t, dp, "gone.example.com"); code == 200 && body == "gone" {
		t.Errorf("a request for the deleted pool gone still reaches its backend")
	}
	if code, body := fleetStatusOf(t, dp, "keep.example.com"); code != 200 || body != "keep" {
		t.Errorf("request to pool keep: %d %q", code, body)
	}
	// Later changes are deltas from the data plane's version, so they do not
	// mend it either.
	v := versionOf(t, mustLbctl(t, b.addr, "-o", "json", "add-backend", "--pool", "keep", goneBackend.addr))
	dp.waitVersion(t, v)
	if names := fleetConfig(t, dp).poolNames(); !reflect.DeepEqual(names, []string{"keep"}) {
		t.Errorf("after a further change (version %d) the data plane still has pools %v, want only keep", v, names)
	}
}
