// Package admin implements lb.v1.AdminService: the validated, durable API
// through which operators and automation change pools and backends.
//
// Every request is validated (internal/poolspec) before the store is touched,
// so a refused call changes nothing. Mutations run as one store transaction
// each and return only after it committed, with its configuration version.
// Errors carry canonical gRPC codes with google.rpc details: BadRequest for
// invalid fields, ResourceInfo for missing or existing pools and backends.
package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/controlplane/auth"
	"github.com/lb-project/lb/controlplane/discovery"
	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/internal/apiconv"
	"github.com/lb-project/lb/internal/poolspec"
)

// Server implements lbv1.AdminServiceServer over a store.
type Server struct {
	lbv1.UnimplementedAdminServiceServer

	store store.Store
	fleet Fleet
	log   hclog.Logger
}

// Fleet is what the admin API needs of the discovery server: the connected
// data planes and what they acknowledged and see.
type Fleet interface {
	// BackendStatus maps backend addresses of the pool to the data planes'
	// views of them.
	BackendStatus(pool string) map[string][]*lbv1.DataPlaneBackendStatus
	// Nodes lists the connected data planes.
	Nodes() []discovery.NodeStatus
	// WaitAcked waits until every connected data plane acknowledged version.
	WaitAcked(ctx context.Context, version uint64) (all, lagging []discovery.NodeStatus, err error)
}

// New returns an admin server over st, logging to log. fleet may be nil
// (GetPool then reports no backend status).
func New(st store.Store, fleet Fleet, log hclog.Logger) *Server {
	return &Server{store: st, fleet: fleet, log: log}
}

// CreatePool implements lbv1.AdminServiceServer.
func (s *Server) CreatePool(ctx context.Context, req *lbv1.CreatePoolRequest) (*lbv1.CreatePoolResponse, error) {
	if req.GetPool() == nil {
		return nil, s.refuse(ctx, &poolspec.FieldError{Field: "pool", Value: "", Reason: "is required"})
	}
	p, err := poolspec.Normalize("pool", withDefaultWeights(apiconv.PoolFromProto(req.GetPool())))
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	var stored poolspec.Pool
	v, err := s.store.Update(ctx, func(tx store.Tx) error {
		if _, ok := tx.Pool(p.Name); ok {
			return alreadyExists("pool", p.Name, fmt.Sprintf("pool %q already exists", p.Name))
		}
		if err := checkRoutes(p, tx.Pools()); err != nil {
			return err
		}
		tx.Put(p)
		stored = p
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, "CreatePool", p.Name, err)
	}
	stored.Version = v
	s.logChange(ctx, "pool created", p.Name, v)
	return &lbv1.CreatePoolResponse{Pool: apiconv.PublicPool(stored), Version: v}, nil
}

// GetPool implements lbv1.AdminServiceServer.
func (s *Server) GetPool(ctx context.Context, req *lbv1.GetPoolRequest) (*lbv1.GetPoolResponse, error) {
	if err := poolspec.ValidateName("name", req.GetName()); err != nil {
		return nil, s.refuse(ctx, err)
	}
	st, err := s.store.Read(ctx)
	if err != nil {
		return nil, s.fail(ctx, "GetPool", req.GetName(), err)
	}
	p, ok := st.Pool(req.GetName())
	if !ok {
		return nil, poolNotFound(req.GetName())
	}
	resp := &lbv1.GetPoolResponse{Pool: apiconv.PublicPool(p), Version: st.Version}
	if s.fleet != nil {
		views := s.fleet.BackendStatus(p.Name)
		for _, b := range p.Backends {
			bs := &lbv1.BackendStatus{Address: b.Address, DataPlanes: views[b.Address]}
			for _, v := range bs.DataPlanes {
				if v.GetHealthy() && !v.GetEjected() {
					bs.HealthyDataPlanes++
				} else {
					bs.UnhealthyDataPlanes++
				}
			}
			resp.BackendStatus = append(resp.BackendStatus, bs)
		}
	}
	return resp, nil
}

