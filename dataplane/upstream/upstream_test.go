package upstream_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/lb-project/lb/dataplane/upstream"
)

func TestProtocolChoice(t *testing.T) {
	ca := newCA(t, "test CA")
	h1 := newHTTP1Backend(t)
	h2c := newH2CBackend(t)
	tlsB := newTLSBackend(t, ca.issue(t, "backend.test", x509.ExtKeyUsageServerAuth, "backend.test").tls, nil)
	cache := newCache(t)
	withTLS := func(p upstream.Protocol) upstream.Settings {
		return upstream.Settings{Protocol: p, TLS: true, ServerName: "backend.test", CAPEM: ca.pem}
	}
	const grpc = "application/grpc"
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}

	tests := []struct {
		name        string
		backend     *backend
		settings    upstream.Settings
		contentType string
		header      http.Header
		wantProto   string
	}{
		{"http1 backend, auto", h1, upstream.Settings{}, "", nil, "1"},
		{"http1 backend, http1, grpc content type", h1, upstream.Settings{Protocol: upstream.HTTP1}, grpc, nil, "1"},
		{"h2c backend, auto", h2c, upstream.Settings{}, "", nil, "1"},
		{"h2c backend, auto, grpc", h2c, upstream.Settings{}, grpc, nil, "2"},
		{"h2c backend, auto, grpc+proto", h2c, upstream.Settings{}, "application/grpc+proto", nil, "2"},
		{"h2c backend, http1, grpc", h2c, upstream.Settings{Protocol: upstream.HTTP1}, grpc, nil, "1"},
		{"h2c backend, h2c", h2c, upstream.Settings{Protocol: upstream.H2C}, "", nil, "2"},
		{"h2c backend, h2c, grpc", h2c, upstream.Settings{Protocol: upstream.H2C}, grpc, nil, "2"},
		{"h2c backend, h2c, upgrade uses http/1.1", h2c, upstream.Settings{Protocol: upstream.H2C}, "", upgrade, "1"},
		{"tls backend, auto", tlsB, withTLS(upstream.Auto), "", nil, "1"},
		{"tls backend, auto, grpc", tlsB, withTLS(upstream.Auto), grpc, nil, "2"},
		{"tls backend, http1, grpc", tlsB, withTLS(upstream.HTTP1), grpc, nil, "1"},
		{"tls backend, h2", tlsB, withTLS(upstream.H2), "", nil, "2"},
		{"tls backend, h2, grpc", tlsB, withTLS(upstream.H2), grpc, nil, "2"},
		{"tls backend, h2, upgrade uses http/1.1", tlsB, withTLS(upstream.H2), "", upgrade, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := transport(t, cache, tt.settings)
			url := tt.settings.Scheme() + "://" + tt.backend.addr + "/"
			body, err := roundTrip(t, tr, url, tt.contentType, tt.header)
			if err != nil {
				t.Fatalf("request: %v (%s)", err, upstream.DescribeError(err))
			}
			if got := field(body, "proto"); got != tt.wantProto {
				t.Errorf("backend saw HTTP/%s, want HTTP/%s", got, tt.wantProto)
			}
			if tt.settings.TLS {
				if got := field(body, "sni"); got != "backend.test" {
					t.Errorf("backend saw SNI %q, want backend.test", got)
				}
			}
		})
	}
}

