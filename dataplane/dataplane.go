// Package dataplane assembles lb-dataplane: the configuration client that
// follows the control plane, the proxy listener, and the admin listener.
//
//	control plane ──stream──▶ configclient ──Store──▶ routing.Current
//	                                                      │ Load (one per request)
//	client ──HTTP──▶ proxy.Handler ──pick──▶ backend ◀────┘
package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lb-project/lb/dataplane/accesslog"
	"github.com/lb-project/lb/dataplane/admin"
	"github.com/lb-project/lb/dataplane/certs"
	"github.com/lb-project/lb/dataplane/configclient"
	"github.com/lb-project/lb/dataplane/connchan"
	"github.com/lb-project/lb/dataplane/h1guard"
	"github.com/lb-project/lb/dataplane/h2server"
	"github.com/lb-project/lb/dataplane/handoff"
	"github.com/lb-project/lb/dataplane/health"
	"github.com/lb-project/lb/dataplane/metrics"
	"github.com/lb-project/lb/dataplane/proxy"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/stats"
	"github.com/lb-project/lb/dataplane/upstream"
)

// Config configures a data plane. The zero value of each field means its
// documented default.
type Config struct {
	// ControlPlane is the control plane's gRPC address, or several,
	// comma-separated, to fail over between. Default "127.0.0.1:7400".
	ControlPlane string
	// CacheDir keeps the last applied configuration, served at start-up when
	// no control plane can be reached. Empty: no cache.
	CacheDir string
	// ControlPlaneTLS secures the connection to the control plane; nil:
	// plain text.
	ControlPlaneTLS *tls.Config
	// NodeID names this data plane. Default: the host name.
	NodeID string
	// Listen is the proxy's HTTP listen address. Default "127.0.0.1:6188".
	Listen string
	// AdminListen is the admin HTTP listen address. Default "127.0.0.1:9901".
	AdminListen string
	// TLSListen is the TLS listen address (HTTP/1.1 and HTTP/2 by ALPN);
	// empty: no TLS listener. Needs certificates in TLSCerts or TLSDir.
	TLSListen string
	// TLSCerts are certificate/key file pairs; the first is the default.
	TLSCerts []certs.Pair
	// TLSDir holds further NAME.crt/NAME.key (or NAME.pem) pairs.
	TLSDir string
	// CertReloadInterval is how often certificate files are checked for
	// changes. Default 2s.
	CertReloadInterval time.Duration
	// WebSocketIdleTimeout closes upgraded connections idle this long.
	// Default 10m.
	WebSocketIdleTimeout time.Duration
	// DrainTimeout bounds how long shutdown waits for requests in flight
	// and open WebSocket tunnels; tunnels still open then get a close frame
	// (1001 going away). Default 10s.
	DrainTimeout time.Duration
	// AccessLog receives one line per request; nil: no access log.
	AccessLog io.Writer
	// AccessLogFormat is the access log's format.
	AccessLogFormat accesslog.Format
	// LogLevel, when set, is served at /log-level on the admin listener.
	LogLevel http.Handler
	// Pprof serves Go's profiler at /debug/pprof/ on the admin listener.
	Pprof bool
	// UpgradeSocket is the Unix socket path where this data plane offers
	// its listening sockets to a successor (zero-downtime upgrade); empty:
	// none.
	UpgradeSocket string
	// TakeOver starts by taking the listening sockets from the data plane
	// serving UpgradeSocket instead of binding them; once configured and
	// serving, it tells that one to drain and exit.
	TakeOver bool
	// UpgradeTimeout bounds how long a taking-over data plane waits for its
	// first configuration before giving up (the running one then keeps
	// serving). Default 20s.
	UpgradeTimeout time.Duration
	// Logger receives every log line. Default: hclog's default logger.
	Logger hclog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.ControlPlane == "" {
		c.ControlPlane = "127.0.0.1:7400"
	}
	if c.NodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("node id not given and host name unknown: %w", err)
		}
		c.NodeID = h
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:6188"
	}
	if c.AdminListen == "" {
		c.AdminListen = "127.0.0.1:9901"
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.UpgradeTimeout == 0 {
		c.UpgradeTimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.Default()
	}
	return c, nil
}

