package lbctl

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/admin"
	"github.com/lb-project/lb/controlplane/store/boltstore"
)

// planAdmin is an AdminService for apply: ListPools answers list, and each
// mutation is recorded and answered with the next configuration version
// (after list's), or with the error errs holds for its method.
type planAdmin struct {
	lbv1.UnimplementedAdminServiceServer

	list *lbv1.ListPoolsResponse
	errs map[string]error

	mu      sync.Mutex
	version uint64
	reqs    []proto.Message
}

// record records req and returns the next version, or the error for method.
func (f *planAdmin) record(method string, req proto.Message) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, proto.Clone(req))
	if err := f.errs[method]; err != nil {
		return 0, err
	}
	if f.version == 0 {
		f.version = f.list.GetVersion()
	}
	f.version++
	return f.version, nil
}

func (f *planAdmin) requests() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func (f *planAdmin) ListPools(_ context.Context, r *lbv1.ListPoolsRequest) (*lbv1.ListPoolsResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, proto.Clone(r))
	f.mu.Unlock()
	return f.list, nil
}

func (f *planAdmin) CreatePool(_ context.Context, r *lbv1.CreatePoolRequest) (*lbv1.CreatePoolResponse, error) {
	v, err := f.record("CreatePool", r)
	if err != nil {
		return nil, err
	}
	return &lbv1.CreatePoolResponse{Pool: r.GetPool(), Version: v}, nil
}

func (f *planAdmin) UpdatePool(_ context.Context, r *lbv1.UpdatePoolRequest) (*lbv1.UpdatePoolResponse, error) {
	v, err := f.record("UpdatePool", r)
	if err != nil {
		return nil, err
	}
	return &lbv1.UpdatePoolResponse{Pool: r.GetPool(), Version: v}, nil
}

func (f *planAdmin) DeletePool(_ context.Context, r *lbv1.DeletePoolRequest) (*lbv1.DeletePoolResponse, error) {
	v, err := f.record("DeletePool", r)
	if err != nil {
		return nil, err
	}
	return &lbv1.DeletePoolResponse{Version: v}, nil
}

func (f *planAdmin) WaitForVersion(_ context.Context, r *lbv1.WaitForVersionRequest) (*lbv1.WaitForVersionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, proto.Clone(r))
	return &lbv1.WaitForVersionResponse{DataPlanes: []*lbv1.DataPlane{{NodeId: "dp-1"}, {NodeId: "dp-2"}}}, nil
}

// startPlanServer serves f like startServer.
func startPlanServer(t *testing.T, f *planAdmin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	lbv1.RegisterAdminServiceServer(s, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}

// realServer is the control plane's own admin server over a store in a
// temporary directory, recording the requests it gets.
type realServer struct {
	addr string
	mu   sync.Mutex
	reqs []string // method names
	msgs []proto.Message
}

func startRealServer(t *testing.T) *realServer {
	t.Helper()
	st, err := boltstore.Open(t.TempDir())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		t.Fatalf("listen: %v", err)
	}
	rs := &realServer{addr: lis.Addr().String()}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		rs.mu.Lock()
		rs.reqs = append(rs.reqs, info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:])
		rs.msgs = append(rs.msgs, proto.Clone(req.(proto.Message)))
		rs.mu.Unlock()
		return h(ctx, req)
	}))
	lbv1.RegisterAdminServiceServer(s, admin.New(st, nil, hclog.NewNullLogger()))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
		st.Close()
	})
	return rs
}

// take returns the methods called since the last take, and their requests.
func (rs *realServer) take() ([]string, []proto.Message) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	m, r := rs.reqs, rs.msgs
	rs.reqs, rs.msgs = nil, nil
	return m, r
}

