package e2e

import (
	"context"
	"google.golang.org/protobuf/proto"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// TestRoundRobinWeightsAndRemoval is the seed demo: two backends added with
// lbctl alternate exactly; weights 2:1 give exactly 2:1 in every cycle of
// three; a removed backend gets no more traffic once the change is applied.
func TestRoundRobinWeightsAndRemoval(t *testing.T) {
	cp := startControlPlane(t, "", "")
	dp := startDataPlane(t, cp.addr, "dp-rr")
	a, b := startBackend(t, "a"), startBackend(t, "b")
	url := "http://" + dp.addr + "/"

	mustLbctl(t, cp.addr, "pool", "create", "web")
	mustLbctl(t, cp.addr, "add-backend", "--pool", "web", a.addr)
	v := versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "add-backend", "--pool", "web", b.addr))
	dp.waitVersion(t, v)

	c := newClient()
	got := sequence(t, c, url, 10)
	for i := 2; i < len(got); i++ {
		if got[i] != got[i-2] || got[i] == got[i-1] {
			t.Fatalf("equal weights: sequence %v does not alternate", got)
		}
	}

	v = versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "set-weight", "--pool", "web", a.addr, "2"))
	dp.waitVersion(t, v)
	got = sequence(t, c, url, 30)
	// The rotation restarted with the new weights, so cycles of three line up
	// with the start of this run.
	for i := 0; i+3 <= len(got); i += 3 {
		cycle := got[i : i+3]
		na := strings.Count(strings.Join(cycle, ""), "a")
		if na != 2 || len(cycle)-na != 1 {
			t.Fatalf("weights 2:1: cycle %d is %v in %v, want two a and one b", i/3, cycle, got)
		}
	}

	before := b.requests.Load()
	v = versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "remove-backend", "--pool", "web", b.addr))
	dp.waitVersion(t, v)
	got = sequence(t, c, url, 10)
	for _, g := range got {
		if g != "a" {
			t.Fatalf("after removing b: got %v, want only a", got)
		}
	}
	if n := b.requests.Load(); n != before {
		t.Fatalf("removed backend b served %d requests after removal", n-before)
	}

	// Upstream connections are kept alive and reused: 50 sequential requests
	// through one client connection need one upstream connection to a.
	conns := a.conns.Load()
	sequence(t, c, url, 50)
	if n := a.conns.Load() - conns; n > 1 {
		t.Fatalf("50 sequential requests opened %d new upstream connections; want at most 1 (reuse)", n)
	}
}