// Run serves until ctx is done, then drains in-flight requests (up to
// DrainTimeout) and returns. reload, when not nil, asks for certificate files
// to be re-read (the command wires it to SIGHUP).
func Run(ctx context.Context, cfg Config, reload <-chan struct{}) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	log := cfg.Logger

	var certStore *certs.Store
	if cfg.TLSListen != "" {
		if len(cfg.TLSCerts) == 0 && cfg.TLSDir == "" {
			return errors.New("dataplane: --tls-listen needs --tls-cert/--tls-key or --tls-dir")
		}
		certStore, err = certs.New(certs.Config{Pairs: cfg.TLSCerts, Dir: cfg.TLSDir, Logger: log.Named("certs")})
		if err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
	} else if len(cfg.TLSCerts) > 0 || cfg.TLSDir != "" {
		return errors.New("dataplane: certificates given without --tls-listen")
	}

	var table routing.Current
	var conns stats.Conns
	transports := upstream.NewCache(upstream.Options{})
	checker := health.New(log.Named("health"), nil)
	defer checker.Close()
	cc, err := configclient.New(configclient.Config{
		Address: cfg.ControlPlane, NodeID: cfg.NodeID, Table: &table, Transports: transports,
		Logger: log.Named("configclient"), CacheDir: cfg.CacheDir, TLS: cfg.ControlPlaneTLS,
		OnTable: func(t *routing.Table) { checker.Sync(healthTargets(t)) },
	})
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}

	// With TakeOver, the listening sockets come from the running data plane
	// (see package handoff); else they are bound here.
	var taken handoff.Listeners
	var takeover *handoff.Takeover
	if cfg.TakeOver {
		if cfg.UpgradeSocket == "" {
			return errors.New("dataplane: --upgrade needs --upgrade-socket")
		}
		if takeover, err = handoff.Take(ctx, cfg.UpgradeSocket); err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
		defer takeover.Abort() // after a successful Ready it does nothing
		taken = takeover.Listeners()
		log.Info("took over listening sockets from the running data plane", "socket", cfg.UpgradeSocket)
	}
	var listeners []net.Listener
	offered := handoff.Listeners{}
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	listen := func(addr, what, name string) (net.Listener, error) {
		if l, ok := taken[name]; ok {
			delete(taken, name)
			if err := sameAddress(addr, l.Addr()); err != nil {
				closeAll()
				return nil, fmt.Errorf("dataplane: %s listener handed over: %w", what, err)
			}
			listeners = append(listeners, l)
			offered[name] = l
			return l, nil
		}
		// No TCP keep-alive probes on accepted connections (nginx's
		// default too): idle timeouts close idle clients, and enabling
		// them costs four system calls per connection.
		l, err := (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dataplane: %s listen on %s: %w", what, addr, err)
		}
		listeners = append(listeners, l)
		if tl, ok := l.(*net.TCPListener); ok {
			offered[name] = tl
		}
		return l, nil
	}
	proxyLis, err := listen(cfg.Listen, "proxy", "proxy")
	if err != nil {
		return err
	}
	adminLis, err := listen(cfg.AdminListen, "admin", "admin")
	if err != nil {
		return err
	}
	var tlsLis net.Listener
	if certStore != nil {
		if tlsLis, err = listen(cfg.TLSListen, "TLS", "tls"); err != nil {
			return err
		}
	}
	for name, l := range taken {
		// Handed over but not wanted (this process has no such listener).
		log.Warn("closing a listener the previous data plane had and this one does not", "name", name, "address", l.Addr().String())
		l.Close()
	}

	errLog := log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Debug})
	proxyCfg := proxy.Config{Table: &table, WebSocketIdleTimeout: cfg.WebSocketIdleTimeout, Logger: log.Named("proxy")}
	var access *accesslog.Logger
	if cfg.AccessLog != nil {
		access = accesslog.New(cfg.AccessLog, cfg.AccessLogFormat, 0)
		proxyCfg.AccessLog = access
	}
	handler := proxy.New(proxyCfg)
	msrc := metrics.Sources{Tables: &table, Status: cc, Unrouted: handler.Unrouted(), Conns: &conns,
		Dials: transports.Dials(), Tunnels: handler}
	if certStore != nil {
		msrc.Certs = certStore
	}
	if access != nil {
		msrc.AccessLog = access
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.New(msrc))
	newProxyServer := func(protos *http.Protocols) *http.Server {
		return &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    h1guard.MaxHeadBytes,
			ErrorLog:          errLog,
			Protocols:         protos,
			ConnContext:       h1guard.WithConn,
		}
	}
	// The plain listener speaks HTTP/1.1 and, with prior knowledge, h2c.
	plainProtos := new(http.Protocols)
	plainProtos.SetHTTP1(true)
	plainProtos.SetUnencryptedHTTP2(true)
	servers := []*http.Server{newProxyServer(plainProtos)}
	http1Only := new(http.Protocols)
	http1Only.SetHTTP1(true)
	adminSrv := &http.Server{
		Handler: admin.Handler(admin.Config{NodeID: cfg.NodeID, ControlPlane: cfg.ControlPlane, Status: cc, Tables: &table,
			Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: errLog}), LogLevel: cfg.LogLevel, Pprof: cfg.Pprof}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          errLog,
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 5)
	pending := 0
	goRun := func(fn func() error) {
		pending++
		go func() { errc <- fn() }()
	}
	goRun(func() error { return cc.Run(runCtx) })
	if takeover != nil {
		// Serve only with a configuration: the previous data plane keeps
		// serving until this one says it is ready.
		if err := waitConfigured(ctx, &table, cfg.UpgradeTimeout); err != nil {
			cancel()
			closeAll()
			for ; pending > 0; pending-- {
				<-errc
			}
			return fmt.Errorf("dataplane: upgrade abandoned, the running data plane keeps serving: %w", err)
		}
	}
	// The access log outlives the drain, so requests finishing during it
	// are logged; it is stopped last.
	accessCtx, stopAccess := context.WithCancel(context.Background())
	defer stopAccess()
	if access != nil {
		goRun(func() error { return access.Run(accessCtx) })
	}
	// The plain listener's connections are served by the proxy's own
	// HTTP/1.1 server; net/http (with h1guard) takes over a connection at
	// the first request that server leaves to it (h2c, bodies, upgrades...).
	plainSrv := servers[0]
	fallback := connchan.New(proxyLis.Addr())
	// h2c (HTTP/2 with prior knowledge, gRPC's usual way) goes to our
	// HTTP/2 server, as HTTP/2 over TLS does.
	h2cSrv := &h2server.Server{Handler: plainSrv.Handler, Logger: log.Named("h2c"),
		IdleTimeout: plainSrv.IdleTimeout, MaxHeaderListSize: uint32(plainSrv.MaxHeaderBytes)}
	h2servers := []*h2server.Server{h2cSrv}
	h1srv := handler.NewH1Server(proxy.H1Config{
		Fallback: func(c net.Conn) bool { return fallback.Deliver(h1guard.New(c)) },
		// While draining, Fallback's server stops taking connections: a
		// request with a body begun then is answered by a server of its own.
		Last: func(ctx context.Context, c net.Conn) {
			connchan.ServeOne(ctx, newProxyServer(http1Only), h1guard.New(c))
		},
		// Requests outlive runCtx, which ends when the drain begins.
		H2:                func(c net.Conn) bool { return h2cSrv.Start(context.WithoutCancel(runCtx), c, nil) },
		IdleTimeout:       plainSrv.IdleTimeout,
		ReadHeaderTimeout: plainSrv.ReadHeaderTimeout,
	})
	counted := stats.Listener{Listener: proxyLis, Conns: &conns, Kind: stats.ListenerHTTP}
	goRun(func() error { return serve(plainSrv, fallback, "proxy") })
	goRun(func() error {
		if err := h1srv.Serve(counted); err != nil {
			return fmt.Errorf("dataplane: proxy server: %w", err)
		}
		return nil
	})
	goRun(func() error { return serve(adminSrv, adminLis, "admin") })
	if certStore != nil {
		// The TLS listener negotiates HTTP/2 or HTTP/1.1 by ALPN; tlsMux
		// completes handshakes so that HTTP/1.1 gets the guard too.
		tlsSrv := newProxyServer(http1Only)
		h2srv := &h2server.Server{Handler: tlsSrv.Handler, Logger: log.Named("http2"),
			IdleTimeout: tlsSrv.IdleTimeout, MaxHeaderListSize: uint32(tlsSrv.MaxHeaderBytes)}
		h2servers = append(h2servers, h2srv)
		mux := &tlsMux{ln: tlsLis, tlsConfig: certStore.TLSConfig(), h1: connchan.New(tlsLis.Addr()),
			h2: h2srv, conns: &conns, log: log.Named("tls")}
		servers = append(servers, tlsSrv)
		goRun(func() error { return serve(tlsSrv, mux.h1, "TLS") })
		goRun(func() error {
			err := mux.serve(runCtx)
			mux.wait()
			return err
		})
		goRun(func() error {
			watchCerts(runCtx, certStore, cfg.CertReloadInterval, reload, log)
			return nil
		})
	}
	log.Info("data plane serving", "node", cfg.NodeID, "listen", proxyLis.Addr().String(),
		"tls_listen", cfg.TLSListen, "admin_listen", adminLis.Addr().String(), "control_plane", cfg.ControlPlane)
	if takeover != nil {
		if err := takeover.Ready(ctx); err != nil {
			// Both processes serving the same sockets is harmless; the
			// old one may still be there.
			log.Warn("the previous data plane did not confirm the handover", "error", err)
		} else {
			log.Info("handover complete; the previous data plane is draining")
		}
	}
	handedOver := make(chan struct{})
	if cfg.UpgradeSocket != "" {
		hs, err := handoff.Listen(handoff.Config{
			Path: cfg.UpgradeSocket, Listeners: offered, Logger: log,
			OnHandover: func() { close(handedOver) },
		})
		if err != nil {
			log.Error("zero-downtime upgrades unavailable", "error", err)
		} else {
			goRun(func() error {
				defer hs.Close()
				if err := hs.Serve(runCtx); err != nil {
					log.Error("handoff socket failed; zero-downtime upgrades unavailable", "error", err)
				}
				return nil
			})
		}
	}

	var runErr error
	select {
	case <-ctx.Done():
	case <-handedOver:
		log.Info("a new data plane took over the listening sockets; draining")
		adminLis.Close() // admin requests go to the new data plane from now on
	case runErr = <-errc:
		pending--
	}
	log.Info("data plane stopping", "drain_timeout", cfg.DrainTimeout)
	if tlsLis != nil {
		tlsLis.Close() // the mux's accept loop does not belong to an http.Server
	}
	drainCtx, drainCancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer drainCancel()
	// Shutdown stops accepting, sends HTTP/2 GOAWAY, closes idle
	// connections and waits for requests in flight; the servers drain
	// together. WebSocket tunnels (hijacked, so not the servers' concern)
	// drain meanwhile and get a close frame at the deadline.
	var drained sync.WaitGroup
	drained.Add(1)
	go func() {
		defer drained.Done()
		if err := h1srv.Shutdown(drainCtx); err != nil {
			log.Warn("drain timed out; closed remaining HTTP/1.1 connections", "error", err)
		}
	}()
	for _, srv := range h2servers {
		drained.Add(1)
		go func() {
			defer drained.Done()
			if err := srv.Shutdown(drainCtx); err != nil {
				log.Warn("drain timed out; closed remaining HTTP/2 connections", "error", err)
			}
		}()
	}
	for _, srv := range servers {
		drained.Add(1)
		go func() {
			defer drained.Done()
			if err := srv.Shutdown(drainCtx); err != nil {
				log.Warn("drain timed out; closing remaining connections", "error", err)
				srv.Close()
			}
		}()
	}
	handler.CloseTunnels(drainCtx)
	drained.Wait()
	adminSrv.Close()
	cancel()
	stopAccess()
	transports.CloseIdleConnections()
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && runErr == nil {
			runErr = err
		}
	}
	return runErr
}

