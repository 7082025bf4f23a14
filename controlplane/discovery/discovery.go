// Package discovery implements lb.v1.DiscoveryService: it pushes every
// committed configuration version to every connected data plane and records
// which version each has acknowledged.
//
// Data flow:
//
//	store commit ──Watch──▶ Run loop ──Publish──▶ latest (atomic pointer)
//	                                       │ wake (1-buffered chan per stream)
//	                                       ▼
//	                         StreamConfig loop ──Send──▶ data plane
//	                                       ▲
//	               recv goroutine ◀──Ack/Nack── data plane
//
// A slow data plane never holds anyone up: a stream is only woken, and sends
// the latest version when it gets to it, so bursts of changes coalesce.
//
// An Observer, if set, is told of streams opening and closing, of versions
// published, sent, acknowledged and refused, and of how long each version
// took to reach every connected data plane; it is how metrics are kept
// without this package knowing of them.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/store"
)

// Source is what the discovery server needs of the store.
type Source interface {
	Read(ctx context.Context) (store.State, error)
	Watch(ctx context.Context) <-chan struct{}
}

// Server implements lbv1.DiscoveryServiceServer.
type Server struct {
	lbv1.UnimplementedDiscoveryServiceServer

	// CheckNode, if set before serving, vets the node id of each hello
	// (e.g. against the client certificate); a refusal ends the stream.
	CheckNode func(ctx context.Context, nodeID string) error

	// Observer, if set before Run and serving, is told of the server's
	// events; nil: nobody is, and propagation is not tracked.
	Observer Observer

	log hclog.Logger

	// latest is the newest configuration, shared by all streams.
	latest atomic.Pointer[snapshot]
	// publishMu serialises Publish, which builds on the previous snapshot.
	publishMu sync.Mutex

	// ackedMu guards acked, which is closed and replaced whenever a data
	// plane acknowledges, refuses or leaves, to wake WaitForVersion callers.
	ackedMu sync.Mutex
	acked   chan struct{}

	// shutdown is closed by Shutdown; every stream ends when it is.
	shutdown     chan struct{}
	shutdownOnce sync.Once

	// mu guards streams, prop and each stream's behind.
	mu      sync.Mutex
	streams map[*stream]struct{}
	// prop follows the latest published version to its last
	// acknowledgement; nil before the first Publish, or without Observer.
	prop *propagation
}

// Observer is told of a discovery server's events, typically to keep
// metrics. Its methods are called from the streams' goroutines, some on
// every message, so they must be cheap, must not block, and must be safe
// for concurrent use.
type Observer interface {
	// StreamOpened is called when a data plane's stream is accepted (after
	// its hello was vetted), StreamClosed when that stream ends.
	StreamOpened()
	StreamClosed()
	// Published is called with each version that becomes the latest, in
	// increasing order.
	Published(version uint64)
	// Sent is called after a configuration message of version was sent to
	// a data plane.
	Sent(version uint64)
	// Acked and Nacked are called for each acknowledgement and refusal a
	// data plane sends.
	Acked(version uint64)
	Nacked(version uint64)
	// Propagated is called at most once per published version, with the
	// time from its publication until the last acknowledgement of it (or
	// of a later version) by the data planes connected when that
	// acknowledgement came; at that moment every connected data plane has
	// it. A version superseded first, one published while no data plane
	// was connected, and one whose every laggard disconnected before any
	// data plane acknowledged it are not reported. When the last laggard
	// disconnects instead of acknowledging, the time is that of the last
	// acknowledgement received. A call caused by an acknowledgement comes
	// before that Acked, one caused by a disconnection before that
	// StreamClosed.
	Propagated(version uint64, d time.Duration)
}

// propagation tracks one published version until every connected data
// plane has acknowledged it. Its fields are guarded by Server.mu.
type propagation struct {
	// version and publishedAt are fixed at creation.
	version     uint64
	publishedAt time.Time
	// behind counts the connected streams whose behind flag is set: they
	// have not acknowledged version yet.
	behind int
	// lastAck is when a stream last stopped being behind; zero before.
	lastAck time.Time
	// done is set once reported, or given up.
	done bool
}

// New returns a discovery server with no configuration yet; Run feeds it.
func New(log hclog.Logger) *Server {
	return &Server{log: log, streams: make(map[*stream]struct{}), shutdown: make(chan struct{}), acked: make(chan struct{})}
}

