package admin_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/admin"
	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/store/boltstore"
)

// env is an admin server on a real gRPC listener over a bbolt store in a
// temporary directory, with a client connected to it. With a fleet, the same
// listener serves a discovery server that Run feeds from the store, as the
// control plane does.
type env struct {
	c     lbv1.AdminServiceClient
	store *boltstore.Store
	// disc and dc, the discovery server and a client of it, are nil without
	// a fleet.
	disc *discovery.Server
	dc   lbv1.DiscoveryServiceClient
}

// newEnv starts an admin server without a fleet.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, false)
}

// newFleetEnv starts an admin server whose fleet is a discovery server.
func newFleetEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, true)
}

func newEnvWith(t *testing.T, withFleet bool) *env {
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
	srv := grpc.NewServer()
	var (
		fleet   admin.Fleet // a nil interface without a fleet, not a nil *discovery.Server
		disc    *discovery.Server
		stopRun = func() {}
	)
	if withFleet {
		disc = discovery.New(hclog.NewNullLogger())
		fleet = disc
		lbv1.RegisterDiscoveryServiceServer(srv, disc)
		runCtx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		go func() { runDone <- disc.Run(runCtx, st) }()
		stopRun = func() {
			cancel()
			select {
			case err := <-runDone:
				if err != nil {
					t.Errorf("discovery Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("discovery Run did not return within 5s of its context's end")
			}
		}
	}
	lbv1.RegisterAdminServiceServer(srv, admin.New(st, fleet, hclog.NewNullLogger()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		stopRun()
		st.Close()
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() {
		if err := conn.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		stopRun()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	e := &env{c: lbv1.NewAdminServiceClient(conn), store: st, disc: disc}
	if withFleet {
		e.dc = lbv1.NewDiscoveryServiceClient(conn)
	}
	return e
}

// testCtx returns a context that ends with the test or after 10s.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) create(t *testing.T, ctx context.Context, p *lbv1.Pool) *lbv1.CreatePoolResponse {
	t.Helper()
	resp, err := e.c.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: p})
	if err != nil {
		t.Fatalf("CreatePool(%v): %v", p, err)
	}
	return resp
}

func (e *env) list(t *testing.T, ctx context.Context) *lbv1.ListPoolsResponse {
	t.Helper()
	resp, err := e.c.ListPools(ctx, &lbv1.ListPoolsRequest{})
	if err != nil {
		t.Fatalf("ListPools: %v", err)
	}
	return resp
}

func (e *env) get(t *testing.T, ctx context.Context, name string) *lbv1.GetPoolResponse {
	t.Helper()
	resp, err := e.c.GetPool(ctx, &lbv1.GetPoolRequest{Name: name})
	if err != nil {
		t.Fatalf("GetPool(%q): %v", name, err)
	}
	return resp
}

// seed creates pool "web" (version 1) and returns it as stored.
func (e *env) seed(t *testing.T, ctx context.Context) *lbv1.Pool {
	t.Helper()
	return e.create(t, ctx, &lbv1.Pool{
		Name:     "web",
		Hosts:    []string{"www.example.com"},
		Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 5)},
	}).GetPool()
}

func be(addr string, w uint32) *lbv1.Backend { return &lbv1.Backend{Address: addr, Weight: w} }

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

func equal(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// wantErr is an expected gRPC status: code, exact message and exact details.
type wantErr struct {
	code    codes.Code
	msg     string
	details []proto.Message
}

func checkErr(t *testing.T, err error, want wantErr) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %v %q", want.code, want.msg)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != want.code {
		t.Errorf("code = %v, want %v (message %q)", st.Code(), want.code, st.Message())
	}
	if st.Message() != want.msg {
		t.Errorf("message:\n got  %q\n want %q", st.Message(), want.msg)
	}
	got := st.Details()
	if len(got) != len(want.details) {
		t.Fatalf("%d details %v, want %d %v", len(got), got, len(want.details), want.details)
	}
	for i, d := range got {
		m, ok := d.(proto.Message)
		if !ok {
			t.Errorf("detail %d: %v", i, d)
			continue
		}
		equal(t, fmt.Sprintf("detail %d", i), m, want.details[i])
	}
}

// invalid is InvalidArgument with one violation of field whose text is msg.
func invalid(field, msg string) wantErr {
	return wantErr{codes.InvalidArgument, msg, []proto.Message{badRequest(field, msg)}}
}

