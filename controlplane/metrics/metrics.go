// Package metrics keeps the control plane's Prometheus metrics and serves
// them from a registry of their own (not the process-wide default one).
//
// Events reach it through three seams, so that no other control plane
// package imports Prometheus:
//
//	discovery.Server ──Observer (Discovery)──────────▶ connected data planes,
//	                                                   pushes, ACKs, NACKs,
//	                                                   version, propagation
//	grpc.Server ──interceptors (Unary/StreamServer…)─▶ calls by method and code
//	store.Store ◀─decorator (InstrumentStore)─ admin,  store latency, errors
//	                                           discovery
//
// Every label takes values from a fixed set: gRPC methods registered on the
// server, gRPC codes, and store operations. None takes a node id, peer
// address or pool name.
package metrics

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/store"
)

// Metric name parts: every metric is lb_controlplane_<name>.
const (
	namespace = "lb"
	subsystem = "controlplane"
)

// Store operation label values, the store.Store methods measured.
const (
	OpRead   = "read"
	OpUpdate = "update"
)

// UnknownMethod is the method label of calls to a method that InitMethods
// was not told of; it keeps the label set bounded.
const UnknownMethod = "unknown"

// Histogram buckets, in seconds.
var (
	// storeBuckets spans a cached read (~100µs) to a slow etcd quorum.
	storeBuckets = prometheus.ExponentialBuckets(0.0001, 4, 10)
	// callBuckets spans a read-only admin call to a long WaitForVersion.
	callBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	// propagationBuckets spans a loopback fleet to a large, distant one.
	propagationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
)

// Metrics is the control plane's set of metrics and their registry. Its
// methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	connected   prometheus.Gauge
	version     prometheus.Gauge
	pushes      prometheus.Counter
	acks        prometheus.Counter
	nacks       prometheus.Counter
	propagation prometheus.Histogram

	grpcRequests *prometheus.CounterVec
	grpcDuration *prometheus.HistogramVec
	// methods maps the full name of each served gRPC method to its series;
	// replaced whole by InitMethods, read on every call.
	methods atomic.Pointer[map[string]*methodSeries]

	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
}

// methodSeries holds one gRPC method's series that every call touches, so
// a successful call costs no label lookup.
type methodSeries struct {
	name     string
	duration prometheus.Observer
	ok       prometheus.Counter
}

// New returns the control plane's metrics in a new registry, which also
// holds the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "connected_dataplanes",
			Help: "Data planes with an open configuration (discovery) stream to this control plane.",
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "config_version",
			Help: "Newest configuration version this control plane published to data planes.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "config_pushes_total",
			Help: "Configuration messages sent to data planes.",
		}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "config_acks_total",
			Help: "Acknowledgements (ACKs) of configuration versions received from data planes.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "config_nacks_total",
			Help: "Refusals (NACKs) of configuration versions received from data planes.",
		}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "config_propagation_seconds",
			Help: "Time from a configuration version being published (committed to the store and picked up " +
				"by this control plane) until the last data plane connected at that moment acknowledged it " +
				"or a later version. Observed once per version, when every connected data plane has it (if the " +
				"last laggard disconnects instead, at the last acknowledgement before); versions superseded " +
				"first, published while no data plane was connected, or acknowledged by none, are not observed.",
			Buckets: propagationBuckets,
		}),
		grpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "grpc_requests_total",
			Help: "gRPC calls handled, by full method name and status code; a stream counts when it ends.",
		}, []string{"method", "code"}),
		grpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "grpc_request_duration_seconds",
			Help:    "Time to handle a gRPC call, by full method name; for a stream, its whole life.",
			Buckets: callBuckets,
		}, []string{"method"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "store_operation_duration_seconds",
			Help:    "Time taken by store operations (read, update), an update's own checks and retries included.",
			Buckets: storeBuckets,
		}, []string{"operation"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "store_errors_total",
			Help: "Store operations that failed in the store; an update refused by its own checks " +
				"(a missing pool, a stale expected version) is not counted.",
		}, []string{"operation"}),
	}
	for _, op := range []string{OpRead, OpUpdate} {
		m.storeDuration.WithLabelValues(op)
		m.storeErrors.WithLabelValues(op)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.connected, m.version, m.pushes, m.acks, m.nacks, m.propagation,
		m.grpcRequests, m.grpcDuration, m.storeDuration, m.storeErrors,
	)
	empty := map[string]*methodSeries{}
	m.methods.Store(&empty)
	return m
}

// Gatherer returns the registry the metrics are kept in.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler returns the /metrics handler: the registry in the Prometheus
// exposition format. Errors gathering or writing are logged to log.
func (m *Metrics) Handler(log hclog.Logger) http.Handler {
	errLog := log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn})
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: errLog})
}

// InitMethods makes the methods of services (as grpc.Server.GetServiceInfo
// lists them) the method label's values, each with its duration series and
// a zero OK count from the start; calls to any other method are labelled
// UnknownMethod. Call it once the services are registered and before
// serving.
func (m *Metrics) InitMethods(services map[string]grpc.ServiceInfo) {
	methods := make(map[string]*methodSeries)
	for svc, info := range services {
		for _, mi := range info.Methods {
			name := "/" + svc + "/" + mi.Name
			methods[name] = m.newMethodSeries(name)
		}
	}
	m.methods.Store(&methods)
}