// checkReqs compares the requests a server got with want.
func checkReqs(t *testing.T, got, want []proto.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("server got %d requests, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("request %d\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

// checkRun checks the outcome of a run.
func checkRun(t *testing.T, got result, code int, stdout, stderr string) {
	t.Helper()
	if got.code != code || got.stdout != stdout || got.stderr != stderr {
		t.Errorf("exit %d\nstdout:\n%s\nstderr: %q\nwant exit %d\nstdout:\n%s\nstderr: %q",
			got.code, got.stdout, got.stderr, code, stdout, stderr)
	}
}

// allFields is the mask of an update replacing every updatable field.
var allFields = []string{"hosts", "path_prefix", "backends", "upstream", "load_balancing",
	"health_check", "outlier_detection", "retry", "timeouts"}

// keepKeyFields is allFields with upstream named field by field, without
// client_key_pem.
var keepKeyFields = []string{"hosts", "path_prefix", "backends",
	"upstream.protocol", "upstream.tls", "upstream.sni", "upstream.ca_pem", "upstream.insecure_skip_verify",
	"upstream.client_cert_pem", "upstream.host_header",
	"load_balancing", "health_check", "outlier_detection", "retry", "timeouts"}

const (
	fakeCert = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
	fakeCA   = "-----BEGIN CERTIFICATE-----\nMIICA\n-----END CERTIFICATE-----\n"
)

// exportPools are the pools of TestExport, not in name order.
func exportPools() *lbv1.ListPoolsResponse {
	zero := uint32(0)
	return &lbv1.ListPoolsResponse{Version: 12, Pools: []*lbv1.Pool{
		{
			Name: "web", Hosts: []string{"example.com", "www.example.com"}, Version: 7,
			Backends: []*lbv1.Backend{
				{Address: "10.0.0.5:8080", Weight: 2},
				{Address: "10.0.0.6:8080", Weight: 1, Draining: true},
			},
			LoadBalancing: &lbv1.LoadBalancing{Algorithm: lbv1.Algorithm_ALGORITHM_LEAST_REQUEST, SlowStart: durationpb.New(30e9)},
			HealthCheck:   &lbv1.HealthCheck{Type: lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Path: "/healthz", Interval: durationpb.New(2e9)},
			Retry:         &lbv1.RetryPolicy{Retries: &zero},
			Timeouts:      &lbv1.Timeouts{Connect: durationpb.New(1500e6)},
		},
		{
			Name: "api", PathPrefix: "/api/", Version: 3,
			Backends:         []*lbv1.Backend{{Address: "[fd00::7]:8080", Weight: 1}},
			OutlierDetection: &lbv1.OutlierDetection{Disabled: true},
		},
		{
			Name: "mtls", Version: 9,
			Backends: []*lbv1.Backend{{Address: "10.0.1.5:8443", Weight: 1}},
			Upstream: &lbv1.Upstream{
				Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2, Tls: true, Sni: "backend.internal",
				CaPem: fakeCA, ClientCertPem: fakeCert, ClientKeySet: true, HostHeader: "backend.internal",
			},
		},
	}}
}

// exportYAML is the export of exportPools.
const exportYAML = `# lbctl export, configuration version 12
pools:
- name: api
  path_prefix: /api/
  backends:
  - address: '[fd00::7]:8080'
    weight: 1
  outlier_detection:
    disabled: true
- name: mtls
  backends:
  - address: 10.0.1.5:8443
    weight: 1
  upstream:
    ca_pem: |
      -----BEGIN CERTIFICATE-----
      MIICA
      -----END CERTIFICATE-----
    client_cert_pem: |
      -----BEGIN CERTIFICATE-----
      MIIBfake
      -----END CERTIFICATE-----
    host_header: backend.internal
    protocol: UPSTREAM_PROTOCOL_H2
    sni: backend.internal
    tls: true
- name: web
  hosts:
  - example.com
  - www.example.com
  backends:
  - address: 10.0.0.5:8080
    weight: 2
  - address: 10.0.0.6:8080
    draining: true
    weight: 1
  load_balancing:
    algorithm: ALGORITHM_LEAST_REQUEST
    slow_start: 30s
  health_check:
    interval: 2s
    path: /healthz
    type: HEALTH_CHECK_TYPE_HTTP
  retry:
    retries: 0
  timeouts:
    connect: 1.500s
`

func TestExport(t *testing.T) {
	f := &fakeAdmin{resp: exportPools()}
	addr := startServer(t, f)

	got := runCLI(t, nil, "--controlplane", addr, "export")
	checkRun(t, got, 0, exportYAML, "")
	checkReqs(t, f.requests(), []proto.Message{&lbv1.ListPoolsRequest{}})

	// To a file.
	file := filepath.Join(t.TempDir(), "lb.yaml")
	got = runCLI(t, nil, "--controlplane", addr, "export", "-f", file)
	checkRun(t, got, 0, "exported 3 pools to "+file+"; configuration version 12\n", "")
	if b, err := os.ReadFile(file); err != nil || string(b) != exportYAML {
		t.Errorf("file %q, %v; want the export", b, err)
	}

	// The export reads back as the pools, without their output-only fields.
	pools, err := decodeConfig("lb.yaml", []byte(exportYAML))
	if err != nil {
		t.Fatal(err)
	}
	want := sortedPools(exportPools().GetPools())
	if len(pools) != len(want) {
		t.Fatalf("read back %d pools, want %d", len(pools), len(want))
	}
	for i := range want {
		if w := exportable(want[i]); !proto.Equal(pools[i], w) {
			t.Errorf("pool %d read back as\n%v\nwant %v", i, pools[i], w)
		}
	}

	// As JSON, which apply reads too.
	got = runCLI(t, nil, "--controlplane", addr, "-o", "json", "export")
	if got.code != 0 || got.stderr != "" {
		t.Fatalf("-o json: %+v", got)
	}
	var doc struct {
		Pools []map[string]any `json:"pools"`
	}
	if err := json.Unmarshal([]byte(got.stdout), &doc); err != nil || len(doc.Pools) != 3 || doc.Pools[0]["name"] != "api" ||
		doc.Pools[2]["path_prefix"] != nil || doc.Pools[0]["path_prefix"] != "/api/" || doc.Pools[1]["version"] != nil {
		t.Errorf("-o json: %v\n%s", err, got.stdout)
	}
	if pools, err := decodeConfig("lb.json", []byte(got.stdout)); err != nil || len(pools) != 3 || !proto.Equal(pools[1], exportable(want[1])) {
		t.Errorf("JSON export read back as %v, %v", pools, err)
	}
}

func TestExportEmpty(t *testing.T) {
	f := &fakeAdmin{resp: &lbv1.ListPoolsResponse{Version: 1}}
	addr := startServer(t, f)
	got := runCLI(t, nil, "--controlplane", addr, "export")
	checkRun(t, got, 0, "# lbctl export, configuration version 1\npools: []\n", "")
	if pools, err := decodeConfig("x", []byte(got.stdout)); err != nil || len(pools) != 0 {
		t.Errorf("read back %v, %v", pools, err)
	}
}

// applyCurrent is what the control plane has in the apply tests: "old" is
// not in applyFile, "same" is as in it (but for host order and the
// default weight), "web" differs in backends and health check.
func applyCurrent() *lbv1.ListPoolsResponse {
	return &lbv1.ListPoolsResponse{Version: 20, Pools: []*lbv1.Pool{
		{Name: "old", Version: 5, Backends: []*lbv1.Backend{{Address: "10.9.9.9:80", Weight: 1}}},
		{Name: "same", Version: 6, Hosts: []string{"a.example.com", "b.example.com"},
			Backends:      []*lbv1.Backend{{Address: "10.0.0.1:80", Weight: 1}},
			LoadBalancing: &lbv1.LoadBalancing{Algorithm: lbv1.Algorithm_ALGORITHM_RANDOM}},
		{Name: "web", Version: 7, Hosts: []string{"www.example.com"},
			Backends: []*lbv1.Backend{{Address: "10.0.0.5:8080", Weight: 1}}},
	}}
}

const applyFile = `# Pools of the apply tests.
pools:
  - name: web
    hosts: [www.example.com]
    backends:
      - {address: 10.0.0.5:8080, weight: 2}
      - {address: 10.0.0.6:8080}
    health_check: {type: HEALTH_CHECK_TYPE_HTTP, path: /healthz, interval: 2s}
  - name: same
    hosts: [B.example.com, a.example.com]
    backends: [{address: 10.0.0.1:80}]
    load_balancing: {algorithm: ALGORITHM_RANDOM, slow_start: 0s}
    upstream: {}
  - name: api
    path_prefix: /api/
    backends: [{address: 10.0.0.7:8080}]
    load_balancing: {algorithm: ALGORITHM_LEAST_REQUEST}
`

// applyRequests are the mutations apply of applyFile over applyCurrent
// sends, in order.
func applyRequests() []proto.Message {
	return []proto.Message{
		&lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", PathPrefix: "/api/",
			Backends:      []*lbv1.Backend{{Address: "10.0.0.7:8080"}},
			LoadBalancing: &lbv1.LoadBalancing{Algorithm: lbv1.Algorithm_ALGORITHM_LEAST_REQUEST}}},
		&lbv1.UpdatePoolRequest{
			Pool: &lbv1.Pool{Name: "web", Hosts: []string{"www.example.com"},
				Backends: []*lbv1.Backend{{Address: "10.0.0.5:8080", Weight: 2}, {Address: "10.0.0.6:8080"}},
				HealthCheck: &lbv1.HealthCheck{Type: lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Path: "/healthz",
					Interval: durationpb.New(2e9)}},
			UpdateMask:      mask(allFields...),
			ExpectedVersion: 7,
		},
		&lbv1.DeletePoolRequest{Name: "old", ExpectedVersion: 5},
	}
}