// Shutdown ends every open stream with UNAVAILABLE, so data planes reconnect
// (to another control plane, if they know one) at once, and refuses new ones.
// It is idempotent.
func (s *Server) Shutdown() {
	s.shutdownOnce.Do(func() { close(s.shutdown) })
}

// Run publishes the store's configuration now and after every commit, until
// ctx is done. It returns the error that stopped it, or nil on ctx done.
func (s *Server) Run(ctx context.Context, src Source) error {
	changes := src.Watch(ctx)
	for {
		st, err := src.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("discovery: read configuration: %w", err)
		}
		s.Publish(st)
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changes:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("discovery: store watch closed")
			}
		}
	}
}

// Publish makes st the configuration every stream converges to. A state not
// newer than the one already published is ignored.
func (s *Server) Publish(st store.State) {
	publishedAt := time.Now()
	s.publishMu.Lock()
	prev := s.latest.Load()
	if prev != nil && prev.version >= st.Version {
		s.publishMu.Unlock()
		return
	}
	snap := newSnapshot(prev, st)
	s.latest.Store(snap)
	if s.Observer != nil {
		s.Observer.Published(snap.version)
	}
	s.publishMu.Unlock()

	s.mu.Lock()
	for st := range s.streams {
		st.wake()
	}
	n := len(s.streams)
	if s.Observer != nil {
		s.trackLocked(snap.version, publishedAt)
	}
	s.mu.Unlock()
	s.log.Debug("configuration published", "version", snap.version, "pools", len(snap.pools), "streams", n)
}

// trackLocked starts following version, published at publishedAt, to its
// last acknowledgement, unless a newer version is followed already. A
// version published with no data plane to wait for is not followed. s.mu
// must be held.
func (s *Server) trackLocked(version uint64, publishedAt time.Time) {
	if s.prop != nil && s.prop.version >= version {
		return
	}
	p := &propagation{version: version, publishedAt: publishedAt}
	for st := range s.streams {
		st.behind = st.ackedVersion() < version
		if st.behind {
			p.behind++
		}
	}
	p.done = p.behind == 0
	s.prop = p
}

// trackAck notes that st acknowledged version and reports the followed
// version propagated when st was the last data plane lacking it.
func (s *Server) trackAck(st *stream, version uint64) {
	s.mu.Lock()
	p := s.prop
	if p == nil || p.done || !st.behind || version < p.version {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	st.behind = false
	p.behind--
	p.lastAck = now
	done := p.behind == 0
	p.done = done
	s.mu.Unlock()
	if done {
		s.Observer.Propagated(p.version, now.Sub(p.publishedAt))
	}
}

// leaveLocked stops waiting for st, which disconnected. It returns the
// followed version and its propagation time when st was its last laggard
// and another data plane acknowledged it; ok is false otherwise. s.mu must
// be held.
func (s *Server) leaveLocked(st *stream) (version uint64, d time.Duration, ok bool) {
	p := s.prop
	if p == nil || !st.behind {
		return 0, 0, false
	}
	st.behind = false
	p.behind--
	if p.done || p.behind > 0 {
		return 0, 0, false
	}
	p.done = true
	if p.lastAck.IsZero() {
		return 0, 0, false
	}
	return p.version, p.lastAck.Sub(p.publishedAt), true
}

// Version returns the newest published version.
func (s *Server) Version() uint64 {
	if snap := s.latest.Load(); snap != nil {
		return snap.version
	}
	return 0
}

// notifyAcks wakes WaitForVersion callers.
func (s *Server) notifyAcks() {
	s.ackedMu.Lock()
	close(s.acked)
	s.acked = make(chan struct{})
	s.ackedMu.Unlock()
}

// ackChange returns a channel closed at the next acknowledgement, refusal
// or disconnection.
func (s *Server) ackChange() <-chan struct{} {
	s.ackedMu.Lock()
	defer s.ackedMu.Unlock()
	return s.acked
}

// ErrRefused is returned by WaitAcked when a data plane refused the version.
var ErrRefused = errors.New("refused by a data plane")

// WaitAcked waits until every connected data plane has acknowledged version
// (or a later one) and returns their status. It returns early with an error
// wrapping ErrRefused when one refused it, and with ctx's error and the
// laggards when ctx ends first.
func (s *Server) WaitAcked(ctx context.Context, version uint64) ([]NodeStatus, []NodeStatus, error) {
	for {
		change := s.ackChange()
		// Only laggards are copied while waiting: with a large fleet, most
		// wake-ups find most data planes done.
		lag, refused := s.laggards(version)
		if refused != nil {
			return s.Nodes(), []NodeStatus{*refused}, fmt.Errorf("data plane %s refused version %d: %s: %w",
				refused.NodeID, refused.NackedVersion, refused.NackReason, ErrRefused)
		}
		if len(lag) == 0 {
			return s.Nodes(), nil, nil
		}
		select {
		case <-ctx.Done():
			return s.Nodes(), lag, ctx.Err()
		case <-change:
		}
	}
}

// laggards returns the connected data planes that have not acknowledged
// version, or the first that refused it.
func (s *Server) laggards(version uint64) (lag []NodeStatus, refused *NodeStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		st.mu.Lock()
		acked, nacked := st.status.AckedVersion, st.status.NackedVersion
		if acked < version {
			n := st.status
			st.mu.Unlock()
			if nacked >= version {
				return nil, &n
			}
			lag = append(lag, n)
			continue
		}
		st.mu.Unlock()
	}
	sort.Slice(lag, func(i, j int) bool { return lag[i].NodeID < lag[j].NodeID })
	return lag, nil
}

