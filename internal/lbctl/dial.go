package lbctl

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// dialOptions returns the gRPC options used to reach the control plane:
// TLS when --tls-ca is given (verifying the control plane against that CA),
// and the bearer token of --token on every call.
func (a *app) dialOptions() ([]grpc.DialOption, error) {
	creds := insecure.NewCredentials()
	if a.tlsCA != "" {
		tc, err := credentials.NewClientTLSFromFile(a.tlsCA, "")
		if err != nil {
			return nil, fmt.Errorf("--tls-ca %s: %w", a.tlsCA, err)
		}
		creds = tc
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("lbctl/" + Version),
	}
	if a.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: a.token, secure: a.tlsCA != ""}))
	}
	return opts, nil
}

// bearer sends a token as "authorization: Bearer TOKEN".
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity lets a token travel in plain text only when TLS
// is not configured at all (a loopback control plane).
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// withConn connects to the control plane, calls fn with an AdminService
// client, and closes the connection. grpc.NewClient does not connect until
// the first call, so an unreachable control plane is reported by fn's call
// as Unavailable. fn sets the deadline of each of its calls.
func (a *app) withConn(ctx context.Context, fn func(c lbv1.AdminServiceClient) error) error {
	opts, err := a.dialOptions()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(a.controlPlane, opts...)
	if err != nil {
		return fmt.Errorf("invalid control plane address %q: %w (set --controlplane or %s)", a.controlPlane, err, EnvControlPlane)
	}
	defer conn.Close()
	return fn(lbv1.NewAdminServiceClient(conn))
}

// withClient is withConn for a single call: fn gets a context limited by
// --timeout.
func (a *app) withClient(ctx context.Context, fn func(ctx context.Context, c lbv1.AdminServiceClient) error) error {
	return a.withConn(ctx, func(c lbv1.AdminServiceClient) error {
		callCtx, cancel := context.WithTimeout(ctx, a.timeout)
		defer cancel()
		err := fn(callCtx, c)
		if err != nil && ctx.Err() == nil && ranOutOfTime(callCtx, err) {
			// The server's copy of the deadline can fire a hair before
			// ours and reset the stream: report it as the timeout it is.
			return status.Error(codes.DeadlineExceeded, "no answer before the deadline")
		}
		return err
	})
}

// ranOutOfTime reports whether err ended a call at (or within a hair of)
// its deadline without a real answer from the server. The server's copy of
// the deadline can fire a hair before the client's and reset the stream, so
// the status code alone does not tell.
func ranOutOfTime(ctx context.Context, err error) bool {
	dl, ok := ctx.Deadline()
	if !ok || time.Until(dl) > 250*time.Millisecond {
		return false
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown:
		return true
	}
	return false
}
