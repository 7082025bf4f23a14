// Package controlplane assembles lb-controlplane: the durable pool store, the
// admin API (lb.v1.AdminService), the discovery API that pushes configuration
// to data planes (lb.v1.DiscoveryService), gRPC health checking and server
// reflection, all on one gRPC listener; and, on an HTTP admin listener,
// Prometheus metrics (/metrics), liveness (/healthz), readiness (/readyz) and
// the run-time log level (/log-level).
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/admin"
	"github.com/lb-project/lb/controlplane/auth"
	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/metrics"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/controlplane/store/boltstore"
	"github.com/lb-project/lb/controlplane/store/etcdstore"
	"github.com/lb-project/lb/internal/logging"
)

// Config configures a control plane. The zero value of each field means its
// documented default.
type Config struct {
	// Listen is the gRPC listen address. Default "127.0.0.1:7400".
	Listen string
	// AdminListen is the admin HTTP listen address (/metrics, /healthz,
	// /readyz, /log-level). Empty: no admin listener. (lb-controlplane's
	// --admin-listen flag defaults to "127.0.0.1:7401".)
	AdminListen string
	// DataDir holds the embedded store. Default "./data/controlplane".
	DataDir string
	// Store is "bbolt" (default: the embedded store in DataDir) or "etcd".
	Store string
	// EtcdEndpoints are the etcd cluster's client URLs, for Store "etcd".
	EtcdEndpoints []string
	// EtcdPrefix is the key prefix in etcd. Default "/lb/".
	EtcdPrefix string
	// TLSCert and TLSKey are the server certificate; empty: plain text.
	TLSCert, TLSKey string
	// TLSCA verifies client certificates; with it, data planes must present
	// one whose identity is their node id.
	TLSCA string
	// TokensFile holds the admin API's bearer tokens; empty: open admin API.
	TokensFile string
	// Insecure allows plain text on a non-loopback listen address.
	Insecure bool
	// ShutdownTimeout bounds the graceful stop of open streams and calls
	// before they are cut. Default 5s.
	ShutdownTimeout time.Duration
	// Logger receives every log line; /log-level changes its level, so it
	// should be the root logger. Default: hclog's default logger.
	Logger hclog.Logger
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7400"
	}
	if c.DataDir == "" {
		c.DataDir = "./data/controlplane"
	}
	if c.Store == "" {
		c.Store = "bbolt"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.Default()
	}
	return c
}

// Readiness states of the control plane, served at /readyz.
const (
	stateStarting int32 = iota
	stateServing
	stateStopping
)