func TestApply(t *testing.T) {
	file := writeFile(t, t.TempDir(), "lb.yaml", applyFile)
	f := &planAdmin{list: applyCurrent()}
	addr := startPlanServer(t, f)
	got := runCLI(t, nil, "--controlplane", addr, "apply", "-f", file)
	checkRun(t, got, 0, `+ pool api (create); configuration version 21
~ pool web: backends, health_check; configuration version 22
- pool old (delete); configuration version 23
= pool same (unchanged)
1 to create, 1 to update, 1 to delete; configuration version 23
`, "")
	checkReqs(t, f.requests(), append([]proto.Message{&lbv1.ListPoolsRequest{}}, applyRequests()...))
}

func TestApplyDryRun(t *testing.T) {
	file := writeFile(t, t.TempDir(), "lb.yaml", applyFile)
	f := &planAdmin{list: applyCurrent()}
	addr := startPlanServer(t, f)
	got := runCLI(t, nil, "--controlplane", addr, "apply", "-f", file, "--dry-run")
	checkRun(t, got, 0, `+ pool api (create)
~ pool web: backends, health_check
- pool old (delete)
= pool same (unchanged)
1 to create, 1 to update, 1 to delete
`, "")
	checkReqs(t, f.requests(), []proto.Message{&lbv1.ListPoolsRequest{}})

	// As JSON.
	f = &planAdmin{list: applyCurrent()}
	addr = startPlanServer(t, f)
	got = runCLI(t, nil, "--controlplane", addr, "-o", "json", "apply", "-f", file, "--dry-run")
	checkRun(t, got, 0, `{
  "dry_run": true,
  "changes": [
    {
      "pool": "api",
      "action": "create"
    },
    {
      "pool": "web",
      "action": "update",
      "fields": [
        "backends",
        "health_check"
      ]
    },
    {
      "pool": "old",
      "action": "delete"
    },
    {
      "pool": "same",
      "action": "unchanged"
    }
  ],
  "create": 1,
  "update": 1,
  "delete": 1,
  "version": "20"
}
`, "")
	checkReqs(t, f.requests(), []proto.Message{&lbv1.ListPoolsRequest{}})
}

