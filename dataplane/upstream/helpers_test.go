package upstream_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/upstream"
)

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

var serial atomic.Int64

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// issued is a certificate with its key, as a tls.Certificate and as PEM.
type issued struct {
	tls     tls.Certificate
	leaf    *x509.Certificate
	certPEM string
	keyPEM  string
}

// issue signs a certificate for cn (and dnsNames as SANs) for usage.
func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, dnsNames ...string) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return issued{tls: pair, leaf: leaf, certPEM: certPEM, keyPEM: keyPEM}
}

// backend is a test server that answers every request with what it saw:
// "proto=<major> sni=<server name> cn=<client certificate's CN>".
type backend struct {
	url  string // scheme://127.0.0.1:port
	addr string

	mu     sync.Mutex
	states map[http.ConnState]int
}

// handler reports the request's protocol, SNI name and client certificate.
func (b *backend) handler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	sni, cn := "", ""
	if r.TLS != nil {
		sni = r.TLS.ServerName
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
	}
	fmt.Fprintf(w, "proto=%d sni=%s cn=%s", r.ProtoMajor, sni, cn)
}

// connState counts connection state changes.
func (b *backend) connState(_ net.Conn, s http.ConnState) {
	b.mu.Lock()
	b.states[s]++
	b.mu.Unlock()
}

// count returns how many connections entered state s.
func (b *backend) count(s http.ConnState) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.states[s]
}

// newHTTP1Backend starts an HTTP/1.1 backend.
func newHTTP1Backend(t *testing.T) *backend {
	t.Helper()
	b := &backend{states: make(map[http.ConnState]int)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(b.handler))
	srv.Config.ConnState = b.connState
	srv.Start()
	t.Cleanup(srv.Close)
	b.url, b.addr = srv.URL, srv.Listener.Addr().String()
	return b
}

// newH2CBackend starts a cleartext backend speaking HTTP/1.1 and HTTP/2 with
// prior knowledge.
func newH2CBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{states: make(map[http.ConnState]int)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           http.HandlerFunc(b.handler),
		Protocols:         &protocols,
		ConnState:         b.connState,
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("h2c backend: %v", err)
		}
	})
	b.addr = lis.Addr().String()
	b.url = "http://" + b.addr
	return b
}

// newTLSBackend starts a TLS backend offering h2 and http/1.1 with cert;
// clientCAs, when set, makes it require and verify a client certificate.
func newTLSBackend(t *testing.T, cert tls.Certificate, clientCAs *x509.CertPool) *backend {
	t.Helper()
	return newTLSBackendVersion(t, cert, clientCAs, 0)
}

// newTLSBackendVersion is newTLSBackend with a maximum TLS version (0: the
// default).
func newTLSBackendVersion(t *testing.T, cert tls.Certificate, clientCAs *x509.CertPool, maxVersion uint16) *backend {
	t.Helper()
	b := &backend{states: make(map[http.ConnState]int)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(b.handler))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   maxVersion,
	}
	if clientCAs != nil {
		srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		srv.TLS.ClientCAs = clientCAs
	}
	srv.Config.ConnState = b.connState
	// Failed handshakes are expected in these tests; keep them off the log.
	srv.Config.ErrorLog = discardLogger()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	b.url, b.addr = srv.URL, srv.Listener.Addr().String()
	return b
}

// newCache returns a cache whose transports' idle connections are closed
// when the test ends.
func newCache(t *testing.T) *upstream.Cache {
	t.Helper()
	c := upstream.NewCache(upstream.Options{DialTimeout: 5 * time.Second})
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// transport returns the cache's transport for s, failing the test on error;
// its idle connections are closed when the test ends, whether or not the
// cache still holds it.
func transport(t *testing.T, c *upstream.Cache, s upstream.Settings) *upstream.Transport {
	t.Helper()
	tr, err := c.Transport(s)
	if err != nil {
		t.Fatalf("Transport(%+v): %v", s, err)
	}
	if tr == nil {
		t.Fatalf("Transport(%+v) = nil, nil", s)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// roundTrip sends a GET (with the given Content-Type and extra header lines,
// if any) to url through tr and returns the body.
func roundTrip(t *testing.T, tr http.RoundTripper, url, contentType string, header http.Header) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return string(body), nil
}

// field returns the value of name=value in a backend's answer.
func field(body, name string) string {
	for f := range strings.FieldsSeq(body) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	return ""
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// discardLogger returns a logger that drops everything.
func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
