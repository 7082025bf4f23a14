// Package upstream builds and caches the transports a data plane uses to
// reach backends: HTTP/1.1, HTTP/2 over TLS or cleartext HTTP/2 (h2c), with
// TLS verification against the system roots or a pool's CA, an SNI name and
// an optional client certificate.
//
// Transports are cached by their settings and shared by every pool and every
// configuration version that uses the same settings, so a configuration
// update does not throw away warm upstream connections. After each update the
// caller Retains the settings still in use; the rest have their idle
// connections closed (requests in flight on them finish).
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lb-project/lb/dataplane/coalesce"
)

// Protocol is the protocol spoken to backends.
type Protocol uint8

// Protocols.
const (
	// Auto uses HTTP/2 for gRPC requests (h2 with TLS, h2c without) and
	// HTTP/1.1 for everything else.
	Auto Protocol = iota
	// HTTP1 is HTTP/1.1, over TLS when Settings.TLS is set.
	HTTP1
	// H2 is HTTP/2 over TLS.
	H2
	// H2C is HTTP/2 in cleartext with prior knowledge.
	H2C
)

// String returns the protocol's configuration name.
func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http1"
	case H2:
		return "h2"
	case H2C:
		return "h2c"
	default:
		return "auto"
	}
}

// Settings says how to connect to a backend. It is comparable, and is the
// cache key of transports.
type Settings struct {
	// Protocol to speak.
	Protocol Protocol `json:"protocol"`
	// TLS to the backend.
	TLS bool `json:"tls"`
	// ServerName is sent as SNI and verified; empty: the backend's host.
	ServerName string `json:"server_name,omitempty"`
	// CAPEM holds the CA certificates to verify against; empty: system roots.
	CAPEM string `json:"-"`
	// InsecureSkipVerify disables certificate verification.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
	// ClientCertPEM and ClientKeyPEM are the client certificate for mutual TLS.
	ClientCertPEM string `json:"-"`
	ClientKeyPEM  string `json:"-"`
	// ConnectTimeout bounds TCP and TLS connection setup; 0: the cache's default.
	ConnectTimeout time.Duration `json:"connect_timeout,omitempty"`
	// ResponseHeaderTimeout bounds the wait for response headers; 0: the
	// cache's default.
	ResponseHeaderTimeout time.Duration `json:"response_header_timeout,omitempty"`
	// IdleTimeout closes idle connections; 0: the cache's default.
	IdleTimeout time.Duration `json:"idle_timeout,omitempty"`
}

// MarshalText renders the protocol by name (for JSON views).
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Scheme returns the URL scheme for requests under s.
func (s Settings) Scheme() string {
	if s.TLS {
		return "https"
	}
	return "http"
}

// Options tune the transports a Cache builds. Zero fields take defaults.
type Options struct {
	// DialTimeout bounds connection establishment. Default 5s.
	DialTimeout time.Duration
	// MaxIdleConnsPerHost is the idle HTTP/1.1 connections kept per backend.
	// Default 1024.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes idle upstream connections. Default 90s.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers; 0: none.
	ResponseHeaderTimeout time.Duration
}

// Transport sends requests to backends under one Settings. It implements
// http.RoundTripper.
type Transport struct {
	settings Settings
	// h1 speaks HTTP/1.1 (plain or TLS); it also carries protocol upgrades
	// such as WebSocket, which HTTP/2 cannot.
	h1 *http.Transport
	// h2 speaks HTTP/2 (h2 or h2c); nil when the protocol is HTTP1.
	h2 *http.Transport
	// fast sends plain HTTP/1.1 requests without a body on the caller's
	// goroutine; nil when the backends speak TLS or only HTTP/2.
	fast *H1Pool
}

// Settings returns the settings t was built for.
func (t *Transport) Settings() Settings { return t.settings }

// RoundTrip implements http.RoundTripper, choosing HTTP/1.1 or HTTP/2 for r.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.h2 == nil || isUpgrade(r) || t.settings.Protocol == Auto && !IsGRPC(r) {
		if t.fast != nil && t.fast.eligible(r) {
			return t.fast.RoundTrip(r)
		}
		return t.h1.RoundTrip(r)
	}
	return t.h2.RoundTrip(r)
}

// H1 returns the pool of plain HTTP/1.1 connections that carries t's
// requests other than gRPC and upgrades, or nil when the backends are
// reached over TLS or only over HTTP/2.
func (t *Transport) H1() *H1Pool { return t.fast }