func TestApplyNoPrune(t *testing.T) {
	file := writeFile(t, t.TempDir(), "lb.yaml", applyFile)
	f := &planAdmin{list: applyCurrent()}
	addr := startPlanServer(t, f)
	got := runCLI(t, nil, "--controlplane", addr, "apply", "-f", file, "--prune=false")
	checkRun(t, got, 0, `+ pool api (create); configuration version 21
~ pool web: backends, health_check; configuration version 22
= pool same (unchanged)
1 to create, 1 to update, 0 to delete; configuration version 22
`, "")
	checkReqs(t, f.requests(), append([]proto.Message{&lbv1.ListPoolsRequest{}}, applyRequests()[:2]...))
}

func TestApplyWait(t *testing.T) {
	f := &planAdmin{list: applyCurrent()}
	addr := startPlanServer(t, f)
	in := strings.NewReader(applyFile)
	var stdout, stderr strings.Builder
	a := &app{stdout: &stdout, stderr: &stderr, stdin: in, getenv: func(string) string { return "" }}
	code := a.main(context.Background(), []string{"--controlplane", addr, "apply", "-f", "-", "--wait"})
	checkRun(t, result{stdout: stdout.String(), stderr: stderr.String(), code: code}, 0, `+ pool api (create); configuration version 21
~ pool web: backends, health_check; configuration version 22
- pool old (delete); configuration version 23
= pool same (unchanged)
1 to create, 1 to update, 1 to delete; configuration version 23
all 2 data planes have applied version 23
`, "")
	reqs := f.requests()
	if len(reqs) != 5 {
		t.Fatalf("got %d requests, want 5: %v", len(reqs), reqs)
	}
	if w, ok := reqs[4].(*lbv1.WaitForVersionRequest); !ok || w.GetVersion() != 23 || w.GetTimeout().AsDuration() != DefaultWaitTimeout {
		t.Errorf("last request %v, want WaitForVersion 23", reqs[4])
	}
}

// TestApplyStale checks that a pool changed since it was read stops apply.
func TestApplyStale(t *testing.T) {
	file := writeFile(t, t.TempDir(), "lb.yaml", applyFile)
	f := &planAdmin{list: applyCurrent(), errs: map[string]error{"UpdatePool": staleErr(t, "web", 7, 24)}}
	addr := startPlanServer(t, f)
	got := runCLI(t, nil, "--controlplane", addr, "apply", "-f", file)
	checkRun(t, got, ExitError, "+ pool api (create); configuration version 21\n",
		"lbctl: pool \"web\" changed since version 7 (it is now at version 24); nothing was changed to it; run 'lbctl apply -f "+file+"' again\n")
	checkReqs(t, f.requests(), append([]proto.Message{&lbv1.ListPoolsRequest{}}, applyRequests()[:2]...))
}