// TestPushReachesDataPlanes checks that every committed change reaches every
// connected data plane, and reports how long that took (from the admin call
// returning to the last data plane showing the version on /config, polled
// every millisecond; reported, not asserted: tests never assert timings).
func TestPushReachesDataPlanes(t *testing.T) {
	cp := startControlPlane(t, "", "")
	dps := []*dataPlane{startDataPlane(t, cp.addr, "dp-1"), startDataPlane(t, cp.addr, "dp-2"), startDataPlane(t, cp.addr, "dp-3")}
	for _, dp := range dps {
		waitFor(t, 10*time.Second, "data plane to connect", func() bool { return dp.config(t).Connected })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := lbv1.NewAdminServiceClient(conn)
	if _, err := admin.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	be := startBackend(t, "x")
	var lat []time.Duration
	for i := 0; i < 20; i++ {
		w := uint32(i%5 + 1)
		var v uint64
		if i == 0 {
			resp, err := admin.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: be.addr, Weight: &w})
			if err != nil {
				t.Fatal(err)
			}
			v = resp.GetVersion()
		} else {
			resp, err := admin.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: "web", Address: be.addr, Weight: proto.Uint32(w)})
			if err != nil {
				t.Fatal(err)
			}
			v = resp.GetVersion()
		}
		start := time.Now()
		for _, dp := range dps {
			deadline := time.Now().Add(20 * time.Second)
			for dp.config(t).Version < v {
				if time.Now().After(deadline) {
					t.Fatalf("data plane %s did not apply version %d within 20s", dp.addr, v)
				}
				time.Sleep(time.Millisecond)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("commit-to-applied on all 3 data planes over %d changes: p50 %v, max %v", len(lat), lat[len(lat)/2], lat[len(lat)-1])
	for _, dp := range dps {
		if code, body := get(t, newClient(), "http://"+dp.addr+"/"); code != 200 || body != "x" {
			t.Fatalf("data plane %s: got %d %q, want 200 \"x\"", dp.addr, code, body)
		}
	}
}

// TestControlPlaneCrashKeepsPools kills the control plane with SIGKILL after
// acknowledged writes; the restarted one has every pool, and the data plane
// reconnects and keeps serving meanwhile.
func TestControlPlaneCrashKeepsPools(t *testing.T) {
	dataDir := t.TempDir()
	cp := startControlPlane(t, "", dataDir)
	dp := startDataPlane(t, cp.addr, "dp-crash")
	be := startBackend(t, "a")
	mustLbctl(t, cp.addr, "pool", "create", "web", "--host", "web.example.com")
	mustLbctl(t, cp.addr, "pool", "create", "api", "--path-prefix", "/api/")
	v := versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "add-backend", "--pool", "web", be.addr, "--weight", "3"))
	dp.waitVersion(t, v)
	before := mustLbctl(t, cp.addr, "-o", "json", "pool", "list")

	cp.kill()
	// The data plane keeps serving its last configuration while the control
	// plane is down.
	req, _ := http.NewRequest("GET", "http://"+dp.addr+"/", nil)
	req.Host = "web.example.com"
	resp, err := newClient().Do(req)
	if err != nil {
		t.Fatalf("request while control plane is down: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("request while control plane is down: status %d", resp.StatusCode)
	}

	cp2 := startControlPlane(t, cp.addr, dataDir)
	after := mustLbctl(t, cp2.addr, "-o", "json", "pool", "list")
	if after != before {
		t.Fatalf("pools after crash and restart differ:\nbefore: %s\nafter:  %s", before, after)
	}
	// New versions continue past the old ones, and the data plane follows.
	v2 := versionOf(t, mustLbctl(t, cp2.addr, "-o", "json", "set-weight", "--pool", "web", be.addr, "1"))
	if v2 <= v {
		t.Fatalf("version after restart is %d, not above %d", v2, v)
	}
	dp.waitVersion(t, v2)
}

// TestDataPlaneBeforeControlPlane starts a data plane with no control plane;
// it is not ready and says so, then catches up once the control plane appears.
func TestDataPlaneBeforeControlPlane(t *testing.T) {
	cpAddr := freeAddr(t)
	dp := startDataPlane(t, cpAddr, "dp-early")
	resp, err := http.Get("http://" + dp.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before any configuration: %d, want 503", resp.StatusCode)
	}
	if code, body := get(t, newClient(), "http://"+dp.addr+"/"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") {
		t.Fatalf("request before any configuration: %d %q, want 503 not ready", code, body)
	}

	cp := startControlPlane(t, cpAddr, "")
	be := startBackend(t, "late")
	mustLbctl(t, cp.addr, "pool", "create", "web")
	v := versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "add-backend", "--pool", "web", be.addr))
	dp.waitVersion(t, v)
	if code, body := get(t, newClient(), "http://"+dp.addr+"/"); code != 200 || body != "late" {
		t.Fatalf("after catching up: %d %q, want 200 \"late\"", code, body)
	}
	resp, err = http.Get("http://" + dp.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after catching up: %d, want 200", resp.StatusCode)
	}
}

