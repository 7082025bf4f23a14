package lbctl

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// dialOptions returns the gRPC options used to reach the control plane.
//
// Transport security and authentication are chosen here and only here: to
// add --tls-ca or --token, register the flags in newRootCmd and return
// grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(...)) or
// grpc.WithPerRPCCredentials(...) in place of, or next to, the insecure
// credentials below.
func (a *app) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("lbctl/" + Version),
	}
}

// withConn connects to the control plane, calls fn with an AdminService
// client, and closes the connection. grpc.NewClient does not connect until
// the first call, so an unreachable control plane is reported by fn's call
// as Unavailable. fn sets the deadline of each of its calls.
func (a *app) withConn(ctx context.Context, fn func(c lbv1.AdminServiceClient) error) error {
	conn, err := grpc.NewClient(a.controlPlane, a.dialOptions()...)
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
		ctx, cancel := context.WithTimeout(ctx, a.timeout)
		defer cancel()
		return fn(ctx, c)
	})
}
