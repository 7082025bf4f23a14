package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// TestGRPCH2CBackend proxies the gRPC interop test service, served in
// cleartext HTTP/2 (h2c), to clients on the plain (h2c) and TLS (h2)
// listeners of the data plane. The pool's upstream protocol is left to the
// automatic choice.
func TestGRPCH2CBackend(t *testing.T) { grpcSuite(t, false) }

// TestGRPCTLSBackend is TestGRPCH2CBackend with a TLS backend: the pool has
// upstream tls, the backend's CA in ca_pem and its name in sni.
func TestGRPCTLSBackend(t *testing.T) { grpcSuite(t, true) }

// grpcClientCase is one client transport to the data plane.
type grpcClientCase struct {
	name   string
	addr   string
	tlsCfg *tls.Config // nil: h2c
}

// grpcClientCases returns the h2c and TLS client transports of dp.
func grpcClientCases(ca *testCA, dp *dataPlane, tlsAddr string) []grpcClientCase {
	return []grpcClientCase{
		{name: "h2c", addr: dp.addr},
		{name: "tls", addr: tlsAddr, tlsCfg: &tls.Config{ServerName: "grpc.test", RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}},
	}
}

func grpcSuite(t *testing.T, backendTLS bool) {
	ca := newTestCA(t, "grpc e2e CA")
	cp, dp, tlsAddr := grpcTLSFrontend(t, ca, []string{"grpc.test"})
	var be *grpcBackend
	var up *lbv1.Upstream
	if backendTLS {
		cert := ca.issue(t, "grpc-backend.test", "grpc-backend.test")
		be = grpcStartBackend(t, &cert.tls)
		up = &lbv1.Upstream{Tls: true, Sni: "grpc-backend.test", CaPem: string(ca.certPEM)}
	} else {
		be = grpcStartBackend(t, nil)
	}
	grpcCreatePools(t, cp.addr, dp, &lbv1.Pool{Name: "grpc", Backends: []*lbv1.Backend{{Address: be.addr}}, Upstream: up})

	for _, cc := range grpcClientCases(ca, dp, tlsAddr) {
		t.Run("client="+cc.name, func(t *testing.T) {
			c := grpcDial(t, cc.addr, cc.tlsCfg)
			t.Run("UnaryMetadata", func(t *testing.T) { grpcTestUnaryMetadata(t, c, be) })
			t.Run("ServerStreaming", func(t *testing.T) { grpcTestServerStreaming(t, c) })
			t.Run("ClientStreaming", func(t *testing.T) { grpcTestClientStreaming(t, c) })
			t.Run("BidiPingPong", func(t *testing.T) { grpcTestBidiPingPong(t, c, be) })
			t.Run("StatusPassThrough", func(t *testing.T) { grpcTestStatus(t, c) })
			t.Run("StatusAfterMessages", func(t *testing.T) { grpcTestStatusAfterMessages(t, c) })
			t.Run("LargeMessage", func(t *testing.T) { grpcTestLarge(t, c, be) })
			t.Run("Deadline", func(t *testing.T) { grpcTestDeadline(t, c, be) })
			t.Run("Cancel", func(t *testing.T) { grpcTestCancel(t, c, be) })
		})
	}
}

// grpcCallCtx returns a bounded context carrying x-test-id = the test name
// plus the extra metadata pairs.
func grpcCallCtx(t *testing.T, timeout time.Duration, kv ...string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	ctx = metadata.AppendToOutgoingContext(ctx, append([]string{"x-test-id", t.Name()}, kv...)...)
	return ctx, cancel
}

// grpcWantMD fails unless md holds exactly want under key.
func grpcWantMD(t *testing.T, what string, md metadata.MD, key string, want ...string) {
	t.Helper()
	if got := md.Get(key); !slices.Equal(got, want) {
		t.Errorf("%s %q = %q, want %q (all: %v)", what, key, got, want, md)
	}
}

