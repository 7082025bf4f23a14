package discovery_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/controlplane/store/boltstore"
	"github.com/lb-project/lb/internal/poolspec"
)

// Shape of the fleet benchmark.
const (
	// fleetPools pools of fleetBackendsPerPool backends each are configured,
	// written fleetPoolsPerTx to a transaction.
	fleetPools           = 1000
	fleetBackendsPerPool = 10
	fleetPoolsPerTx      = 250
	// fleetMinChanges is the fewest single-backend changes one run measures.
	fleetMinChanges = 30
	// fleetStreamsPerConn data planes share one client connection.
	fleetStreamsPerConn = 100
	// fleetMemProfileRate samples the heap finely enough, while the streams
	// connect, to tell the server's share of the heap from the clients'.
	fleetMemProfileRate = 2048
	// fleetSyncTimeout bounds the initial sync and each change.
	fleetSyncTimeout = 2 * time.Minute
)

// BenchmarkFleetPush measures how the discovery server pushes one small
// change to a fleet of N simulated data planes (N = 10, 100, 1000).
//
// Set-up, outside the timer: a bbolt store holding 1,000 pools of 10
// backends each, a discovery.Server fed by Run, a gRPC server on
// 127.0.0.1:0, and N StreamConfig streams from this process (up to 100 per
// client connection) that send a hello, count the bytes of every update
// (proto.Size), and ack every version at once. The benchmark waits until
// all N acked the initial full configuration.
//
// Then it makes max(b.N, 30) changes, one after the other: each sets the
// weight of ONE backend through store.Update, as the admin API does, and
// waits for discovery.Server.WaitAcked to report every data plane at the
// new version. Run it with -benchtime=1x: a run then makes exactly 30
// changes, enough for percentiles (with 30 samples p99 is the slowest).
//
// Metrics:
//
//	ns/op           mean time from the start of a change to all acked
//	p50-ms, p99-ms  percentiles of that time, commit included
//	commit-p50-ms   median time of the store commit alone (bbolt fsync)
//	sent-p99-ms     p99 time until the last data plane had sent its ack
//	                (client side; p99-ms adds the server noticing)
//	B/DP/change     bytes each data plane received per change (proto.Size)
//	full-KiB        size of the initial full configuration
//	srv-KiB/DP      control-plane memory per connected data plane: server
//	                heap attributed by the heap profile to the gRPC server
//	                and discovery code, plus the server's share of goroutine
//	                stacks (estimate; streams share connections, so the
//	                per-connection cost is spread over up to 100 streams)
//	all-KiB/DP      growth of HeapInuse+StackInuse per data plane: server
//	                and clients together, as both live in this process, so
//	                an upper bound of the server's cost
//
// The benchmark is not part of the tests and asserts no timings.
func BenchmarkFleetPush(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchFleetPush(b, n) })
	}
}