// Run serves the control plane until ctx is done, then stops gracefully.
// It returns an error if the store cannot be opened, an address cannot be
// bound, or serving fails.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	m := metrics.New()

	// The admin listener comes up first, so that an orchestrator sees the
	// process alive (and not ready) while the store opens.
	var state atomic.Int32
	var adminSrv *http.Server
	var adminLis net.Listener
	if cfg.AdminListen != "" {
		var err error
		if adminLis, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			return fmt.Errorf("controlplane: admin listen on %s: %w", cfg.AdminListen, err)
		}
		adminSrv = &http.Server{
			Handler:           adminHandler(m.Handler(log.Named("metrics")), logging.LevelHandler(log), &state),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          log.Named("admin").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Debug}),
		}
	}
	// errc receives the result of every goroutine started below; pending
	// counts those that have not reported yet.
	errc := make(chan error, 3)
	pending := 0
	if adminSrv != nil {
		pending++
		go func() {
			err := adminSrv.Serve(adminLis)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			} else if err != nil {
				err = fmt.Errorf("admin listener: %w", err)
			}
			errc <- err
		}()
		// On a return before the gRPC server starts, the admin server is
		// the only goroutine pending: close it and collect its result.
		// Later, Run stops it with the gRPC server and collects them all.
		defer func() {
			if pending > 0 {
				adminSrv.Close()
				<-errc
			}
		}()
	}

	raw, where, err := openStore(ctx, cfg)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	defer func() {
		if err := raw.Close(); err != nil {
			log.Error("closing store", "error", err)
		}
	}()
	st := m.InstrumentStore(raw)

	if err := auth.CheckListen(cfg.Listen, cfg.TLSCert != "", cfg.Insecure); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.TLSCert != "" {
		tlsCfg, err := serverTLS(cfg)
		if err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	var tokens []auth.Token
	if cfg.TokensFile != "" {
		if tokens, err = auth.LoadTokens(cfg.TokensFile); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
	}
	policy := auth.NewPolicy(tokens, cfg.TLSCA != "", readOnlyMethods, lbv1.DiscoveryService_ServiceDesc.ServiceName)
	authLog := log.Named("auth")
	refused := func(method string, c auth.Caller, err error) {
		authLog.Warn("call refused", "method", method, "caller", c.Name, "error", status.Convert(err).Message())
	}
	// Metrics come first, so that calls the policy refuses are counted.
	opts = append(opts,
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor(), policy.UnaryInterceptor(refused)),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor(), policy.StreamInterceptor(refused)))

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("controlplane: listen on %s: %w", cfg.Listen, err)
	}

	srv := grpc.NewServer(opts...)
	disc := discovery.New(log.Named("discovery"))
	disc.CheckNode = policy.CheckNode
	disc.Observer = m.Discovery()
	lbv1.RegisterAdminServiceServer(srv, admin.New(st, disc, log.Named("admin")))
	lbv1.RegisterDiscoveryServiceServer(srv, disc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	m.InitMethods(srv.GetServiceInfo())

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pending += 2
	go func() { errc <- disc.Run(runCtx, st) }()
	go func() { errc <- srv.Serve(lis) }()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(lbv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(lbv1.DiscoveryService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	state.Store(stateServing)
	adminAddr := ""
	if adminLis != nil {
		adminAddr = adminLis.Addr().String()
	}
	log.Info("control plane serving", "listen", lis.Addr().String(), "admin_listen", adminAddr,
		"store", cfg.Store, "at", where)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		pending--
		if runErr != nil {
			runErr = fmt.Errorf("controlplane: %w", runErr)
		}
	}
	log.Info("control plane stopping")
	state.Store(stateStopping)
	hs.Shutdown()
	disc.Shutdown()
	cancel()
	stopGracefully(srv, cfg.ShutdownTimeout, log)
	if adminSrv != nil {
		stopAdmin(adminSrv, cfg.ShutdownTimeout, log)
	}
	// Collect the goroutines that did not report yet.
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && runErr == nil && !errors.Is(err, grpc.ErrServerStopped) {
			runErr = fmt.Errorf("controlplane: %w", err)
		}
	}
	return runErr
}

// adminHandler serves the admin HTTP endpoints: metrics, levels, and
// liveness and readiness from state.
func adminHandler(metricsHandler, levelHandler http.Handler, state *atomic.Int32) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler)
	mux.Handle("/log-level", levelHandler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch state.Load() {
		case stateServing:
			fmt.Fprintln(w, "ready")
		case stateStopping:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: stopping")
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: starting")
		}
	})
	return mux
}

// stopAdmin lets admin requests in flight (a scrape) finish for up to
// timeout, then closes the admin server.
func stopAdmin(srv *http.Server, timeout time.Duration, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("admin listener shutdown timed out; closing it", "error", err)
		srv.Close()
	}
}

// readOnlyMethods are the admin methods a viewer token may call.
var readOnlyMethods = []string{
	lbv1.AdminService_GetPool_FullMethodName,
	lbv1.AdminService_ListPools_FullMethodName,
	lbv1.AdminService_ListDataPlanes_FullMethodName,
	lbv1.AdminService_WaitForVersion_FullMethodName,
}

// serverTLS builds the server's TLS configuration: its certificate, and
// with a CA, verification of client certificates when given (lbctl may
// come with a token instead; data planes are then held to theirs).
func serverTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("read --tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", cfg.TLSCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// openStore opens the configured store and says where it is.
func openStore(ctx context.Context, cfg Config) (store.Store, string, error) {
	switch cfg.Store {
	case "bbolt":
		st, err := boltstore.Open(cfg.DataDir)
		return st, cfg.DataDir, err
	case "etcd":
		if len(cfg.EtcdEndpoints) == 0 {
			return nil, "", errors.New("--store etcd needs --etcd-endpoints")
		}
		st, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: cfg.EtcdEndpoints, Prefix: cfg.EtcdPrefix})
		return st, strings.Join(cfg.EtcdEndpoints, ","), err
	}
	return nil, "", fmt.Errorf("unknown store %q: want bbolt or etcd", cfg.Store)
}

// stopGracefully lets running calls finish for up to timeout, then cuts them.
// Discovery streams never end by themselves, so they are cut at the deadline
// unless the clients leave first.
func stopGracefully(srv *grpc.Server, timeout time.Duration, log hclog.Logger) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn("graceful stop timed out; closing remaining streams", "timeout", timeout)
		srv.Stop()
		<-done
	}
}
