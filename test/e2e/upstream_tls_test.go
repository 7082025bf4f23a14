package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// tlsEcho is what the upstream test backends answer: what they saw of the
// request and its connection.
type tlsEcho struct {
	Host           string `json:"host"`
	XForwardedHost string `json:"x_forwarded_host"`
	TLS            bool   `json:"tls"`
	SNI            string `json:"sni"`
	ClientCert     bool   `json:"client_cert"`
	ClientCN       string `json:"client_cn"`
	ProtoMajor     int    `json:"proto_major"`
}

// tlsIssueDNSOnly issues a server certificate from ca for the DNS names only
// (unlike ca.issue, without the 127.0.0.1 IP address), so that verifying it
// for the backend's address fails.
func tlsIssueDNSOnly(t *testing.T, ca *testCA, cn string, dnsNames ...string) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := issued{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		serial:  tmpl.SerialNumber,
	}
	out.tls, err = tls.X509KeyPair(out.certPEM, out.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tlsStartEchoBackend starts an echo backend on 127.0.0.1 speaking protos,
// over TLS with tlsCfg when it is not nil, and returns its address.
func tlsStartEchoBackend(t *testing.T, protos *http.Protocols, tlsCfg *tls.Config) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Protocols:         protos,
		TLSConfig:         tlsCfg,
		ErrorLog:          log.New(io.Discard, "", 0), // handshake failures are expected
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			e := tlsEcho{Host: r.Host, XForwardedHost: r.Header.Get("X-Forwarded-Host"), ProtoMajor: r.ProtoMajor}
			if r.TLS != nil {
				e.TLS, e.SNI = true, r.TLS.ServerName
				if len(r.TLS.PeerCertificates) > 0 {
					e.ClientCert, e.ClientCN = true, r.TLS.PeerCertificates[0].Subject.CommonName
				}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(e)
		}),
	}
	go func() {
		if tlsCfg != nil {
			_ = srv.ServeTLS(l, "", "")
		} else {
			_ = srv.Serve(l)
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// tlsProtocols returns an http.Protocols with the given protocols enabled.
func tlsProtocols(http1, http2, h2c bool) *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(http1)
	p.SetHTTP2(http2)
	p.SetUnencryptedHTTP2(h2c)
	return p
}

// tlsUpstreamEnv is a control plane and a plain data plane; every subtest
// adds a pool of its own, routed by host.
type tlsUpstreamEnv struct {
	cp    *controlPlane
	dp    *dataPlane
	admin lbv1.AdminServiceClient
	ca    *testCA
	dir   string
}

func tlsStartUpstreamEnv(t *testing.T) *tlsUpstreamEnv {
	t.Helper()
	e := &tlsUpstreamEnv{cp: startControlPlane(t, "", ""), ca: newTestCA(t, "e2e upstream CA"), dir: t.TempDir()}
	e.dp = startDataPlane(t, e.cp.addr, "dp-upstream")
	e.admin = tlsAdminClient(t, e.cp.addr)
	return e
}

// pool creates a pool named name for host name+".test" with one backend and
// the upstream settings up, and returns the host.
func (e *tlsUpstreamEnv) pool(t *testing.T, name, backendAddr string, up *lbv1.Upstream) string {
	t.Helper()
	host := name + ".test"
	tlsCreatePool(t, e.admin, e.dp, &lbv1.Pool{Name: name, Hosts: []string{host},
		Backends: []*lbv1.Backend{{Address: backendAddr}}, Upstream: up})
	return host
}

// curl sends GET / with Host host to the data plane's plain listener.
func (e *tlsUpstreamEnv) curl(t *testing.T, host string, extra ...string) curlResult {
	t.Helper()
	args := append([]string{"-H", "Host: " + host}, extra...)
	return curlOK(t, append(args, "http://"+e.dp.addr+"/")...)
}

// echo sends GET / with Host host and decodes the backend's answer, failing
// unless it is a 200.
func (e *tlsUpstreamEnv) echo(t *testing.T, host string, extra ...string) tlsEcho {
	t.Helper()
	r := e.curl(t, host, extra...)
	if r.code != 200 {
		t.Fatalf("want 200 from the backend; %v", r)
	}
	var got tlsEcho
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("decode backend answer: %v; %v", err, r)
	}
	return got
}

// badGateway sends GET / with Host host and checks for a 502 whose body
// contains every one of want.
func (e *tlsUpstreamEnv) badGateway(t *testing.T, host string, want ...string) curlResult {
	t.Helper()
	r := e.curl(t, host)
	if r.code != http.StatusBadGateway {
		t.Fatalf("want 502; %v", r)
	}
	for _, w := range want {
		if !strings.Contains(r.body, w) {
			t.Errorf("502 body %q does not contain %q", r.body, w)
		}
	}
	return r
}

