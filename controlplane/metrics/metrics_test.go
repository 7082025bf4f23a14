package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lb-project/lb/controlplane/metrics"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/internal/poolspec"
)

// TestMain fails the package when a test leaves a goroutine running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// family returns the gathered metric family called name, or nil.
func family(t *testing.T, g prometheus.Gatherer, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

// sample returns the value of the series of name with exactly labels: a
// counter's or gauge's value, or a histogram's count; ok is false when
// there is no such series.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (v float64, ok bool) {
	t.Helper()
	f := family(t, g, name)
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func mustSample(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := sample(t, g, name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

func TestNewRegistersEveryMetric(t *testing.T) {
	m := metrics.New()
	tests := []struct {
		name string
		typ  dto.MetricType
	}{
		{"lb_controlplane_connected_dataplanes", dto.MetricType_GAUGE},
		{"lb_controlplane_config_version", dto.MetricType_GAUGE},
		{"lb_controlplane_config_pushes_total", dto.MetricType_COUNTER},
		{"lb_controlplane_config_acks_total", dto.MetricType_COUNTER},
		{"lb_controlplane_config_nacks_total", dto.MetricType_COUNTER},
		{"lb_controlplane_config_propagation_seconds", dto.MetricType_HISTOGRAM},
		{"lb_controlplane_store_operation_duration_seconds", dto.MetricType_HISTOGRAM},
		{"lb_controlplane_store_errors_total", dto.MetricType_COUNTER},
		{"go_goroutines", dto.MetricType_GAUGE},
		{"process_cpu_seconds_total", dto.MetricType_COUNTER},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := family(t, m.Gatherer(), tc.name)
			if f == nil {
				t.Fatalf("%s not gathered", tc.name)
			}
			if f.GetType() != tc.typ {
				t.Errorf("%s is a %v, want %v", tc.name, f.GetType(), tc.typ)
			}
			if f.GetHelp() == "" {
				t.Errorf("%s has no help", tc.name)
			}
		})
	}
	// The gRPC families appear once a method is known.
	for _, name := range []string{"lb_controlplane_grpc_requests_total", "lb_controlplane_grpc_request_duration_seconds"} {
		if f := family(t, m.Gatherer(), name); f != nil {
			t.Errorf("%s gathered before any method is known: %v", name, f)
		}
	}
	// A second set of metrics does not clash with the first: each has its
	// own registry.
	if m2 := metrics.New(); family(t, m2.Gatherer(), "lb_controlplane_config_version") == nil {
		t.Error("a second Metrics gathers nothing")
	}
}

func TestDiscoveryObserver(t *testing.T) {
	m := metrics.New()
	o := m.Discovery()
	o.StreamOpened()
	o.StreamOpened()
	o.StreamOpened()
	o.StreamClosed()
	o.Published(3)
	o.Published(7)
	for range 5 {
		o.Sent(7)
	}
	for range 4 {
		o.Acked(7)
	}
	o.Nacked(7)
	o.Propagated(7, 1500*time.Millisecond)
	o.Propagated(9, 20*time.Millisecond)

	g := m.Gatherer()
	tests := []struct {
		name string
		want float64
	}{
		{"lb_controlplane_connected_dataplanes", 2},
		{"lb_controlplane_config_version", 7},
		{"lb_controlplane_config_pushes_total", 5},
		{"lb_controlplane_config_acks_total", 4},
		{"lb_controlplane_config_nacks_total", 1},
		{"lb_controlplane_config_propagation_seconds", 2}, // count
	}
	for _, tc := range tests {
		if got := mustSample(t, g, tc.name, nil); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	h := family(t, g, "lb_controlplane_config_propagation_seconds").GetMetric()[0].GetHistogram()
	if got := h.GetSampleSum(); got < 1.519 || got > 1.521 {
		t.Errorf("propagation sum = %v, want 1.52", got)
	}
}

// fakeStore is a store.Store whose Read and Update fail with err when set;
// its Update runs fn on an empty transaction.
type fakeStore struct {
	err    error
	closed bool
}

func (f *fakeStore) Read(context.Context) (store.State, error) {
	return store.State{Version: 4}, f.err
}

func (f *fakeStore) Update(_ context.Context, fn func(store.Tx) error) (uint64, error) {
	if err := fn(fakeTx{}); err != nil {
		return 0, err
	}
	if f.err != nil {
		return 0, f.err
	}
	return 5, nil
}

func (f *fakeStore) Watch(context.Context) <-chan struct{} { return nil }
func (f *fakeStore) Close() error                          { f.closed = true; return nil }

type fakeTx struct{}

func (fakeTx) Pool(string) (poolspec.Pool, bool) { return poolspec.Pool{}, false }
func (fakeTx) Pools() []poolspec.Pool            { return nil }
func (fakeTx) Put(poolspec.Pool)                 {}
func (fakeTx) Delete(string)                     {}

func TestInstrumentStore(t *testing.T) {
	refusal := status.Error(codes.NotFound, "no pool")
	broken := errors.New("disk on fire")
	tests := []struct {
		name      string
		storeErr  error
		op        string
		fnErr     error
		wantErr   error
		wantCount float64
		wantErrs  float64
	}{
		{name: "read", op: metrics.OpRead, wantCount: 1},
		{name: "read failing", op: metrics.OpRead, storeErr: broken, wantErr: broken, wantCount: 1, wantErrs: 1},
		{name: "update", op: metrics.OpUpdate, wantCount: 1},
		{name: "update refused by its function", op: metrics.OpUpdate, fnErr: refusal, wantErr: refusal, wantCount: 1},
		{name: "update failing in the store", op: metrics.OpUpdate, storeErr: broken, wantErr: broken, wantCount: 1, wantErrs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			raw := &fakeStore{err: tc.storeErr}
			st := m.InstrumentStore(raw)
			var err error
			switch tc.op {
			case metrics.OpRead:
				_, err = st.Read(t.Context())
			case metrics.OpUpdate:
				_, err = st.Update(t.Context(), func(store.Tx) error { return tc.fnErr })
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			g := m.Gatherer()
			for _, op := range []string{metrics.OpRead, metrics.OpUpdate} {
				wantCount, wantErrs := 0.0, 0.0
				if op == tc.op {
					wantCount, wantErrs = tc.wantCount, tc.wantErrs
				}
				labels := map[string]string{"operation": op}
				if got := mustSample(t, g, "lb_controlplane_store_operation_duration_seconds", labels); got != wantCount {
					t.Errorf("%s duration count = %v, want %v", op, got, wantCount)
				}
				if got := mustSample(t, g, "lb_controlplane_store_errors_total", labels); got != wantErrs {
					t.Errorf("%s errors = %v, want %v", op, got, wantErrs)
				}
			}
			if err := st.Close(); err != nil || !raw.closed {
				t.Errorf("Close = %v, closed %v; want it passed through", err, raw.closed)
			}
		})
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"status", status.Error(codes.NotFound, "x"), codes.NotFound},
		{"wrapped status", fmt.Errorf("admin: %w", status.Error(codes.FailedPrecondition, "x")), codes.FailedPrecondition},
		{"canceled", context.Canceled, codes.Canceled},
		{"deadline", fmt.Errorf("waiting: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"plain", errors.New("boom"), codes.Unknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := metrics.Code(tc.err); got != tc.want {
				t.Errorf("Code(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestInterceptors serves the gRPC health service through the interceptors
// on a loopback listener and checks what real calls count.
func TestInterceptors(t *testing.T) {
	m := metrics.New()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()))
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	m.InitMethods(srv.GetServiceInfo())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	const (
		check = "/grpc.health.v1.Health/Check"
		watch = "/grpc.health.v1.Health/Watch"
		list  = "/grpc.health.v1.Health/List"
	)
	g := m.Gatherer()
	// Every registered method has its series from the start.
	for _, method := range []string{check, watch, list} {
		if got := mustSample(t, g, "lb_controlplane_grpc_requests_total", map[string]string{"method": method, "code": "OK"}); got != 0 {
			t.Errorf("%s OK = %v before any call, want 0", method, got)
		}
	}

	for _, svc := range []string{"", "", "", "missing", "missing"} {
		_, _ = client.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	}
	// A call to a method nobody registered never reaches the interceptors.
	if err := conn.Invoke(ctx, "/no.Such/Method", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("unregistered method: %v, want Unimplemented", err)
	}
	// A stream counts when it ends: here cancelled by the client.
	wctx, wcancel := context.WithCancel(ctx)
	w, err := client.Watch(wctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("Watch Recv: %v", err)
	}
	wcancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v, _ := sample(t, g, "lb_controlplane_grpc_requests_total", map[string]string{"method": watch, "code": "Canceled"}); v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cancelled Watch stream was not counted as Canceled")
		}
		time.Sleep(5 * time.Millisecond)
	}

	tests := []struct {
		method, code string
		want         float64
	}{
		{check, "OK", 3},
		{check, "NotFound", 2},
		{watch, "OK", 0},
		{watch, "Canceled", 1},
		{list, "OK", 0},
	}
	for _, tc := range tests {
		got := mustSample(t, g, "lb_controlplane_grpc_requests_total", map[string]string{"method": tc.method, "code": tc.code})
		if got != tc.want {
			t.Errorf("requests{method=%s,code=%s} = %v, want %v", tc.method, tc.code, got, tc.want)
		}
	}
	if got := mustSample(t, g, "lb_controlplane_grpc_request_duration_seconds", map[string]string{"method": check}); got != 5 {
		t.Errorf("Check duration count = %v, want 5", got)
	}
	if got := mustSample(t, g, "lb_controlplane_grpc_request_duration_seconds", map[string]string{"method": watch}); got != 1 {
		t.Errorf("Watch duration count = %v, want 1", got)
	}
	// No label took a value outside the registered methods.
	for _, name := range []string{"lb_controlplane_grpc_requests_total", "lb_controlplane_grpc_request_duration_seconds"} {
		for _, s := range family(t, g, name).GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "method" && l.GetValue() != check && l.GetValue() != watch && l.GetValue() != list {
					t.Errorf("%s has a series for method %q", name, l.GetValue())
				}
			}
		}
	}
}

