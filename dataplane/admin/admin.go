// Package admin serves the data plane's admin HTTP endpoints:
//
//	/healthz  200 while the process is up
//	/readyz   200 once a configuration is applied, 503 before
//	/config   the applied configuration and its version, as JSON
//	/backends every backend's health, ejection, draining and in-flight count
//	/metrics  Prometheus metrics (when configured)
//	/log-level the log level: GET reads it, PUT sets it (when configured)
//	/debug/pprof/ Go's profiler (when enabled)
package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/lb-project/lb/dataplane/configclient"
	"github.com/lb-project/lb/dataplane/routing"
)

// StatusSource reports what the data plane has applied.
type StatusSource interface {
	Status() configclient.Status
}

// ConfigView is the JSON document served at /config.
type ConfigView struct {
	// NodeID of this data plane.
	NodeID string `json:"node_id"`
	// ControlPlane is the control plane address.
	ControlPlane string `json:"control_plane"`
	// Connected reports whether the configuration stream is open.
	Connected bool `json:"connected"`
	// Version of the applied configuration; 0 when none.
	Version uint64 `json:"version"`
	// AppliedAt is when it was applied; absent when none.
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	// LastError is the most recent stream or apply error.
	LastError string `json:"last_error,omitempty"`
	// FromCache is true while serving the cached configuration.
	FromCache bool `json:"from_cache,omitempty"`
	// Pools of the applied configuration.
	Pools []routing.PoolConfig `json:"pools"`
}

// TableSource gives the routing table in use.
type TableSource interface {
	Load() *routing.Table
}

// BackendView is one backend's entry on /backends.
type BackendView struct {
	Pool     string `json:"pool"`
	Address  string `json:"address"`
	Weight   uint32 `json:"weight"`
	Draining bool   `json:"draining"`
	Healthy  bool   `json:"healthy"`
	Ejected  bool   `json:"ejected"`
	InFlight int64  `json:"in_flight"`
}

// Config configures the admin endpoints.
type Config struct {
	// NodeID and ControlPlane are shown on /config.
	NodeID, ControlPlane string
	// Status reports what the data plane applied.
	Status StatusSource
	// Tables gives the routing table in use.
	Tables TableSource
	// Metrics serves /metrics; nil: not served.
	Metrics http.Handler
	// LogLevel serves /log-level; nil: not served.
	LogLevel http.Handler
	// Pprof serves Go's profiler under /debug/pprof/.
	Pprof bool
}

// Handler returns the admin endpoints' handler.
func Handler(cfg Config) http.Handler {
	nodeID, controlPlane, src, tables := cfg.NodeID, cfg.ControlPlane, cfg.Status, cfg.Tables
	mux := http.NewServeMux()
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	if cfg.LogLevel != nil {
		mux.Handle("/log-level", cfg.LogLevel)
	}
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /backends", func(w http.ResponseWriter, _ *http.Request) {
		views := []BackendView{}
		if t := tables.Load(); t != nil {
			now := time.Now().UnixNano()
			for _, p := range t.Pools() {
				for i, b := range p.Backends {
					st := p.States[i]
					views = append(views, BackendView{
						Pool: p.Name, Address: b.Address, Weight: b.Weight, Draining: b.Draining,
						Healthy: st.Healthy(), Ejected: st.Ejected(now), InFlight: st.InFlight(),
					})
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(views)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		st := src.Status()
		if st.AppliedAt.IsZero() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: no configuration applied yet")
			return
		}
		if st.FromCache && !st.Connected {
			fmt.Fprintf(w, "ready: serving cached configuration version %d; control plane not reached\n", st.Config.Version)
			return
		}
		fmt.Fprintf(w, "ready: serving configuration version %d\n", st.Config.Version)
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		st := src.Status()
		v := ConfigView{
			NodeID: nodeID, ControlPlane: controlPlane, Connected: st.Connected,
			Version: st.Config.Version, LastError: st.LastError, Pools: st.Config.Pools, FromCache: st.FromCache,
		}
		if !st.AppliedAt.IsZero() {
			t := st.AppliedAt
			v.AppliedAt = &t
		}
		if v.Pools == nil {
			v.Pools = []routing.PoolConfig{}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	})
	return mux
}
