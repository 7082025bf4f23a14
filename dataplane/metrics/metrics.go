// Package metrics exposes the data plane's counters to Prometheus. It owns
// no counters itself: at each scrape, Collector reads the atomics that the
// request path keeps in the routing table (package stats), the connection
// counts, the configuration status and the certificates, so serving traffic
// never touches a Prometheus object, a map or a lock.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lb-project/lb/dataplane/certs"
	"github.com/lb-project/lb/dataplane/configclient"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/stats"
	"github.com/lb-project/lb/dataplane/upstream"
)

// Sources are what the collector reads. Nil fields are skipped.
type Sources struct {
	// Tables gives the routing table in use.
	Tables interface{ Load() *routing.Table }
	// Status gives the applied configuration's version and time.
	Status interface{ Status() configclient.Status }
	// Unrouted counts requests answered without a pool.
	Unrouted *stats.Requests
	// Conns counts downstream connections.
	Conns *stats.Conns
	// Dials counts upstream connections opened.
	Dials *upstream.DialStats
	// Certs lists the served certificates.
	Certs interface{ Certificates() []certs.CertInfo }
	// Tunnels gives the number of open WebSocket tunnels.
	Tunnels interface{ OpenTunnels() int }
	// AccessLog gives the access log's drop count.
	AccessLog interface{ Dropped() uint64 }
}

// Collector is a prometheus.Collector over Sources.
type Collector struct {
	src Sources
}

// New returns a collector reading src.
func New(src Sources) *Collector { return &Collector{src: src} }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics, named by Prometheus conventions. No label takes a value the
// client controls: pool and backend come from the configuration, method
// and code are classes (stats.MethodNames, stats.CodeNames).
var (
	requestsDesc = desc("lb_dataplane_requests_total",
		"Requests answered, by pool, backend (the one that answered, or the last one tried), method and status class. Requests no pool matched have empty pool and backend; requests a pool had no backend for have an empty backend.",
		"pool", "backend", "method", "code")
	durationDesc = desc("lb_dataplane_request_duration_seconds",
		"Time from a request's arrival to the end of its response (the tunnel's end for WebSocket), by pool.", "pool")
	upstreamDurationDesc = desc("lb_dataplane_upstream_response_duration_seconds",
		"Time from sending a request to a backend to receiving its response headers, by pool.", "pool")
	requestBytesDesc = desc("lb_dataplane_request_body_bytes_total",
		"Request body bytes received from clients and relayed to the backend (client-to-backend tunnel bytes for WebSocket).", "pool", "backend")
	responseBytesDesc = desc("lb_dataplane_response_body_bytes_total",
		"Response body bytes sent to clients (backend-to-client tunnel bytes for WebSocket).", "pool", "backend")
	upstreamRequestsDesc = desc("lb_dataplane_upstream_requests_total",
		"Requests sent to a backend, retries included. 1 - upstream_connections_total/upstream_requests_total is the connection reuse ratio.", "pool", "backend")
	upstreamConnsDesc = desc("lb_dataplane_upstream_connections_total",
		"TCP connections the data plane started to open to a backend address (all pools).", "backend")
	upstreamConnFailDesc = desc("lb_dataplane_upstream_connect_failures_total",
		"TCP connects to a backend address that failed (refused, unreachable, timed out).", "backend")
	retriesDesc = desc("lb_dataplane_retries_total",
		"Requests sent again to another backend after a failed attempt, by pool.", "pool")
	healthyDesc = desc("lb_dataplane_backend_healthy",
		"1 if the backend passes its active health checks (or has none), else 0.", "pool", "backend")
	ejectedDesc = desc("lb_dataplane_backend_ejected",
		"1 while passive health checking keeps the backend out of rotation, else 0.", "pool", "backend")
	drainingDesc = desc("lb_dataplane_backend_draining",
		"1 if the backend is draining (no new requests), else 0.", "pool", "backend")
	inFlightDesc = desc("lb_dataplane_backend_requests_in_flight",
		"Requests currently in flight to the backend.", "pool", "backend")
	ejectionsDesc = desc("lb_dataplane_backend_ejections_total",
		"Times passive health checking ejected the backend.", "pool", "backend")
	connsDesc = desc("lb_dataplane_downstream_connections",
		"Open client connections, by listener (http, https) and protocol (http1, h2).", "listener", "protocol")
	acceptedDesc = desc("lb_dataplane_downstream_connections_accepted_total",
		"Client connections accepted, by listener.", "listener")
	tunnelsDesc = desc("lb_dataplane_websocket_tunnels",
		"Open WebSocket tunnels.")
	versionDesc = desc("lb_dataplane_config_version",
		"Version of the applied configuration; 0 before the first.")
	appliedDesc = desc("lb_dataplane_config_applied_timestamp_seconds",
		"Unix time the applied configuration was applied; absent before the first.")
	connectedDesc = desc("lb_dataplane_controlplane_connected",
		"1 while the configuration stream to a control plane is open, else 0.")
	certExpiryDesc = desc("lb_dataplane_certificate_expiry_timestamp_seconds",
		"Unix time the served certificate expires (NotAfter), by certificate file and first name.", "source", "name")
	accessDroppedDesc = desc("lb_dataplane_access_log_dropped_total",
		"Access log entries dropped because the writer fell behind.")
)