func grpcTestUnaryMetadata(t *testing.T, c testpb.TestServiceClient, be *grpcBackend) {
	reqBin := []byte{0x00, 0xff, 0x10, 0x80, '\n', 0x7f, 0x00}
	ctx, cancel := grpcCallCtx(t, 10*time.Second, "x-req", "request value", "x-req-bin", string(reqBin))
	defer cancel()
	payload := []byte("hello through the proxy \x00\xff")
	var hdr, trl metadata.MD
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: payload}},
		grpc.Header(&hdr), grpc.Trailer(&trl))
	if err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	if got := resp.GetPayload().GetBody(); !bytes.Equal(got, payload) {
		t.Errorf("echoed payload %q, want %q", got, payload)
	}
	ev := be.awaitEvent(t, t.Name(), 5*time.Second)
	grpcWantMD(t, "backend saw request metadata", ev.md, "x-test-id", t.Name())
	grpcWantMD(t, "backend saw request metadata", ev.md, "x-req", "request value")
	grpcWantMD(t, "backend saw request metadata", ev.md, "x-req-bin", string(reqBin))

	grpcWantMD(t, "client saw header", hdr, "x-resp-header", "header value")
	grpcWantMD(t, "client saw header", hdr, "x-resp-header-bin", string(grpcRespHeaderBin))
	grpcWantMD(t, "client saw header", hdr, "x-resp-trailer")
	grpcWantMD(t, "client saw header", hdr, "x-resp-trailer-bin")
	grpcWantMD(t, "client saw trailer", trl, "x-resp-trailer", "trailer value")
	grpcWantMD(t, "client saw trailer", trl, "x-resp-trailer-bin", string(grpcRespTrailerBin))
	grpcWantMD(t, "client saw trailer", trl, "x-resp-header")
	grpcWantMD(t, "client saw trailer", trl, "x-resp-header-bin")
}

func grpcTestServerStreaming(t *testing.T, c testpb.TestServiceClient) {
	const n = 5
	ctx, cancel := grpcCallCtx(t, 10*time.Second)
	defer cancel()
	req := &testpb.StreamingOutputCallRequest{}
	for i := 0; i < n; i++ {
		req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: int32(i + 1)})
	}
	stream, err := c.StreamingOutputCall(ctx, req)
	if err != nil {
		t.Fatalf("StreamingOutputCall: %v", err)
	}
	var got []string
	for i := 0; i <= n; i++ { // one more than expected, to see the end
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv after %d messages %q: %v", len(got), got, err)
		}
		got = append(got, string(msg.GetPayload().GetBody()))
	}
	want := []string{"msg-0", "msg-1", "msg-2", "msg-3", "msg-4"}
	if !slices.Equal(got, want) {
		t.Fatalf("server stream delivered %q, want %q in order", got, want)
	}
}

func grpcTestClientStreaming(t *testing.T, c testpb.TestServiceClient) {
	ctx, cancel := grpcCallCtx(t, 10*time.Second)
	defer cancel()
	stream, err := c.StreamingInputCall(ctx)
	if err != nil {
		t.Fatalf("StreamingInputCall: %v", err)
	}
	sum := 0
	for _, size := range []int{1, 10, 100, 1000, 10000} {
		if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{'x'}, size)}}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		sum += size
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("CloseAndRecv: %v", err)
	}
	if got := int(resp.GetAggregatedPayloadSize()); got != sum {
		t.Fatalf("backend summed %d bytes, want %d", got, sum)
	}
}

func grpcTestBidiPingPong(t *testing.T, c testpb.TestServiceClient, be *grpcBackend) {
	ctx, cancel := grpcCallCtx(t, 10*time.Second)
	defer cancel()
	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall: %v", err)
	}
	// The backend answers a request only once it has received it and the
	// client sends the next only once it has the answer: if the proxy held
	// back either direction, this would stall until the deadline.
	for i := 0; i < 5; i++ {
		ping := fmt.Sprintf("ping-%d", i)
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(ping)}}); err != nil {
			t.Fatalf("round trip %d: Send: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("round trip %d: Recv: %v", i, err)
		}
		if got, want := string(resp.GetPayload().GetBody()), "pong-"+ping; got != want {
			t.Fatalf("round trip %d: got %q, want %q", i, got, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend: %v, want io.EOF", err)
	}
	be.awaitEvent(t, t.Name(), 5*time.Second) // the backend saw the half-close
}

func grpcTestStatus(t *testing.T, c testpb.TestServiceClient) {
	ctx, cancel := grpcCallCtx(t, 10*time.Second)
	defer cancel()
	const msg = "no such thing: é%"
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: msg}})
	st := status.Convert(err)
	if st.Code() != codes.NotFound || st.Message() != msg {
		t.Fatalf("got status %v %q, want %v %q", st.Code(), st.Message(), codes.NotFound, msg)
	}
}