// badRequest builds a BadRequest from field, description pairs.
func badRequest(fieldDesc ...string) *errdetails.BadRequest {
	br := &errdetails.BadRequest{}
	for i := 0; i < len(fieldDesc); i += 2 {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: fieldDesc[i], Description: fieldDesc[i+1]})
	}
	return br
}

func resourceInfo(kind, name string) *errdetails.ResourceInfo {
	return &errdetails.ResourceInfo{ResourceType: kind, ResourceName: name}
}

func poolNotFound(name string) wantErr {
	return wantErr{codes.NotFound, fmt.Sprintf("pool %q does not exist", name), []proto.Message{
		&errdetails.ResourceInfo{ResourceType: "pool", ResourceName: name, Description: "create it with CreatePool"},
	}}
}

func backendNotFound(pool, addr string) wantErr {
	return wantErr{codes.NotFound, fmt.Sprintf("backend %s is not in pool %q", addr, pool), []proto.Message{
		&errdetails.ResourceInfo{ResourceType: "backend", ResourceName: addr, Owner: "pool/" + pool},
	}}
}

func routeTaken(route, owner, pool string) wantErr {
	return wantErr{codes.AlreadyExists,
		fmt.Sprintf("route %s is already served by pool %q; give pool %q other hosts or another path prefix", route, owner, pool),
		[]proto.Message{&errdetails.ResourceInfo{ResourceType: "route", ResourceName: route, Owner: "pool/" + owner}}}
}

const hostPortHint = "must be HOST:PORT, e.g. 10.0.0.5:8080 or [2001:db8::1]:8080"

// call is one admin RPC, reduced to its error.
type call func(ctx context.Context, c lbv1.AdminServiceClient) error

func createPool(p *lbv1.Pool) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: p})
		return err
	}
}

func updatePool(p *lbv1.Pool, m *fieldmaskpb.FieldMask) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.UpdatePool(ctx, &lbv1.UpdatePoolRequest{Pool: p, UpdateMask: m})
		return err
	}
}

func getPool(name string) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.GetPool(ctx, &lbv1.GetPoolRequest{Name: name})
		return err
	}
}

func deletePool(name string) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.DeletePool(ctx, &lbv1.DeletePoolRequest{Name: name})
		return err
	}
}

func addBackend(pool, addr string, weight *uint32) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: pool, Address: addr, Weight: weight})
		return err
	}
}

func removeBackend(pool, addr string) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.RemoveBackend(ctx, &lbv1.RemoveBackendRequest{Pool: pool, Address: addr})
		return err
	}
}

func updateBackend(pool, addr string, weight uint32) call {
	return func(ctx context.Context, c lbv1.AdminServiceClient) error {
		_, err := c.UpdateBackend(ctx, &lbv1.UpdateBackendRequest{Pool: pool, Address: addr, Weight: proto.Uint32(weight)})
		return err
	}
}

// refusedCase is a call that must fail with want and change nothing.
type refusedCase struct {
	name string
	call call
	want wantErr
}

// runRefused runs each case against e, checking its error and that ListPools
// (pools and version) is the same afterwards.
func runRefused(t *testing.T, e *env, cases []refusedCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			before := e.list(t, ctx)
			checkErr(t, tc.call(ctx, e.c), tc.want)
			equal(t, "ListPools after a refused call", e.list(t, ctx), before)
		})
	}
}

