// Package apiconv converts between the API's protobuf messages (lbv1) and the
// plain pool types of internal/poolspec. The control plane's servers and the
// data plane's config client use it; nothing else sees both.
package apiconv

import (
	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/internal/poolspec"
)

// PoolToProto converts a stored pool to its API message, secrets included:
// for data planes only.
func PoolToProto(p poolspec.Pool) *lbv1.Pool {
	out := &lbv1.Pool{
		Name:       p.Name,
		Hosts:      append([]string(nil), p.Hosts...),
		PathPrefix: p.PathPrefix,
		Version:    p.Version,
		Backends:   make([]*lbv1.Backend, len(p.Backends)),
	}
	for i, b := range p.Backends {
		out.Backends[i] = &lbv1.Backend{Address: b.Address, Weight: b.Weight, Draining: b.Draining}
	}
	policiesToProto(p, out)
	if !p.Upstream.IsZero() {
		u := p.Upstream
		out.Upstream = &lbv1.Upstream{
			Protocol:           protocolToProto[u.Protocol],
			Tls:                u.TLS,
			Sni:                u.SNI,
			CaPem:              u.CAPEM,
			InsecureSkipVerify: u.InsecureSkipVerify,
			ClientCertPem:      u.ClientCertPEM,
			ClientKeyPem:       u.ClientKeyPEM,
			ClientKeySet:       u.ClientKeyPEM != "",
			HostHeader:         u.HostHeader,
		}
	}
	return out
}

// PublicPool converts a stored pool to the API message the admin API
// returns: as PoolToProto, with the client private key left out.
func PublicPool(p poolspec.Pool) *lbv1.Pool {
	out := PoolToProto(p)
	if out.Upstream != nil {
		out.Upstream.ClientKeyPem = ""
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
		Upstream:   UpstreamFromProto(p.GetUpstream()),
	}
	for _, b := range p.GetBackends() {
		out.Backends = append(out.Backends, poolspec.Backend{Address: b.GetAddress(), Weight: b.GetWeight(), Draining: b.GetDraining()})
	}
	policiesFromProto(p, &out)
	return out
}

// UpstreamFromProto converts upstream settings, unvalidated. An unknown
// protocol number becomes a name the validator refuses.
func UpstreamFromProto(u *lbv1.Upstream) poolspec.Upstream {
	proto, ok := protocolFromProto[u.GetProtocol()]
	if !ok {
		proto = poolspec.Protocol(u.GetProtocol().String())
	}
	return poolspec.Upstream{
		Protocol:           proto,
		TLS:                u.GetTls(),
		SNI:                u.GetSni(),
		CAPEM:              u.GetCaPem(),
		InsecureSkipVerify: u.GetInsecureSkipVerify(),
		ClientCertPEM:      u.GetClientCertPem(),
		ClientKeyPEM:       u.GetClientKeyPem(),
		HostHeader:         u.GetHostHeader(),
	}
}

var protocolToProto = map[poolspec.Protocol]lbv1.UpstreamProtocol{
	poolspec.ProtocolAuto:  lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_UNSPECIFIED,
	poolspec.ProtocolHTTP1: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_HTTP1,
	poolspec.ProtocolH2:    lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2,
	poolspec.ProtocolH2C:   lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C,
}

var protocolFromProto = map[lbv1.UpstreamProtocol]poolspec.Protocol{
	lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_UNSPECIFIED: poolspec.ProtocolAuto,
	lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_HTTP1:       poolspec.ProtocolHTTP1,
	lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2:          poolspec.ProtocolH2,
	lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C:         poolspec.ProtocolH2C,
}