func TestTLSVerification(t *testing.T) {
	ca := newCA(t, "test CA")
	other := newCA(t, "other CA")
	b := newTLSBackend(t, ca.issue(t, "backend.test", x509.ExtKeyUsageServerAuth, "backend.test").tls, nil)
	cache := newCache(t)
	const verifyFailed = "TLS certificate verification failed: "

	tests := []struct {
		name     string
		settings upstream.Settings
		wantSNI  string // when the request succeeds
		wantErr  string // DescribeError of the failure; "" for success
	}{
		{
			name:     "server name verified against the CA, h2",
			settings: upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "backend.test", CAPEM: ca.pem},
			wantSNI:  "backend.test",
		},
		{
			name:     "server name verified against the CA, http1",
			settings: upstream.Settings{Protocol: upstream.HTTP1, TLS: true, ServerName: "backend.test", CAPEM: ca.pem},
			wantSNI:  "backend.test",
		},
		{
			name:     "wrong name",
			settings: upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "other.test", CAPEM: ca.pem},
			wantErr:  verifyFailed + "x509: certificate is valid for backend.test, not other.test",
		},
		{
			name:     "wrong name, http1",
			settings: upstream.Settings{Protocol: upstream.HTTP1, TLS: true, ServerName: "other.test", CAPEM: ca.pem},
			wantErr:  verifyFailed + "x509: certificate is valid for backend.test, not other.test",
		},
		{
			name:     "no server name: the address's IP is verified",
			settings: upstream.Settings{Protocol: upstream.H2, TLS: true, CAPEM: ca.pem},
			wantErr:  verifyFailed + "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs",
		},
		{
			name:     "unknown authority, system roots",
			settings: upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "backend.test"},
			wantErr:  verifyFailed + "x509: certificate signed by unknown authority",
		},
		{
			name:     "unknown authority, another CA",
			settings: upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "backend.test", CAPEM: other.pem},
			wantErr:  verifyFailed + "x509: certificate signed by unknown authority",
		},
		{
			name:     "unknown authority, auto",
			settings: upstream.Settings{TLS: true, ServerName: "backend.test"},
			wantErr:  verifyFailed + "x509: certificate signed by unknown authority",
		},
		{
			name:     "insecure skip verify",
			settings: upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "anything.test", InsecureSkipVerify: true},
			wantSNI:  "anything.test",
		},
		{
			name:     "insecure skip verify without a name: no SNI for an IP",
			settings: upstream.Settings{Protocol: upstream.H2, TLS: true, InsecureSkipVerify: true},
			wantSNI:  "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := transport(t, cache, tt.settings)
			body, err := roundTrip(t, tr, "https://"+b.addr+"/", "", nil)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("request succeeded (%s), want %q", body, tt.wantErr)
				}
				if got := upstream.DescribeError(err); got != tt.wantErr {
					t.Errorf("DescribeError(%v) =\n%q\nwant\n%q", err, got, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("request: %v (%s)", err, upstream.DescribeError(err))
			}
			if got := field(body, "sni"); got != tt.wantSNI {
				t.Errorf("backend saw SNI %q, want %q", got, tt.wantSNI)
			}
		})
	}
}