// TestInterceptorUnknownMethod calls the interceptors directly with a
// method InitMethods was not told of: it is counted as UnknownMethod.
func TestInterceptorUnknownMethod(t *testing.T) {
	m := metrics.New()
	m.InitMethods(map[string]grpc.ServiceInfo{"svc.S": {Methods: []grpc.MethodInfo{{Name: "M"}}}})
	unary := m.UnaryServerInterceptor()
	stream := m.StreamServerInterceptor()
	for i := range 3 {
		method := fmt.Sprintf("/client.Chosen/Name%d", i)
		_, _ = unary(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
			return nil, status.Error(codes.PermissionDenied, "no")
		})
		_ = stream(nil, nil, &grpc.StreamServerInfo{FullMethod: method}, func(any, grpc.ServerStream) error { return nil })
	}
	_, _ = unary(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/svc.S/M"}, func(context.Context, any) (any, error) {
		return "ok", nil
	})
	g := m.Gatherer()
	tests := []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"method": metrics.UnknownMethod, "code": "PermissionDenied"}, 3},
		{map[string]string{"method": metrics.UnknownMethod, "code": "OK"}, 3},
		{map[string]string{"method": "/svc.S/M", "code": "OK"}, 1},
	}
	for _, tc := range tests {
		if got := mustSample(t, g, "lb_controlplane_grpc_requests_total", tc.labels); got != tc.want {
			t.Errorf("requests%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if n := len(family(t, g, "lb_controlplane_grpc_requests_total").GetMetric()); n != 3 {
		t.Errorf("%d request series, want 3", n)
	}
}

func TestHandler(t *testing.T) {
	m := metrics.New()
	m.Discovery().Published(12)
	srv := httptest.NewServer(m.Handler(hclog.NewNullLogger()))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want the text exposition format", ct)
	}
	for _, want := range []string{
		"# TYPE lb_controlplane_config_version gauge\nlb_controlplane_config_version 12\n",
		"# TYPE lb_controlplane_config_propagation_seconds histogram\n",
		`lb_controlplane_store_errors_total{operation="update"} 0`,
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}
