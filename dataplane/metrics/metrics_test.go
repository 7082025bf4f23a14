package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lb-project/lb/dataplane/configclient"
	"github.com/lb-project/lb/dataplane/metrics"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/stats"
	"github.com/lb-project/lb/dataplane/upstream"
)

type status struct{ st configclient.Status }

func (s status) Status() configclient.Status { return s.st }

type tunnels int

func (t tunnels) OpenTunnels() int { return int(t) }

// TestCollectorReadsTheRequestPathCounters feeds known counts into a
// routing table's atomics and checks the exposition, series by series.
func TestCollectorReadsTheRequestPathCounters(t *testing.T) {
	tab, err := routing.Build(nil, routing.Config{Version: 7, Pools: []routing.PoolConfig{{
		Name:     "web",
		Backends: []routing.Backend{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:80", Weight: 1, Draining: true}},
	}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur routing.Current
	cur.Store(tab)
	p := tab.Pools()[0]
	a := &p.States[0].Stats
	for range 3 {
		a.Requests.Add(stats.MethodGet, 200)
	}
	a.Requests.Add(stats.MethodClass("BREW"), 503)
	a.UpstreamRequests.Add(5)
	a.ResponseBytes.Add(640)
	p.Stats.NoBackend.Add(stats.MethodPost, 503)
	p.Stats.Retries.Add(2)
	p.Stats.Duration.Observe(2 * time.Millisecond)
	var unrouted stats.Requests
	unrouted.Add(stats.MethodGet, 404)
	var conns stats.Conns
	conns.Active[stats.ListenerHTTPS][stats.ProtoHTTP2].Add(4)
	conns.Accepted[stats.ListenerHTTPS].Add(9)
	dials := upstream.NewCache(upstream.Options{}).Dials()
	dials.For("10.0.0.1:80").Attempts.Add(2)
	dials.For("10.0.0.1:80").Failures.Add(1)

	c := metrics.New(metrics.Sources{
		Tables: &cur, Unrouted: &unrouted, Conns: &conns, Dials: dials, Tunnels: tunnels(3),
		Status: status{configclient.Status{Connected: true, Config: routing.Config{Version: 7}, AppliedAt: time.Unix(1700000000, 0)}},
	})
	want := `
# HELP lb_dataplane_requests_total Requests answered, by pool, backend (the one that answered, or the last one tried), method and status class. Requests no pool matched have empty pool and backend; requests a pool had no backend for have an empty backend.
# TYPE lb_dataplane_requests_total counter
lb_dataplane_requests_total{backend="",code="4xx",method="GET",pool=""} 1
lb_dataplane_requests_total{backend="",code="5xx",method="POST",pool="web"} 1
lb_dataplane_requests_total{backend="10.0.0.1:80",code="2xx",method="GET",pool="web"} 3
lb_dataplane_requests_total{backend="10.0.0.1:80",code="5xx",method="other",pool="web"} 1
# HELP lb_dataplane_upstream_requests_total Requests sent to a backend, retries included. 1 - upstream_connections_total/upstream_requests_total is the connection reuse ratio.
# TYPE lb_dataplane_upstream_requests_total counter
lb_dataplane_upstream_requests_total{backend="10.0.0.1:80",pool="web"} 5
lb_dataplane_upstream_requests_total{backend="10.0.0.2:80",pool="web"} 0
# HELP lb_dataplane_upstream_connections_total TCP connections the data plane started to open to a backend address (all pools).
# TYPE lb_dataplane_upstream_connections_total counter
lb_dataplane_upstream_connections_total{backend="10.0.0.1:80"} 2
# HELP lb_dataplane_upstream_connect_failures_total TCP connects to a backend address that failed (refused, unreachable, timed out).
# TYPE lb_dataplane_upstream_connect_failures_total counter
lb_dataplane_upstream_connect_failures_total{backend="10.0.0.1:80"} 1
# HELP lb_dataplane_retries_total Requests sent again to another backend after a failed attempt, by pool.
# TYPE lb_dataplane_retries_total counter
lb_dataplane_retries_total{pool="web"} 2
# HELP lb_dataplane_backend_draining 1 if the backend is draining (no new requests), else 0.
# TYPE lb_dataplane_backend_draining gauge
lb_dataplane_backend_draining{backend="10.0.0.1:80",pool="web"} 0
lb_dataplane_backend_draining{backend="10.0.0.2:80",pool="web"} 1
# HELP lb_dataplane_downstream_connections Open client connections, by listener (http, https) and protocol (http1, h2).
# TYPE lb_dataplane_downstream_connections gauge
lb_dataplane_downstream_connections{listener="http",protocol="h2"} 0
lb_dataplane_downstream_connections{listener="http",protocol="http1"} 0
lb_dataplane_downstream_connections{listener="https",protocol="h2"} 4
lb_dataplane_downstream_connections{listener="https",protocol="http1"} 0
# HELP lb_dataplane_websocket_tunnels Open WebSocket tunnels.
# TYPE lb_dataplane_websocket_tunnels gauge
lb_dataplane_websocket_tunnels 3
# HELP lb_dataplane_config_version Version of the applied configuration; 0 before the first.
# TYPE lb_dataplane_config_version gauge
lb_dataplane_config_version 7
# HELP lb_dataplane_config_applied_timestamp_seconds Unix time the applied configuration was applied; absent before the first.
# TYPE lb_dataplane_config_applied_timestamp_seconds gauge
lb_dataplane_config_applied_timestamp_seconds 1.7e+09
`
	names := []string{
		"lb_dataplane_requests_total", "lb_dataplane_upstream_requests_total", "lb_dataplane_upstream_connections_total",
		"lb_dataplane_upstream_connect_failures_total", "lb_dataplane_retries_total", "lb_dataplane_backend_draining",
		"lb_dataplane_downstream_connections", "lb_dataplane_websocket_tunnels", "lb_dataplane_config_version",
		"lb_dataplane_config_applied_timestamp_seconds",
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP lb_dataplane_request_duration_seconds Time from a request's arrival to the end of its response (the tunnel's end for WebSocket), by pool.
# TYPE lb_dataplane_request_duration_seconds histogram
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.0005"} 0
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.001"} 0
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.0025"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.005"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.01"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.025"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.05"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.1"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.25"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="0.5"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="1"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="2.5"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="5"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="10"} 1
lb_dataplane_request_duration_seconds_bucket{pool="web",le="+Inf"} 1
lb_dataplane_request_duration_seconds_sum{pool="web"} 0.002
lb_dataplane_request_duration_seconds_count{pool="web"} 1
`), "lb_dataplane_request_duration_seconds"); err != nil {
		t.Error(err)
	}
	// Every metric passes the linter's naming rules.
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