// TestApplyKeepsClientKey checks that a client certificate without its key
// keeps the key the control plane has stored.
func TestApplyKeepsClientKey(t *testing.T) {
	current := &lbv1.ListPoolsResponse{Version: 30, Pools: []*lbv1.Pool{{
		Name: "mtls", Version: 9, Backends: []*lbv1.Backend{{Address: "10.0.1.5:8443", Weight: 1}},
		Upstream: &lbv1.Upstream{Tls: true, ClientCertPem: fakeCert, ClientKeySet: true},
	}}}
	doc := func(upstream string) string {
		return "pools:\n  - name: mtls\n    backends: [{address: 10.0.1.5:8443}]\n    upstream:\n" + upstream
	}
	certYAML := "      client_cert_pem: |\n        -----BEGIN CERTIFICATE-----\n        MIIBfake\n        -----END CERTIFICATE-----\n"
	dir := t.TempDir()

	// As exported: nothing to do.
	f := &planAdmin{list: current}
	addr := startPlanServer(t, f)
	got := runCLI(t, nil, "--controlplane", addr, "apply", "-f", writeFile(t, dir, "same.yaml", doc("      tls: true\n"+certYAML)))
	checkRun(t, got, 0, "= pool mtls (unchanged)\n0 to create, 0 to update, 0 to delete\n", "")

	// Another upstream change keeps the key: client_key_pem is not in the
	// mask.
	f = &planAdmin{list: current}
	addr = startPlanServer(t, f)
	got = runCLI(t, nil, "--controlplane", addr, "apply", "-f",
		writeFile(t, dir, "sni.yaml", doc("      tls: true\n      sni: backend.internal\n"+certYAML)))
	checkRun(t, got, 0, "~ pool mtls: upstream; configuration version 31\n0 to create, 1 to update, 0 to delete; configuration version 31\n", "")
	checkReqs(t, f.requests(), []proto.Message{&lbv1.ListPoolsRequest{}, &lbv1.UpdatePoolRequest{
		Pool: &lbv1.Pool{Name: "mtls", Backends: []*lbv1.Backend{{Address: "10.0.1.5:8443"}},
			Upstream: &lbv1.Upstream{Tls: true, Sni: "backend.internal", ClientCertPem: fakeCert}},
		UpdateMask:      mask(keepKeyFields...),
		ExpectedVersion: 9,
	}})

	// A key in the file is not compared (it is never returned) ...
	withKey := certYAML + "      client_key_pem: \"KEY\"\n"
	f = &planAdmin{list: current}
	addr = startPlanServer(t, f)
	got = runCLI(t, nil, "--controlplane", addr, "apply", "-f", writeFile(t, dir, "key.yaml", doc("      tls: true\n"+withKey)))
	checkRun(t, got, 0, "= pool mtls (unchanged)\n0 to create, 0 to update, 0 to delete\n", "")

	// ... but sent with the rest of upstream when it changes.
	f = &planAdmin{list: current}
	addr = startPlanServer(t, f)
	got = runCLI(t, nil, "--controlplane", addr, "apply", "-f",
		writeFile(t, dir, "key-sni.yaml", doc("      tls: true\n      sni: backend.internal\n"+withKey)))
	checkRun(t, got, 0, "~ pool mtls: upstream; configuration version 31\n0 to create, 1 to update, 0 to delete; configuration version 31\n", "")
	checkReqs(t, f.requests(), []proto.Message{&lbv1.ListPoolsRequest{}, &lbv1.UpdatePoolRequest{
		Pool: &lbv1.Pool{Name: "mtls", Backends: []*lbv1.Backend{{Address: "10.0.1.5:8443"}},
			Upstream: &lbv1.Upstream{Tls: true, Sni: "backend.internal", ClientCertPem: fakeCert, ClientKeyPem: "KEY"}},
		UpdateMask:      mask(allFields...),
		ExpectedVersion: 9,
	}})

	// Without a client certificate the stored key goes too.
	f = &planAdmin{list: current}
	addr = startPlanServer(t, f)
	got = runCLI(t, nil, "--controlplane", addr, "apply", "-f", writeFile(t, dir, "nocert.yaml", doc("      tls: true\n")))
	checkRun(t, got, 0, "~ pool mtls: upstream; configuration version 31\n0 to create, 1 to update, 0 to delete; configuration version 31\n", "")
	checkReqs(t, f.requests(), []proto.Message{&lbv1.ListPoolsRequest{}, &lbv1.UpdatePoolRequest{
		Pool: &lbv1.Pool{Name: "mtls", Backends: []*lbv1.Backend{{Address: "10.0.1.5:8443"}},
			Upstream: &lbv1.Upstream{Tls: true}},
		UpdateMask:      mask(allFields...),
		ExpectedVersion: 9,
	}})
}