// grpcTestStatusAfterMessages has the backend fail a server stream after two
// messages, so the status travels in real trailers (after DATA) rather than
// in a trailers-only response as in grpcTestStatus.
func grpcTestStatusAfterMessages(t *testing.T, c testpb.TestServiceClient) {
	ctx, cancel := grpcCallCtx(t, 10*time.Second)
	defer cancel()
	const msg = "gone after two: é%"
	stream, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 1}},
		ResponseStatus:     &testpb.EchoStatus{Code: int32(codes.NotFound), Message: msg},
	})
	if err != nil {
		t.Fatalf("StreamingOutputCall: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
	}
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != msg {
		t.Fatalf("got status %v %q, want %v %q", st.Code(), st.Message(), codes.NotFound, msg)
	}
}

func grpcTestLarge(t *testing.T, c testpb.TestServiceClient, be *grpcBackend) {
	payload := make([]byte, 16<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	ctx, cancel := grpcCallCtx(t, 60*time.Second)
	defer cancel()
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: payload}})
	if err != nil {
		t.Fatalf("UnaryCall with 16 MiB: %v", err)
	}
	ev := be.awaitEvent(t, t.Name(), 5*time.Second)
	if ev.size != len(payload) || ev.sha != sum {
		t.Errorf("backend received %d bytes with sha256 %x, want %d bytes with %x", ev.size, ev.sha, len(payload), sum)
	}
	got := resp.GetPayload().GetBody()
	if gotSum := sha256.Sum256(got); len(got) != len(payload) || gotSum != sum {
		t.Errorf("client received %d bytes with sha256 %x, want %d bytes with %x", len(got), gotSum, len(payload), sum)
	}
}

func grpcTestDeadline(t *testing.T, c testpb.TestServiceClient, be *grpcBackend) {
	const timeout = 300 * time.Millisecond
	ctx, cancel := grpcCallCtx(t, timeout, "x-behavior", "wait")
	defer cancel()
	start := time.Now()
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
	if code := status.Code(err); code != codes.DeadlineExceeded {
		t.Fatalf("call with a %v deadline against a handler that waits: %v, want DeadlineExceeded", timeout, err)
	}
	t.Logf("client gave up after %v", time.Since(start))
	ev := be.awaitEvent(t, t.Name(), 15*time.Second)
	if !ev.hasDeadline {
		t.Errorf("backend's context had no deadline: grpc-timeout was not passed on")
	} else if ev.remaining <= 0 || ev.remaining > timeout {
		t.Errorf("backend's deadline was %v away on arrival, want within (0, %v]", ev.remaining, timeout)
	}
	if ev.ctxErr == nil {
		t.Errorf("backend's context never ended (waited 10s) after the client's deadline passed")
	}
}

func grpcTestCancel(t *testing.T, c testpb.TestServiceClient, be *grpcBackend) {
	base, cancelBase := grpcCallCtx(t, 30*time.Second)
	defer cancelBase()
	ctx, cancel := context.WithCancel(base)
	defer cancel()
	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall: %v", err)
	}
	// One round trip, so the stream certainly reached the backend.
	if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("one")}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if resp, err := stream.Recv(); err != nil || string(resp.GetPayload().GetBody()) != "pong-one" {
		t.Fatalf("Recv: %v %v", resp, err)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel: %v, want Canceled", err)
	}
	select {
	case ev := <-be.eventsFor(t.Name()):
		if ev.ctxErr == nil {
			t.Fatalf("backend's stream ended but its context was not cancelled within 10s")
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("backend's stream was not ended within 15s of the client cancelling it")
	}
}

