package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// grpcMaxMsg is the message size limit on both ends of every gRPC call in
// these tests: room for the 16 MiB payload plus framing.
const grpcMaxMsg = 32 << 20

// Metadata the backend sends back, as headers and as trailers.
var (
	grpcRespHeaderBin  = []byte{0x00, 0x01, 0xfe, 0xff, '\n', 0x80}
	grpcRespTrailerBin = []byte{0xff, 0x00, 0x7f, 0x80, '\r', 0x01}
)

// grpcEvent is what the backend observed during one call, reported under the
// call's x-test-id metadata value.
type grpcEvent struct {
	md          metadata.MD
	hasDeadline bool
	remaining   time.Duration // time left until the deadline on arrival
	ctxErr      error         // the call context's error when the handler ended
	sha         [32]byte      // sha256 of the request payload (unary)
	size        int           // request payload size (unary)
}

// grpcBackend is an implementation of the gRPC interop TestService:
//
//   - UnaryCall echoes the payload, sets header and trailer metadata, and
//     returns req.ResponseStatus as an error when set; with metadata
//     x-behavior: wait it blocks until the call's context ends (at most 10s).
//   - StreamingOutputCall sends one message "msg-<i>" per response parameter,
//     then returns req.ResponseStatus as an error when set.
//   - StreamingInputCall answers with the sum of the payload sizes.
//   - FullDuplexCall answers each request with "pong-<payload>" only after
//     receiving it.
type grpcBackend struct {
	testpb.UnimplementedTestServiceServer
	addr string
	srv  *grpc.Server

	mu     sync.Mutex
	events map[string]chan grpcEvent
}

// grpcStartBackend serves the test service on 127.0.0.1:0, with TLS when
// cert is not nil (h2c otherwise).
func grpcStartBackend(t *testing.T, cert *tls.Certificate) *grpcBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("grpc backend: %v", err)
	}
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(grpcMaxMsg), grpc.MaxSendMsgSize(grpcMaxMsg)}
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{*cert},
			MinVersion:   tls.VersionTLS12,
		})))
	}
	b := &grpcBackend{addr: l.Addr().String(), srv: grpc.NewServer(opts...), events: map[string]chan grpcEvent{}}
	testpb.RegisterTestServiceServer(b.srv, b)
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(b.srv.Stop)
	return b
}

// eventsFor returns the channel the backend reports calls with x-test-id id on.
func (b *grpcBackend) eventsFor(id string) chan grpcEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.events[id]
	if !ok {
		ch = make(chan grpcEvent, 16)
		b.events[id] = ch
	}
	return ch
}

func (b *grpcBackend) report(ctx context.Context, ev grpcEvent) {
	md, _ := metadata.FromIncomingContext(ctx)
	ev.md = md
	id := ""
	if v := md.Get("x-test-id"); len(v) > 0 {
		id = v[0]
	}
	select {
	case b.eventsFor(id) <- ev:
	default: // nobody is listening for that many events
	}
}

// awaitEvent waits up to timeout for the backend's report of call id.
func (b *grpcBackend) awaitEvent(t *testing.T, id string, timeout time.Duration) grpcEvent {
	t.Helper()
	select {
	case ev := <-b.eventsFor(id):
		return ev
	case <-time.After(timeout):
		t.Fatalf("backend did not report call %q within %v", id, timeout)
		return grpcEvent{}
	}
}

// grpcWaitDone blocks until ctx is done or 10s pass, and returns ctx.Err().
func grpcWaitDone(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	return ctx.Err()
}

func (b *grpcBackend) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	dl, hasDL := ctx.Deadline()
	if v := md.Get("x-behavior"); len(v) > 0 && v[0] == "wait" {
		ev := grpcEvent{hasDeadline: hasDL}
		if hasDL {
			ev.remaining = time.Until(dl)
		}
		ev.ctxErr = grpcWaitDone(ctx)
		b.report(ctx, ev)
		if ev.ctxErr != nil {
			return nil, status.FromContextError(ev.ctxErr).Err()
		}
		return nil, status.Error(codes.Internal, "context never ended")
	}
	body := req.GetPayload().GetBody()
	b.report(ctx, grpcEvent{hasDeadline: hasDL, sha: sha256.Sum256(body), size: len(body)})
	if rs := req.GetResponseStatus(); rs != nil && rs.GetCode() != 0 {
		return nil, status.Error(codes.Code(rs.GetCode()), rs.GetMessage())
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs(
		"x-resp-header", "header value",
		"x-resp-header-bin", string(grpcRespHeaderBin),
	)); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs(
		"x-resp-trailer", "trailer value",
		"x-resp-trailer-bin", string(grpcRespTrailerBin),
	)); err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: body}}, nil
}