func benchFleetPush(b *testing.B, n int) {
	b.StopTimer()
	ctx := b.Context()

	// Store, discovery server fed by Run, gRPC server. Deferred calls tear
	// them down in reverse order, after the clients are gone.
	st, err := boltstore.Open(b.TempDir())
	if err != nil {
		b.Fatalf("open store: %v", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			b.Errorf("close store: %v", err)
		}
	}()
	v0, err := seedFleetStore(ctx, st)
	if err != nil {
		b.Fatalf("seed the store: %v", err)
	}

	disc := discovery.New(hclog.NewNullLogger())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	lbv1.RegisterDiscoveryServiceServer(gs, disc)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	defer func() {
		gs.Stop()
		if err := <-served; err != nil {
			b.Errorf("Serve: %v", err)
		}
	}()

	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- disc.Run(runCtx, st) }()
	defer func() {
		stopRun()
		if err := <-runDone; err != nil {
			b.Errorf("Run: %v", err)
		}
	}()
	if err := waitFleetCond(ctx, func() bool { return disc.Version() >= v0 }); err != nil {
		b.Fatalf("initial version %d never published: %v", v0, err)
	}

	// Client connections: created now, connected by their first stream.
	conns := make([]*grpc.ClientConn, (n+fleetStreamsPerConn-1)/fleetStreamsPerConn)
	for i := range conns {
		conns[i], err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatalf("dial: %v", err)
		}
		defer conns[i].Close()
	}

	prevRate := runtime.MemProfileRate
	runtime.MemProfileRate = fleetMemProfileRate
	defer func() { runtime.MemProfileRate = prevRate }()
	before := measureFleetMem()

	// Connect the fleet and wait for the initial sync.
	acks := newFleetAcks(n)
	clientCtx, stopClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopClients()
		wg.Wait()
	}()
	clients := make([]*fleetClient, n)
	for i := range clients {
		c := &fleetClient{acks: acks}
		s, err := lbv1.NewDiscoveryServiceClient(conns[i/fleetStreamsPerConn]).StreamConfig(clientCtx)
		if err != nil {
			b.Fatalf("data plane %d: StreamConfig: %v", i, err)
		}
		hello := &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Hello{Hello: &lbv1.Hello{NodeId: fmt.Sprintf("dp-%04d", i)}}}
		if err := s.Send(hello); err != nil {
			b.Fatalf("data plane %d: send hello: %v", i, err)
		}
		clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(s)
		}()
	}
	if _, err := acks.wait(ctx, v0); err != nil {
		b.Fatalf("initial sync: %v (%s)", err, fleetClientErrors(clients))
	}
	if err := waitFleetAcked(ctx, disc, n, v0); err != nil {
		b.Fatalf("initial sync: %v", err)
	}
	after := measureFleetMem()
	runtime.MemProfileRate = prevRate
	srvKiB, allKiB := reportFleetMem(b, n, before, after)

	var initBytes, initMsgs int64
	for _, c := range clients {
		initBytes += c.bytes.Load()
		initMsgs += c.msgs.Load()
	}
	if initMsgs != int64(n) {
		b.Fatalf("initial sync: %d messages to %d data planes, want one each", initMsgs, n)
	}

	// One backend's weight at a time, each change waited for.
	changes := max(b.N, fleetMinChanges)
	total := make([]time.Duration, 0, changes)
	commit := make([]time.Duration, 0, changes)
	sent := make([]time.Duration, 0, changes)
	b.StartTimer()
	for i := range changes {
		name := fleetPoolName(i * 389 % fleetPools) // 389 is prime to 1000: a different pool each time
		start := time.Now()
		v, err := st.Update(ctx, func(tx store.Tx) error {
			p, ok := tx.Pool(name)
			if !ok {
				return fmt.Errorf("pool %q not found", name)
			}
			p = p.Clone()
			p.Backends[i%fleetBackendsPerPool].Weight = uint32(2 + i%100)
			tx.Put(p)
			return nil
		})
		if err != nil {
			b.Fatalf("change %d: store update: %v", i, err)
		}
		committed := time.Since(start)
		if err := waitFleetAcked(ctx, disc, n, v); err != nil {
			b.Fatalf("change %d (version %d): %v (%s)", i, v, err, fleetClientErrors(clients))
		}
		done := time.Since(start)
		last, err := acks.wait(ctx, v)
		if err != nil {
			b.Fatalf("change %d (version %d): the clients' count: %v", i, v, err)
		}
		total = append(total, done)
		commit = append(commit, committed)
		sent = append(sent, last.Sub(start))
	}
	b.StopTimer()

	var bytes, msgs int64
	for _, c := range clients {
		bytes += c.bytes.Load()
		msgs += c.msgs.Load()
	}
	bytes -= initBytes
	msgs -= initMsgs
	if want := int64(n) * int64(changes); msgs != want {
		b.Errorf("%d updates received for %d changes to %d data planes, want %d", msgs, changes, n, want)
	}

	var sum time.Duration
	for _, d := range total {
		sum += d
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(total)), "ns/op")
	b.ReportMetric(fleetPercentileMS(total, 50), "p50-ms")
	b.ReportMetric(fleetPercentileMS(total, 99), "p99-ms")
	b.ReportMetric(fleetPercentileMS(commit, 50), "commit-p50-ms")
	b.ReportMetric(fleetPercentileMS(sent, 99), "sent-p99-ms")
	b.ReportMetric(float64(bytes)/float64(int64(n)*int64(changes)), "B/DP/change")
	b.ReportMetric(float64(initBytes)/float64(n)/1024, "full-KiB")
	b.ReportMetric(srvKiB, "srv-KiB/DP")
	b.ReportMetric(allKiB, "all-KiB/DP")
}