// TLSConfig returns a copy of the TLS client configuration towards the
// backends, or nil when they are not reached over TLS.
func (t *Transport) TLSConfig() *tls.Config {
	if t.h1.TLSClientConfig == nil {
		return nil
	}
	return t.h1.TLSClientConfig.Clone()
}

// CloseIdleConnections closes the transport's idle connections.
func (t *Transport) CloseIdleConnections() {
	t.h1.CloseIdleConnections()
	if t.fast != nil {
		t.fast.closeIdle()
	}
	if t.h2 != nil {
		t.h2.CloseIdleConnections()
	}
}

// IsGRPC reports whether r is a gRPC request (content type application/grpc,
// optionally +proto, +json, ...).
func IsGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	return strings.HasPrefix(ct[0], "application/grpc") &&
		(len(ct[0]) == len("application/grpc") || ct[0][len("application/grpc")] == '+' || ct[0][len("application/grpc")] == ';')
}

// isUpgrade reports whether r asks for a protocol upgrade; the proxy keeps
// the Upgrade header on such requests.
func isUpgrade(r *http.Request) bool {
	_, ok := r.Header["Upgrade"]
	return ok
}

// Cache builds transports on demand and keeps one per Settings. It is safe
// for concurrent use; it is consulted when tables are built, not per request.
type Cache struct {
	opts Options

	// mu guards transports.
	mu         sync.Mutex
	transports map[Settings]*Transport

	dials DialStats
}

// Dials returns the counts of connections opened to each backend by the
// cache's transports.
func (c *Cache) Dials() *DialStats { return &c.dials }

// DialStats counts TCP connection attempts and failures per backend
// address. Dials are rare next to requests when connections are reused, so
// a sync.Map lookup per dial costs the request path nothing.
type DialStats struct {
	m sync.Map // address → *DialCounts
}

// DialCounts are one address's connection counts.
type DialCounts struct {
	// Attempts counts TCP connects started; Failures those that failed.
	Attempts, Failures atomic.Uint64
}

// For returns addr's counts, creating them on first use.
func (d *DialStats) For(addr string) *DialCounts {
	if c, ok := d.m.Load(addr); ok {
		return c.(*DialCounts)
	}
	c, _ := d.m.LoadOrStore(addr, new(DialCounts))
	return c.(*DialCounts)
}

// Range calls fn for each address dialled so far.
func (d *DialStats) Range(fn func(addr string, c *DialCounts)) {
	d.m.Range(func(k, v any) bool {
		fn(k.(string), v.(*DialCounts))
		return true
	})
}

// dialFunc is the shape of net.Dialer.DialContext.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// dialer returns a DialContext that counts into d.
func (d *DialStats) dialer(nd *net.Dialer) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c := d.For(addr)
		c.Attempts.Add(1)
		conn, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			c.Failures.Add(1)
		}
		return conn, err
	}
}

// coalescing wraps dial's connections so that the frames many streams
// write to one cleartext HTTP/2 (h2c) connection go out in as few system
// calls as they can (see package coalesce).
func coalescing(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return coalesce.New(c), nil
	}
}

// NewCache returns an empty cache whose transports use opts.
func NewCache(opts Options) *Cache {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.MaxIdleConnsPerHost <= 0 {
		opts.MaxIdleConnsPerHost = 1024
	}
	if opts.IdleConnTimeout <= 0 {
		opts.IdleConnTimeout = 90 * time.Second
	}
	return &Cache{opts: opts, transports: make(map[Settings]*Transport)}
}

// Transport returns the transport for s, building it on first use. It fails
// when s holds an unusable CA bundle or client key pair.
func (c *Cache) Transport(s Settings) (*Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports[s]; ok {
		return t, nil
	}
	t, err := c.build(s)
	if err != nil {
		return nil, err
	}
	c.transports[s] = t
	return t, nil
}

// Retain keeps the transports for the settings in use and closes the idle
// connections of, and forgets, all others.
func (c *Cache) Retain(inUse map[Settings]bool) {
	c.mu.Lock()
	var drop []*Transport
	for s, t := range c.transports {
		if !inUse[s] {
			drop = append(drop, t)
			delete(c.transports, s)
		}
	}
	c.mu.Unlock()
	for _, t := range drop {
		t.CloseIdleConnections()
	}
}

// CloseIdleConnections closes the idle connections of every transport.
func (c *Cache) CloseIdleConnections() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.transports {
		t.CloseIdleConnections()
	}
}