func TestInvalidArguments(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx)

	long := strings.Repeat("a", 64)
	nameChars := "may hold only a-z, 0-9, '-', '_' and '.', and must begin and end with a letter or digit"
	manyHosts := make([]string, 101)
	for i := range manyHosts {
		manyHosts[i] = fmt.Sprintf("h%d.example.com", i)
	}
	manyBackends := make([]*lbv1.Backend, 10001)
	for i := range manyBackends {
		manyBackends[i] = be(fmt.Sprintf("10.1.%d.%d:80", i/256, i%256), 1)
	}

	runRefused(t, e, []refusedCase{
		// CreatePool.
		{"create without pool", createPool(nil), invalid("pool", `pool "": is required`)},
		{"create with empty name", createPool(&lbv1.Pool{}), invalid("pool.name", `pool.name "": must not be empty`)},
		{"create with upper-case name", createPool(&lbv1.Pool{Name: "Web"}), invalid("pool.name", `pool.name "Web": `+nameChars)},
		{"create with name ending in a dash", createPool(&lbv1.Pool{Name: "web-"}), invalid("pool.name", `pool.name "web-": `+nameChars)},
		{"create with 64-character name", createPool(&lbv1.Pool{Name: long}), invalid("pool.name", `pool.name "`+long+`": must be at most 63 characters, not 64`)},
		{"create with address nonsense", createPool(&lbv1.Pool{Name: "new", Backends: []*lbv1.Backend{be("nonsense", 1)}}),
			invalid("pool.backends[0].address", `pool.backends[0].address "nonsense": `+hostPortHint)},
		{"create with port 0", createPool(&lbv1.Pool{Name: "new", Backends: []*lbv1.Backend{be("10.0.0.9:0", 1)}}),
			invalid("pool.backends[0].address", `pool.backends[0].address "10.0.0.9:0": port 0 is out of range 1-65535`)},
		{"create with port 65536", createPool(&lbv1.Pool{Name: "new", Backends: []*lbv1.Backend{be("10.0.0.9:80", 1), be("10.0.0.9:65536", 1)}}),
			invalid("pool.backends[1].address", `pool.backends[1].address "10.0.0.9:65536": port 65536 is out of range 1-65535`)},
		{"create with weight 10001", createPool(&lbv1.Pool{Name: "new", Backends: []*lbv1.Backend{be("10.0.0.9:80", 10001)}}),
			invalid("pool.backends[0].weight", `pool.backends[0].weight "10001": must be between 1 and 10000`)},
		{"create with duplicate backends", createPool(&lbv1.Pool{Name: "new", Backends: []*lbv1.Backend{be("10.0.0.9:80", 1), be("10.0.0.9:80", 2)}}),
			invalid("pool.backends[1].address", `pool.backends[1].address "10.0.0.9:80": is listed twice in the pool`)},
		{"create with backends equal once normalised", createPool(&lbv1.Pool{Name: "new", Backends: []*lbv1.Backend{be("localhost:80", 1), be("LOCALHOST:080", 1)}}),
			invalid("pool.backends[1].address", `pool.backends[1].address "LOCALHOST:080": is listed twice in the pool`)},
		{"create with path prefix without slash", createPool(&lbv1.Pool{Name: "new", PathPrefix: "api"}),
			invalid("pool.path_prefix", `pool.path_prefix "api": must begin with "/"`)},
		{"create with host and port", createPool(&lbv1.Pool{Name: "new", Hosts: []string{"example.com:8080"}}),
			invalid("pool.hosts[0]", `pool.hosts[0] "example.com:8080": must be a host name without a port`)},
		{"create with 101 hosts", createPool(&lbv1.Pool{Name: "new", Hosts: manyHosts}),
			invalid("pool.hosts", `pool.hosts "101": at most 100 hosts per pool`)},
		{"create with 10001 backends", createPool(&lbv1.Pool{Name: "new", Backends: manyBackends}),
			invalid("pool.backends", `pool.backends "10001": at most 10000 backends per pool`)},
		{"create reports every invalid field",
			createPool(&lbv1.Pool{Name: "", PathPrefix: "x", Hosts: []string{"a.example.com:1"}, Backends: []*lbv1.Backend{be("nonsense", 1)}}),
			wantErr{codes.InvalidArgument, `pool.name "": must not be empty (and 3 more invalid fields)`, []proto.Message{badRequest(
				"pool.name", `pool.name "": must not be empty`,
				"pool.path_prefix", `pool.path_prefix "x": must begin with "/"`,
				"pool.hosts[0]", `pool.hosts[0] "a.example.com:1": must be a host name without a port`,
				"pool.backends[0].address", `pool.backends[0].address "nonsense": `+hostPortHint,
			)}}},

		// GetPool and DeletePool.
		{"get with empty name", getPool(""), invalid("name", `name "": must not be empty`)},
		{"get with upper-case name", getPool("WEB"), invalid("name", `name "WEB": `+nameChars)},
		{"delete with empty name", deletePool(""), invalid("name", `name "": must not be empty`)},
		{"delete with upper-case name", deletePool("Web"), invalid("name", `name "Web": `+nameChars)},
		{"delete with 64-character name", deletePool(long), invalid("name", `name "`+long+`": must be at most 63 characters, not 64`)},

		// UpdatePool.
		{"update without pool", updatePool(nil, nil), invalid("pool", `pool "": is required`)},
		{"update with empty name", updatePool(&lbv1.Pool{}, nil), invalid("pool.name", `pool.name "": must not be empty`)},
		{"update with unknown mask path", updatePool(&lbv1.Pool{Name: "web"}, mask("name")),
			invalid("update_mask.paths[0]", `update_mask.paths[0] "name": is not an updatable field; use hosts, path_prefix, backends, upstream, load_balancing, health_check, outlier_detection, retry, timeouts or one of their fields (upstream.sni)`)},
		{"update with a bad second mask path", updatePool(&lbv1.Pool{Name: "web"}, mask("hosts", "backends.weight")),
			invalid("update_mask.paths[1]", `update_mask.paths[1] "backends.weight": is not an updatable field; use hosts, path_prefix, backends, upstream, load_balancing, health_check, outlier_detection, retry, timeouts or one of their fields (upstream.sni)`)},
		{"update with host and port", updatePool(&lbv1.Pool{Name: "web", Hosts: []string{"www.example.com:443"}}, mask("hosts")),
			invalid("pool.hosts[0]", `pool.hosts[0] "www.example.com:443": must be a host name without a port`)},
		{"update with path prefix without slash", updatePool(&lbv1.Pool{Name: "web", PathPrefix: "v2"}, nil),
			invalid("pool.path_prefix", `pool.path_prefix "v2": must begin with "/"`)},
		{"update with weight 10001", updatePool(&lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("10.0.0.1:80", 10001)}}, mask("backends")),
			invalid("pool.backends[0].weight", `pool.backends[0].weight "10001": must be between 1 and 10000`)},
		{"update with duplicate backends", updatePool(&lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.1:0080", 1)}}, nil),
			invalid("pool.backends[1].address", `pool.backends[1].address "10.0.0.1:0080": is listed twice in the pool`)},

		// AddBackend.
		{"add to empty pool name", addBackend("", "10.0.0.9:80", nil), invalid("pool", `pool "": must not be empty`)},
		{"add to upper-case pool name", addBackend("Web", "10.0.0.9:80", nil), invalid("pool", `pool "Web": `+nameChars)},
		{"add to 64-character pool name", addBackend(long, "10.0.0.9:80", nil), invalid("pool", `pool "`+long+`": must be at most 63 characters, not 64`)},
		{"add address nonsense", addBackend("web", "nonsense", nil), invalid("address", `address "nonsense": `+hostPortHint)},
		{"add empty address", addBackend("web", "", nil), invalid("address", `address "": must not be empty; write it as HOST:PORT, e.g. 10.0.0.5:8080`)},
		{"add port 0", addBackend("web", "10.0.0.9:0", nil), invalid("address", `address "10.0.0.9:0": port 0 is out of range 1-65535`)},
		{"add port 65536", addBackend("web", "10.0.0.9:65536", nil), invalid("address", `address "10.0.0.9:65536": port 65536 is out of range 1-65535`)},
		{"add explicit weight 0", addBackend("web", "10.0.0.9:80", proto.Uint32(0)), invalid("weight", `weight "0": must be between 1 and 10000`)},
		{"add weight 10001", addBackend("web", "10.0.0.9:80", proto.Uint32(10001)), invalid("weight", `weight "10001": must be between 1 and 10000`)},
		{"add with bad pool and address", addBackend("", "nonsense", nil),
			wantErr{codes.InvalidArgument, `pool "": must not be empty (and 1 more invalid fields)`, []proto.Message{badRequest(
				"pool", `pool "": must not be empty`,
				"address", `address "nonsense": `+hostPortHint,
			)}}},

		// RemoveBackend and UpdateBackend.
		{"remove from empty pool name", removeBackend("", "10.0.0.1:80"), invalid("pool", `pool "": must not be empty`)},
		{"remove address nonsense", removeBackend("web", "nonsense"), invalid("address", `address "nonsense": `+hostPortHint)},
		{"remove port 65536", removeBackend("web", "10.0.0.1:65536"), invalid("address", `address "10.0.0.1:65536": port 65536 is out of range 1-65535`)},
		{"set weight 0", updateBackend("web", "10.0.0.1:80", 0), invalid("weight", `weight "0": must be between 1 and 10000`)},
		{"set weight 10001", updateBackend("web", "10.0.0.1:80", 10001), invalid("weight", `weight "10001": must be between 1 and 10000`)},
		{"set weight on port 0", updateBackend("web", "10.0.0.1:0", 2), invalid("address", `address "10.0.0.1:0": port 0 is out of range 1-65535`)},
		{"set weight in upper-case pool", updateBackend("WEB", "10.0.0.1:80", 2), invalid("pool", `pool "WEB": `+nameChars)},
	})
}