// seedFleetStore writes fleetPools pools, normalised as the admin API
// stores them, in a few large transactions, and returns the last version.
func seedFleetStore(ctx context.Context, st store.Store) (uint64, error) {
	var v uint64
	for first := 0; first < fleetPools; first += fleetPoolsPerTx {
		var err error
		v, err = st.Update(ctx, func(tx store.Tx) error {
			for i := first; i < min(first+fleetPoolsPerTx, fleetPools); i++ {
				p := poolspec.Pool{Name: fleetPoolName(i), Hosts: []string{fleetPoolName(i) + ".example.com"}}
				for j := range fleetBackendsPerPool {
					p.Backends = append(p.Backends, poolspec.Backend{
						Address: fmt.Sprintf("10.%d.%d.%d:8080", i/256, i%256, j+1),
						Weight:  poolspec.DefaultWeight,
					})
				}
				p, err := poolspec.Normalize("pool", p)
				if err != nil {
					return err
				}
				tx.Put(p)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return v, nil
}

func fleetPoolName(i int) string { return fmt.Sprintf("pool-%04d", i) }

// fleetClient is one simulated data plane: it counts what it receives and
// acks every version as soon as it has it.
type fleetClient struct {
	acks  *fleetAcks
	bytes atomic.Int64 // proto.Size of every update received
	msgs  atomic.Int64 // updates received
	err   atomic.Pointer[error]
}

func (c *fleetClient) run(s lbv1.DiscoveryService_StreamConfigClient) {
	for {
		m, err := s.Recv()
		if err == nil {
			c.bytes.Add(int64(proto.Size(m)))
			c.msgs.Add(1)
			err = s.Send(&lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Ack{Ack: &lbv1.Ack{Version: m.GetVersion()}}})
		}
		if err != nil {
			if status.Code(err) != codes.Canceled {
				c.err.Store(&err)
			}
			return
		}
		c.acks.record(m.GetVersion(), time.Now())
	}
}

// fleetClientErrors describes the errors that ended client streams.
func fleetClientErrors(clients []*fleetClient) string {
	var errs []string
	for i, c := range clients {
		if err := c.err.Load(); err != nil {
			errs = append(errs, fmt.Sprintf("data plane %d: %v", i, *err))
		}
	}
	if len(errs) == 0 {
		return "no client stream failed"
	}
	if len(errs) > 3 {
		errs = append(errs[:3], fmt.Sprintf("and %d more", len(errs)-3))
	}
	return strings.Join(errs, "; ")
}

// fleetAcks counts, on the client side, the data planes that acked each
// version and when the last of them did.
type fleetAcks struct {
	n    int
	mu   sync.Mutex
	seen map[uint64]*fleetVersion
}

type fleetVersion struct {
	count int
	last  time.Time
	all   chan struct{} // closed when count reaches n
}

func newFleetAcks(n int) *fleetAcks {
	return &fleetAcks{n: n, seen: make(map[uint64]*fleetVersion)}
}

func (a *fleetAcks) version(v uint64) *fleetVersion {
	fv := a.seen[v]
	if fv == nil {
		fv = &fleetVersion{all: make(chan struct{})}
		a.seen[v] = fv
	}
	return fv
}

func (a *fleetAcks) record(v uint64, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fv := a.version(v)
	fv.count++
	if at.After(fv.last) {
		fv.last = at
	}
	if fv.count == a.n {
		close(fv.all)
	}
}

// wait waits until all n data planes acked v and returns when the last did.
func (a *fleetAcks) wait(ctx context.Context, v uint64) (time.Time, error) {
	a.mu.Lock()
	fv := a.version(v)
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, fleetSyncTimeout)
	defer cancel()
	select {
	case <-fv.all:
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		return time.Time{}, fmt.Errorf("%d of %d data planes acked version %d: %w", fv.count, a.n, v, ctx.Err())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return fv.last, nil
}

// waitFleetAcked waits, as the admin API's WaitForVersion does, until the
// server has every one of the n data planes at version v.
func waitFleetAcked(ctx context.Context, disc *discovery.Server, n int, v uint64) error {
	ctx, cancel := context.WithTimeout(ctx, fleetSyncTimeout)
	defer cancel()
	all, lag, err := disc.WaitAcked(ctx, v)
	if err != nil {
		return fmt.Errorf("WaitAcked(%d): %w (%d of %d data planes lagging)", v, err, len(lag), len(all))
	}
	if len(all) != n {
		return fmt.Errorf("WaitAcked(%d): %d data planes connected, want %d", v, len(all), n)
	}
	return nil
}

func waitFleetCond(ctx context.Context, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, fleetSyncTimeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// fleetPercentileMS returns the p-th percentile (nearest rank) of ds in ms.
func fleetPercentileMS(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return float64(s[max(i, 0)]) / float64(time.Millisecond)
}

// Which side of the connection a heap allocation or goroutine belongs to.
const (
	fleetOther = iota
	fleetServer
	fleetClientSide
)

// fleetServerFuncs and fleetClientFuncs name functions found only on the
// control plane's or only on the data planes' side of a stream: gRPC's
// server and client transports and streams, the discovery server, the
// simulated data planes. A goroutine's stack, or an allocation's, that
// passes through one belongs to that side.
var (
	fleetServerFuncs = []string{
		"google.golang.org/grpc.(*Server).",
		"google.golang.org/grpc.(*serverStream).",
		"google.golang.org/grpc/internal/transport.NewServerTransport",
		"google.golang.org/grpc/internal/transport.(*http2Server).",
		"github.com/lb-project/lb/controlplane/discovery.(*Server).",
	}
	fleetClientFuncs = []string{
		"google.golang.org/grpc.(*ClientConn).",
		"google.golang.org/grpc.(*addrConn).",
		"google.golang.org/grpc.(*acBalancerWrapper).",
		"google.golang.org/grpc.(*ccBalancerWrapper).",
		"google.golang.org/grpc.(*ccResolverWrapper).",
		"google.golang.org/grpc.(*pickerWrapper).",
		"google.golang.org/grpc.newClientStream",
		"google.golang.org/grpc.(*clientStream).",
		"google.golang.org/grpc.(*csAttempt).",
		"google.golang.org/grpc/balancer/",
		"google.golang.org/grpc/internal/balancer/",
		"google.golang.org/grpc/internal/resolver/",
		"google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).",
		"google.golang.org/grpc/internal/transport.NewHTTP2Client",
		"google.golang.org/grpc/internal/transport.(*http2Client).",
		"github.com/lb-project/lb/api/lb/v1.(*discoveryServiceClient).",
		"github.com/lb-project/lb/controlplane/discovery_test.(*fleetClient).",
	}
)

func fleetSide(funcs string) int {
	for _, f := range fleetServerFuncs {
		if strings.Contains(funcs, f) {
			return fleetServer
		}
	}
	for _, f := range fleetClientFuncs {
		if strings.Contains(funcs, f) {
			return fleetClientSide
		}
	}
	return fleetOther
}

// fleetMem is the process's memory at one point, after garbage collection.
type fleetMem struct {
	heapInuse, heapAlloc, stackInuse uint64
	// heap is in-use heap by side, from the heap profile (scaled samples).
	heap [3]int64
	// goroutines by side.
	goroutines [3]int
}

func measureFleetMem() fleetMem {
	// The heap profile lags up to two collections behind.
	for range 3 {
		runtime.GC()
	}
	var m fleetMem
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.heapInuse, m.heapAlloc, m.stackInuse = ms.HeapInuse, ms.HeapAlloc, ms.StackInuse

	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, false)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+100)
	}
	rate := int64(runtime.MemProfileRate)
	var funcs strings.Builder
	for _, r := range recs {
		funcs.Reset()
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			funcs.WriteString(f.Function)
			funcs.WriteByte('\n')
			if !more {
				break
			}
		}
		m.heap[fleetSide(funcs.String())] += fleetScaleSample(r.InUseObjects(), r.InUseBytes(), rate)
	}

	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.TrimSpace(g) != "" {
			m.goroutines[fleetSide(g)]++
		}
	}
	return m
}