// waitConfigured waits until t holds a table, at most timeout.
func waitConfigured(ctx context.Context, t *routing.Current, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for t.Load() == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("no configuration within %s (from the control plane or --cache-dir)", timeout)
		case <-tick.C:
		}
	}
	return nil
}

// sameAddress checks that a handed-over listener at got serves the
// address the flags ask for (want, HOST:PORT), so that a successor started
// with other flags does not silently keep the old addresses.
func sameAddress(want string, got net.Addr) error {
	w, err := net.ResolveTCPAddr("tcp", want)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", want, err)
	}
	g, ok := got.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("listener address %s is not TCP", got)
	}
	sameIP := w.IP.Equal(g.IP) || (w.IP == nil || w.IP.IsUnspecified()) && g.IP.IsUnspecified()
	if !sameIP || w.Port != 0 && w.Port != g.Port {
		return fmt.Errorf("it listens on %s, but this data plane is told to listen on %s", got, want)
	}
	return nil
}

// healthTargets lists the backends of t that have active health checks.
func healthTargets(t *routing.Table) []health.Target {
	var out []health.Target
	for _, p := range t.Pools() {
		if p.HealthCheck.Type == "" {
			continue
		}
		var rt http.RoundTripper
		var tlsCfg *tls.Config
		if p.Transport != nil {
			rt = p.Transport
			tlsCfg = p.Transport.TLSConfig()
		}
		for i, b := range p.Backends {
			out = append(out, health.Target{
				Pool: p.Name, Address: b.Address, Check: p.HealthCheck, State: p.States[i],
				Transport: rt, TLS: tlsCfg, Scheme: p.Scheme,
			})
		}
	}
	return out
}

// watchCerts re-reads certificate files when they change on disk and when
// asked through reload, until ctx is done.
func watchCerts(ctx context.Context, store *certs.Store, interval time.Duration, reload <-chan struct{}, log hclog.Logger) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		store.Run(ctx, interval)
	}()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-reload:
			log.Info("reloading certificates on request")
			_, _ = store.Reload() // logs its own outcome; a failure keeps the old set
		}
	}
}

func serve(srv *http.Server, lis net.Listener, name string) error {
	// net.ErrClosed: the TLS listener, closed first at shutdown, closes the
	// listener the TLS server reads its connections from.
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("dataplane: %s server: %w", name, err)
	}
	return nil
}