func TestNotFound(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx)

	runRefused(t, e, []refusedCase{
		{"get", getPool("missing"), poolNotFound("missing")},
		{"update", updatePool(&lbv1.Pool{Name: "missing"}, nil), poolNotFound("missing")},
		{"update with mask", updatePool(&lbv1.Pool{Name: "missing", PathPrefix: "/x"}, mask("path_prefix")), poolNotFound("missing")},
		{"delete", deletePool("missing"), poolNotFound("missing")},
		{"add backend", addBackend("missing", "10.0.0.1:80", nil), poolNotFound("missing")},
		{"remove backend", removeBackend("missing", "10.0.0.1:80"), poolNotFound("missing")},
		{"update backend", updateBackend("missing", "10.0.0.1:80", 3), poolNotFound("missing")},
		{"remove unknown backend", removeBackend("web", "10.0.0.9:80"), backendNotFound("web", "10.0.0.9:80")},
		{"remove unknown backend, named loosely", removeBackend("web", "10.0.0.9:0080"), backendNotFound("web", "10.0.0.9:80")},
		{"update unknown backend", updateBackend("web", "Backend.Example.com:443", 3), backendNotFound("web", "backend.example.com:443")},
	})
}

func TestAlreadyExists(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx) // web: www.example.com/
	e.create(t, ctx, &lbv1.Pool{Name: "catchall"})
	e.create(t, ctx, &lbv1.Pool{Name: "api", Hosts: []string{"api.example.com"}, PathPrefix: "/v1"})

	poolExists := wantErr{codes.AlreadyExists, `pool "web" already exists`, []proto.Message{resourceInfo("pool", "web")}}
	backendExists := func(addr string) wantErr {
		return wantErr{codes.AlreadyExists, fmt.Sprintf(`backend %s is already in pool "web"`, addr), []proto.Message{resourceInfo("backend", addr)}}
	}
	runRefused(t, e, []refusedCase{
		{"duplicate pool", createPool(&lbv1.Pool{Name: "web"}), poolExists},
		{"duplicate pool with other routes", createPool(&lbv1.Pool{Name: "web", Hosts: []string{"new.example.com"}, PathPrefix: "/new"}), poolExists},
		{"duplicate backend", addBackend("web", "10.0.0.1:80", proto.Uint32(3)), backendExists("10.0.0.1:80")},
		{"duplicate backend once normalised", addBackend("web", "10.0.0.2:0080", nil), backendExists("10.0.0.2:80")},
		{"second catch-all pool", createPool(&lbv1.Pool{Name: "other"}), routeTaken("*/", "catchall", "other")},
		{"second catch-all pool, explicit slash", createPool(&lbv1.Pool{Name: "other", PathPrefix: "/"}), routeTaken("*/", "catchall", "other")},
		{"same host and prefix", createPool(&lbv1.Pool{Name: "other", Hosts: []string{"other.example.com", "API.Example.com."}, PathPrefix: "/v1"}),
			routeTaken("api.example.com/v1", "api", "other")},
		{"same host, default prefix", createPool(&lbv1.Pool{Name: "other", Hosts: []string{"www.example.com"}}), routeTaken("www.example.com/", "web", "other")},
		{"update onto the catch-all route", updatePool(&lbv1.Pool{Name: "api"}, nil), routeTaken("*/", "catchall", "api")},
		{"update hosts onto another pool's route", updatePool(&lbv1.Pool{Name: "catchall", Hosts: []string{"www.example.com"}, PathPrefix: "/ignored"}, mask("hosts")),
			routeTaken("www.example.com/", "web", "catchall")},
	})
}