// ListPools implements lbv1.AdminServiceServer.
func (s *Server) ListPools(ctx context.Context, _ *lbv1.ListPoolsRequest) (*lbv1.ListPoolsResponse, error) {
	st, err := s.store.Read(ctx)
	if err != nil {
		return nil, s.fail(ctx, "ListPools", "", err)
	}
	resp := &lbv1.ListPoolsResponse{Version: st.Version, Pools: make([]*lbv1.Pool, len(st.Pools))}
	for i, p := range st.Pools {
		resp.Pools[i] = apiconv.PublicPool(p)
	}
	return resp, nil
}

// updatable are the top-level Pool fields UpdatePool may change; message
// fields may also be named field by field ("upstream.sni"). An empty mask
// replaces all of them.
var updatable = []string{
	"hosts", "path_prefix", "backends", "upstream", "load_balancing",
	"health_check", "outlier_detection", "retry", "timeouts",
}

// outputOnly are paths a caller may not set.
var outputOnly = []string{"upstream.client_key_set"}

// UpdatePool implements lbv1.AdminServiceServer.
func (s *Server) UpdatePool(ctx context.Context, req *lbv1.UpdatePoolRequest) (*lbv1.UpdatePoolResponse, error) {
	if req.GetPool() == nil {
		return nil, s.refuse(ctx, &poolspec.FieldError{Field: "pool", Value: "", Reason: "is required"})
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = updatable
	}
	for i, path := range paths {
		root, _, _ := strings.Cut(path, ".")
		err := apiconv.ApplyMask(&lbv1.Pool{}, &lbv1.Pool{}, path)
		if !slices.Contains(updatable, root) || slices.Contains(outputOnly, path) || err != nil {
			return nil, s.refuse(ctx, &poolspec.FieldError{
				Field: fmt.Sprintf("update_mask.paths[%d]", i), Value: path,
				Reason: "is not an updatable field; use " + strings.Join(updatable, ", ") + " or one of their fields (upstream.sni)",
			})
		}
	}
	if err := poolspec.ValidateName("pool.name", req.GetPool().GetName()); err != nil {
		return nil, s.refuse(ctx, err)
	}
	name := req.GetPool().GetName()
	// The request is validated once merged into the stored pool: a masked
	// field (say upstream.sni) is only meaningful together with the stored
	// ones (upstream.tls).
	var stored poolspec.Pool
	v, err := s.store.Update(ctx, func(tx store.Tx) error {
		cur, ok := tx.Pool(name)
		if !ok {
			return poolNotFound(name)
		}
		if err := checkExpected(cur, req.GetExpectedVersion()); err != nil {
			return err
		}
		merged := apiconv.PoolToProto(cur)
		for _, path := range paths {
			if err := apiconv.ApplyMask(merged, req.GetPool(), path); err != nil {
				return s.refuse(ctx, &poolspec.FieldError{Field: "update_mask", Value: path, Reason: err.Error()})
			}
		}
		next, err := poolspec.Normalize("pool", withDefaultWeights(apiconv.PoolFromProto(merged)))
		if err != nil {
			return s.refuse(ctx, err)
		}
		if err := checkRoutes(next, tx.Pools()); err != nil {
			return err
		}
		tx.Put(next)
		stored = next
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, "UpdatePool", name, err)
	}
	stored.Version = v
	s.logChange(ctx, "pool updated", name, v, "fields", paths)
	return &lbv1.UpdatePoolResponse{Pool: apiconv.PublicPool(stored), Version: v}, nil
}

// DeletePool implements lbv1.AdminServiceServer.
func (s *Server) DeletePool(ctx context.Context, req *lbv1.DeletePoolRequest) (*lbv1.DeletePoolResponse, error) {
	if err := poolspec.ValidateName("name", req.GetName()); err != nil {
		return nil, s.refuse(ctx, err)
	}
	v, err := s.store.Update(ctx, func(tx store.Tx) error {
		cur, ok := tx.Pool(req.GetName())
		if !ok {
			return poolNotFound(req.GetName())
		}
		if err := checkExpected(cur, req.GetExpectedVersion()); err != nil {
			return err
		}
		tx.Delete(req.GetName())
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, "DeletePool", req.GetName(), err)
	}
	s.logChange(ctx, "pool deleted", req.GetName(), v)
	return &lbv1.DeletePoolResponse{Version: v}, nil
}