func TestClientCertificate(t *testing.T) {
	ca := newCA(t, "test CA")
	clientCA := newCA(t, "client CA")
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	serverCert := ca.issue(t, "backend.test", x509.ExtKeyUsageServerAuth, "backend.test").tls
	b13 := newTLSBackend(t, serverCert, pool)
	// Under TLS 1.2 the server checks the client certificate before the
	// client's handshake completes, so a refusal is a handshake error; under
	// TLS 1.3 it arrives after, as an alert racing the first request.
	b12 := newTLSBackendVersion(t, serverCert, pool, tls.VersionTLS12)
	client := clientCA.issue(t, "lb-client", x509.ExtKeyUsageClientAuth)
	stranger := newCA(t, "stranger CA").issue(t, "stranger", x509.ExtKeyUsageClientAuth)
	cache := newCache(t)

	tests := []struct {
		name     string
		backend  *backend
		protocol upstream.Protocol
		cert     *issued
		wantCN   string
		wantErr  bool
		wantDesc string // DescribeError's prefix when checked
	}{
		{name: "h2 with certificate", backend: b13, protocol: upstream.H2, cert: &client, wantCN: "lb-client"},
		{name: "http1 with certificate", backend: b13, protocol: upstream.HTTP1, cert: &client, wantCN: "lb-client"},
		{name: "auto with certificate", backend: b13, protocol: upstream.Auto, cert: &client, wantCN: "lb-client"},
		{name: "tls1.2 h2 with certificate", backend: b12, protocol: upstream.H2, cert: &client, wantCN: "lb-client"},
		{name: "h2 without certificate", backend: b13, protocol: upstream.H2, wantErr: true},
		{name: "http1 without certificate", backend: b13, protocol: upstream.HTTP1, wantErr: true},
		{name: "h2 with a certificate of another CA", backend: b13, protocol: upstream.H2, cert: &stranger, wantErr: true},
		{name: "tls1.2 h2 without certificate", backend: b12, protocol: upstream.H2, wantErr: true, wantDesc: "TLS handshake failed: "},
		{name: "tls1.2 http1 without certificate", backend: b12, protocol: upstream.HTTP1, wantErr: true, wantDesc: "TLS handshake failed: "},
		{name: "tls1.2 http1 with a certificate of another CA", backend: b12, protocol: upstream.HTTP1, cert: &stranger, wantErr: true, wantDesc: "TLS handshake failed: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := upstream.Settings{Protocol: tt.protocol, TLS: true, ServerName: "backend.test", CAPEM: ca.pem}
			if tt.cert != nil {
				s.ClientCertPEM, s.ClientKeyPEM = tt.cert.certPEM, tt.cert.keyPEM
			}
			tr := transport(t, cache, s)
			body, err := roundTrip(t, tr, "https://"+tt.backend.addr+"/", "", nil)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("request succeeded (%s), want the backend to refuse the client", body)
				}
				if got := upstream.DescribeError(err); !strings.HasPrefix(got, tt.wantDesc) {
					t.Errorf("DescribeError(%v) = %q, want it to begin %q", err, got, tt.wantDesc)
				}
				return
			}
			if err != nil {
				t.Fatalf("request: %v (%s)", err, upstream.DescribeError(err))
			}
			if got := field(body, "cn"); got != tt.wantCN {
				t.Errorf("backend saw client certificate CN %q, want %q", got, tt.wantCN)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cache := newCache(t)
	for _, s := range []upstream.Settings{{}, {Protocol: upstream.H2C}, {Protocol: upstream.H2, TLS: true, InsecureSkipVerify: true}} {
		t.Run(s.Protocol.String(), func(t *testing.T) {
			tr := transport(t, cache, s)
			_, err := roundTrip(t, tr, s.Scheme()+"://"+addr+"/", "", nil)
			if err == nil {
				t.Fatal("request to a closed port succeeded")
			}
			if got := upstream.DescribeError(err); got != "connection refused" {
				t.Errorf("DescribeError(%v) = %q, want %q", err, got, "connection refused")
			}
		})
	}
}

func TestCacheSharesTransports(t *testing.T) {
	ca := newCA(t, "test CA")
	cache := newCache(t)
	s1 := upstream.Settings{Protocol: upstream.H2C}
	s2 := upstream.Settings{}
	s3 := upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "backend.test", CAPEM: ca.pem}

	t1, t2, t3 := transport(t, cache, s1), transport(t, cache, s2), transport(t, cache, s3)
	if t1 == t2 || t1 == t3 || t2 == t3 {
		t.Fatal("different settings share a transport")
	}
	for _, tc := range []struct {
		s    upstream.Settings
		want *upstream.Transport
	}{
		{upstream.Settings{Protocol: upstream.H2C}, t1},
		{upstream.Settings{Protocol: upstream.Auto}, t2},
		{upstream.Settings{Protocol: upstream.H2, TLS: true, ServerName: "backend.test", CAPEM: strings.Clone(ca.pem)}, t3},
	} {
		got := transport(t, cache, tc.s)
		if got != tc.want {
			t.Errorf("Transport(%+v) = %p, want the cached %p", tc.s, got, tc.want)
		}
		if got.Settings() != tc.s {
			t.Errorf("Transport(%+v).Settings() = %+v", tc.s, got.Settings())
		}
	}

	// Concurrent callers get the one transport.
	s4 := upstream.Settings{Protocol: upstream.HTTP1}
	var wg sync.WaitGroup
	got := make([]*upstream.Transport, 8)
	for i := range got {
		wg.Go(func() {
			tr, err := cache.Transport(s4)
			if err != nil {
				t.Error(err)
			}
			got[i] = tr
		})
	}
	wg.Wait()
	for i, tr := range got {
		if tr != got[0] || tr == nil {
			t.Fatalf("concurrent Transport call %d = %p, want the same transport as call 0 (%p)", i, tr, got[0])
		}
		t.Cleanup(tr.CloseIdleConnections)
	}

	// Retain keeps s1 and s3 and forgets the others.
	cache.Retain(map[upstream.Settings]bool{s1: true, s3: true})
	if got := transport(t, cache, s1); got != t1 {
		t.Errorf("retained Transport(s1) = %p, want %p", got, t1)
	}
	if got := transport(t, cache, s3); got != t3 {
		t.Errorf("retained Transport(s3) = %p, want %p", got, t3)
	}
	if got := transport(t, cache, s2); got == t2 {
		t.Error("Transport(s2) after Retain without s2 returned the dropped transport")
	}
	if tr := transport(t, cache, s4); tr == got[0] {
		t.Error("Transport(s4) after Retain without s4 returned the dropped transport")
	}
	cache.Retain(nil)
	if got := transport(t, cache, s1); got == t1 {
		t.Error("Transport(s1) after Retain(nil) returned the dropped transport")
	}
}