// TestGRPCProxyErrors checks the statuses the proxy answers gRPC clients with
// itself: UNAVAILABLE ("no backend") for a pool without backends and
// UNIMPLEMENTED ("no route") when no pool matches the call's authority; a
// matching authority reaches the backend, so the routes are what differs.
func TestGRPCProxyErrors(t *testing.T) {
	ca := newTestCA(t, "grpc e2e CA")
	cp, dp, tlsAddr := grpcTLSFrontend(t, ca, []string{"grpc.test", "empty.example", "other.example"})
	be := grpcStartBackend(t, nil)
	grpcCreatePools(t, cp.addr, dp,
		&lbv1.Pool{Name: "empty", Hosts: []string{"empty.example"}},
		&lbv1.Pool{Name: "other", Hosts: []string{"other.example"}, Backends: []*lbv1.Backend{{Address: be.addr}}},
	)
	for _, cc := range grpcClientCases(ca, dp, tlsAddr) {
		t.Run("client="+cc.name, func(t *testing.T) {
			// gRPC refuses an authority other than the TLS server name:
			// over TLS, the authority is the server name (the frontend's
			// certificate holds all three).
			withAuthority := func(authority string) testpb.TestServiceClient {
				cfg := cc.tlsCfg
				if cfg != nil {
					cfg = cfg.Clone()
					cfg.ServerName = authority
				}
				return grpcDial(t, cc.addr, cfg, grpc.WithAuthority(authority))
			}
			t.Run("MatchingRouteWorks", func(t *testing.T) {
				c := withAuthority("other.example")
				ctx, cancel := grpcCallCtx(t, 10*time.Second)
				defer cancel()
				if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
					t.Fatalf("call with authority other.example: %v", err)
				}
			})
			t.Run("NoBackendUnavailable", func(t *testing.T) {
				c := withAuthority("empty.example")
				grpcWantProxyStatus(t, c, codes.Unavailable, "no backend")
			})
			t.Run("NoRouteUnimplemented", func(t *testing.T) {
				c := grpcDial(t, cc.addr, cc.tlsCfg) // authority 127.0.0.1:port
				grpcWantProxyStatus(t, c, codes.Unimplemented, "no route")
			})
		})
	}
}

// grpcWantProxyStatus makes a unary and a bidi call and wants both to fail
// with code and a message containing substr.
func grpcWantProxyStatus(t *testing.T, c testpb.TestServiceClient, code codes.Code, substr string) {
	t.Helper()
	ctx, cancel := grpcCallCtx(t, 10*time.Second)
	defer cancel()
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("x")}})
	if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), substr) {
		t.Errorf("unary call: status %v %q, want %v with %q", st.Code(), st.Message(), code, substr)
	}
	stream, err := c.FullDuplexCall(ctx)
	if err == nil {
		_ = stream.Send(&testpb.StreamingOutputCallRequest{})
		_, err = stream.Recv()
	}
	if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), substr) {
		t.Errorf("bidi call: status %v %q, want %v with %q", st.Code(), st.Message(), code, substr)
	}
}

// grpcServeBothListeners starts a data plane with a TLS listener, a plain
// backend in a catch-all pool, and makes one call through each listener.
func grpcServeBothListeners(t *testing.T) *dataPlane {
	t.Helper()
	ca := newTestCA(t, "grpc e2e CA")
	cp, dp, tlsAddr := grpcTLSFrontend(t, ca, []string{"grpc.test"})
	be := grpcStartBackend(t, nil)
	grpcCreatePools(t, cp.addr, dp, &lbv1.Pool{Name: "grpc", Backends: []*lbv1.Backend{{Address: be.addr}}})
	for _, cc := range grpcClientCases(ca, dp, tlsAddr) {
		c := grpcDial(t, cc.addr, cc.tlsCfg)
		ctx, cancel := grpcCallCtx(t, 10*time.Second)
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
		cancel()
		if err != nil {
			t.Fatalf("%s client: %v", cc.name, err)
		}
	}
	return dp
}

// TestGRPCTLSListenerRaceFree runs only under -race, when the binaries are
// built with the race detector: a data plane with a TLS listener serves gRPC
// on both listeners without a data race report.
func TestGRPCTLSListenerRaceFree(t *testing.T) {
	if !raceEnabled {
		t.Skip("meaningful only with -race (binaries are built with the race detector)")
	}
	dp := grpcServeBothListeners(t)
	if log := dp.log.String(); strings.Contains(log, "WARNING: DATA RACE") {
		i := strings.Index(log, "WARNING: DATA RACE")
		end := min(len(log), i+1500)
		t.Fatalf("the data plane reported a data race:\n%s", log[i:end])
	}
}

// TestGRPCTLSListenerCleanStop stops a data plane with a TLS listener, after
// it served gRPC on both listeners, with SIGTERM: it must exit with status 0.
func TestGRPCTLSListenerCleanStop(t *testing.T) {
	dp := grpcServeBothListeners(t)
	dp.stop() // fails the test unless the exit is clean
}