// TestApplyFileErrors checks mistakes in the file: each is reported naming
// what is wrong, exits ExitError and sends nothing.
func TestApplyFileErrors(t *testing.T) {
	tests := []struct {
		name, doc, stderr string
	}{
		{"unknown pool field", "pools:\n  - name: web\n    helth_check: {type: HEALTH_CHECK_TYPE_TCP}\n",
			`pools[0] (pool "web"): unknown field "helth_check" (did you mean "health_check"?)`},
		{"unknown nested field", "pools:\n  - name: web\n    health_check: {type: HEALTH_CHECK_TYPE_HTTP, pth: /healthz}\n",
			`pools[0] (pool "web"): unknown field "health_check.pth" (did you mean "path"?)`},
		{"unknown backend field", "pools:\n  - name: a\n  - name: web\n    backends:\n      - {address: 10.0.0.5:80}\n      - {address: 10.0.0.6:80, wieght: 2}\n",
			`pools[1] (pool "web"): unknown field "backends[1].wieght" (did you mean "weight"?)`},
		{"unknown field far from any", "pools:\n  - name: web\n    colour: blue\n",
			`pools[0] (pool "web"): unknown field "colour"`},
		{"unknown top-level field", "pool:\n  - name: web\n",
			`unknown field "pool" at the top level (did you mean "pools"?); the document has only "pools"`},
		{"bad enum", "pools:\n  - name: web\n    load_balancing: {algorithm: LEAST_REQUEST}\n",
			`pools[0] (pool "web"): invalid value for enum field algorithm: "LEAST_REQUEST"`},
		{"bad duration", "pools:\n  - name: web\n    health_check: {interval: soon}\n",
			`pools[0] (pool "web"): invalid google.protobuf.Duration value "soon"`},
		{"bad weight", "pools:\n  - name: web\n    backends: [{address: 10.0.0.5:80, weight: heavy}]\n",
			`pools[0] (pool "web"): invalid value for uint32 field weight: "heavy"`},
		{"duplicate names", "pools:\n  - name: web\n  - name: api\n  - name: web\n",
			`pool "web" is listed twice (pools[0] and pools[2]); pool names must be unique`},
		{"missing name", "pools:\n  - name: web\n  - hosts: [a.example.com]\n",
			`pools[1]: name is required`},
		{"empty name", "pools:\n  - name: \"\"\n",
			`pools[0]: name is required`},
		{"pool not a mapping", "pools:\n  - web\n",
			`pools[0] is not a pool (a mapping of its fields)`},
		{"pools not a list", "pools: web\n",
			`"pools" must be a list of pools`},
		{"no pools", "# nothing\n",
			`not a configuration document: expected a mapping with a "pools" list, as written by 'lbctl export'`},
		{"null pools", "pools:\n",
			`no "pools" list; write "pools: []" for no pools at all`},
		{"duplicate key", "pools:\n  - name: web\n    name: api\n",
			`yaml: unmarshal errors:; line 3: key "name" already set in map`},
		{"not YAML", "pools: [\n",
			`yaml: line 1: did not find expected node content`},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &planAdmin{list: applyCurrent()}
			addr := startPlanServer(t, f)
			file := writeFile(t, dir, "lb"+string(rune('a'+i))+".yaml", tt.doc)
			got := runCLI(t, nil, "--controlplane", addr, "apply", "-f", file)
			checkRun(t, got, ExitError, "", "lbctl: "+file+": "+tt.stderr+"\n")
			if n := len(f.requests()); n != 0 {
				t.Errorf("server got %d requests, want none", n)
			}
		})
	}
}

func TestApplyUsage(t *testing.T) {
	f := &planAdmin{list: applyCurrent()}
	addr := startPlanServer(t, f)
	file := writeFile(t, t.TempDir(), "lb.yaml", applyFile)
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"apply"}, ExitUsage, "lbctl: -f FILE is required (- reads standard input); see 'lbctl apply --help'\n"},
		{[]string{"apply", "-f", file, "x"}, ExitUsage, "lbctl: takes no arguments, received 1; see 'lbctl apply --help'\n"},
		{[]string{"apply", "-f", file, "--dry-run", "--wait"}, ExitUsage,
			"lbctl: --wait cannot be used with --dry-run, which changes nothing; see 'lbctl apply --help'\n"},
		{[]string{"apply", "-f", file, "--wait-timeout", "1m"}, ExitUsage, "lbctl: --wait-timeout needs --wait; see 'lbctl apply --help'\n"},
		{[]string{"apply", "-f", file + ".missing"}, ExitError,
			"lbctl: read the configuration: open " + file + ".missing: no such file or directory\n"},
		{[]string{"export", "x"}, ExitUsage, "lbctl: takes no arguments, received 1; see 'lbctl export --help'\n"},
	} {
		got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
		checkRun(t, got, tt.code, "", tt.stderr)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
}

