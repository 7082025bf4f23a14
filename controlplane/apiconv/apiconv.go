// Package apiconv converts between the API's protobuf messages (lbv1) and the
// control plane's own pool types (poolspec). It is the only place in the
// control plane where the two meet.
package apiconv

import (
	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/internal/poolspec"
)

// PoolToProto converts a stored pool to its API message.
func PoolToProto(p poolspec.Pool) *lbv1.Pool {
	out := &lbv1.Pool{
		Name:       p.Name,
		Hosts:      append([]string(nil), p.Hosts...),
		PathPrefix: p.PathPrefix,
		Version:    p.Version,
		Backends:   make([]*lbv1.Backend, len(p.Backends)),
	}
	for i, b := range p.Backends {
		out.Backends[i] = &lbv1.Backend{Address: b.Address, Weight: b.Weight}
	}
	return out
}

// PoolFromProto converts an API message to a pool, unvalidated. A nil message
// gives the zero pool.
func PoolFromProto(p *lbv1.Pool) poolspec.Pool {
	out := poolspec.Pool{
		Name:       p.GetName(),
		Hosts:      append([]string(nil), p.GetHosts()...),
		PathPrefix: p.GetPathPrefix(),
		Version:    p.GetVersion(),
	}
	for _, b := range p.GetBackends() {
		out.Backends = append(out.Backends, poolspec.Backend{Address: b.GetAddress(), Weight: b.GetWeight()})
	}
	return out
}
