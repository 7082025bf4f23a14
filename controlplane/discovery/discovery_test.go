package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/controlplane/store/boltstore"
	"github.com/lb-project/lb/internal/apiconv"
	"github.com/lb-project/lb/internal/poolspec"
)

// env is a discovery server on a real gRPC listener with a client connected
// to it. When it has a store, Run feeds the server from it.
type env struct {
	disc   *discovery.Server
	client lbv1.DiscoveryServiceClient
	store  *boltstore.Store

	runOnce sync.Once
	runDone chan error
	runErr  error

	// stopRun, stopServer and closeStore tear the env down, in that order;
	// close runs them once, at the latest when the test ends.
	closeOnce  sync.Once
	stopRun    func()
	stopServer func()
	closeStore func()
}

// newEnv starts a discovery server fed by a bbolt store in a temporary
// directory. seed, if not nil, writes to the store before Run starts.
func newEnv(t *testing.T, seed func(ctx context.Context, st *boltstore.Store) error) *env {
	t.Helper()
	return newEnvIn(t, t.TempDir(), seed)
}

// newEnvIn is newEnv over the store in dir, which may hold one already.
func newEnvIn(t *testing.T, dir string, seed func(ctx context.Context, st *boltstore.Store) error) *env {
	t.Helper()
	st, err := boltstore.Open(dir)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	closeStore := func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}
	if seed != nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := seed(ctx, st); err != nil {
			closeStore()
			t.Fatalf("seed the store: %v", err)
		}
	}
	e := newServer(t)
	e.store = st
	e.closeStore = closeStore
	runCtx, stop := context.WithTimeout(context.Background(), time.Minute)
	e.runDone = make(chan error, 1)
	go func() { e.runDone <- e.disc.Run(runCtx, st) }()
	e.stopRun = func() {
		stop()
		if err := e.waitRun(t); err != nil {
			t.Errorf("Run returned %v after its context was cancelled, want nil", err)
		}
	}
	return e
}

// newServer starts a discovery server that nothing feeds; tests Publish to it.
// configure, if given, sets the server up before it serves.
func newServer(t *testing.T, configure ...func(*discovery.Server)) *env {
	t.Helper()
	disc := discovery.New(hclog.NewNullLogger())
	for _, f := range configure {
		f(disc)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	lbv1.RegisterDiscoveryServiceServer(srv, disc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		t.Fatalf("dial: %v", err)
	}
	e := &env{disc: disc, client: lbv1.NewDiscoveryServiceClient(conn)}
	e.stopServer = func() {
		if err := conn.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(e.close)
	return e
}

// close stops Run, then the gRPC server (ending every stream), then closes
// the store. It is idempotent.
func (e *env) close() {
	e.closeOnce.Do(func() {
		for _, f := range []func(){e.stopRun, e.stopServer, e.closeStore} {
			if f != nil {
				f()
			}
		}
	})
}

// waitRun waits up to 5s for Run to return and gives its error.
func (e *env) waitRun(t *testing.T) error {
	t.Helper()
	e.runOnce.Do(func() {
		select {
		case e.runErr = <-e.runDone:
		case <-time.After(5 * time.Second):
			e.runErr = errors.New("Run did not return within 5s")
		}
	})
	return e.runErr
}

func (e *env) update(t *testing.T, fn func(tx store.Tx)) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	v, err := e.store.Update(ctx, func(tx store.Tx) error { fn(tx); return nil })
	if err != nil {
		t.Fatalf("store update: %v", err)
	}
	return v
}

func (e *env) state(t *testing.T) store.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, err := e.store.Read(ctx)
	if err != nil {
		t.Fatalf("store read: %v", err)
	}
	return st
}

// stream is one client StreamConfig call; its context ends with the test
// or after 10s, so no Recv blocks for longer.
type stream struct {
	lbv1.DiscoveryService_StreamConfigClient
	cancel context.CancelFunc
}

// open starts a stream and sends first, if not nil, as its first message.
func (e *env) open(t *testing.T, first *lbv1.StreamConfigRequest) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	s, err := e.client.StreamConfig(ctx)
	if err != nil {
		t.Fatalf("StreamConfig: %v", err)
	}
	if first != nil {
		if err := s.Send(first); err != nil {
			t.Fatalf("send first message: %v", err)
		}
	}
	return &stream{s, cancel}
}

