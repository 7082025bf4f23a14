// Package configclient keeps a data plane's routing table in step with the
// control plane. It holds one DiscoveryService stream open, applies every
// configuration version it receives (validate, build an immutable routing
// table, publish it with one atomic store) and acknowledges it; a version it
// cannot validate is refused with a NACK and the last good table keeps
// serving. When the stream breaks it reconnects with capped exponential
// backoff and jitter, serving its last table all the while.
//
// This is the only package of the data plane that sees protobuf types.
package configclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/textproto"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/upstream"
	"github.com/lb-project/lb/internal/apiconv"
	"github.com/lb-project/lb/internal/poolspec"
)

// Config configures a Client.
type Config struct {
	// Address of the control plane, HOST:PORT; several control planes as a
	// comma-separated list, tried in order: the client stays with the first
	// that answers and fails over to the next when it goes away. Required.
	Address string
	// NodeID names this data plane to the control plane. Required.
	NodeID string
	// Table receives every applied routing table. Required.
	Table *routing.Current
	// Transports provides the upstream transports of the pools; unused ones
	// are released after each update. Default: a cache with default options.
	Transports *upstream.Cache
	// Logger receives the client's log lines. Default: a null logger.
	Logger hclog.Logger
	// MinBackoff is the first reconnect delay. Default 100ms.
	MinBackoff time.Duration
	// MaxBackoff caps the reconnect delay. Default 5s.
	MaxBackoff time.Duration
	// ReportInterval is how often the backends' health is compared with the
	// last report and, when it changed, reported. Default 1s.
	ReportInterval time.Duration
	// OnTable, if set, is called with every table applied (from the
	// client's goroutine, after the table is published).
	OnTable func(t *routing.Table)
	// TLS, if set, secures the connection to the control plane (with a
	// client certificate for mutual TLS); nil: plain text.
	TLS *tls.Config
	// CacheDir, if set, keeps the last applied configuration (written
	// atomically after every version) and serves it at start-up until a
	// control plane is reached.
	CacheDir string
}

// Status is what the client has applied and whether it is connected.
type Status struct {
	// Connected is true from the first message received on a stream until
	// that stream ends.
	Connected bool
	// Config is the configuration applied last; Version 0 before the first.
	Config routing.Config
	// AppliedAt is when Config was applied.
	AppliedAt time.Time
	// LastError is the most recent stream or apply error, if any.
	LastError string
	// FromCache is true while the configuration served came from the cache
	// directory and no control plane has sent one since.
	FromCache bool
}

// Client is a configuration stream client. Create it with New, run it with Run.
type Client struct {
	cfg  Config
	log  hclog.Logger
	conn *grpc.ClientConn

	// status is replaced whole on every change; readers Load it.
	status atomic.Pointer[Status]
	// pools is the applied configuration as received, for the cache; owned
	// by Run's goroutine.
	pools map[string]*lbv1.Pool
}

// New validates cfg and prepares a client. It does not connect yet.
func New(cfg Config) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("configclient: control plane address is required")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("configclient: node id is required")
	}
	if cfg.Table == nil {
		return nil, errors.New("configclient: routing table holder is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Transports == nil {
		cfg.Transports = upstream.NewCache(upstream.Options{})
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = time.Second
	}
	target, resolverOpts := dialTarget(cfg.Address)
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: cfg.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.MaxBackoff,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}, resolverOpts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("configclient: control plane %s: %w", cfg.Address, err)
	}
	c := &Client{cfg: cfg, log: cfg.Logger, conn: conn, pools: make(map[string]*lbv1.Pool)}
	c.status.Store(&Status{})
	return c, nil
}

// dialTarget turns a comma-separated list of control plane addresses into a
// gRPC target: one address is dialled directly; several are given to a
// fixed resolver, and gRPC's pick_first policy connects to the first that
// answers, moving on to the next when it fails.
func dialTarget(list string) (string, []grpc.DialOption) {
	var addrs []resolver.Address
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			host := a
			if h, _, err := net.SplitHostPort(a); err == nil {
				host = h
			}
			// ServerName: each control plane's certificate is checked
			// against its own host name.
			addrs = append(addrs, resolver.Address{Addr: a, ServerName: host})
		}
	}
	if len(addrs) <= 1 {
		return "passthrough:///" + strings.TrimSpace(list), nil
	}
	r := manual.NewBuilderWithScheme("lb-controlplanes")
	r.InitialState(resolver.State{Addresses: addrs})
	return r.Scheme() + ":///controlplanes", []grpc.DialOption{grpc.WithResolvers(r)}
}

// Status returns the client's current status.
func (c *Client) Status() Status { return *c.status.Load() }

func (c *Client) setStatus(fn func(s *Status)) {
	next := *c.status.Load()
	fn(&next)
	c.status.Store(&next)
}

