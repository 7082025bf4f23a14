package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
}

// newEnv starts a discovery server fed by a bbolt store in a temporary
// directory. seed, if not nil, writes to the store before Run starts.
func newEnv(t *testing.T, seed func(ctx context.Context, st *boltstore.Store) error) *env {
	t.Helper()
	st, err := boltstore.Open(t.TempDir())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	if seed != nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := seed(ctx, st); err != nil {
			t.Fatalf("seed the store: %v", err)
		}
	}
	e := newServer(t)
	e.store = st
	runCtx, stop := context.WithTimeout(context.Background(), time.Minute)
	e.runDone = make(chan error, 1)
	go func() { e.runDone <- e.disc.Run(runCtx, st) }()
	t.Cleanup(func() {
		stop()
		if err := e.waitRun(t); err != nil {
			t.Errorf("Run returned %v after its context was cancelled, want nil", err)
		}
	})
	return e
}

// newServer starts a discovery server that nothing feeds; tests Publish to it.
func newServer(t *testing.T) *env {
	t.Helper()
	disc := discovery.New(hclog.NewNullLogger())
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
	t.Cleanup(func() {
		if err := conn.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &env{disc: disc, client: lbv1.NewDiscoveryServiceClient(conn)}
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

func TestHelloGetsFullConfigurationFirst(t *testing.T) {
	tests := []struct {
		name  string
		seed  func(ctx context.Context, st *boltstore.Store) error
		hello *lbv1.StreamConfigRequest
		want  *lbv1.StreamConfigResponse
	}{
		{
			name:  "empty store",
			hello: hello("node-1", 0),
			want:  &lbv1.StreamConfigResponse{Version: 0, Full: true},
		},
		{
			name: "two pools",
			seed: func(ctx context.Context, st *boltstore.Store) error {
				for _, p := range []poolspec.Pool{pool("b", "10.0.0.2:80"), pool("a", "10.0.0.1:80", "10.0.0.3:8080")} {
					if _, err := st.Update(ctx, func(tx store.Tx) error { tx.Put(p); return nil }); err != nil {
						return err
					}
				}
				return nil
			},
			hello: hello("node-1", 0),
			want: &lbv1.StreamConfigResponse{Version: 2, Full: true, Pools: []*lbv1.Pool{
				{Name: "a", Hosts: []string{"a.example.com"}, Backends: []*lbv1.Backend{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.3:8080", Weight: 1}}, Version: 2},
				{Name: "b", Hosts: []string{"b.example.com"}, Backends: []*lbv1.Backend{{Address: "10.0.0.2:80", Weight: 1}}, Version: 1},
			}},
		},
		{
			name: "node already holds the version",
			seed: func(ctx context.Context, st *boltstore.Store) error {
				_, err := st.Update(ctx, func(tx store.Tx) error { tx.Put(pool("a")); return nil })
				return err
			},
			hello: hello("node-1", 1),
			want: &lbv1.StreamConfigResponse{Version: 1, Full: true, Pools: []*lbv1.Pool{
				{Name: "a", Hosts: []string{"a.example.com"}, Version: 1},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.seed)
			s := e.open(t, tt.hello)
			equal(t, "first message", s.recv(t), tt.want)
		})
	}
}

func TestCommitsArePushed(t *testing.T) {
	e := newEnv(t, nil)
	s := e.connect(t, "node-1")
	equal(t, "first message", s.recv(t), &lbv1.StreamConfigResponse{Version: 0, Full: true})

	steps := []struct {
		name string
		fn   func(tx store.Tx)
	}{
		{"create a pool", func(tx store.Tx) { tx.Put(pool("web", "10.0.0.1:80")) }},
		{"create two more", func(tx store.Tx) { tx.Put(pool("api")); tx.Put(pool("zzz", "[2001:db8::1]:443")) }},
		{"change one", func(tx store.Tx) { tx.Put(pool("web", "10.0.0.1:80", "10.0.0.2:80")) }},
		{"delete one", func(tx store.Tx) { tx.Delete("api") }},
		{"delete all", func(tx store.Tx) { tx.Delete("web"); tx.Delete("zzz") }},
	}
	for i, step := range steps {
		v := e.update(t, step.fn)
		if v != uint64(i+1) {
			t.Fatalf("%s: committed version %d, want %d", step.name, v, i+1)
		}
		equal(t, step.name, s.recv(t), full(e.state(t)))
	}
}

func TestLateJoinerGetsOnlyTheLatest(t *testing.T) {
	e := newEnv(t, nil)
	early := e.connect(t, "early")
	for i := range 3 {
		e.update(t, func(tx store.Tx) { tx.Put(pool(fmt.Sprintf("p%d", i))) })
	}
	for m := early.recv(t); m.GetVersion() != 3; m = early.recv(t) {
	}
	// Version 3 is published; a new stream starts from it.
	late := e.connect(t, "late")
	equal(t, "late joiner's first message", late.recv(t), full(e.state(t)))
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
	e.update(t, func(tx store.Tx) { tx.Put(pool("web")) })
	equal(t, "update to the remaining stream", a2.recv(t), full(e.state(t)))
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
	s.recv(t)

	const bursts, perBurst = 5, 20
	var last uint64
	for burst := range bursts {
		for i := range perBurst {
			e.update(t, func(tx store.Tx) {
				tx.Put(pool(fmt.Sprintf("p%d", i), fmt.Sprintf("10.0.%d.%d:80", burst, i+1)))
			})
		}
		want := uint64((burst + 1) * perBurst)
		n := 0
		for {
			m := s.recv(t)
			n++
			if m.GetVersion() <= last || !m.GetFull() {
				t.Fatalf("burst %d: got version %d (full %v) after %d, want a newer full configuration", burst, m.GetVersion(), m.GetFull(), last)
			}
			last = m.GetVersion()
			if last == want {
				equal(t, fmt.Sprintf("burst %d: last message", burst), m, full(e.state(t)))
				break
			}
			if last > want {
				t.Fatalf("burst %d: version %d is beyond the last committed %d", burst, last, want)
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
	// A stream that connects before anything is published waits for it.
	s := e.connect(t, "node-1")
	a := pool("a", "10.0.0.1:80")
	a.Version = 5
	e.disc.Publish(store.State{Version: 5, Pools: []poolspec.Pool{a}})
	equal(t, "first message", s.recv(t), full(store.State{Version: 5, Pools: []poolspec.Pool{a}}))

	e.disc.Publish(store.State{Version: 3})
	e.disc.Publish(store.State{Version: 5})
	b := pool("b")
	b.Version = 6
	e.disc.Publish(store.State{Version: 6, Pools: []poolspec.Pool{a, b}})
	equal(t, "after older, equal and newer states", s.recv(t), full(store.State{Version: 6, Pools: []poolspec.Pool{a, b}}))

	// A new stream gets the newest state.
	equal(t, "late joiner", e.connect(t, "node-2").recv(t), full(store.State{Version: 6, Pools: []poolspec.Pool{a, b}}))
}

func TestVersionZeroIsSentOnce(t *testing.T) {
	e := newServer(t)
	s := e.connect(t, "node-1")
	e.disc.Publish(store.State{Version: 0})
	equal(t, "first message", s.recv(t), &lbv1.StreamConfigResponse{Version: 0, Full: true})
	e.disc.Publish(store.State{Version: 0})
	e.disc.Publish(store.State{Version: 1})
	equal(t, "second message", s.recv(t), &lbv1.StreamConfigResponse{Version: 1, Full: true})
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