func (m *Metrics) newMethodSeries(name string) *methodSeries {
	return &methodSeries{
		name:     name,
		duration: m.grpcDuration.WithLabelValues(name),
		ok:       m.grpcRequests.WithLabelValues(name, codes.OK.String()),
	}
}

// series returns the series of the method named fullMethod.
func (m *Metrics) series(fullMethod string) *methodSeries {
	if s, ok := (*m.methods.Load())[fullMethod]; ok {
		return s
	}
	return m.newMethodSeries(UnknownMethod)
}

// observeCall counts one call of fullMethod that took d and ended with err.
func (m *Metrics) observeCall(fullMethod string, err error, d time.Duration) {
	s := m.series(fullMethod)
	s.duration.Observe(d.Seconds())
	if err == nil {
		s.ok.Inc()
		return
	}
	m.grpcRequests.WithLabelValues(s.name, Code(err).String()).Inc()
}

// Code returns the gRPC code a handler's error reaches the client with:
// its status code, or for a plain error what grpc-go makes of it
// (Canceled or DeadlineExceeded for context errors, else Unknown).
func Code(err error) codes.Code {
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return status.FromContextError(err).Code()
}

// UnaryServerInterceptor returns an interceptor that counts and times
// every unary call. Chain it first, so that calls refused by later
// interceptors (authentication) are counted too.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observeCall(info.FullMethod, err, time.Since(start))
		return resp, err
	}
}

// StreamServerInterceptor returns an interceptor that counts and times
// every streaming call when it ends. Chain it first, like the unary one.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observeCall(info.FullMethod, err, time.Since(start))
		return err
	}
}

// Discovery returns the observer to set as the discovery server's
// Observer.
func (m *Metrics) Discovery() discovery.Observer { return discoveryObserver{m: m} }

// discoveryObserver turns discovery events into metrics; each costs an
// atomic add or two.
type discoveryObserver struct{ m *Metrics }

var _ discovery.Observer = discoveryObserver{}

// StreamOpened implements discovery.Observer.
func (o discoveryObserver) StreamOpened() { o.m.connected.Inc() }

// StreamClosed implements discovery.Observer.
func (o discoveryObserver) StreamClosed() { o.m.connected.Dec() }

// Published implements discovery.Observer.
func (o discoveryObserver) Published(version uint64) { o.m.version.Set(float64(version)) }

// Sent implements discovery.Observer.
func (o discoveryObserver) Sent(uint64) { o.m.pushes.Inc() }

// Acked implements discovery.Observer.
func (o discoveryObserver) Acked(uint64) { o.m.acks.Inc() }

// Nacked implements discovery.Observer.
func (o discoveryObserver) Nacked(uint64) { o.m.nacks.Inc() }

// Propagated implements discovery.Observer.
func (o discoveryObserver) Propagated(_ uint64, d time.Duration) {
	o.m.propagation.Observe(d.Seconds())
}

// InstrumentStore returns st measured: the duration of every Read and
// Update, under operations OpRead and OpUpdate, and their failures. An
// Update whose function refused the change (its error is returned as it
// is) is timed but is not a store error. Watch and Close pass through.
func (m *Metrics) InstrumentStore(st store.Store) store.Store {
	return &instrumentedStore{
		next:   st,
		read:   storeOp{duration: m.storeDuration.WithLabelValues(OpRead), errors: m.storeErrors.WithLabelValues(OpRead)},
		update: storeOp{duration: m.storeDuration.WithLabelValues(OpUpdate), errors: m.storeErrors.WithLabelValues(OpUpdate)},
	}
}

// storeOp is one store operation's series.
type storeOp struct {
	duration prometheus.Observer
	errors   prometheus.Counter
}

func (o storeOp) observe(start time.Time, failed bool) {
	o.duration.Observe(time.Since(start).Seconds())
	if failed {
		o.errors.Inc()
	}
}

// instrumentedStore is a store.Store that measures the one it wraps.
type instrumentedStore struct {
	next         store.Store
	read, update storeOp
}

var _ store.Store = (*instrumentedStore)(nil)

// Read implements store.Store.
func (s *instrumentedStore) Read(ctx context.Context) (store.State, error) {
	start := time.Now()
	st, err := s.next.Read(ctx)
	s.read.observe(start, err != nil)
	return st, err
}

// Update implements store.Store.
func (s *instrumentedStore) Update(ctx context.Context, fn func(tx store.Tx) error) (uint64, error) {
	// refused records whether the last run of fn (a store may retry it)
	// failed: the store then returns that error as it is.
	var refused bool
	start := time.Now()
	v, err := s.next.Update(ctx, func(tx store.Tx) error {
		ferr := fn(tx)
		refused = ferr != nil
		return ferr
	})
	s.update.observe(start, err != nil && !refused)
	return v, err
}

// Watch implements store.Store.
func (s *instrumentedStore) Watch(ctx context.Context) <-chan struct{} { return s.next.Watch(ctx) }

// Close implements store.Store.
func (s *instrumentedStore) Close() error { return s.next.Close() }