// TestApplyRoundTrip applies a file to the control plane's own admin
// server, exports the result and applies the export: nothing changes. The
// client key, never exported, stays through later updates.
func TestApplyRoundTrip(t *testing.T) {
	rs := startRealServer(t)
	dir := t.TempDir()
	client := newTestCert(t, "lbctl client")
	indent := func(pem string) string {
		return "        " + strings.ReplaceAll(strings.TrimSuffix(pem, "\n"), "\n", "\n        ") + "\n"
	}
	doc := `pools:
  - name: web
    hosts: [WWW.example.com, example.com]
    backends:
      - {address: 10.0.0.5:8080, weight: 2}
      - {address: 10.0.0.6:8080}
    load_balancing: {algorithm: ALGORITHM_ROUND_ROBIN, slow_start: 10s}
    health_check: {type: HEALTH_CHECK_TYPE_HTTP, path: /healthz, interval: 2s}
    retry: {retries: 0}
  - name: api
    path_prefix: /api/
    backends: [{address: "[FD00:0::7]:8080", draining: true}]
    outlier_detection: {consecutive_failures: 3, base_ejection_time: 1m}
    timeouts: {connect: 1.5s, idle: 0s}
  - name: mtls
    hosts: [mtls.example.com]
    backends: [{address: 10.0.1.5:8443}]
    upstream:
      protocol: UPSTREAM_PROTOCOL_H2
      tls: true
      insecure_skip_verify: true
      client_cert_pem: |
` + indent(client.certPEM) + `      client_key_pem: |
` + indent(client.keyPEM)
	file := writeFile(t, dir, "lb.yaml", doc)
	got := runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", file, "--wait")
	checkRun(t, got, 0, `+ pool api (create); configuration version 1
+ pool mtls (create); configuration version 2
+ pool web (create); configuration version 3
3 to create, 0 to update, 0 to delete; configuration version 3
all 0 data planes have applied version 3
`, "")
	rs.take()

	// Applying the same file again changes nothing.
	got = runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", file)
	checkRun(t, got, 0, "= pool api (unchanged)\n= pool mtls (unchanged)\n= pool web (unchanged)\n0 to create, 0 to update, 0 to delete\n", "")

	// Nor does applying its export.
	exported := filepath.Join(dir, "export.yaml")
	got = runCLI(t, nil, "--controlplane", rs.addr, "export", "-f", exported)
	checkRun(t, got, 0, "exported 3 pools to "+exported+"; configuration version 3\n", "")
	export, err := os.ReadFile(exported)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"client_key", "version: ", "PRIVATE KEY"} {
		if strings.Contains(strings.TrimPrefix(string(export), "# lbctl export, configuration version 3\n"), s) {
			t.Errorf("export contains %q:\n%s", s, export)
		}
	}
	got = runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", exported)
	checkRun(t, got, 0, "= pool api (unchanged)\n= pool mtls (unchanged)\n= pool web (unchanged)\n0 to create, 0 to update, 0 to delete\n", "")
	if methods, _ := rs.take(); !slices.Equal(methods, []string{"ListPools", "ListPools", "ListPools"}) {
		t.Errorf("calls %v, want only ListPools", methods)
	}

	// An update of the exported mtls pool keeps its key (the control plane
	// refuses a certificate without one), and one without a certificate
	// removes it.
	edited := strings.Replace(string(export), "tls: true", "tls: true\n    sni: backend.internal", 1)
	edited = strings.Replace(edited, "- name: web\n", "- name: web\n  path_prefix: /web/\n", 1)
	if edited == string(export) || !strings.Contains(edited, "sni: backend.internal") {
		t.Fatalf("cannot edit the export:\n%s", export)
	}
	got = runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", writeFile(t, dir, "edited.yaml", edited), "--prune=false")
	checkRun(t, got, 0, `~ pool mtls: upstream; configuration version 4
~ pool web: path_prefix; configuration version 5
= pool api (unchanged)
0 to create, 2 to update, 0 to delete; configuration version 5
`, "")
	_, reqs := rs.take()
	if u, ok := reqs[1].(*lbv1.UpdatePoolRequest); !ok || !slices.Equal(u.GetUpdateMask().GetPaths(), keepKeyFields) || u.GetExpectedVersion() != 2 {
		t.Errorf("update of mtls %v, want mask %v and expected version 2", reqs[1], keepKeyFields)
	}
	if u, ok := reqs[2].(*lbv1.UpdatePoolRequest); !ok || !slices.Equal(u.GetUpdateMask().GetPaths(), allFields) || u.GetExpectedVersion() != 3 {
		t.Errorf("update of web %v, want mask %v and expected version 3", reqs[2], allFields)
	}
	got = runCLI(t, nil, "--controlplane", rs.addr, "-o", "json", "pool", "get", "mtls")
	var mtls lbv1.GetPoolResponse
	if err := protojson.Unmarshal([]byte(got.stdout), &mtls); err != nil || !mtls.GetPool().GetUpstream().GetClientKeySet() ||
		mtls.GetPool().GetUpstream().GetSni() != "backend.internal" {
		t.Errorf("mtls after the update: %v\n%s", err, got.stdout)
	}

	// Applying the first file again reverts both, and prunes nothing.
	got = runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", file)
	checkRun(t, got, 0, `~ pool mtls: upstream; configuration version 6
~ pool web: path_prefix; configuration version 7
= pool api (unchanged)
0 to create, 2 to update, 0 to delete; configuration version 7
`, "")

	// A file with fewer pools deletes the others.
	got = runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", writeFile(t, dir, "api.yaml", "pools:\n  - name: api\n    path_prefix: /api/\n    backends: [{address: \"[fd00::7]:8080\", draining: true, weight: 1}]\n    outlier_detection: {consecutive_failures: 3, base_ejection_time: 60s}\n    timeouts: {connect: 1500ms}\n"))
	checkRun(t, got, 0, `- pool mtls (delete); configuration version 8
- pool web (delete); configuration version 9
= pool api (unchanged)
0 to create, 0 to update, 2 to delete; configuration version 9
`, "")
	rs.take()
	got = runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", writeFile(t, dir, "none.yaml", "pools: []\n"), "--dry-run")
	checkRun(t, got, 0, "- pool api (delete)\n0 to create, 0 to update, 1 to delete\n", "")
	if methods, _ := rs.take(); !slices.Equal(methods, []string{"ListPools"}) {
		t.Errorf("dry run calls %v, want only ListPools", methods)
	}
}