// NodeStatus is what the control plane knows of one connected data plane.
type NodeStatus struct {
	// NodeID is the id the data plane gave in its hello.
	NodeID string
	// Peer is the data plane's network address.
	Peer string
	// ConnectedAt is when its stream opened.
	ConnectedAt time.Time
	// SentVersion is the newest version sent to it.
	SentVersion uint64
	// AckedVersion is the newest version it acknowledged.
	AckedVersion uint64
	// NackedVersion and NackReason describe its last refusal, if any.
	NackedVersion uint64
	NackReason    string
	// Health is its last health report; nil before the first.
	Health *lbv1.HealthReport
}

// Nodes returns the status of every connected data plane, ordered by node id.
func (s *Server) Nodes() []NodeStatus {
	s.mu.Lock()
	out := make([]NodeStatus, 0, len(s.streams))
	for st := range s.streams {
		out = append(out, st.snapshot())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].NodeID != out[j].NodeID {
			return out[i].NodeID < out[j].NodeID
		}
		return out[i].ConnectedAt.Before(out[j].ConnectedAt)
	})
	return out
}

// BackendStatus returns, for each backend address of the named pool, the
// views of the connected data planes that reported on it, ordered by node id.
func (s *Server) BackendStatus(pool string) map[string][]*lbv1.DataPlaneBackendStatus {
	out := make(map[string][]*lbv1.DataPlaneBackendStatus)
	for _, n := range s.Nodes() {
		for _, b := range n.Health.GetBackends() {
			if b.GetPool() != pool {
				continue
			}
			out[b.GetAddress()] = append(out[b.GetAddress()], &lbv1.DataPlaneBackendStatus{
				NodeId: n.NodeID, Healthy: b.GetHealthy(), Ejected: b.GetEjected(), InFlight: b.GetInFlight(),
			})
		}
	}
	return out
}

// stream is the state of one open StreamConfig call.
type stream struct {
	// wakeCh holds at most one pending "there is something newer" signal.
	wakeCh chan struct{}

	// mu guards status.
	mu     sync.Mutex
	status NodeStatus

	// behind, guarded by Server.mu, is set while the stream is counted in
	// Server.prop.behind.
	behind bool
}

func (st *stream) wake() {
	select {
	case st.wakeCh <- struct{}{}:
	default:
	}
}

func (st *stream) snapshot() NodeStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.status
}

func (st *stream) ackedVersion() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.status.AckedVersion
}

func (st *stream) update(fn func(*NodeStatus)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	fn(&st.status)
}