// logLine returns the first data plane log line containing every one of
// parts, or "".
func (e *tlsUpstreamEnv) logLine(parts ...string) string {
next:
	for _, line := range strings.Split(e.dp.log.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return line
	}
	return ""
}

// TestUpstreamTLSVerification: TLS to backends is verified against the
// pool's CA (or the system roots) for the SNI name; failures are 502s that
// say so, and are logged naming the backend.
func TestUpstreamTLSVerification(t *testing.T) {
	e := tlsStartUpstreamEnv(t)
	srvCert := tlsIssueDNSOnly(t, e.ca, "backend.test", "backend.test")
	be := tlsStartEchoBackend(t, tlsProtocols(true, true, false), &tls.Config{Certificates: []tls.Certificate{srvCert.tls}})
	caPEM := string(e.ca.certPEM)

	t.Run("ca_pem and sni", func(t *testing.T) {
		host := e.pool(t, "verified", be, &lbv1.Upstream{Tls: true, Sni: "backend.test", CaPem: caPEM})
		got := e.echo(t, host)
		if !got.TLS || got.SNI != "backend.test" || got.Host != host {
			t.Fatalf("backend saw %+v; want TLS with SNI backend.test and Host %s", got, host)
		}
	})
	t.Run("wrong sni", func(t *testing.T) {
		host := e.pool(t, "wrong-sni", be, &lbv1.Upstream{Tls: true, Sni: "wrong.test", CaPem: caPEM})
		r := e.badGateway(t, host, "TLS certificate verification failed", be)
		t.Logf("502 body: %s", strings.TrimSpace(r.body))
		waitFor(t, 5*time.Second, "a data plane log line naming backend "+be+" and the verification failure", func() bool {
			return e.logLine(be, "TLS certificate verification failed", "wrong.test") != ""
		})
		t.Logf("data plane log: %s", e.logLine(be, "TLS certificate verification failed", "wrong.test"))
	})
	t.Run("system roots", func(t *testing.T) {
		host := e.pool(t, "system-roots", be, &lbv1.Upstream{Tls: true, Sni: "backend.test"})
		e.badGateway(t, host, "TLS certificate verification failed", be)
	})
	t.Run("insecure_skip_verify", func(t *testing.T) {
		host := e.pool(t, "insecure", be, &lbv1.Upstream{Tls: true, InsecureSkipVerify: true})
		if got := e.echo(t, host); !got.TLS {
			t.Fatalf("backend saw %+v; want TLS", got)
		}
	})
	t.Run("no sni and no host header verifies the address", func(t *testing.T) {
		// The certificate names backend.test only, not 127.0.0.1.
		host := e.pool(t, "address-name", be, &lbv1.Upstream{Tls: true, CaPem: caPEM})
		e.badGateway(t, host, "TLS certificate verification failed", be)
	})
	t.Run("lbctl", func(t *testing.T) {
		caFile := writePEM(t, e.dir, "ca.pem", e.ca.certPEM)
		out := mustLbctl(t, e.cp.addr, "-o", "json", "pool", "create", "viactl", "--host", "lbctl.test",
			"--upstream-tls", "--sni", "backend.test", "--ca-file", caFile, "--host-header", "backend.test", "--backend", be)
		e.dp.waitVersion(t, versionOf(t, out))
		got := e.echo(t, "lbctl.test")
		if !got.TLS || got.SNI != "backend.test" || got.Host != "backend.test" || got.XForwardedHost != "lbctl.test" {
			t.Fatalf("backend saw %+v; want TLS, SNI and Host backend.test, X-Forwarded-Host lbctl.test", got)
		}
	})
}

// TestUpstreamMTLS: a pool's client certificate is presented to backends
// that require one; without it they refuse and the client gets a 502.
func TestUpstreamMTLS(t *testing.T) {
	e := tlsStartUpstreamEnv(t)
	srvCert := tlsIssueDNSOnly(t, e.ca, "backend.test", "backend.test")
	be := tlsStartEchoBackend(t, tlsProtocols(true, true, false), &tls.Config{
		Certificates: []tls.Certificate{srvCert.tls},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    e.ca.pool(),
	})
	client := e.ca.issue(t, "dp-client")
	caPEM := string(e.ca.certPEM)

	t.Run("with client certificate", func(t *testing.T) {
		host := e.pool(t, "mtls", be, &lbv1.Upstream{Tls: true, Sni: "backend.test", CaPem: caPEM,
			ClientCertPem: string(client.certPEM), ClientKeyPem: string(client.keyPEM)})
		got := e.echo(t, host)
		if !got.ClientCert || got.ClientCN != "dp-client" {
			t.Fatalf("backend saw %+v; want client certificate CN dp-client", got)
		}
	})
	t.Run("without client certificate", func(t *testing.T) {
		host := e.pool(t, "no-client-cert", be, &lbv1.Upstream{Tls: true, Sni: "backend.test", CaPem: caPEM})
		r := e.badGateway(t, host, be, "TLS")
		t.Logf("502 body: %s", strings.TrimSpace(r.body))
	})
}