// fleetScaleSample estimates the bytes a heap profile record stands for,
// as pprof does: allocations are sampled about once every rate bytes.
func fleetScaleSample(objects, bytes, rate int64) int64 {
	if objects <= 0 || bytes <= 0 {
		return 0
	}
	if rate <= 1 {
		return bytes
	}
	avg := float64(bytes) / float64(objects)
	return int64(float64(bytes) / (1 - math.Exp(-avg/float64(rate))))
}

// reportFleetMem logs what connecting n data planes cost and returns the
// server's estimated share and the whole process's growth, in KiB per data
// plane.
func reportFleetMem(b *testing.B, n int, before, after fleetMem) (srvKiB, allKiB float64) {
	heap := float64(after.heapInuse) - float64(before.heapInuse)
	live := float64(after.heapAlloc) - float64(before.heapAlloc)
	stack := float64(after.stackInuse) - float64(before.stackInuse)
	var dHeap [3]float64
	var dG [3]int
	for i := range dHeap {
		dHeap[i] = float64(after.heap[i] - before.heap[i])
		dG[i] = after.goroutines[i] - before.goroutines[i]
	}
	// Goroutine stacks are not in the heap profile: give the server the
	// share of the stack growth its goroutines are of the new ones.
	var srvStack float64
	if g := dG[fleetServer] + dG[fleetClientSide] + dG[fleetOther]; g > 0 {
		srvStack = stack * float64(dG[fleetServer]) / float64(g)
	}
	per := func(x float64) float64 { return x / float64(n) / 1024 }
	b.Logf("N=%d: HeapInuse %+.1f KiB/DP (HeapAlloc %+.1f), StackInuse %+.1f KiB/DP; heap profile: server %+.1f, client %+.1f, other %+.1f KiB/DP; goroutines: server %+d, client %+d, other %+d",
		n, per(heap), per(live), per(stack), per(dHeap[fleetServer]), per(dHeap[fleetClientSide]), per(dHeap[fleetOther]),
		dG[fleetServer], dG[fleetClientSide], dG[fleetOther])
	return per(dHeap[fleetServer] + srvStack), per(heap + stack)
}
