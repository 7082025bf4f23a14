package certs_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lb-project/lb/dataplane/certs"
)

// testCA is a certificate authority that issues the tests' leaf certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: "certs test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pemEncode("CERTIFICATE", der)}
}

// leaf is an issued certificate and its key, PEM-encoded.
type leaf struct {
	certPEM, keyPEM []byte
	key             *ecdsa.PrivateKey
	serial          *big.Int
}

// issue issues a leaf certificate for DNS names. With key nil it makes a new
// key. With no names the certificate has only a subject common name, cn.
func (ca *testCA) issue(t testing.TB, key *ecdsa.PrivateKey, cn string, names ...string) leaf {
	t.Helper()
	if key == nil {
		key = newKey(t)
	}
	if cn == "" && len(names) > 0 {
		cn = names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(t),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"certs test"}},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(12 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return leaf{
		certPEM: pemEncode("CERTIFICATE", der),
		keyPEM:  pemEncode("PRIVATE KEY", keyDER),
		key:     key,
		serial:  tmpl.SerialNumber,
	}
}

// combined is the certificate followed by its key, as in a NAME.pem file.
func (l leaf) combined() []byte {
	return append(append([]byte(nil), l.certPEM...), l.keyPEM...)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile writes data to path in place (truncating it first), as an editor
// or "cp" would.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes data to a hidden temporary file beside path and renames
// it over path, as certificate managers do.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writePair writes l as dir/base.crt and dir/base.key and returns their
// paths as a Pair.
func writePair(t testing.TB, dir, base string, l leaf) certs.Pair {
	t.Helper()
	p := certs.Pair{CertFile: filepath.Join(dir, base+".crt"), KeyFile: filepath.Join(dir, base+".key")}
	writeFile(t, p.CertFile, l.certPEM)
	writeFile(t, p.KeyFile, l.keyPEM)
	return p
}

func mustNew(t testing.TB, cfg certs.Config) *certs.Store {
	t.Helper()
	s, err := certs.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// startServer serves TLS with s.TLSConfig() on 127.0.0.1 and echoes back what
// each connection sends. The listener and every connection are closed, and
// their goroutines waited for, when the test ends.
func startServer(t testing.TB, s *certs.Store) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				_, _ = io.Copy(c, c) // the handshake happens on the first Read
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// clientConfig verifies the server against ca for serverName.
func (ca *testCA) clientConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.pool, ServerName: serverName}
}

// dial connects to addr and completes a handshake with cfg. The connection is
// closed when the test ends.
func dial(t testing.TB, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cfg)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func mustDial(t testing.TB, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := dial(t, addr, cfg)
	if err != nil {
		t.Fatalf("handshake (server name %q): %v", cfg.ServerName, err)
	}
	return c
}

// servedSerial does a handshake for serverName, verifying the certificate
// against ca (or not, with verify false), and returns the serial of the leaf
// the server presented.
func servedSerial(t testing.TB, addr string, ca *testCA, serverName string, verify bool) *big.Int {
	t.Helper()
	cfg := ca.clientConfig(serverName)
	if !verify {
		cfg = &tls.Config{ServerName: serverName, InsecureSkipVerify: true}
	}
	c := mustDial(t, addr, cfg)
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// echo writes msg on c and checks it is echoed back.
func echo(t testing.TB, c *tls.Conn, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the logged lines containing every one of words.
func (b *logBuffer) lines(words ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

func newLogger(b *logBuffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: b, Level: hclog.Debug})
}

// eventually polls cond every 10ms until it holds or 5s have passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
