package configclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/dataplane/configclient"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/upstream"
)

// fakeDiscovery is a DiscoveryService whose streams the test drives: every
// stream a client opens is handed to the test on streams once its first
// message (the hello) has arrived.
type fakeDiscovery struct {
	lbv1.UnimplementedDiscoveryServiceServer
	streams chan *fakeStream
}

// fakeStream is one client stream as the test sees it.
type fakeStream struct {
	// first is the stream's first message, which should be a hello.
	first *lbv1.StreamConfigRequest
	// send carries the updates the test sends to the client.
	send chan *lbv1.StreamConfigResponse
	// replies carries every later message of the client (acks, nacks).
	replies chan *lbv1.StreamConfigRequest
	// end ends the stream, returning the error (nil: a clean end).
	end chan error
}

func (f *fakeDiscovery) StreamConfig(stream lbv1.DiscoveryService_StreamConfigServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	fs := &fakeStream{
		first:   first,
		send:    make(chan *lbv1.StreamConfigResponse),
		replies: make(chan *lbv1.StreamConfigRequest, 64),
		end:     make(chan error, 1),
	}
	// Recv ends with an error once the handler has returned and the stream's
	// context is canceled, so this goroutine does not outlive the stream.
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case fs.replies <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	select {
	case f.streams <- fs:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		select {
		case resp := <-fs.send:
			if err := stream.Send(resp); err != nil {
				return err
			}
		case err := <-fs.end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// harness is a fake control plane on 127.0.0.1 and a client running against it.
type harness struct {
	t     *testing.T
	ctx   context.Context // the test's deadline
	srv   *fakeDiscovery
	gs    *grpc.Server
	addr  string
	table *routing.Current
	cache *upstream.Cache
	cl    *configclient.Client

	stopOnce  sync.Once
	runCancel context.CancelFunc
	runDone   chan error
}

// newHarness starts a fake control plane and a client running against it;
// both are stopped when the test ends.
func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:     t,
		ctx:   ctx,
		srv:   &fakeDiscovery{streams: make(chan *fakeStream, 8)},
		gs:    grpc.NewServer(),
		addr:  lis.Addr().String(),
		table: &routing.Current{},
		cache: upstream.NewCache(upstream.Options{}),
	}
	lbv1.RegisterDiscoveryServiceServer(h.gs, h.srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = h.gs.Serve(lis)
	}()
	t.Cleanup(func() {
		h.gs.Stop()
		<-served
	})
	t.Cleanup(h.cache.CloseIdleConnections)

	h.cl, err = configclient.New(configclient.Config{
		Address:    h.addr,
		NodeID:     "node-1",
		Table:      h.table,
		Transports: h.cache,
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runCtx, runCancel := context.WithCancel(context.Background())
	h.runCancel = runCancel
	h.runDone = make(chan error, 1)
	go func() { h.runDone <- h.cl.Run(runCtx) }()
	// Cleanups run last-in first-out: the client stops before the server.
	t.Cleanup(h.stop)
	return h
}

// stop cancels Run's context and fails the test unless Run returns nil
// within 2s.
func (h *harness) stop() {
	h.t.Helper()
	h.stopOnce.Do(func() {
		h.runCancel()
		timer := time.NewTimer(2 * time.Second)
		defer timer.Stop()
		select {
		case err := <-h.runDone:
			if err != nil {
				h.t.Errorf("Run returned %v, want nil", err)
			}
		case <-timer.C:
			h.t.Fatal("Run did not return within 2s of its context being canceled")
		}
	})
}

// nextStream waits for the client to open a stream and send its first message.
func (h *harness) nextStream() *fakeStream {
	h.t.Helper()
	select {
	case fs := <-h.srv.streams:
		return fs
	case <-h.ctx.Done():
		h.t.Fatal("timed out waiting for the client to open a stream")
		return nil
	}
}

// hello returns the stream's hello, failing the test if the first message
// was something else.
func (fs *fakeStream) hello(t *testing.T) *lbv1.Hello {
	t.Helper()
	hello := fs.first.GetHello()
	if hello == nil {
		t.Fatalf("first message on the stream = %v, want a hello", fs.first)
	}
	return hello
}

// push sends resp to the client.
func (h *harness) push(fs *fakeStream, resp *lbv1.StreamConfigResponse) {
	h.t.Helper()
	select {
	case fs.send <- resp:
	case <-h.ctx.Done():
		h.t.Fatalf("timed out sending version %d to the client", resp.GetVersion())
	}
}

// reply waits for the client's next message on fs.
func (h *harness) reply(fs *fakeStream) *lbv1.StreamConfigRequest {
	h.t.Helper()
	select {
	case m := <-fs.replies:
		return m
	case <-h.ctx.Done():
		h.t.Fatal("timed out waiting for the client's acknowledgement")
		return nil
	}
}

// expectAck waits for the client's next message and fails the test unless it
// is an Ack of version.
func (h *harness) expectAck(fs *fakeStream, version uint64) {
	h.t.Helper()
	m := h.reply(fs)
	if m.GetAck() == nil || m.GetAck().GetVersion() != version {
		h.t.Fatalf("client answered %v, want Ack of version %d", m, version)
	}
}

// expectNack waits for the client's next message, fails the test unless it is
// a Nack of version, and returns its reason.
func (h *harness) expectNack(fs *fakeStream, version uint64) string {
	h.t.Helper()
	m := h.reply(fs)
	if m.GetNack() == nil || m.GetNack().GetVersion() != version {
		h.t.Fatalf("client answered %v, want Nack of version %d", m, version)
	}
	return m.GetNack().GetReason()
}

// apply sends resp on fs and waits for its Ack.
func (h *harness) apply(fs *fakeStream, resp *lbv1.StreamConfigResponse) *routing.Table {
	h.t.Helper()
	h.push(fs, resp)
	h.expectAck(fs, resp.GetVersion())
	return h.table.Load()
}

// waitFor polls cond until it holds, failing the test at its deadline.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-h.ctx.Done():
			h.t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// full and delta build updates.
func full(version uint64, pools ...*lbv1.Pool) *lbv1.StreamConfigResponse {
	return &lbv1.StreamConfigResponse{Version: version, Full: true, Pools: pools}
}

func delta(version uint64, removed []string, pools ...*lbv1.Pool) *lbv1.StreamConfigResponse {
	return &lbv1.StreamConfigResponse{Version: version, Pools: pools, RemovedPools: removed}
}

// pbPool returns a pool message with backends of weight 1 at addrs.
func pbPool(name string, hosts []string, prefix string, addrs ...string) *lbv1.Pool {
	p := &lbv1.Pool{Name: name, Hosts: hosts, PathPrefix: prefix}
	for _, a := range addrs {
		p.Backends = append(p.Backends, &lbv1.Backend{Address: a, Weight: 1})
	}
	return p
}

// withUpstream sets p's upstream and returns p.
func withUpstream(p *lbv1.Pool, u *lbv1.Upstream) *lbv1.Pool {
	p.Upstream = u
	return p
}

// poolNames lists the names of t's pools in order.
func poolNames(t *routing.Table) []string {
	var out []string
	for _, p := range t.Pools() {
		out = append(out, p.Name)
	}
	return out
}

// configNames lists the names of c's pools in order.
func configNames(c routing.Config) []string {
	var out []string
	for _, p := range c.Pools {
		out = append(out, p.Name)
	}
	return out
}

// poolOf returns t's pool called name, failing the test if there is none.
func poolOf(tb testing.TB, t *routing.Table, name string) *routing.Pool {
	tb.Helper()
	for _, p := range t.Pools() {
		if p.Name == name {
			return p
		}
	}
	tb.Fatalf("table version %d has no pool %q (it has %v)", t.Version(), name, poolNames(t))
	return nil
}

// picks returns the addresses of the next n picks of p.
func picks(p *routing.Pool, n int) []string {
	out := make([]string, n)
	for i := range out {
		if idx, _, _ := p.Pick(0, 0, time.Now().UnixNano()); idx >= 0 {
			out[i] = p.Backends[idx].Address
		}
	}
	return out
}

// testPEM returns a self-signed CA certificate and, issued by it, a client
// certificate and its key, all PEM-encoded.
func testPEM(t *testing.T) (caPEM, certPEM, keyPEM string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "lb-client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}