// connect opens a stream with a hello from node.
func (e *env) connect(t *testing.T, node string) *stream {
	t.Helper()
	return e.open(t, hello(node, 0))
}

func (s *stream) recv(t *testing.T) *lbv1.StreamConfigResponse {
	t.Helper()
	m, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return m
}

func (s *stream) send(t *testing.T, m *lbv1.StreamConfigRequest) {
	t.Helper()
	if err := s.Send(m); err != nil {
		t.Fatalf("Send(%v): %v", m, err)
	}
}

// recvErr reads until the stream fails and returns that error.
func (s *stream) recvErr(t *testing.T) error {
	t.Helper()
	for {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
}

func hello(node string, v uint64) *lbv1.StreamConfigRequest {
	return &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Hello{Hello: &lbv1.Hello{NodeId: node, Version: v}}}
}

func ack(v uint64) *lbv1.StreamConfigRequest {
	return &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Ack{Ack: &lbv1.Ack{Version: v}}}
}

func nack(v uint64, reason string) *lbv1.StreamConfigRequest {
	return &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Nack{Nack: &lbv1.Nack{Version: v, Reason: reason}}}
}

func pool(name string, addrs ...string) poolspec.Pool {
	p := poolspec.Pool{Name: name, Hosts: []string{name + ".example.com"}}
	for _, a := range addrs {
		p.Backends = append(p.Backends, poolspec.Backend{Address: a, Weight: 1})
	}
	return p
}

// full is the message that carries st.
func full(st store.State) *lbv1.StreamConfigResponse {
	m := &lbv1.StreamConfigResponse{Version: st.Version, Full: true}
	for _, p := range st.Pools {
		m.Pools = append(m.Pools, apiconv.PoolToProto(p))
	}
	return m
}

// delta is the update that takes a data plane holding held to next when
// every change between them was published: the pools that changed after
// held, and the names of those that held has and next has not.
func delta(held, next store.State) *lbv1.StreamConfigResponse {
	m := &lbv1.StreamConfigResponse{Version: next.Version}
	for _, p := range next.Pools {
		if p.Version > held.Version {
			m.Pools = append(m.Pools, apiconv.PoolToProto(p))
		}
	}
	for _, p := range held.Pools {
		if _, ok := next.Pool(p.Name); !ok {
			m.RemovedPools = append(m.RemovedPools, p.Name)
		}
	}
	return m
}