func TestRetainClosesIdleConnections(t *testing.T) {
	b := newH2CBackend(t)
	cache := newCache(t)
	keep := upstream.Settings{Protocol: upstream.HTTP1}
	drop := upstream.Settings{Protocol: upstream.H2C}
	keepTr, dropTr := transport(t, cache, keep), transport(t, cache, drop)

	for _, tc := range []struct {
		tr        *upstream.Transport
		wantProto string
	}{{keepTr, "1"}, {dropTr, "2"}} {
		body, err := roundTrip(t, tc.tr, b.url+"/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := field(body, "proto"); got != tc.wantProto {
			t.Fatalf("backend saw HTTP/%s, want HTTP/%s", got, tc.wantProto)
		}
	}
	if n := b.count(http.StateNew); n != 2 {
		t.Fatalf("backend saw %d connections, want 2 (one per transport)", n)
	}
	if n := b.count(http.StateClosed); n != 0 {
		t.Fatalf("backend saw %d connections closed before Retain, want 0", n)
	}

	cache.Retain(map[upstream.Settings]bool{keep: true})
	waitFor(t, "the dropped transport's idle connection to close", func() bool { return b.count(http.StateClosed) >= 1 })

	// The kept transport still has its idle connection: no new one is dialed.
	if _, err := roundTrip(t, keepTr, b.url+"/", "", nil); err != nil {
		t.Fatal(err)
	}
	if n := b.count(http.StateNew); n != 2 {
		t.Errorf("backend saw %d connections after a request on the kept transport, want still 2 (idle connection reused)", n)
	}
	if n := b.count(http.StateClosed); n != 1 {
		t.Errorf("backend saw %d connections closed, want 1 (only the dropped transport's)", n)
	}

	cache.CloseIdleConnections()
	waitFor(t, "the kept transport's idle connection to close", func() bool { return b.count(http.StateClosed) >= 2 })
}

func TestTransportBuildErrors(t *testing.T) {
	ca := newCA(t, "test CA")
	client := ca.issue(t, "lb-client", x509.ExtKeyUsageClientAuth)
	otherKey := ca.issue(t, "other", x509.ExtKeyUsageClientAuth).keyPEM
	cache := newCache(t)
	tests := []struct {
		name     string
		settings upstream.Settings
		wantErr  string
	}{
		{"ca bundle without certificates", upstream.Settings{TLS: true, CAPEM: "garbage"}, "CA bundle holds no usable certificate"},
		{"client key of another certificate", upstream.Settings{TLS: true, ClientCertPEM: client.certPEM, ClientKeyPEM: otherKey}, "upstream client certificate"},
		{"client certificate without key", upstream.Settings{TLS: true, ClientCertPEM: client.certPEM}, "upstream client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 2 { // a failure is not cached
				tr, err := cache.Transport(tt.settings)
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || tr != nil {
					t.Fatalf("call %d: Transport = %p, %v; want nil and an error containing %q", i, tr, err, tt.wantErr)
				}
			}
		})
	}
}