// AddBackend implements lbv1.AdminServiceServer.
func (s *Server) AddBackend(ctx context.Context, req *lbv1.AddBackendRequest) (*lbv1.AddBackendResponse, error) {
	weight := int64(poolspec.DefaultWeight)
	if req.Weight != nil {
		weight = int64(req.GetWeight())
	}
	addr, err := s.validateBackendRef(req.GetPool(), req.GetAddress())
	if err == nil {
		err = poolspec.ValidateWeight("weight", weight)
	}
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	p, v, err := s.mutatePool(ctx, req.GetPool(), req.GetExpectedVersion(), func(p *poolspec.Pool) error {
		if indexOf(*p, addr) >= 0 {
			return alreadyExists("backend", addr, fmt.Sprintf("backend %s is already in pool %q", addr, p.Name))
		}
		if len(p.Backends) >= poolspec.MaxBackends {
			return status.Errorf(codes.ResourceExhausted, "pool %q already holds %d backends, the most a pool may hold", p.Name, poolspec.MaxBackends)
		}
		p.Backends = append(p.Backends, poolspec.Backend{Address: addr, Weight: uint32(weight)})
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, "AddBackend", req.GetPool(), err)
	}
	s.logChange(ctx, "backend added", p.Name, v, "backend", addr, "weight", weight)
	return &lbv1.AddBackendResponse{Pool: apiconv.PublicPool(p), Version: v}, nil
}

// RemoveBackend implements lbv1.AdminServiceServer.
func (s *Server) RemoveBackend(ctx context.Context, req *lbv1.RemoveBackendRequest) (*lbv1.RemoveBackendResponse, error) {
	addr, err := s.validateBackendRef(req.GetPool(), req.GetAddress())
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	p, v, err := s.mutatePool(ctx, req.GetPool(), req.GetExpectedVersion(), func(p *poolspec.Pool) error {
		i := indexOf(*p, addr)
		if i < 0 {
			return backendNotFound(p.Name, addr)
		}
		p.Backends = slices.Delete(p.Backends, i, i+1)
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, "RemoveBackend", req.GetPool(), err)
	}
	s.logChange(ctx, "backend removed", p.Name, v, "backend", addr)
	return &lbv1.RemoveBackendResponse{Pool: apiconv.PublicPool(p), Version: v}, nil
}

// UpdateBackend implements lbv1.AdminServiceServer.
func (s *Server) UpdateBackend(ctx context.Context, req *lbv1.UpdateBackendRequest) (*lbv1.UpdateBackendResponse, error) {
	addr, err := s.validateBackendRef(req.GetPool(), req.GetAddress())
	if err == nil && req.Weight != nil {
		err = poolspec.ValidateWeight("weight", int64(req.GetWeight()))
	}
	if err == nil && req.Weight == nil && req.Draining == nil {
		err = &poolspec.FieldError{Field: "weight", Value: "", Reason: "nothing to change: set weight or draining"}
	}
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	p, v, err := s.mutatePool(ctx, req.GetPool(), req.GetExpectedVersion(), func(p *poolspec.Pool) error {
		i := indexOf(*p, addr)
		if i < 0 {
			return backendNotFound(p.Name, addr)
		}
		if req.Weight != nil {
			p.Backends[i].Weight = req.GetWeight()
		}
		if req.Draining != nil {
			p.Backends[i].Draining = req.GetDraining()
		}
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, "UpdateBackend", req.GetPool(), err)
	}
	kv := []any{"backend", addr}
	if req.Weight != nil {
		kv = append(kv, "weight", req.GetWeight())
	}
	if req.Draining != nil {
		kv = append(kv, "draining", req.GetDraining())
	}
	s.logChange(ctx, "backend updated", p.Name, v, kv...)
	return &lbv1.UpdateBackendResponse{Pool: apiconv.PublicPool(p), Version: v}, nil
}