// equalUpdate compares two updates exactly, but for the order of
// removed_pools, which the protocol leaves open.
func equalUpdate(t *testing.T, what string, got, want *lbv1.StreamConfigResponse) {
	t.Helper()
	sorted := func(m *lbv1.StreamConfigResponse) *lbv1.StreamConfigResponse {
		m = proto.Clone(m).(*lbv1.StreamConfigResponse)
		slices.Sort(m.RemovedPools)
		return m
	}
	if !proto.Equal(sorted(got), sorted(want)) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// replica is what a data plane holds, built only from the updates it
// receives. It applies them as dataplane/configclient does: a full update
// replaces everything; a delta first drops removed_pools, then puts pools.
type replica struct {
	version uint64
	pools   map[string]*lbv1.Pool
}

// newReplica is a data plane that already holds st (an empty State for one
// that holds nothing).
func newReplica(st store.State) *replica {
	r := &replica{version: st.Version, pools: make(map[string]*lbv1.Pool)}
	for _, p := range st.Pools {
		r.pools[p.Name] = apiconv.PoolToProto(p)
	}
	return r
}

// apply applies m and checks what the protocol promises of any update: a
// full one has no removals; a delta carries only pools changed after the
// version held, at most at m's version; no pool is listed twice.
func (r *replica) apply(t *testing.T, m *lbv1.StreamConfigResponse) {
	t.Helper()
	seen := make(map[string]bool)
	for _, p := range m.GetPools() {
		if seen[p.GetName()] {
			t.Errorf("update %d lists pool %q twice", m.GetVersion(), p.GetName())
		}
		seen[p.GetName()] = true
		if p.GetVersion() > m.GetVersion() {
			t.Errorf("update %d carries pool %q at the later version %d", m.GetVersion(), p.GetName(), p.GetVersion())
		}
	}
	if m.GetFull() {
		if len(m.GetRemovedPools()) > 0 {
			t.Errorf("full update %d has removed_pools %q", m.GetVersion(), m.GetRemovedPools())
		}
		r.pools = make(map[string]*lbv1.Pool)
	} else {
		for _, p := range m.GetPools() {
			if p.GetVersion() <= r.version {
				t.Errorf("delta %d (from %d) carries pool %q of version %d, which the data plane holds already",
					m.GetVersion(), r.version, p.GetName(), p.GetVersion())
			}
		}
		for _, name := range m.GetRemovedPools() {
			delete(r.pools, name)
		}
	}
	for _, p := range m.GetPools() {
		r.pools[p.GetName()] = p
	}
	r.version = m.GetVersion()
}

// check fails unless the replica holds exactly st.
func (r *replica) check(t *testing.T, what string, st store.State) {
	t.Helper()
	got := &lbv1.StreamConfigResponse{Version: r.version, Full: true}
	for _, p := range r.pools {
		got.Pools = append(got.Pools, p)
	}
	slices.SortFunc(got.Pools, func(a, b *lbv1.Pool) int { return strings.Compare(a.GetName(), b.GetName()) })
	equal(t, what+": the data plane's configuration", got, full(st))
}

// recvApply receives the next update, checks it is want, applies it to r
// and checks that r then holds st.
func (s *stream) recvApply(t *testing.T, what string, r *replica, want *lbv1.StreamConfigResponse, st store.State) *lbv1.StreamConfigResponse {
	t.Helper()
	m := s.recv(t)
	equalUpdate(t, what, m, want)
	r.apply(t, m)
	r.check(t, what, st)
	return m
}

func equal(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

func checkStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error %v: code %v, want %v", err, status.Code(err), code)
	}
	if got := status.Convert(err).Message(); got != msg {
		t.Errorf("message %q, want %q", got, msg)
	}
}

// waitFor polls cond until it holds, failing after 5s. Acks are recorded and
// closed streams forgotten asynchronously, with nothing to wait on but Nodes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func nodeIDs(ns []discovery.NodeStatus) []string {
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.NodeID
	}
	return ids
}