// StreamConfig implements lbv1.DiscoveryServiceServer.
func (s *Server) StreamConfig(srv lbv1.DiscoveryService_StreamConfigServer) error {
	ctx := srv.Context()
	first, err := srv.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "first message on a StreamConfig stream must be a hello")
	}
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message on a StreamConfig stream must be a hello")
	}
	if hello.GetNodeId() == "" {
		return status.Error(codes.InvalidArgument, "hello.node_id: must not be empty")
	}
	if s.CheckNode != nil {
		if err := s.CheckNode(ctx, hello.GetNodeId()); err != nil {
			s.log.Warn("data plane refused", "node", hello.GetNodeId(), "error", status.Convert(err).Message())
			return err
		}
	}
	select {
	case <-s.shutdown:
		return status.Error(codes.Unavailable, "control plane is shutting down")
	default:
	}
	st := &stream{wakeCh: make(chan struct{}, 1)}
	st.status = NodeStatus{NodeID: hello.GetNodeId(), ConnectedAt: time.Now()}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		st.status.Peer = p.Addr.String()
	}
	log := s.log.With("node", hello.GetNodeId(), "peer", st.status.Peer)

	s.mu.Lock()
	s.streams[st] = struct{}{}
	// A new stream has acknowledged nothing yet: it lacks any followed
	// version but 0.
	if p := s.prop; p != nil && !p.done && p.version > 0 {
		st.behind = true
		p.behind++
	}
	s.mu.Unlock()
	if s.Observer != nil {
		s.Observer.StreamOpened()
	}
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		version, d, propagated := s.leaveLocked(st)
		s.mu.Unlock()
		s.notifyAcks()
		if s.Observer != nil {
			if propagated {
				s.Observer.Propagated(version, d)
			}
			s.Observer.StreamClosed()
		}
		log.Info("data plane disconnected")
	}()
	log.Info("data plane connected", "held_version", hello.GetVersion())

	// The receive goroutine is owned by this call: it ends when the stream
	// does, which happens as soon as this function returns.
	recvErr := make(chan error, 1)
	go func() {
		recvErr <- s.receive(srv, st, log)
	}()

	st.wake() // send whatever is published now
	// held is what the data plane has: what it said in its hello, then what
	// it was sent. The first update takes it from held to the latest: only
	// what it lacks when this control plane knows its version, else all.
	held, sent := hello.GetVersion(), false
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.shutdown:
			return status.Error(codes.Unavailable, "control plane is shutting down")
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-st.wakeCh:
			snap := s.latest.Load()
			if snap == nil || sent && snap.version <= held {
				continue
			}
			resp := snap.from(held)
			if err := srv.Send(resp); err != nil {
				return err
			}
			held, sent = snap.version, true
			st.update(func(n *NodeStatus) { n.SentVersion = snap.version })
			if s.Observer != nil {
				s.Observer.Sent(snap.version)
			}
			log.Debug("configuration sent", "version", snap.version, "full", resp.GetFull(),
				"pools", len(resp.GetPools()), "removed", len(resp.GetRemovedPools()))
		}
	}
}

// receive reads acknowledgements until the stream ends.
func (s *Server) receive(srv lbv1.DiscoveryService_StreamConfigServer, st *stream, log hclog.Logger) error {
	for {
		msg, err := srv.Recv()
		if err != nil {
			return err
		}
		switch k := msg.GetKind().(type) {
		case *lbv1.StreamConfigRequest_Ack:
			v := k.Ack.GetVersion()
			st.update(func(n *NodeStatus) {
				if v > n.AckedVersion {
					n.AckedVersion = v
				}
			})
			// Counted before WaitAcked callers wake, so that they see it;
			// Acked comes last, after any Propagated it caused.
			if s.Observer != nil {
				s.trackAck(st, v)
				s.Observer.Acked(v)
			}
			s.notifyAcks()
			log.Debug("configuration acknowledged", "version", v)
		case *lbv1.StreamConfigRequest_Nack:
			st.update(func(n *NodeStatus) {
				n.NackedVersion = k.Nack.GetVersion()
				n.NackReason = k.Nack.GetReason()
			})
			if s.Observer != nil {
				s.Observer.Nacked(k.Nack.GetVersion())
			}
			s.notifyAcks()
			log.Warn("configuration refused by data plane", "version", k.Nack.GetVersion(), "reason", k.Nack.GetReason())
		case *lbv1.StreamConfigRequest_HealthReport:
			st.update(func(n *NodeStatus) { n.Health = k.HealthReport })
		default:
			return status.Error(codes.InvalidArgument, "after the hello, a data plane may only send ack, nack or health_report")
		}
	}
}