// TestInvalidInputChangesNothing feeds lbctl bad input: each call exits
// non-zero with a one-line message naming the problem, and the stored
// configuration is byte-for-byte the same afterwards.
func TestInvalidInputChangesNothing(t *testing.T) {
	cp := startControlPlane(t, "", "")
	mustLbctl(t, cp.addr, "pool", "create", "web")
	mustLbctl(t, cp.addr, "add-backend", "--pool", "web", "10.0.0.5:8080")
	before := mustLbctl(t, cp.addr, "-o", "json", "pool", "list")

	cases := []struct {
		name string
		args []string
		want string // substring of stderr
	}{
		{"bad address", []string{"add-backend", "--pool", "web", "nonsense"}, `"nonsense": must be HOST:PORT`},
		{"port 0", []string{"add-backend", "--pool", "web", "10.0.0.6:0"}, "port 0 is out of range 1-65535"},
		{"port over 65535", []string{"add-backend", "--pool", "web", "10.0.0.6:65536"}, "port 65536 is out of range 1-65535"},
		{"weight 0", []string{"add-backend", "--pool", "web", "10.0.0.6:80", "--weight", "0"}, `weight "0": must be between 1 and 10000`},
		{"set weight 0", []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "0"}, `weight "0": must be between 1 and 10000`},
		{"unknown pool", []string{"add-backend", "--pool", "nope", "10.0.0.6:80"}, `pool "nope" does not exist; create it with: lbctl pool create nope`},
		{"duplicate backend", []string{"add-backend", "--pool", "web", "10.0.0.5:8080"}, "already in pool"},
		{"empty pool name", []string{"pool", "create", ""}, "must not be empty"},
		{"empty pool flag", []string{"add-backend", "--pool", "", "10.0.0.6:80"}, "--pool is required"},
		{"duplicate pool", []string{"pool", "create", "web"}, "already exists"},
		{"bad pool name", []string{"pool", "create", "Web!"}, `"Web!"`},
		{"remove unknown backend", []string{"remove-backend", "--pool", "web", "10.0.0.9:80"}, "is not in pool"},
		{"bad path prefix", []string{"pool", "create", "api", "--path-prefix", "api"}, `must begin with "/"`},
		{"host with port", []string{"pool", "create", "api", "--host", "a.example.com:80"}, "without a port"},
		{"route conflict", []string{"pool", "create", "other"}, `already served by pool "web"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := lbctl(t, cp.addr, tc.args...)
			if r.code == 0 {
				t.Fatalf("lbctl %v succeeded; want failure", tc.args)
			}
			msg := strings.TrimSpace(r.stderr)
			if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "lbctl: ") {
				t.Errorf("stderr %q: want one line starting with \"lbctl: \"", r.stderr)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("stderr %q: want it to contain %q", msg, tc.want)
			}
		})
	}
	if after := mustLbctl(t, cp.addr, "-o", "json", "pool", "list"); after != before {
		t.Fatalf("refused calls changed the configuration:\nbefore: %s\nafter:  %s", before, after)
	}
}

// TestAtomicSwapUnderChurn replaces a pool's whole backend set back and forth
// between {a,b} and {c,d} while clients send requests. Every request must
// succeed and reach a backend of some applied version; e is never configured
// and must never be reached.
func TestAtomicSwapUnderChurn(t *testing.T) {
	cp := startControlPlane(t, "", "")
	dp := startDataPlane(t, cp.addr, "dp-churn")
	bs := map[string]*backend{}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		bs[n] = startBackend(t, n)
	}
	set1 := []*lbv1.Backend{{Address: bs["a"].addr, Weight: 1}, {Address: bs["b"].addr, Weight: 2}}
	set2 := []*lbv1.Backend{{Address: bs["c"].addr, Weight: 1}, {Address: bs["d"].addr, Weight: 1}}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := lbv1.NewAdminServiceClient(conn)
	created, err := admin.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "web", Backends: set1}})
	if err != nil {
		t.Fatal(err)
	}
	dp.waitVersion(t, created.GetVersion())

	const updates = 150
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	var failures []string
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient()
			for n := 0; n < 5000; n++ { // bounded even if the writer stalls
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://" + dp.addr + "/")
				var body []byte
				if err == nil {
					body = make([]byte, 8)
					k, _ := resp.Body.Read(body)
					body = body[:k]
					resp.Body.Close()
				}
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case resp.StatusCode != 200:
					failures = append(failures, resp.Status+" "+string(body))
				default:
					seen[string(body)]++
				}
				mu.Unlock()
			}
		}()
	}
	var last uint64
	for i := 0; i < updates; i++ {
		set := set1
		if i%2 == 0 {
			set = set2
		}
		resp, err := admin.UpdatePool(ctx, &lbv1.UpdatePoolRequest{
			Pool:       &lbv1.Pool{Name: "web", Backends: set},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"backends"}},
		})
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		last = resp.GetVersion()
	}
	dp.waitVersion(t, last)
	close(stop)
	wg.Wait()

	if len(failures) > 0 {
		t.Fatalf("%d requests failed during churn, first: %q", len(failures), failures[0])
	}
	if seen["e"] > 0 {
		t.Fatalf("backend e, never configured, served %d requests", seen["e"])
	}
	var names []string
	total := 0
	for n, k := range seen {
		names = append(names, n)
		total += k
	}
	slices.Sort(names)
	for _, n := range names {
		if !slices.Contains([]string{"a", "b", "c", "d"}, n) {
			t.Fatalf("unexpected response body %q", n)
		}
	}
	if total == 0 {
		t.Fatal("no request completed during churn")
	}
	t.Logf("%d requests over %d configuration versions, all succeeded; per backend %v", total, updates, seen)
}