// The first update takes the data plane from the version its hello names
// to the latest: a delta when this control plane published that version or
// an older one since its first (its horizon), else the full configuration.
func TestFirstMessageAfterHello(t *testing.T) {
	twoPools := func(ctx context.Context, st *boltstore.Store) error {
		for _, p := range []poolspec.Pool{pool("b", "10.0.0.2:80"), pool("a", "10.0.0.1:80", "10.0.0.3:8080")} {
			if _, err := st.Update(ctx, func(tx store.Tx) error { tx.Put(p); return nil }); err != nil {
				return err
			}
		}
		return nil
	}
	twoPoolsFull := &lbv1.StreamConfigResponse{Version: 2, Full: true, Pools: []*lbv1.Pool{
		{Name: "a", Hosts: []string{"a.example.com"}, Backends: []*lbv1.Backend{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.3:8080", Weight: 1}}, Version: 2},
		{Name: "b", Hosts: []string{"b.example.com"}, Backends: []*lbv1.Backend{{Address: "10.0.0.2:80", Weight: 1}}, Version: 1},
	}}
	tests := []struct {
		name  string
		seed  func(ctx context.Context, st *boltstore.Store) error
		hello *lbv1.StreamConfigRequest
		held  store.State // what the data plane holds, as far as it matters
		want  *lbv1.StreamConfigResponse
	}{
		{
			// Version 0 is the control plane's first: a node without
			// configuration already holds it.
			name:  "empty store, node without configuration",
			hello: hello("node-1", 0),
			want:  &lbv1.StreamConfigResponse{Version: 0},
		},
		{
			name:  "empty store, node ahead of it",
			hello: hello("node-1", 3),
			held:  store.State{Version: 3, Pools: []poolspec.Pool{pool("gone")}},
			want:  &lbv1.StreamConfigResponse{Version: 0, Full: true},
		},
		{
			name:  "two pools, node without configuration",
			seed:  twoPools,
			hello: hello("node-1", 0),
			want:  twoPoolsFull,
		},
		{
			name:  "two pools, node at a version before the control plane's first",
			seed:  twoPools,
			hello: hello("node-1", 1),
			held:  store.State{Version: 1, Pools: []poolspec.Pool{{Name: "b", Hosts: []string{"b.example.com"}, Version: 1}}},
			want:  twoPoolsFull,
		},
		{
			name:  "two pools, node ahead of the control plane",
			seed:  twoPools,
			hello: hello("node-1", 3),
			held:  store.State{Version: 3, Pools: []poolspec.Pool{pool("c")}},
			want:  twoPoolsFull,
		},
		{
			name: "node already holds the version",
			seed: func(ctx context.Context, st *boltstore.Store) error {
				_, err := st.Update(ctx, func(tx store.Tx) error { tx.Put(pool("a")); return nil })
				return err
			},
			hello: hello("node-1", 1),
			held:  store.State{Version: 1, Pools: []poolspec.Pool{{Name: "a", Hosts: []string{"a.example.com"}, Version: 1}}},
			want:  &lbv1.StreamConfigResponse{Version: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.seed)
			s := e.open(t, tt.hello)
			s.recvApply(t, "first message", newReplica(tt.held), tt.want, e.state(t))
		})
	}
}

func TestCommitsArePushed(t *testing.T) {
	e := newEnv(t, nil)
	s := e.connect(t, "node-1")
	r := newReplica(store.State{})
	prev := e.state(t)
	s.recvApply(t, "first message", r, &lbv1.StreamConfigResponse{Version: 0}, prev)

	steps := []struct {
		name string
		fn   func(tx store.Tx)
		want []string // names of the pools the delta carries
		gone []string // names of the pools it removes
	}{
		{"create a pool", func(tx store.Tx) { tx.Put(pool("web", "10.0.0.1:80")) }, []string{"web"}, nil},
		{"create two more", func(tx store.Tx) { tx.Put(pool("api")); tx.Put(pool("zzz", "[2001:db8::1]:443")) }, []string{"api", "zzz"}, nil},
		{"change one", func(tx store.Tx) { tx.Put(pool("web", "10.0.0.1:80", "10.0.0.2:80")) }, []string{"web"}, nil},
		{"delete one", func(tx store.Tx) { tx.Delete("api") }, nil, []string{"api"}},
		{"change one, delete one", func(tx store.Tx) { tx.Put(pool("zzz")); tx.Delete("web") }, []string{"zzz"}, []string{"web"}},
		{"delete all", func(tx store.Tx) { tx.Delete("zzz") }, nil, []string{"zzz"}},
		{"recreate one", func(tx store.Tx) { tx.Put(pool("api", "10.0.0.3:80")) }, []string{"api"}, nil},
	}
	for i, step := range steps {
		v := e.update(t, step.fn)
		if v != uint64(i+1) {
			t.Fatalf("%s: committed version %d, want %d", step.name, v, i+1)
		}
		next := e.state(t)
		m := s.recvApply(t, step.name, r, delta(prev, next), next)
		// The same, spelled out: nothing but what the step changed.
		var names []string
		for _, p := range m.GetPools() {
			names = append(names, p.GetName())
		}
		if !slices.Equal(names, step.want) || !slices.Equal(m.GetRemovedPools(), step.gone) || m.GetFull() {
			t.Errorf("%s: update carries pools %q and removes %q (full %v), want pools %q and removals %q, not full",
				step.name, names, m.GetRemovedPools(), m.GetFull(), step.want, step.gone)
		}
		prev = next
	}
}

// A stream that joins late gets one update straight to the latest version:
// from version 0, which this control plane published first, that is a delta
// of every pool (and of the pools deleted since, which it never had).
func TestLateJoinerGetsOnlyTheLatest(t *testing.T) {
	e := newEnv(t, nil)
	early := e.connect(t, "early")
	var states []store.State
	for i := range 3 {
		e.update(t, func(tx store.Tx) { tx.Put(pool(fmt.Sprintf("p%d", i))) })
		states = append(states, e.state(t))
		// Wait for each version to be published before the next commit:
		// a store watch may coalesce quick commits, and a version this
		// control plane never published is answered with a full snapshot.
		for m := early.recv(t); m.GetVersion() != uint64(i+1); m = early.recv(t) {
		}
	}
	// Version 3 is published; a new stream starts from it.
	late := e.connect(t, "late")
	late.recvApply(t, "late joiner's first message", newReplica(store.State{}), delta(store.State{}, states[2]), states[2])
	// One that held version 1 gets just what changed since.
	resumed := e.open(t, hello("resumed", 1))
	resumed.recvApply(t, "first message from version 1", newReplica(states[0]), delta(states[0], states[2]), states[2])
}

func TestAckAndNackAreRecorded(t *testing.T) {
	e := newEnv(t, nil)
	before := time.Now()
	s := e.connect(t, "node-1")
	s.recv(t)
	e.update(t, func(tx store.Tx) { tx.Put(pool("web")) })
	if v := s.recv(t).GetVersion(); v != 1 {
		t.Fatalf("second message has version %d, want 1", v)
	}

	node := func() discovery.NodeStatus {
		ns := e.disc.Nodes()
		if len(ns) != 1 {
			t.Fatalf("Nodes() = %+v, want one node", ns)
		}
		return ns[0]
	}
	waitFor(t, "SentVersion 1", func() bool { return node().SentVersion == 1 })

	steps := []struct {
		name string
		msgs []*lbv1.StreamConfigRequest
		done func(n discovery.NodeStatus) bool // the last message is recorded
		want discovery.NodeStatus              // NodeID, Peer and ConnectedAt are checked apart
	}{
		{
			name: "ack",
			msgs: []*lbv1.StreamConfigRequest{ack(1)},
			done: func(n discovery.NodeStatus) bool { return n.AckedVersion == 1 },
			want: discovery.NodeStatus{SentVersion: 1, AckedVersion: 1},
		},
		{
			name: "nack",
			msgs: []*lbv1.StreamConfigRequest{nack(1, "pool web: no backends")},
			done: func(n discovery.NodeStatus) bool { return n.NackedVersion == 1 },
			want: discovery.NodeStatus{SentVersion: 1, AckedVersion: 1, NackedVersion: 1, NackReason: "pool web: no backends"},
		},
		{
			name: "an older ack does not lower the acked version; a later nack replaces the last",
			msgs: []*lbv1.StreamConfigRequest{ack(0), nack(0, "second")},
			done: func(n discovery.NodeStatus) bool { return n.NackReason == "second" },
			want: discovery.NodeStatus{SentVersion: 1, AckedVersion: 1, NackedVersion: 0, NackReason: "second"},
		},
		{
			name: "a newer ack",
			msgs: []*lbv1.StreamConfigRequest{ack(7)},
			done: func(n discovery.NodeStatus) bool { return n.AckedVersion == 7 },
			want: discovery.NodeStatus{SentVersion: 1, AckedVersion: 7, NackedVersion: 0, NackReason: "second"},
		},
	}
	for _, step := range steps {
		for _, m := range step.msgs {
			s.send(t, m)
		}
		waitFor(t, step.name, func() bool { return step.done(node()) })
		got := node()
		if got.NodeID != "node-1" || !strings.HasPrefix(got.Peer, "127.0.0.1:") ||
			got.ConnectedAt.Before(before) || got.ConnectedAt.After(time.Now()) {
			t.Errorf("%s: node identity %+v, want node-1 from 127.0.0.1 connected since the test began", step.name, got)
		}
		got.NodeID, got.Peer, got.ConnectedAt = "", "", time.Time{}
		if got != step.want {
			t.Errorf("%s: status %+v, want %+v", step.name, got, step.want)
		}
	}
}

func TestNodesListsOpenStreams(t *testing.T) {
	e := newEnv(t, nil)
	if ns := e.disc.Nodes(); len(ns) != 0 {
		t.Fatalf("Nodes() before any stream = %+v", ns)
	}
	b := e.connect(t, "node-b")
	b.recv(t) // a stream is listed before it is sent anything
	a1 := e.connect(t, "node-a")
	a1.recv(t)
	a2 := e.connect(t, "node-a") // the same node twice, e.g. reconnecting
	a2.recv(t)

	ns := e.disc.Nodes()
	if got, want := nodeIDs(ns), []string{"node-a", "node-a", "node-b"}; !equalStrings(got, want) {
		t.Fatalf("Nodes() ids = %q, want %q", got, want)
	}
	if !ns[0].ConnectedAt.Before(ns[1].ConnectedAt) {
		t.Errorf("streams of one node not ordered by connection time: %v, %v", ns[0].ConnectedAt, ns[1].ConnectedAt)
	}

	// A stream the client cancels is forgotten.
	b.cancel()
	checkStatus(t, b.recvErr(t), codes.Canceled, "context canceled")
	waitFor(t, "node-b to be forgotten", func() bool { return equalStrings(nodeIDs(e.disc.Nodes()), []string{"node-a", "node-a"}) })

	// A stream the client half-closes ends cleanly and is forgotten.
	if err := a1.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := a1.recvErr(t); err != io.EOF {
		t.Errorf("after CloseSend, Recv error = %v, want io.EOF (status OK)", err)
	}
	waitFor(t, "one node-a to be forgotten", func() bool { return len(e.disc.Nodes()) == 1 })

	// The remaining one still gets updates.
	prev := e.state(t)
	e.update(t, func(tx store.Tx) { tx.Put(pool("web")) })
	equalUpdate(t, "update to the remaining stream", a2.recv(t), delta(prev, e.state(t)))
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestProtocolErrors(t *testing.T) {
	const notHello = "first message on a StreamConfig stream must be a hello"
	const onlyAcks = "after the hello, a data plane may only send ack, nack or health_report"
	tests := []struct {
		name string
		msgs []*lbv1.StreamConfigRequest
		msg  string
	}{
		{"ack first", []*lbv1.StreamConfigRequest{ack(1)}, notHello},
		{"nack first", []*lbv1.StreamConfigRequest{nack(1, "no")}, notHello},
		{"empty message first", []*lbv1.StreamConfigRequest{{}}, notHello},
		{"empty node id", []*lbv1.StreamConfigRequest{hello("", 0)}, "hello.node_id: must not be empty"},
		{"empty node id with a version", []*lbv1.StreamConfigRequest{hello("", 3)}, "hello.node_id: must not be empty"},
		{"second hello", []*lbv1.StreamConfigRequest{hello("node-1", 0), hello("node-1", 0)}, onlyAcks},
		{"empty message after the hello", []*lbv1.StreamConfigRequest{hello("node-1", 0), ack(0), {}}, onlyAcks},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			s := e.open(t, nil)
			for _, m := range tt.msgs {
				s.send(t, m)
			}
			checkStatus(t, s.recvErr(t), codes.InvalidArgument, tt.msg)
			waitFor(t, "the stream to be forgotten", func() bool { return len(e.disc.Nodes()) == 0 })
		})
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	const msg = "control plane is shutting down"
	e := newEnv(t, nil)
	a, b := e.connect(t, "node-a"), e.connect(t, "node-b")
	a.recv(t)
	b.recv(t)

	e.disc.Shutdown()
	checkStatus(t, a.recvErr(t), codes.Unavailable, msg)
	checkStatus(t, b.recvErr(t), codes.Unavailable, msg)
	waitFor(t, "streams to be forgotten", func() bool { return len(e.disc.Nodes()) == 0 })

	e.disc.Shutdown() // idempotent
	// New streams are refused after their hello.
	c := e.connect(t, "node-c")
	checkStatus(t, c.recvErr(t), codes.Unavailable, msg)
	if ns := e.disc.Nodes(); len(ns) != 0 {
		t.Errorf("Nodes() after Shutdown = %+v", ns)
	}
	// Protocol errors are still reported as such.
	d := e.connect(t, "")
	checkStatus(t, d.recvErr(t), codes.InvalidArgument, "hello.node_id: must not be empty")
}

func TestBurstsCoalesceAndConverge(t *testing.T) {
	e := newEnv(t, nil)
	s := e.connect(t, "node-1")
	r := newReplica(store.State{})
	s.recvApply(t, "first message", r, &lbv1.StreamConfigResponse{Version: 0}, e.state(t))

	const bursts, perBurst = 5, 20
	var last uint64
	for burst := range bursts {
		for i := range perBurst {
			e.update(t, func(tx store.Tx) {
				if i == perBurst-1 && burst%2 == 1 {
					tx.Delete(fmt.Sprintf("p%d", burst)) // some deletions coalesce too
				}
				tx.Put(pool(fmt.Sprintf("p%d", i), fmt.Sprintf("10.0.%d.%d:80", burst, i+1)))
			})
		}
		want := uint64((burst + 1) * perBurst)
		n := 0
		for {
			m := s.recv(t)
			n++
			if m.GetVersion() <= last || m.GetFull() {
				t.Fatalf("burst %d: got version %d (full %v) after %d, want a newer delta", burst, m.GetVersion(), m.GetFull(), last)
			}
			if m.GetVersion() > want {
				t.Fatalf("burst %d: version %d is beyond the last committed %d", burst, m.GetVersion(), want)
			}
			r.apply(t, m)
			last = m.GetVersion()
			if last == want {
				r.check(t, fmt.Sprintf("burst %d: last message", burst), e.state(t))
				break
			}
		}
		if n > perBurst {
			t.Errorf("burst %d: %d messages for %d commits", burst, n, perBurst)
		}
		s.send(t, ack(last))
	}
	waitFor(t, "the last ack", func() bool {
		ns := e.disc.Nodes()
		return len(ns) == 1 && ns[0].AckedVersion == last && ns[0].SentVersion == last
	})
}

func TestPublishIgnoresOlderVersions(t *testing.T) {
	e := newServer(t)
	// A stream that connects before anything is published waits for it; its
	// version 0 is below the first one published, so it gets everything.
	s := e.connect(t, "node-1")
	r := newReplica(store.State{})
	a := pool("a", "10.0.0.1:80")
	a.Version = 5
	st5 := store.State{Version: 5, Pools: []poolspec.Pool{a}}
	e.disc.Publish(st5)
	s.recvApply(t, "first message", r, full(st5), st5)

	e.disc.Publish(store.State{Version: 3})
	e.disc.Publish(store.State{Version: 5})
	b := pool("b")
	b.Version = 6
	st6 := store.State{Version: 6, Pools: []poolspec.Pool{a, b}}
	e.disc.Publish(st6)
	s.recvApply(t, "after older, equal and newer states", r, delta(st5, st6), st6)
	if v := e.disc.Version(); v != 6 {
		t.Errorf("Version() = %d, want 6", v)
	}

	// A new stream gets the newest state.
	e.connect(t, "node-2").recvApply(t, "late joiner", newReplica(store.State{}), full(st6), st6)
}

func TestVersionZeroIsSentOnce(t *testing.T) {
	e := newServer(t)
	if v := e.disc.Version(); v != 0 {
		t.Errorf("Version() before any Publish = %d, want 0", v)
	}
	s := e.connect(t, "node-1")
	r := newReplica(store.State{})
	e.disc.Publish(store.State{Version: 0})
	s.recvApply(t, "first message", r, &lbv1.StreamConfigResponse{Version: 0}, store.State{})
	e.disc.Publish(store.State{Version: 0})
	e.disc.Publish(store.State{Version: 1})
	s.recvApply(t, "second message", r, &lbv1.StreamConfigResponse{Version: 1}, store.State{Version: 1})
}

func TestRunEndsWhenStoreCloses(t *testing.T) {
	e := newEnv(t, nil)
	s := e.connect(t, "node-1")
	s.recv(t) // Run has published and waits for commits
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	err := e.waitRun(t)
	if err == nil || err.Error() != "discovery: store watch closed" {
		t.Fatalf("Run after the store closed returned %v, want discovery: store watch closed", err)
	}
	e.runErr = nil // the cleanup expects nil
}

func TestRunReturnsNilWhenCancelled(t *testing.T) {
	st, err := boltstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	disc := discovery.New(hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	done := make(chan error, 1)
	go func() { done <- disc.Run(ctx, st) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run with a cancelled context returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run with a cancelled context did not return within 5s")
	}
}