func (b *grpcBackend) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for i := range req.GetResponseParameters() {
		msg := &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: fmt.Appendf(nil, "msg-%d", i)}}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	if rs := req.GetResponseStatus(); rs != nil && rs.GetCode() != 0 {
		return status.Error(codes.Code(rs.GetCode()), rs.GetMessage())
	}
	return nil
}

func (b *grpcBackend) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	sum := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(sum)})
		}
		if err != nil {
			return err
		}
		sum += len(req.GetPayload().GetBody())
	}
}

func (b *grpcBackend) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			b.report(ctx, grpcEvent{ctxErr: ctx.Err()})
			return nil
		}
		if err != nil {
			b.report(ctx, grpcEvent{ctxErr: grpcWaitDone(ctx)})
			return err
		}
		body := append([]byte("pong-"), req.GetPayload().GetBody()...)
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: body}}); err != nil {
			b.report(ctx, grpcEvent{ctxErr: grpcWaitDone(ctx)})
			return err
		}
	}
}

// grpcDial returns a TestService client for addr: plain h2c when tlsCfg is
// nil, else TLS. Extra options (e.g. grpc.WithAuthority) are appended.
func grpcDial(t *testing.T, addr string, tlsCfg *tls.Config, extra ...grpc.DialOption) testpb.TestServiceClient {
	t.Helper()
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcMaxMsg), grpc.MaxCallSendMsgSize(grpcMaxMsg)),
	}, extra...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn)
}

// grpcAdmin returns an admin client for the control plane at addr.
func grpcAdmin(t *testing.T, addr string) lbv1.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return lbv1.NewAdminServiceClient(conn)
}

// grpcCreatePools creates the pools through the admin API and waits for dp
// to apply the last version.
func grpcCreatePools(t *testing.T, cpAddr string, dp *dataPlane, pools ...*lbv1.Pool) {
	t.Helper()
	admin := grpcAdmin(t, cpAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var v uint64
	for _, p := range pools {
		resp, err := admin.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: p})
		if err != nil {
			t.Fatalf("CreatePool %s: %v", p.GetName(), err)
		}
		v = resp.GetVersion()
	}
	dp.waitVersion(t, v)
}

// grpcTLSFrontend starts a control plane and a data plane with a TLS
// listener whose certificate (from ca) is for names (the first is the
// common name), plus the extra flags. It returns both and the TLS listener's
// address.
func grpcTLSFrontend(t *testing.T, ca *testCA, names []string, extra ...string) (*controlPlane, *dataPlane, string) {
	t.Helper()
	cp := startControlPlane(t, "", "")
	certFile, keyFile := ca.issue(t, names[0], names...).writeFiles(t, t.TempDir(), "frontend")
	tlsAddr := freeAddr(t)
	args := append([]string{"--tls-listen", tlsAddr, "--tls-cert", certFile, "--tls-key", keyFile}, extra...)
	dp := startDataPlaneWith(t, cp.addr, "node", args...)
	grpcFailOnProxyRace(t, dp)
	waitFor(t, 20*time.Second, "TLS listener on "+tlsAddr, func() bool {
		c, err := net.DialTimeout("tcp", tlsAddr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cp, dp, tlsAddr
}

// grpcFailOnProxyRace fails the test, at its end, when the data plane (built
// with -race) reported a data race whose stacks run through the request path
// (dataplane/proxy or dataplane/upstream). Races elsewhere are the business
// of TestGRPCTLSListenerRaceFree.
func grpcFailOnProxyRace(t *testing.T, dp *dataPlane) {
	t.Cleanup(func() {
		blocks := strings.Split(dp.log.String(), "WARNING: DATA RACE")
		for _, b := range blocks[1:] {
			if i := strings.Index(b, "=================="); i >= 0 {
				b = b[:i]
			}
			if strings.Contains(b, "/dataplane/proxy/") || strings.Contains(b, "/dataplane/upstream/") {
				t.Errorf("the data plane reported a data race in the request path:%s", b)
			}
		}
	})
}