func (c *Cache) build(s Settings) (*Transport, error) {
	var tlsCfg *tls.Config
	if s.TLS {
		var err error
		if tlsCfg, err = clientTLS(s); err != nil {
			return nil, err
		}
	}
	opts := c.opts
	if s.ConnectTimeout > 0 {
		opts.DialTimeout = s.ConnectTimeout
	}
	if s.ResponseHeaderTimeout > 0 {
		opts.ResponseHeaderTimeout = s.ResponseHeaderTimeout
	}
	if s.IdleTimeout > 0 {
		opts.IdleConnTimeout = s.IdleTimeout
	}
	dial := c.dials.dialer(&net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second})
	t := &Transport{settings: s, h1: newHTTPTransport(opts, tlsCfg, false, dial)}
	if !s.TLS && (s.Protocol == Auto || s.Protocol == HTTP1) {
		t.fast = &H1Pool{dial: dial, maxIdle: opts.MaxIdleConnsPerHost,
			idleTimeout: opts.IdleConnTimeout, respHeaderTimeout: opts.ResponseHeaderTimeout}
	}
	if s.Protocol != HTTP1 {
		h2dial := dial
		if tlsCfg == nil {
			// Over TLS the gatherer would sit under crypto/tls, whose
			// write deadlines (close_notify's) it cannot honour per write.
			h2dial = coalescing(dial)
		}
		t.h2 = newHTTPTransport(opts, tlsCfg, true, h2dial)
	}
	return t, nil
}

func newHTTPTransport(opts Options, tlsCfg *tls.Config, http2 bool, dial dialFunc) *http.Transport {
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   opts.MaxIdleConnsPerHost,
		IdleConnTimeout:       opts.IdleConnTimeout,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		TLSHandshakeTimeout:   opts.DialTimeout,
		DisableCompression:    true,
		Protocols:             new(http.Protocols),
	}
	if tlsCfg != nil {
		cfg := tlsCfg.Clone()
		if http2 {
			cfg.NextProtos = []string{"h2"}
		} else {
			cfg.NextProtos = []string{"http/1.1"}
		}
		t.TLSClientConfig = cfg
	}
	switch {
	case !http2:
		t.Protocols.SetHTTP1(true)
	case tlsCfg != nil:
		t.Protocols.SetHTTP2(true)
	default:
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

// clientTLS builds the TLS client configuration for s.
func clientTLS(s Settings) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         s.ServerName,
		InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // operator's explicit choice per pool
	}
	if s.CAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(s.CAPEM)) {
			return nil, errors.New("upstream CA bundle holds no usable certificate")
		}
		cfg.RootCAs = pool
	}
	if s.ClientCertPEM != "" {
		cert, err := tls.X509KeyPair([]byte(s.ClientCertPEM), []byte(s.ClientKeyPEM))
		if err != nil {
			return nil, fmt.Errorf("upstream client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// DescribeError turns an upstream error into a short reason for a 502 body
// and a log line, saying plainly when TLS verification failed.
func DescribeError(err error) string {
	var verr *tls.CertificateVerificationError
	var uaErr x509.UnknownAuthorityError
	var hErr x509.HostnameError
	var ciErr x509.CertificateInvalidError
	switch {
	case errors.As(err, &verr):
		return "TLS certificate verification failed: " + innermost(verr.Err)
	case errors.As(err, &uaErr), errors.As(err, &hErr), errors.As(err, &ciErr):
		return "TLS certificate verification failed: " + innermost(err)
	}
	var alert tls.AlertError
	var rh tls.RecordHeaderError
	if errors.As(err, &alert) || errors.As(err, &rh) {
		return "TLS handshake failed: " + innermost(err)
	}
	if strings.Contains(err.Error(), "tls: ") {
		return "TLS handshake failed: " + innermost(err)
	}
	return innermost(err)
}

// innermost strips the wrapping context ("dial tcp 1.2.3.4:80: ") from an
// error message.
func innermost(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	s := err.Error()
	if strings.HasPrefix(s, "tls: ") || strings.HasPrefix(s, "x509: ") {
		return s
	}
	for _, marker := range []string{"tls: ", "x509: "} {
		if i := strings.Index(s, marker); i >= 0 {
			return s[i:]
		}
	}
	if i := strings.LastIndex(s, ": "); i >= 0 && i+2 < len(s) {
		s = s[i+2:]
	}
	return s
}