var allDescs = []*prometheus.Desc{
	requestsDesc, durationDesc, upstreamDurationDesc, requestBytesDesc, responseBytesDesc, upstreamRequestsDesc,
	upstreamConnsDesc, upstreamConnFailDesc, retriesDesc, healthyDesc, ejectedDesc, drainingDesc, inFlightDesc,
	ejectionsDesc, connsDesc, acceptedDesc, tunnelsDesc, versionDesc, appliedDesc, connectedDesc, certExpiryDesc,
	accessDroppedDesc,
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// emitter sends const metrics to a Collect channel.
type emitter chan<- prometheus.Metric

func (e emitter) counter(d *prometheus.Desc, v uint64, labels ...string) {
	e <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func (e emitter) gauge(d *prometheus.Desc, v float64, labels ...string) {
	e <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// requests emits the non-zero request counts of r.
func (e emitter) requests(r *stats.Requests, pool, backend string) {
	for m := range stats.NumMethods {
		for k := range stats.NumCodes {
			if v := r[m][k].Load(); v > 0 {
				e.counter(requestsDesc, v, pool, backend, stats.MethodNames[m], stats.CodeNames[k])
			}
		}
	}
}

func (e emitter) histogram(d *prometheus.Desc, h *stats.Histogram, pool string) {
	count, sum, buckets := h.Snapshot()
	e <- prometheus.MustNewConstHistogram(d, count, sum, buckets, pool)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	e := emitter(ch)
	if c.src.Unrouted != nil {
		e.requests(c.src.Unrouted, "", "")
	}
	if c.src.Tables != nil {
		if t := c.src.Tables.Load(); t != nil {
			collectPools(e, t)
		}
	}
	if d := c.src.Dials; d != nil {
		d.Range(func(addr string, dc *upstream.DialCounts) {
			e.counter(upstreamConnsDesc, dc.Attempts.Load(), addr)
			e.counter(upstreamConnFailDesc, dc.Failures.Load(), addr)
		})
	}
	if cs := c.src.Conns; cs != nil {
		for l := range stats.NumListeners {
			e.counter(acceptedDesc, cs.Accepted[l].Load(), stats.ListenerNames[l])
			for p := range stats.NumProtos {
				e.gauge(connsDesc, float64(cs.Active[l][p].Load()), stats.ListenerNames[l], stats.ProtoNames[p])
			}
		}
	}
	if c.src.Tunnels != nil {
		e.gauge(tunnelsDesc, float64(c.src.Tunnels.OpenTunnels()))
	}
	if c.src.Status != nil {
		st := c.src.Status.Status()
		e.gauge(versionDesc, float64(st.Config.Version))
		e.gauge(connectedDesc, boolValue(st.Connected))
		if !st.AppliedAt.IsZero() {
			e.gauge(appliedDesc, float64(st.AppliedAt.UnixNano())/1e9)
		}
	}
	if c.src.Certs != nil {
		for _, ci := range c.src.Certs.Certificates() {
			name := ""
			if len(ci.Names) > 0 {
				name = ci.Names[0]
			}
			e.gauge(certExpiryDesc, float64(ci.NotAfter.Unix()), ci.Source, name)
		}
	}
	if c.src.AccessLog != nil {
		e.counter(accessDroppedDesc, c.src.AccessLog.Dropped())
	}
}

// collectPools emits the metrics of t's pools and backends.
func collectPools(e emitter, t *routing.Table) {
	now := time.Now().UnixNano()
	for _, p := range t.Pools() {
		e.requests(&p.Stats.NoBackend, p.Name, "")
		e.histogram(durationDesc, &p.Stats.Duration, p.Name)
		e.histogram(upstreamDurationDesc, &p.Stats.Upstream, p.Name)
		e.counter(retriesDesc, p.Stats.Retries.Load(), p.Name)
		for i, b := range p.Backends {
			st := p.States[i]
			s := &st.Stats
			e.requests(&s.Requests, p.Name, b.Address)
			e.counter(requestBytesDesc, s.RequestBytes.Load(), p.Name, b.Address)
			e.counter(responseBytesDesc, s.ResponseBytes.Load(), p.Name, b.Address)
			e.counter(upstreamRequestsDesc, s.UpstreamRequests.Load(), p.Name, b.Address)
			e.counter(ejectionsDesc, s.Ejections.Load(), p.Name, b.Address)
			e.gauge(healthyDesc, boolValue(st.Healthy()), p.Name, b.Address)
			e.gauge(ejectedDesc, boolValue(st.Ejected(now)), p.Name, b.Address)
			e.gauge(drainingDesc, boolValue(b.Draining), p.Name, b.Address)
			e.gauge(inFlightDesc, float64(st.InFlight()), p.Name, b.Address)
		}
	}
}
