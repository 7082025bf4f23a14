// Package dataplane assembles lb-dataplane: the configuration client that
// follows the control plane, the proxy listener, and the admin listener.
//
//	control plane ──stream──▶ configclient ──Store──▶ routing.Current
//	                                                      │ Load (one per request)
//	client ──HTTP──▶ proxy.Handler ──pick──▶ backend ◀────┘
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lb-project/lb/dataplane/admin"
	"github.com/lb-project/lb/dataplane/configclient"
	"github.com/lb-project/lb/dataplane/proxy"
	"github.com/lb-project/lb/dataplane/routing"
)

// Config configures a data plane. The zero value of each field means its
// documented default.
type Config struct {
	// ControlPlane is the control plane's gRPC address. Default "127.0.0.1:7400".
	ControlPlane string
	// NodeID names this data plane. Default: the host name.
	NodeID string
	// Listen is the proxy's HTTP listen address. Default "127.0.0.1:6188".
	Listen string
	// AdminListen is the admin HTTP listen address. Default "127.0.0.1:9901".
	AdminListen string
	// DrainTimeout bounds how long shutdown waits for requests in flight.
	// Default 10s.
	DrainTimeout time.Duration
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
	if c.Logger == nil {
		c.Logger = hclog.Default()
	}
	return c, nil
}

// Run serves until ctx is done, then drains in-flight requests (up to
// DrainTimeout) and returns.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	log := cfg.Logger

	var table routing.Current
	cc, err := configclient.New(configclient.Config{
		Address: cfg.ControlPlane, NodeID: cfg.NodeID, Table: &table, Logger: log.Named("configclient"),
	})
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}

	proxyLis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("dataplane: listen on %s: %w", cfg.Listen, err)
	}
	adminLis, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		proxyLis.Close()
		return fmt.Errorf("dataplane: admin listen on %s: %w", cfg.AdminListen, err)
	}

	errLog := log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Debug})
	proxySrv := &http.Server{
		Handler:           proxy.New(proxy.Config{Table: &table, Logger: log.Named("proxy")}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	adminSrv := &http.Server{
		Handler:           admin.Handler(cfg.NodeID, cfg.ControlPlane, cc),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          errLog,
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- cc.Run(runCtx) }()
	go func() { errc <- serve(proxySrv, proxyLis, "proxy") }()
	go func() { errc <- serve(adminSrv, adminLis, "admin") }()
	log.Info("data plane serving", "node", cfg.NodeID, "listen", proxyLis.Addr().String(),
		"admin_listen", adminLis.Addr().String(), "control_plane", cfg.ControlPlane)

	var runErr error
	pending := 3
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		pending--
	}
	log.Info("data plane stopping", "drain_timeout", cfg.DrainTimeout)
	cancel()
	drainCtx, drainCancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer drainCancel()
	if err := proxySrv.Shutdown(drainCtx); err != nil {
		log.Warn("drain timed out; closing remaining connections", "error", err)
		proxySrv.Close()
	}
	adminSrv.Close()
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && runErr == nil {
			runErr = err
		}
	}
	return runErr
}

func serve(srv *http.Server, lis net.Listener, name string) error {
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dataplane: %s server: %w", name, err)
	}
	return nil
}
