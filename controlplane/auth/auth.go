// Package auth decides who may call the control plane.
//
// Callers are identified in two ways:
//   - data planes by their TLS client certificate (mutual TLS): the identity
//     is the certificate's first DNS SAN, or else its Subject common name,
//     and must equal the node id the data plane gives in its hello;
//   - operators and automation by a bearer token from the tokens file, each
//     with a role: "admin" may read and change, "viewer" may only read.
//
// Data-plane identities may only use the discovery service; tokens may only
// use the admin API. With no tokens file the admin API is open, and without
// TLS anyone may connect: acceptable only on loopback, which the control
// plane enforces unless told --insecure.
package auth

import (
	"bufio"
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Role is what a token may do.
type Role string

// Roles.
const (
	RoleAdmin  Role = "admin"
	RoleViewer Role = "viewer"
)

// Token is one entry of the tokens file.
type Token struct {
	// Secret is the bearer token.
	Secret string
	// Role is its role.
	Role Role
	// Name says whose it is, for the logs.
	Name string
}

// LoadTokens reads a tokens file: one token per line, "SECRET ROLE [NAME]",
// blank lines and lines starting with "#" ignored. Secrets must be at least
// 16 characters and unique.
func LoadTokens(path string) ([]Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	var out []Token
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return nil, fmt.Errorf("tokens file %s line %d: want \"SECRET ROLE [NAME]\"", path, n)
		}
		t := Token{Secret: fields[0], Role: Role(fields[1]), Name: fmt.Sprintf("token#%d", n)}
		if len(fields) > 2 {
			t.Name = strings.Join(fields[2:], " ")
		}
		if t.Role != RoleAdmin && t.Role != RoleViewer {
			return nil, fmt.Errorf("tokens file %s line %d: role %q: want admin or viewer", path, n, t.Role)
		}
		if len(t.Secret) < 16 {
			return nil, fmt.Errorf("tokens file %s line %d: token shorter than 16 characters", path, n)
		}
		if seen[t.Secret] {
			return nil, fmt.Errorf("tokens file %s line %d: token listed twice", path, n)
		}
		seen[t.Secret] = true
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("tokens file %s holds no token", path)
	}
	return out, nil
}

// Caller is who made a call.
type Caller struct {
	// Name is the token's name or the certificate identity; "anonymous"
	// when the call carried neither.
	Name string
	// Role is the token's role; "" for certificate and anonymous callers.
	Role Role
	// Node is the certificate identity of a data plane, if any.
	Node string
}

type callerKey struct{}

// FromContext returns the caller the interceptors identified.
func FromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Policy authorises calls. Create it with NewPolicy.
type Policy struct {
	tokens []Token // nil: admin API open
	mtls   bool    // data planes must present certificates
	// readOnly lists the admin methods a viewer may call.
	readOnly map[string]bool
	// discoveryPrefix is the full-method prefix of the discovery service.
	discoveryPrefix string
}

// NewPolicy returns a policy: tokens nil leaves the admin API open; mtls
// requires data planes to present certificates matching their node ids.
// readOnly names the admin methods ("/lb.v1.AdminService/GetPool") viewers
// may call, and discoveryService the discovery service's full name.
func NewPolicy(tokens []Token, mtls bool, readOnly []string, discoveryService string) *Policy {
	p := &Policy{tokens: tokens, mtls: mtls, readOnly: map[string]bool{}, discoveryPrefix: "/" + discoveryService + "/"}
	for _, m := range readOnly {
		p.readOnly[m] = true
	}
	return p
}

// certIdentity returns the identity of the peer's verified client
// certificate, or "".
func certIdentity(ctx context.Context) string {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := ti.State.VerifiedChains[0][0]
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames[0]
	}
	return leaf.Subject.CommonName
}

// token returns the bearer token of the call, or "".
func token(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if s, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(s)
		}
	}
	return ""
}

// authorize identifies the caller of method and decides.
func (p *Policy) authorize(ctx context.Context, method string) (Caller, error) {
	node := certIdentity(ctx)
	if strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.") {
		return Caller{Name: nameOr(node, "anonymous"), Node: node}, nil
	}
	if strings.HasPrefix(method, p.discoveryPrefix) {
		if p.mtls && node == "" {
			return Caller{}, status.Error(codes.Unauthenticated, "data planes must present a client certificate from the control plane's CA")
		}
		return Caller{Name: nameOr(node, "anonymous"), Node: node}, nil
	}
	if p.tokens == nil {
		return Caller{Name: nameOr(node, "anonymous"), Node: node}, nil
	}
	secret := token(ctx)
	if secret == "" {
		if node != "" {
			return Caller{}, status.Errorf(codes.PermissionDenied, "data plane identity %q may only use the discovery service", node)
		}
		return Caller{}, status.Error(codes.Unauthenticated, "missing bearer token: pass --token or set LBCTL_TOKEN (API: metadata \"authorization: Bearer TOKEN\")")
	}
	var found *Token
	for i := range p.tokens {
		if subtle.ConstantTimeCompare([]byte(p.tokens[i].Secret), []byte(secret)) == 1 {
			found = &p.tokens[i]
		}
	}
	if found == nil {
		return Caller{}, status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	c := Caller{Name: found.Name, Role: found.Role}
	if found.Role != RoleAdmin && !p.readOnly[method] {
		return c, status.Errorf(codes.PermissionDenied, "token %q has role %s, which may only read; %s needs role admin", found.Name, found.Role, method)
	}
	return c, nil
}

func nameOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Refusal is called for every refused call, for logging.
type Refusal func(method string, caller Caller, err error)

// UnaryInterceptor authorises unary calls.
func (p *Policy) UnaryInterceptor(onRefuse Refusal) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c, err := p.authorize(ctx, info.FullMethod)
		if err != nil {
			if onRefuse != nil {
				onRefuse(info.FullMethod, c, err)
			}
			return nil, err
		}
		return handler(context.WithValue(ctx, callerKey{}, c), req)
	}
}

// StreamInterceptor authorises streaming calls.
func (p *Policy) StreamInterceptor(onRefuse Refusal) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c, err := p.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			if onRefuse != nil {
				onRefuse(info.FullMethod, c, err)
			}
			return err
		}
		return handler(srv, &callerStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, c)})
	}
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }

// CheckNode verifies, for a discovery stream, that the node id a data plane
// claims matches its certificate. Without mutual TLS any node id passes.
func (p *Policy) CheckNode(ctx context.Context, nodeID string) error {
	if !p.mtls {
		return nil
	}
	c, ok := FromContext(ctx)
	if !ok || c.Node == "" {
		return status.Error(codes.Unauthenticated, "no client certificate")
	}
	if c.Node != nodeID {
		return status.Errorf(codes.PermissionDenied, "node id %q does not match the client certificate's identity %q", nodeID, c.Node)
	}
	return nil
}

// CheckListen refuses a listen address beyond loopback when the control
// plane has no TLS, unless insecure is set.
func CheckListen(addr string, haveTLS, insecure bool) error {
	if haveTLS || insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("listen address %q is not loopback and no TLS certificate is configured: "+
		"give --tls-cert/--tls-key (and --tls-ca for data plane certificates), or --insecure to accept plain-text connections from the network", addr)
}