// Run keeps the stream open until ctx is done, then closes the connection
// and returns nil. Only Run's own goroutine writes the status.
func (c *Client) Run(ctx context.Context) error {
	defer c.conn.Close()
	switch ok, err := c.loadCache(); {
	case err != nil:
		c.log.Error("cached configuration not usable; waiting for the control plane", "error", err)
	case ok:
		c.log.Warn("serving cached configuration until the control plane is reached",
			"version", c.Status().Config.Version, "cache_dir", c.cfg.CacheDir)
	}
	client := lbv1.NewDiscoveryServiceClient(c.conn)
	delay := c.cfg.MinBackoff
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		received, err := c.stream(ctx, client)
		c.setStatus(func(s *Status) {
			s.Connected = false
			if err != nil {
				s.LastError = err.Error()
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if received {
			delay = c.cfg.MinBackoff
		}
		// Full jitter over [delay/2, delay): fleets do not reconnect in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		c.log.Warn("control plane stream ended; reconnecting", "control_plane", c.cfg.Address, "error", err, "retry_in", wait.Round(time.Millisecond))
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		delay = min(delay*2, c.cfg.MaxBackoff)
	}
}

// stream runs one stream until it fails. It reports whether any message
// arrived, which resets the backoff. One goroutine receives; this one does
// every send (acknowledgements and health reports), as a gRPC stream allows.
func (c *Client) stream(ctx context.Context, client lbv1.DiscoveryServiceClient) (received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred later, so run first)
	defer cancel()
	s, err := client.StreamConfig(ctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	held := c.Status().Config.Version
	hello := &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Hello{Hello: &lbv1.Hello{NodeId: c.cfg.NodeID, Version: held}}}
	if err := s.Send(hello); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	updates := make(chan *lbv1.StreamConfigResponse)
	recvErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := s.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case updates <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	ticker := time.NewTicker(c.cfg.ReportInterval)
	defer ticker.Stop()
	var lastReport *lbv1.HealthReport
	for {
		select {
		case <-ctx.Done():
			return received, ctx.Err()
		case err := <-recvErr:
			return received, fmt.Errorf("receive: %w", err)
		case <-ticker.C:
			report := c.healthReport()
			if report == nil || proto.Equal(report, lastReport) {
				continue
			}
			if err := s.Send(&lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_HealthReport{HealthReport: report}}); err != nil {
				return received, fmt.Errorf("send health report: %w", err)
			}
			lastReport = report
		case resp := <-updates:
			if !received {
				received = true
				c.setStatus(func(s *Status) { s.Connected = true })
				c.log.Info("connected to control plane", "control_plane", c.cfg.Address, "node", c.cfg.NodeID, "peer", peerOf(ctx, s))
			}
			var reply *lbv1.StreamConfigRequest
			if err := c.apply(resp, false); err != nil {
				c.log.Error("configuration refused", "version", resp.GetVersion(), "error", err)
				c.setStatus(func(s *Status) { s.LastError = err.Error() })
				reply = &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Nack{Nack: &lbv1.Nack{Version: resp.GetVersion(), Reason: err.Error()}}}
			} else {
				reply = &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Ack{Ack: &lbv1.Ack{Version: resp.GetVersion()}}}
			}
			if err := s.Send(reply); err != nil {
				return received, fmt.Errorf("send acknowledgement: %w", err)
			}
		}
	}
}

// healthReport describes every backend of the table in use, or returns nil
// before the first table.
func (c *Client) healthReport() *lbv1.HealthReport {
	t := c.cfg.Table.Load()
	if t == nil {
		return nil
	}
	now := time.Now().UnixNano()
	report := &lbv1.HealthReport{}
	for _, p := range t.Pools() {
		for i, b := range p.Backends {
			st := p.States[i]
			report.Backends = append(report.Backends, &lbv1.BackendHealth{
				Pool: p.Name, Address: b.Address, Healthy: st.Healthy(), Ejected: st.Ejected(now),
				InFlight: uint32(max(0, st.InFlight())),
			})
		}
	}
	return report
}

// apply validates one update, builds its table and publishes it.
func (c *Client) apply(resp *lbv1.StreamConfigResponse, fromCache bool) error {
	cur := c.Status().Config
	next, err := merge(cur, resp)
	if err != nil {
		return err
	}
	prev := c.cfg.Table.Load()
	t, err := routing.Build(prev, next, c.cfg.Transports)
	if err != nil {
		return fmt.Errorf("build routing table: %w", err)
	}
	c.cfg.Table.Store(t)
	inUse := make(map[upstream.Settings]bool, len(next.Pools))
	for _, p := range next.Pools {
		inUse[p.Upstream] = true
	}
	c.cfg.Transports.Retain(inUse)
	if c.cfg.OnTable != nil {
		c.cfg.OnTable(t)
	}
	if next.Version < cur.Version {
		c.log.Warn("control plane sent an older version than the one applied; its store may have been reset",
			"applied", cur.Version, "received", next.Version)
	}
	if resp.GetFull() {
		clear(c.pools)
	}
	for _, name := range resp.GetRemovedPools() {
		delete(c.pools, name)
	}
	for _, p := range resp.GetPools() {
		c.pools[p.GetName()] = p
	}
	c.setStatus(func(s *Status) {
		s.Config = next
		s.AppliedAt = time.Now()
		s.LastError = ""
		s.FromCache = fromCache
	})
	if c.cfg.CacheDir != "" && !fromCache {
		if err := c.writeCache(next.Version); err != nil {
			c.log.Error("cannot cache the applied configuration", "error", err)
		}
	}
	c.log.Info("configuration applied", "version", next.Version, "pools", len(next.Pools), "full", resp.GetFull())
	return nil
}

