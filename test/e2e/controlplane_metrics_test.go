package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Helpers of the control plane metrics test. Every identifier starts with
// "cpm" so as not to clash with the other files of the package.

// TestControlPlaneMetrics drives a control plane with two data planes
// through a known number of admin changes, then checks its admin listener:
// exact values on /metrics, /healthz, /readyz, and the run-time log level
// (PUT /log-level, an invalid level refused, SIGHUP resetting it).
func TestControlPlaneMetrics(t *testing.T) {
	cp := cpmStartControlPlane(t)
	base := "http://" + cp.admin
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := cpmDo(t, http.MethodGet, base+path, ""); code != http.StatusOK {
			t.Errorf("GET %s = %d %q, want 200", path, code, body)
		}
	}

	a := startDataPlane(t, cp.addr, "cpm-a")
	b := startDataPlane(t, cp.addr, "cpm-b")
	lbFailOnRace(t, cp.proc, a.proc, b.proc)
	cpmExpect(t, cp.admin, "both data planes connected", []cpmWant{
		{name: "lb_controlplane_connected_dataplanes", want: 2},
	})

	// Exactly three commits, each waited for until both data planes
	// acknowledged it, and one refused call.
	x, y := startBackend(t, "x"), startBackend(t, "y")
	var v uint64
	for _, args := range [][]string{
		{"pool", "create", "web", "--host", "web.example.com"},
		{"add-backend", "--pool", "web", x.addr},
		{"add-backend", "--pool", "web", y.addr},
	} {
		v = versionOf(t, mustLbctl(t, cp.addr, append(append([]string{"-o", "json"}, args...), "--wait", "--wait-timeout", "20s")...))
	}
	if v != 3 {
		t.Fatalf("three commits on a new store reached version %d, want 3", v)
	}
	if r := lbctl(t, cp.addr, "add-backend", "--pool", "missing", x.addr); r.code == 0 {
		t.Fatalf("add-backend to a missing pool succeeded:\n%s", r.stdout)
	}

	const (
		addBackend   = "/lb.v1.AdminService/AddBackend"
		createPool   = "/lb.v1.AdminService/CreatePool"
		waitVersion  = "/lb.v1.AdminService/WaitForVersion"
		streamConfig = "/lb.v1.DiscoveryService/StreamConfig"
	)
	// Each data plane got version 0 when it connected, then versions 1-3,
	// and acknowledged each; versions 1-3 were each published with both
	// connected and acknowledged by both before the next commit, so each is
	// observed once; 0 was published before any data plane connected.
	cpmExpect(t, cp.admin, "the metrics of three waited commits", []cpmWant{
		{name: "lb_controlplane_connected_dataplanes", want: 2},
		{name: "lb_controlplane_config_version", want: float64(v)},
		{name: "lb_controlplane_config_pushes_total", want: 2 * 4},
		{name: "lb_controlplane_config_acks_total", want: 2 * 4},
		{name: "lb_controlplane_config_nacks_total", want: 0},
		{name: "lb_controlplane_config_propagation_seconds", want: 3},
		{name: "lb_controlplane_grpc_requests_total", labels: []string{"method", createPool, "code", "OK"}, want: 1},
		{name: "lb_controlplane_grpc_requests_total", labels: []string{"method", addBackend, "code", "OK"}, want: 2},
		{name: "lb_controlplane_grpc_requests_total", labels: []string{"method", addBackend, "code", "NotFound"}, want: 1},
		{name: "lb_controlplane_grpc_requests_total", labels: []string{"method", waitVersion, "code", "OK"}, atLeast: true, want: 3},
		// Streams count when they end; both are open.
		{name: "lb_controlplane_grpc_requests_total", labels: []string{"method", streamConfig, "code", "OK"}, want: 0},
		{name: "lb_controlplane_grpc_request_duration_seconds", labels: []string{"method", addBackend}, want: 3},
		// The refusal is the update's own check, not a store error.
		{name: "lb_controlplane_store_operation_duration_seconds", labels: []string{"operation", "update"}, atLeast: true, want: 4},
		{name: "lb_controlplane_store_errors_total", labels: []string{"operation", "update"}, want: 0},
		{name: "lb_controlplane_store_errors_total", labels: []string{"operation", "read"}, want: 0},
	})
	m := opsScrape(t, cp.admin)
	if sum := m["lb_controlplane_config_propagation_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); sum <= 0 || sum > 60 {
		t.Errorf("propagation histogram sum = %v s, want a positive time under a minute", sum)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if m[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// No label takes a node id or an address.
	for name, f := range m {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if strings.Contains(l.GetValue(), "cpm-") || strings.Contains(l.GetValue(), "127.0.0.1") {
					t.Errorf("%s has a series labelled %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}

	// The log level, at run time: started at info, no debug line yet.
	if code, body := cpmDo(t, http.MethodGet, base+"/log-level", ""); code != http.StatusOK || body != "info\n" {
		t.Fatalf("GET /log-level = %d %q, want 200 \"info\\n\"", code, body)
	}
	if strings.Contains(cp.log.String(), "[DEBUG]") {
		t.Fatalf("the control plane logged at debug while at info:\n%s", cp.log.String())
	}
	if code, body := cpmDo(t, http.MethodPut, base+"/log-level", "debug\n"); code != http.StatusOK || body != "log level set to debug\n" {
		t.Fatalf("PUT /log-level debug = %d %q, want 200 \"log level set to debug\\n\"", code, body)
	}
	// The log reaches the test through a pipe: wait for it.
	waitFor(t, 10*time.Second, "the control plane to log the change", func() bool {
		return strings.Contains(cp.log.String(), "log level changed: from=info to=debug")
	})
	v = versionOf(t, mustLbctl(t, cp.addr, "-o", "json", "set-weight", "--pool", "web", x.addr, "2", "--wait", "--wait-timeout", "20s"))
	want := fmt.Sprintf("[DEBUG] lb-controlplane.discovery: configuration published: version=%d", v)
	waitFor(t, 10*time.Second, "a debug line from the discovery sub-logger", func() bool {
		return strings.Contains(cp.log.String(), want)
	})

	// An invalid level is refused, naming it and the accepted ones, and
	// changes nothing.
	code, body := cpmDo(t, http.MethodPut, base+"/log-level", "chatty")
	if code != http.StatusBadRequest || !strings.Contains(body, `"chatty"`) || !strings.Contains(body, "trace|debug|info|warn|error") {
		t.Errorf("PUT /log-level chatty = %d %q, want 400 naming the value and the accepted levels", code, body)
	}
	if code, body := cpmDo(t, http.MethodGet, base+"/log-level", ""); code != http.StatusOK || body != "debug\n" {
		t.Errorf("GET /log-level after an invalid PUT = %d %q, want \"debug\\n\"", code, body)
	}

	// SIGHUP resets the level to --log-level.
	if err := cp.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	waitFor(t, 10*time.Second, "SIGHUP to reset the log level to info", func() bool {
		_, body := cpmDo(t, http.MethodGet, base+"/log-level", "")
		return body == "info\n"
	})
	waitFor(t, 10*time.Second, "the control plane to log the reset", func() bool {
		return strings.Contains(cp.log.String(), "log level changed: from=debug to=info via=signal signal=hangup")
	})

	cp.stop()
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the admin listener still answers after the control plane exited")
	}
}

// cpmStartControlPlane starts lb-controlplane at log level info (so that
// debug lines show only once asked for) with its admin listener on a free
// port, and waits until the admin listener reports it ready.
func cpmStartControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	cp := &controlPlane{addr: freeAddr(t), admin: freeAddr(t), dataDir: t.TempDir()}
	cp.proc = start(t, "lb-controlplane", "--listen", cp.addr, "--admin-listen", cp.admin,
		"--data-dir", cp.dataDir, "--log-level", "info")
	waitFor(t, 20*time.Second, "control plane to be ready", func() bool {
		select {
		case <-cp.done:
			t.Fatalf("lb-controlplane exited: %v\n%s", cp.err, cp.log.String())
		default:
		}
		resp, err := http.Get("http://" + cp.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// The gRPC listener is up by then.
	c, err := net.DialTimeout("tcp", cp.addr, time.Second)
	if err != nil {
		t.Fatalf("control plane ready but its gRPC address refuses: %v", err)
	}
	c.Close()
	return cp
}

// cpmDo sends a request with body (none when empty) and returns the status
// and body of the answer.
func cpmDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// cpmWant is an expected sample: the series of name with exactly the label
// pairs in labels (name, value, ...) has value want (a histogram: count),
// or at least want when atLeast.
type cpmWant struct {
	name    string
	labels  []string
	want    float64
	atLeast bool
}

// value returns the sample's value in fams; ok is false without the series.
func (w cpmWant) value(fams opsMetrics) (v float64, ok bool) {
	f := fams[w.name]
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(w.labels) {
			continue
		}
		match := true
		for i := 0; i < len(w.labels) && match; i += 2 {
			match = opsLabel(m, w.labels[i]) == w.labels[i+1]
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// cpmExpect scrapes the admin listener until every expectation holds
// (counters are updated just after the events lbctl waits for), for up to
// 20s, then reports those that do not.
func cpmExpect(t *testing.T, admin, what string, wants []cpmWant) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fams := opsScrape(t, admin)
		var bad []string
		for _, w := range wants {
			v, ok := w.value(fams)
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s%v: no such series", w.name, w.labels))
			case w.atLeast && v < w.want:
				bad = append(bad, fmt.Sprintf("%s%v = %v, want at least %v", w.name, w.labels, v, w.want))
			case !w.atLeast && v != w.want:
				bad = append(bad, fmt.Sprintf("%s%v = %v, want %v", w.name, w.labels, v, w.want))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, after 20s:\n  %s", what, strings.Join(bad, "\n  "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
