package lbctl

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// fakeAdmin is a minimal AdminService: it records every request and answers
// with a canned response or error. With block set it waits for the call's
// context to end instead.
type fakeAdmin struct {
	lbv1.UnimplementedAdminServiceServer

	resp  proto.Message
	err   error
	block bool
	// hang, when set, makes every call wait for it to be closed, ignoring
	// the call's own deadline: a server that never answers.
	hang chan struct{}

	// waitResp and waitErr, when either is set, answer WaitForVersion
	// instead of resp and err, so that a change with --wait gets resp and
	// then these.
	waitResp *lbv1.WaitForVersionResponse
	waitErr  error

	mu   sync.Mutex
	reqs []proto.Message
	// waitLeft is the time that was left before the deadline of the last
	// WaitForVersion call when it arrived (0: no deadline).
	waitLeft time.Duration
}

// lastWaitLeft returns waitLeft.
func (f *fakeAdmin) lastWaitLeft() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waitLeft
}

// requests returns the requests received so far.
func (f *fakeAdmin) requests() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.reqs...)
}

// answer records req and returns the canned answer as a T.
func answer[T proto.Message](ctx context.Context, f *fakeAdmin, req proto.Message) (T, error) {
	var zero T
	f.mu.Lock()
	f.reqs = append(f.reqs, proto.Clone(req))
	f.mu.Unlock()
	if f.hang != nil {
		<-f.hang
		return zero, status.Error(codes.Unavailable, "test: released")
	}
	if f.block {
		<-ctx.Done()
		return zero, status.FromContextError(ctx.Err()).Err()
	}
	if f.err != nil {
		return zero, f.err
	}
	resp, ok := f.resp.(T)
	if !ok {
		return zero, status.Errorf(codes.Internal, "test: no canned %T", zero)
	}
	return resp, nil
}

func (f *fakeAdmin) CreatePool(ctx context.Context, r *lbv1.CreatePoolRequest) (*lbv1.CreatePoolResponse, error) {
	return answer[*lbv1.CreatePoolResponse](ctx, f, r)
}

func (f *fakeAdmin) GetPool(ctx context.Context, r *lbv1.GetPoolRequest) (*lbv1.GetPoolResponse, error) {
	return answer[*lbv1.GetPoolResponse](ctx, f, r)
}

func (f *fakeAdmin) ListPools(ctx context.Context, r *lbv1.ListPoolsRequest) (*lbv1.ListPoolsResponse, error) {
	return answer[*lbv1.ListPoolsResponse](ctx, f, r)
}

func (f *fakeAdmin) UpdatePool(ctx context.Context, r *lbv1.UpdatePoolRequest) (*lbv1.UpdatePoolResponse, error) {
	return answer[*lbv1.UpdatePoolResponse](ctx, f, r)
}

func (f *fakeAdmin) DeletePool(ctx context.Context, r *lbv1.DeletePoolRequest) (*lbv1.DeletePoolResponse, error) {
	return answer[*lbv1.DeletePoolResponse](ctx, f, r)
}

func (f *fakeAdmin) AddBackend(ctx context.Context, r *lbv1.AddBackendRequest) (*lbv1.AddBackendResponse, error) {
	return answer[*lbv1.AddBackendResponse](ctx, f, r)
}

func (f *fakeAdmin) RemoveBackend(ctx context.Context, r *lbv1.RemoveBackendRequest) (*lbv1.RemoveBackendResponse, error) {
	return answer[*lbv1.RemoveBackendResponse](ctx, f, r)
}

func (f *fakeAdmin) UpdateBackend(ctx context.Context, r *lbv1.UpdateBackendRequest) (*lbv1.UpdateBackendResponse, error) {
	return answer[*lbv1.UpdateBackendResponse](ctx, f, r)
}

func (f *fakeAdmin) ListDataPlanes(ctx context.Context, r *lbv1.ListDataPlanesRequest) (*lbv1.ListDataPlanesResponse, error) {
	return answer[*lbv1.ListDataPlanesResponse](ctx, f, r)
}

func (f *fakeAdmin) WaitForVersion(ctx context.Context, r *lbv1.WaitForVersionRequest) (*lbv1.WaitForVersionResponse, error) {
	f.mu.Lock()
	f.waitLeft = 0
	if dl, ok := ctx.Deadline(); ok {
		f.waitLeft = time.Until(dl)
	}
	canned := f.waitResp != nil || f.waitErr != nil
	f.mu.Unlock()
	if !canned {
		return answer[*lbv1.WaitForVersionResponse](ctx, f, r)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, proto.Clone(r))
	f.mu.Unlock()
	if f.waitErr != nil {
		return nil, f.waitErr
	}
	return f.waitResp, nil
}

// startServer serves f on a real gRPC server on 127.0.0.1 and returns its
// address. The server stops when the test ends.
func startServer(t *testing.T, f *fakeAdmin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	lbv1.RegisterAdminServiceServer(s, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// result is the outcome of one lbctl run.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs lbctl with args and env as its whole environment.
func runCLI(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// runCLIAt runs lbctl with args, an empty environment and a clock stopped
// at now. Its context is limited to 3 minutes, more than the longest wait
// timeout of the tests plus 5s, so that the deadline of a WaitForVersion
// call is lbctl's own.
func runCLIAt(t *testing.T, now time.Time, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" },
		now: func() time.Time { return now }}
	code := a.main(ctx, args)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// staleErr is the control plane's refusal of a change to pool made with
// --if-version expected when the pool is at current.
func staleErr(t *testing.T, pool string, expected, current uint64) error {
	return statusErr(t, codes.FailedPrecondition,
		fmt.Sprintf("pool %q changed since version %d (it is now at version %d); read it again and retry", pool, expected, current),
		&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
			Type: "VERSION", Subject: "pool/" + pool,
			Description: fmt.Sprintf("expected version %d, found %d", expected, current),
		}}})
}

// statusErr builds a status error with details.
func statusErr(t *testing.T, c codes.Code, msg string, details ...proto.Message) error {
	t.Helper()
	st := status.New(c, msg)
	if len(details) > 0 {
		var ds []protoadapt.MessageV1
		for _, d := range details {
			ds = append(ds, protoadapt.MessageV1Of(d))
		}
		var err error
		if st, err = st.WithDetails(ds...); err != nil {
			t.Fatalf("WithDetails: %v", err)
		}
	}
	return st.Err()
}

func poolNotFound(t *testing.T, name string) error {
	return statusErr(t, codes.NotFound, "pool \""+name+"\" not found",
		&errdetails.ResourceInfo{ResourceType: "pool", ResourceName: name, Description: "no such pool"})
}

func backendNotFound(t *testing.T, addr string) error {
	return statusErr(t, codes.NotFound, "backend "+addr+" not found",
		&errdetails.ResourceInfo{ResourceType: "backend", ResourceName: addr, Description: "no such backend"})
}