func TestIsGRPC(t *testing.T) {
	tests := []struct {
		name        string
		contentType []string // nil: no header
		want        bool
	}{
		{"grpc", []string{"application/grpc"}, true},
		{"grpc+proto", []string{"application/grpc+proto"}, true},
		{"grpc+json", []string{"application/grpc+json"}, true},
		{"grpc with parameter", []string{"application/grpc;charset=utf-8"}, true},
		{"grpcx", []string{"application/grpcx"}, false},
		{"grpc-web", []string{"application/grpc-web"}, false},
		{"text/plain", []string{"text/plain"}, false},
		{"json", []string{"application/json"}, false},
		{"empty", []string{""}, false},
		{"prefix only", []string{"application/grp"}, false},
		{"missing", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodPost, "http://backend.test/svc/Method", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != nil {
				r.Header["Content-Type"] = tt.contentType
			}
			if got := upstream.IsGRPC(r); got != tt.want {
				t.Errorf("IsGRPC(Content-Type %q) = %v, want %v", tt.contentType, got, tt.want)
			}
		})
	}
}

func TestDescribeError(t *testing.T) {
	ca := newCA(t, "test CA")
	leaf := ca.issue(t, "backend.test", x509.ExtKeyUsageServerAuth, "backend.test").leaf
	unknown := x509.UnknownAuthorityError{Cert: leaf}
	hostname := x509.HostnameError{Certificate: leaf, Host: "other.test"}
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 8080},
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	const verifyFailed = "TLS certificate verification failed: "

	tests := []struct {
		name string
		err  error
		want string
	}{
		{"unknown authority", unknown, verifyFailed + "x509: certificate signed by unknown authority"},
		{"hostname", hostname, verifyFailed + "x509: certificate is valid for backend.test, not other.test"},
		{"wrapped hostname", fmt.Errorf("proxy: %w", hostname), verifyFailed + "x509: certificate is valid for backend.test, not other.test"},
		{"verification error wrapping unknown authority",
			&tls.CertificateVerificationError{UnverifiedCertificates: []*x509.Certificate{leaf}, Err: unknown},
			verifyFailed + "x509: certificate signed by unknown authority"},
		{"verification error wrapping hostname",
			&tls.CertificateVerificationError{UnverifiedCertificates: []*x509.Certificate{leaf}, Err: hostname},
			verifyFailed + "x509: certificate is valid for backend.test, not other.test"},
		{"verification error in an OpError and a url.Error",
			&url.Error{Op: "Get", URL: "https://10.0.0.5/", Err: &net.OpError{Op: "remote error", Net: "tcp",
				Err: &tls.CertificateVerificationError{Err: unknown}}},
			verifyFailed + "x509: certificate signed by unknown authority"},
		{"certificate invalid", x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired, Detail: "current time is after"},
			verifyFailed + "x509: certificate has expired or is not yet valid: current time is after"},
		{"connection refused", refused, "connection refused"},
		{"wrapped connection refused", fmt.Errorf("round trip: %w", refused), "connection refused"},
		{"record header", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"},
			"TLS handshake failed: tls: first record does not look like a TLS handshake"},
		{"tls message in text", errors.New("remote error: tls: handshake failure"), "TLS handshake failed: tls: handshake failure"},
		{"EOF", io.EOF, "EOF"},
		{"unexpected EOF in context", fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", io.ErrUnexpectedEOF), "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := upstream.DescribeError(tt.err); got != tt.want {
				t.Errorf("DescribeError(%v) =\n%q\nwant\n%q", tt.err, got, tt.want)
			}
		})
	}
}

func TestSettingsAndProtocolNames(t *testing.T) {
	tests := []struct {
		p    upstream.Protocol
		want string
	}{
		{upstream.Auto, "auto"},
		{upstream.HTTP1, "http1"},
		{upstream.H2, "h2"},
		{upstream.H2C, "h2c"},
		{upstream.Protocol(99), "auto"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("Protocol(%d).String() = %q, want %q", tt.p, got, tt.want)
		}
		if got, err := tt.p.MarshalText(); err != nil || string(got) != tt.want {
			t.Errorf("Protocol(%d).MarshalText() = %q, %v; want %q", tt.p, got, err, tt.want)
		}
	}
	if got := (upstream.Settings{TLS: true}).Scheme(); got != "https" {
		t.Errorf("Scheme with TLS = %q, want https", got)
	}
	if got := (upstream.Settings{}).Scheme(); got != "http" {
		t.Errorf("Scheme without TLS = %q, want http", got)
	}
}