// TestUpstreamHostHeader: host_header replaces the Host sent to backends
// (X-Forwarded-Host keeps the client's), and is the default SNI name.
func TestUpstreamHostHeader(t *testing.T) {
	e := tlsStartUpstreamEnv(t)
	srvCert := tlsIssueDNSOnly(t, e.ca, "backend.test", "backend.test")
	be := tlsStartEchoBackend(t, tlsProtocols(true, true, false), &tls.Config{Certificates: []tls.Certificate{srvCert.tls}})
	caPEM := string(e.ca.certPEM)

	t.Run("host rewrite", func(t *testing.T) {
		host := e.pool(t, "rewrite", be, &lbv1.Upstream{Tls: true, Sni: "backend.test", CaPem: caPEM, HostHeader: "origin.example"})
		got := e.echo(t, host)
		if got.Host != "origin.example" || got.XForwardedHost != host || got.SNI != "backend.test" {
			t.Fatalf("backend saw %+v; want Host origin.example, X-Forwarded-Host %s, SNI backend.test", got, host)
		}
	})
	t.Run("sni and host header equal", func(t *testing.T) {
		host := e.pool(t, "origin", be, &lbv1.Upstream{Tls: true, Sni: "backend.test", CaPem: caPEM, HostHeader: "backend.test"})
		got := e.echo(t, host)
		if got.Host != "backend.test" || got.SNI != "backend.test" || got.XForwardedHost != host {
			t.Fatalf("backend saw %+v; want Host and SNI backend.test, X-Forwarded-Host %s", got, host)
		}
	})
	t.Run("sni defaults to host header", func(t *testing.T) {
		host := e.pool(t, "sni-default", be, &lbv1.Upstream{Tls: true, CaPem: caPEM, HostHeader: "backend.test"})
		got := e.echo(t, host)
		if got.Host != "backend.test" || got.SNI != "backend.test" {
			t.Fatalf("backend saw %+v; want Host and SNI backend.test (SNI from host_header)", got)
		}
	})
	t.Run("sni defaults to host header without its port", func(t *testing.T) {
		host := e.pool(t, "sni-default-port", be, &lbv1.Upstream{Tls: true, CaPem: caPEM, HostHeader: "backend.test:8443"})
		got := e.echo(t, host)
		if got.Host != "backend.test:8443" || got.SNI != "backend.test" {
			t.Fatalf("backend saw %+v; want Host backend.test:8443 and SNI backend.test", got)
		}
	})
}

// TestUpstreamProtocols: the pool's protocol decides what is spoken to the
// backend whatever the client speaks: h2 and http1 over TLS (same backend,
// offering both by ALPN), and h2c in cleartext.
func TestUpstreamProtocols(t *testing.T) {
	e := tlsStartUpstreamEnv(t)
	srvCert := tlsIssueDNSOnly(t, e.ca, "backend.test", "backend.test")
	tlsBE := tlsStartEchoBackend(t, tlsProtocols(true, true, false), &tls.Config{
		Certificates: []tls.Certificate{srvCert.tls}, NextProtos: []string{"h2", "http/1.1"},
	})
	h2cBE := tlsStartEchoBackend(t, tlsProtocols(true, false, true), nil)
	caPEM := string(e.ca.certPEM)

	cases := []struct {
		name    string
		backend string
		up      *lbv1.Upstream
		tls     bool
		major   int
	}{
		{"h2", tlsBE, &lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2, Tls: true, Sni: "backend.test", CaPem: caPEM}, true, 2},
		{"http1", tlsBE, &lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_HTTP1, Tls: true, Sni: "backend.test", CaPem: caPEM}, true, 1},
		{"auto", tlsBE, &lbv1.Upstream{Tls: true, Sni: "backend.test", CaPem: caPEM}, true, 1},
		{"h2c", h2cBE, &lbv1.Upstream{Protocol: lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C}, false, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host := e.pool(t, "proto-"+tc.name, tc.backend, tc.up)
			for _, client := range []string{"--http1.1", "--http2-prior-knowledge"} {
				got := e.echo(t, host, client)
				if got.ProtoMajor != tc.major || got.TLS != tc.tls {
					t.Fatalf("client %s: backend saw %+v; want HTTP/%d, TLS %v", client, got, tc.major, tc.tls)
				}
			}
		})
	}
}