// validateBackendRef checks a (pool, address) pair and returns the canonical address.
func (s *Server) validateBackendRef(pool, address string) (string, error) {
	var errs poolspec.Errors
	if err := poolspec.ValidateName("pool", pool); err != nil {
		errs = append(errs, poolspec.AsFieldErrors(err)...)
	}
	addr, err := poolspec.NormalizeAddress("address", address)
	if err != nil {
		errs = append(errs, poolspec.AsFieldErrors(err)...)
	}
	if len(errs) > 0 {
		return "", errs
	}
	return addr, nil
}

// mutatePool applies change to the named pool in one transaction and returns
// the pool as stored and the new version.
func (s *Server) mutatePool(ctx context.Context, name string, expected uint64, change func(p *poolspec.Pool) error) (poolspec.Pool, uint64, error) {
	var stored poolspec.Pool
	v, err := s.store.Update(ctx, func(tx store.Tx) error {
		p, ok := tx.Pool(name)
		if !ok {
			return poolNotFound(name)
		}
		if err := checkExpected(p, expected); err != nil {
			return err
		}
		p = p.Clone()
		if err := change(&p); err != nil {
			return err
		}
		tx.Put(p)
		stored = p
		return nil
	})
	stored.Version = v
	return stored, v, err
}

// checkExpected refuses a change to a pool that changed since the version
// the caller read (optimistic concurrency); expected 0 means no check.
func checkExpected(p poolspec.Pool, expected uint64) error {
	if expected == 0 || p.Version == expected {
		return nil
	}
	st, _ := status.New(codes.FailedPrecondition, fmt.Sprintf(
		"pool %q changed since version %d (it is now at version %d); read it again and retry", p.Name, expected, p.Version)).
		WithDetails(&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
			Type: "VERSION", Subject: "pool/" + p.Name,
			Description: fmt.Sprintf("expected version %d, found %d", expected, p.Version),
		}}})
	return st.Err()
}

// ListDataPlanes implements lbv1.AdminServiceServer.
func (s *Server) ListDataPlanes(ctx context.Context, _ *lbv1.ListDataPlanesRequest) (*lbv1.ListDataPlanesResponse, error) {
	st, err := s.store.Read(ctx)
	if err != nil {
		return nil, s.fail(ctx, "ListDataPlanes", "", err)
	}
	if s.fleet == nil {
		return &lbv1.ListDataPlanesResponse{Version: st.Version}, nil
	}
	return &lbv1.ListDataPlanesResponse{DataPlanes: dataPlanes(s.fleet.Nodes()), Version: st.Version}, nil
}

// defaultWaitTimeout bounds WaitForVersion when the request gives none.
const defaultWaitTimeout = 30 * time.Second

