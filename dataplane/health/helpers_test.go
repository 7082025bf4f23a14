package health_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/lb-project/lb/dataplane/backend"
	"github.com/lb-project/lb/dataplane/health"
	"github.com/lb-project/lb/internal/poolspec"
)

// TestMain fails the package when a check's goroutine, a gRPC connection or
// an upstream connection outlives the test that made it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait for an asynchronous outcome.
const waitLimit = 10 * time.Second

// eventually polls cond until it holds or waitLimit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fastCheck is a check of type typ probing every 50ms with a 40ms timeout
// and thresholds of 2.
func fastCheck(typ string) poolspec.HealthCheck {
	return poolspec.HealthCheck{
		Type:               typ,
		Interval:           50 * time.Millisecond,
		Timeout:            40 * time.Millisecond,
		HealthyThreshold:   2,
		UnhealthyThreshold: 2,
	}.WithDefaults()
}

// event is one onChange call.
type event struct {
	pool, addr string
	healthy    bool
}

// recorder collects onChange calls.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) onChange(t health.Target, healthy bool) {
	r.mu.Lock()
	r.events = append(r.events, event{t.Pool, t.Address, healthy})
	r.mu.Unlock()
}

func (r *recorder) get() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newChecker returns a Checker closed at the end of the test, logging into
// the returned buffer.
func newChecker(t *testing.T, onChange func(health.Target, bool)) (*health.Checker, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	lg := hclog.New(&hclog.LoggerOptions{Name: "health", Level: hclog.Trace, Output: logs})
	c := health.New(lg, onChange)
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("checker log:\n%s", logs)
		}
	})
	return c, logs
}

// statusOf returns the Status entry of addr, and whether there is one.
func statusOf(c *health.Checker, addr string) (health.TargetStatus, bool) {
	for _, s := range c.Status() {
		if s.Address == addr {
			return s, true
		}
	}
	return health.TargetStatus{}, false
}

// waitStatus polls addr's Status entry until pred holds, and returns it.
func waitStatus(t *testing.T, c *health.Checker, addr, what string, pred func(health.TargetStatus) bool) health.TargetStatus {
	t.Helper()
	var s health.TargetStatus
	deadline := time.Now().Add(waitLimit)
	for {
		var ok bool
		if s, ok = statusOf(c, addr); ok && pred(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last status %+v", waitLimit, what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// httpBackend is a test backend whose health endpoint the test steers.
type httpBackend struct {
	addr string
	srv  *httptest.Server

	status  atomic.Int32 // answer of every request
	failN   atomic.Int32 // the next failN requests get 503 instead
	slow    atomic.Bool  // hold requests until the client gives up
	bigBody atomic.Bool  // answer with 1 MiB
	hits    atomic.Int64

	mu    sync.Mutex
	hosts []string
	uas   []string
	paths map[string]int
	snis  []string
	proto []int
}

func (b *httpBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.mu.Lock()
	b.hosts = append(b.hosts, r.Host)
	b.uas = append(b.uas, r.UserAgent())
	b.paths[r.URL.RequestURI()]++
	if r.TLS != nil {
		b.snis = append(b.snis, r.TLS.ServerName)
	}
	b.proto = append(b.proto, r.ProtoMajor)
	b.mu.Unlock()

	if r.URL.Path == "/elsewhere" {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if b.slow.Load() {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return
	}
	code := int(b.status.Load())
	if n := b.failN.Load(); n > 0 && b.failN.CompareAndSwap(n, n-1) {
		code = http.StatusServiceUnavailable
	}
	if code >= 300 && code < 400 {
		w.Header().Set("Location", "/elsewhere") // a followed redirect would fail
	}
	w.WriteHeader(code)
	if b.bigBody.Load() {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 16 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
}

// seen returns copies of what the backend recorded.
func (b *httpBackend) seen() (hosts, uas, snis []string, proto []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.hosts...), append([]string(nil), b.uas...),
		append([]string(nil), b.snis...), append([]int(nil), b.proto...)
}

// pathHits returns how many requests asked for uri.
func (b *httpBackend) pathHits(uri string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paths[uri]
}

func newHTTPBackendUnstarted(t *testing.T) *httpBackend {
	b := &httpBackend{paths: make(map[string]int)}
	b.status.Store(http.StatusOK)
	b.srv = httptest.NewUnstartedServer(b)
	return b
}

// newHTTPBackend starts a plain HTTP/1.1 backend answering 200.
func newHTTPBackend(t *testing.T) *httpBackend {
	t.Helper()
	b := newHTTPBackendUnstarted(t)
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	b.addr = b.srv.Listener.Addr().String()
	return b
}

// newTLSBackend starts a TLS backend offering h2 and http/1.1 with cert.
func newTLSBackend(t *testing.T, cert tls.Certificate) *httpBackend {
	t.Helper()
	b := newHTTPBackendUnstarted(t)
	b.srv.EnableHTTP2 = true
	b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	b.addr = b.srv.Listener.Addr().String()
	return b
}

// tcpBackend accepts and closes connections until stopped.
type tcpBackend struct {
	addr string

	mu   sync.Mutex
	lis  net.Listener
	done chan struct{}
	n    atomic.Int64
}

func newTCPBackend(t *testing.T) *tcpBackend {
	t.Helper()
	b := &tcpBackend{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	b.serve(lis)
	t.Cleanup(b.stop)
	return b
}

func (b *tcpBackend) serve(lis net.Listener) {
	done := make(chan struct{})
	b.mu.Lock()
	b.lis, b.done = lis, done
	b.mu.Unlock()
	go func() {
		defer close(done)
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			b.n.Add(1)
			_ = conn.Close()
		}
	}()
}

// stop closes the listener and waits for the accept loop.
func (b *tcpBackend) stop() {
	b.mu.Lock()
	lis, done := b.lis, b.done
	b.lis = nil
	b.mu.Unlock()
	if lis != nil {
		_ = lis.Close()
		<-done
	}
}

// restart listens on the same port again.
func (b *tcpBackend) restart(t *testing.T) {
	t.Helper()
	var lis net.Listener
	eventually(t, "relistening on "+b.addr, func() bool {
		var err error
		lis, err = net.Listen("tcp", b.addr)
		return err == nil
	})
	b.serve(lis)
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

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

// pool returns a cert pool holding the CA.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// serverCert issues a server certificate for dnsNames.
func (ca *testCA) serverCert(t *testing.T, dnsNames ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// newState returns a fresh, healthy backend state for addr.
func newState(addr string) *backend.State { return backend.New(addr, time.Now()) }

// hasAll reports whether s contains every one of subs.
func hasAll(s string, subs ...string) error {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return fmt.Errorf("missing %q", sub)
		}
	}
	return nil
}