// TestApplyRefused checks that the control plane's refusal of a pool is
// reported, and the pools before it stay.
func TestApplyRefused(t *testing.T) {
	rs := startRealServer(t)
	file := writeFile(t, t.TempDir(), "lb.yaml", "pools:\n  - name: a\n  - name: b\n    backends: [{address: 10.0.0.5:80, weight: 20000}]\n")
	got := runCLI(t, nil, "--controlplane", rs.addr, "apply", "-f", file)
	if got.code != ExitError || got.stdout != "+ pool a (create); configuration version 1\n" ||
		!strings.Contains(got.stderr, "weight") {
		t.Errorf("exit %d stdout %q stderr %q", got.code, got.stdout, got.stderr)
	}
}

func TestNormalized(t *testing.T) {
	a := &lbv1.Pool{Name: "x", PathPrefix: "/", Hosts: []string{"B.example.com.", "a.example.com", "[FD00::0:7]"},
		Backends: []*lbv1.Backend{{Address: "H.example.:01"}, {Address: "[FD00::0:7]:8080", Weight: 3},
			{Address: "not an address"}},
		LoadBalancing: &lbv1.LoadBalancing{Algorithm: lbv1.Algorithm_ALGORITHM_ROUND_ROBIN, SlowStart: durationpb.New(0)},
		Timeouts:      &lbv1.Timeouts{}, Upstream: &lbv1.Upstream{}, Version: 4}
	b := &lbv1.Pool{Name: "x", Hosts: []string{"a.example.com", "b.example.com", "fd00::7"},
		Backends: []*lbv1.Backend{{Address: "h.example:1", Weight: 1}, {Address: "[fd00::7]:8080", Weight: 3},
			{Address: "not an address", Weight: 1}}}
	if n := normalized(a, false); !proto.Equal(n, b) {
		t.Errorf("normalized\n%v\nwant %v", n, b)
	}
	// Retries 0 is not unset.
	zero := uint32(0)
	if n := normalized(&lbv1.Pool{Retry: &lbv1.RetryPolicy{Retries: &zero}}, false); n.GetRetry() == nil {
		t.Errorf("retries 0 dropped")
	}
	if n := normalized(&lbv1.Pool{Retry: &lbv1.RetryPolicy{}}, false); n.GetRetry() != nil {
		t.Errorf("empty retry kept")
	}
}

// TestApplyUnreachable checks that an unreachable control plane is
// reported as by the other commands.
func TestApplyUnreachable(t *testing.T) {
	file := writeFile(t, t.TempDir(), "lb.yaml", applyFile)
	addr := closedAddr(t)
	got := runCLI(t, nil, "--controlplane", addr, "--timeout", "2s", "apply", "-f", file)
	if got.code != ExitError || !strings.Contains(got.stderr, "cannot reach the control plane at "+addr) {
		t.Errorf("exit %d stderr %q", got.code, got.stderr)
	}
}