// WaitForVersion implements lbv1.AdminServiceServer.
func (s *Server) WaitForVersion(ctx context.Context, req *lbv1.WaitForVersionRequest) (*lbv1.WaitForVersionResponse, error) {
	timeout := defaultWaitTimeout
	if d := req.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, s.refuse(ctx, &poolspec.FieldError{Field: "timeout", Value: d.AsDuration().String(), Reason: "must be a positive duration"})
		}
		timeout = d.AsDuration()
	}
	if s.fleet == nil {
		return &lbv1.WaitForVersionResponse{}, nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	all, lag, err := s.fleet.WaitAcked(wctx, req.GetVersion())
	switch {
	case err == nil:
		return &lbv1.WaitForVersionResponse{DataPlanes: dataPlanes(all)}, nil
	case errors.Is(err, discovery.ErrRefused):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	names := make([]string, len(lag))
	for i, n := range lag {
		names[i] = fmt.Sprintf("%s (at version %d)", n.NodeID, n.AckedVersion)
	}
	return nil, status.Errorf(codes.DeadlineExceeded, "after %v, %d of %d data planes have not acknowledged version %d: %s",
		timeout, len(lag), len(all), req.GetVersion(), strings.Join(names, ", "))
}

func dataPlanes(nodes []discovery.NodeStatus) []*lbv1.DataPlane {
	out := make([]*lbv1.DataPlane, len(nodes))
	for i, n := range nodes {
		out[i] = &lbv1.DataPlane{
			NodeId: n.NodeID, Peer: n.Peer, ConnectedAt: timestamppb.New(n.ConnectedAt),
			SentVersion: n.SentVersion, AckedVersion: n.AckedVersion,
			NackedVersion: n.NackedVersion, NackReason: n.NackReason,
		}
	}
	return out
}

func indexOf(p poolspec.Pool, addr string) int {
	return slices.IndexFunc(p.Backends, func(b poolspec.Backend) bool { return b.Address == addr })
}

// withDefaultWeights gives backends that came without a weight the default.
// Weight 0 cannot be told apart from "unset" inside a Pool message, and the
// Backend message documents 1 as the least weight, so 0 means "default" here.
func withDefaultWeights(p poolspec.Pool) poolspec.Pool {
	for i := range p.Backends {
		if p.Backends[i].Weight == 0 {
			p.Backends[i].Weight = poolspec.DefaultWeight
		}
	}
	return p
}

// checkRoutes refuses a pool that claims a route another pool already has.
func checkRoutes(p poolspec.Pool, all []poolspec.Pool) error {
	r, owner, ok := poolspec.RouteConflict(p, all)
	if !ok {
		return nil
	}
	st, _ := status.New(codes.AlreadyExists,
		fmt.Sprintf("route %s is already served by pool %q; give pool %q other hosts or another path prefix", r, owner, p.Name)).
		WithDetails(&errdetails.ResourceInfo{ResourceType: "route", ResourceName: r.String(), Owner: "pool/" + owner})
	return st.Err()
}

// refuse logs an invalid request (with who sent it) and returns its status.
func (s *Server) refuse(ctx context.Context, err error) error {
	method, _ := grpc.Method(ctx)
	s.log.Info("request refused", "method", method, "caller", callerName(ctx), "peer", peerAddr(ctx), "code", codes.InvalidArgument, "error", err.Error())
	return invalid(err)
}

// invalid converts validation errors to InvalidArgument with a BadRequest detail.
func invalid(err error) error {
	br := &errdetails.BadRequest{}
	for _, fe := range poolspec.AsFieldErrors(err) {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field: fe.Field, Description: fe.Error(),
		})
	}
	st, dErr := status.New(codes.InvalidArgument, err.Error()).WithDetails(br)
	if dErr != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return st.Err()
}

func poolNotFound(name string) error {
	st, _ := status.New(codes.NotFound, fmt.Sprintf("pool %q does not exist", name)).
		WithDetails(&errdetails.ResourceInfo{ResourceType: "pool", ResourceName: name, Description: "create it with CreatePool"})
	return st.Err()
}

func backendNotFound(pool, addr string) error {
	st, _ := status.New(codes.NotFound, fmt.Sprintf("backend %s is not in pool %q", addr, pool)).
		WithDetails(&errdetails.ResourceInfo{ResourceType: "backend", ResourceName: addr, Owner: "pool/" + pool})
	return st.Err()
}

func alreadyExists(kind, name, msg string) error {
	st, _ := status.New(codes.AlreadyExists, msg).
		WithDetails(&errdetails.ResourceInfo{ResourceType: kind, ResourceName: name})
	return st.Err()
}

// fail logs a refused or failed call and turns non-status errors into gRPC
// statuses: context errors keep their meaning, anything else is Internal.
func (s *Server) fail(ctx context.Context, method, pool string, err error) error {
	if st, ok := status.FromError(err); ok {
		s.log.Info("request refused", "method", method, "pool", pool, "caller", callerName(ctx), "peer", peerAddr(ctx), "code", st.Code(), "error", st.Message())
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, store.ErrClosed):
		return status.Error(codes.Unavailable, "control plane is shutting down")
	}
	s.log.Error("store failure", "method", method, "pool", pool, "error", err)
	return status.Errorf(codes.Internal, "%s: store failure: %v", method, err)
}

func (s *Server) logChange(ctx context.Context, msg, pool string, version uint64, kv ...any) {
	args := append([]any{"pool", pool, "version", version, "caller", callerName(ctx), "peer", peerAddr(ctx)}, kv...)
	s.log.Info(msg, args...)
}

// callerName says who made a call, as the auth interceptor identified it.
func callerName(ctx context.Context) string {
	if c, ok := auth.FromContext(ctx); ok {
		return c.Name
	}
	return "anonymous"
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