// merge validates resp and returns the configuration it leads to from cur:
// resp itself when it is full, cur with resp's pools replaced or removed when
// it is a delta.
func merge(cur routing.Config, resp *lbv1.StreamConfigResponse) (routing.Config, error) {
	byName := make(map[string]routing.PoolConfig)
	if !resp.GetFull() {
		for _, p := range cur.Pools {
			byName[p.Name] = p
		}
		for _, name := range resp.GetRemovedPools() {
			delete(byName, name)
		}
	}
	seen := make(map[string]bool, len(resp.GetPools()))
	for i, pb := range resp.GetPools() {
		field := fmt.Sprintf("pools[%d]", i)
		p, err := poolFromProto(field, pb)
		if err != nil {
			return routing.Config{}, err
		}
		if seen[p.Name] {
			return routing.Config{}, fmt.Errorf("%s.name %q: is listed twice in the update", field, p.Name)
		}
		seen[p.Name] = true
		byName[p.Name] = p
	}
	next := routing.Config{Version: resp.GetVersion(), Pools: make([]routing.PoolConfig, 0, len(byName))}
	for _, p := range byName {
		next.Pools = append(next.Pools, p)
	}
	sort.Slice(next.Pools, func(i, j int) bool { return next.Pools[i].Name < next.Pools[j].Name })
	return next, nil
}

// poolFromProto validates a pool message and converts it.
func poolFromProto(field string, pb *lbv1.Pool) (routing.PoolConfig, error) {
	spec := apiconv.PoolFromProto(pb)
	norm, err := poolspec.Normalize(field, spec)
	if err != nil {
		return routing.PoolConfig{}, err
	}
	out := routing.PoolConfig{Name: norm.Name, Hosts: norm.Hosts, PathPrefix: norm.PathPrefix, Version: norm.Version,
		Backends: make([]routing.Backend, len(norm.Backends)), HostHeader: norm.Upstream.HostHeader,
		Upstream: settings(norm.Upstream), LoadBalancing: norm.LoadBalancing,
		HealthCheck: norm.HealthCheck.WithDefaults(), Outlier: norm.OutlierDetection.WithDefaults(),
		Retries: norm.RetriesOrDefault()}
	if out.LoadBalancing.HashKey.Source == poolspec.HashHeader {
		out.LoadBalancing.HashKey.Name = textproto.CanonicalMIMEHeaderKey(out.LoadBalancing.HashKey.Name)
	}
	t := norm.Timeouts.WithDefaults()
	out.Upstream.ConnectTimeout, out.Upstream.ResponseHeaderTimeout, out.Upstream.IdleTimeout = t.Connect, t.ResponseHeader, t.Idle
	for i, b := range norm.Backends {
		out.Backends[i] = routing.Backend{Address: b.Address, Weight: b.Weight, Draining: b.Draining}
	}
	return out, nil
}

// settings derives the transport settings of a validated upstream. The SNI
// name defaults to the Host rewrite's host, so that a pool that rewrites Host
// for a virtual-hosted upstream also names it in TLS.
func settings(u poolspec.Upstream) upstream.Settings {
	s := upstream.Settings{
		TLS: u.TLS, ServerName: u.SNI, CAPEM: u.CAPEM, InsecureSkipVerify: u.InsecureSkipVerify,
		ClientCertPEM: u.ClientCertPEM, ClientKeyPEM: u.ClientKeyPEM,
	}
	switch u.Protocol {
	case poolspec.ProtocolHTTP1:
		s.Protocol = upstream.HTTP1
	case poolspec.ProtocolH2:
		s.Protocol = upstream.H2
	case poolspec.ProtocolH2C:
		s.Protocol = upstream.H2C
	default:
		s.Protocol = upstream.Auto
	}
	if s.TLS && s.ServerName == "" && u.HostHeader != "" {
		host := u.HostHeader
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		s.ServerName = strings.Trim(host, "[]")
	}
	return s
}

// peerOf names the control plane a stream is connected to.
func peerOf(_ context.Context, s grpc.ClientStream) string {
	if p, ok := peer.FromContext(s.Context()); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
