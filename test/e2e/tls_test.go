package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// tlsDownstream is a data plane terminating TLS for a.test (the default
// certificate) and b.test, both issued by one test CA, in front of one
// backend.
type tlsDownstream struct {
	ca           *testCA
	dir          string
	caFile       string
	a, b         issued
	aCert, aKey  string
	dp           *dataPlane
	tlsAddr      string
	tlsPort      string
	plainPort    string
	be           *backend
	reloadPeriod time.Duration
}

// tlsStartDownstream starts a control plane, a backend and a data plane with
// --tls-listen and the a.test and b.test pairs, and routes every request to
// the backend.
func tlsStartDownstream(t *testing.T, reload time.Duration) *tlsDownstream {
	t.Helper()
	d := &tlsDownstream{ca: newTestCA(t, "e2e downstream CA"), dir: t.TempDir(), reloadPeriod: reload}
	d.caFile = writePEM(t, d.dir, "ca.pem", d.ca.certPEM)
	d.a = d.ca.issue(t, "a.test", "a.test")
	d.b = d.ca.issue(t, "b.test", "b.test")
	d.aCert, d.aKey = d.a.writeFiles(t, d.dir, "a")
	bCert, bKey := d.b.writeFiles(t, d.dir, "b")

	cp := startControlPlane(t, "", "")
	d.be = startBackend(t, "tls-backend")
	d.tlsAddr = freeAddr(t)
	d.dp = startDataPlaneWith(t, cp.addr, "dp-tls",
		"--tls-listen", d.tlsAddr,
		"--tls-cert", d.aCert, "--tls-key", d.aKey,
		"--tls-cert", bCert, "--tls-key", bKey,
		"--cert-reload-interval", reload.String())
	_, d.tlsPort, _ = net.SplitHostPort(d.tlsAddr)
	_, d.plainPort, _ = net.SplitHostPort(d.dp.addr)
	admin := tlsAdminClient(t, cp.addr)
	tlsCreatePool(t, admin, d.dp, &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{{Address: d.be.addr}}})
	waitFor(t, 10*time.Second, "TLS listener to accept connections", func() bool {
		c, err := net.DialTimeout("tcp", d.tlsAddr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return d
}

// tlsHandshake does a fresh TLS handshake with the data plane's TLS listener
// and returns the leaf certificate served and the connection state.
func tlsHandshake(addr string, cfg *tls.Config) (*x509.Certificate, tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, tls.ConnectionState{}, err
	}
	defer c.Close()
	st := c.(*tls.Conn).ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return nil, st, fmt.Errorf("no peer certificate")
	}
	return st.PeerCertificates[0], st, nil
}

// leaf returns the certificate the data plane serves for serverName,
// verified against the test CA.
func (d *tlsDownstream) leaf(t *testing.T, serverName string) *x509.Certificate {
	t.Helper()
	c, _, err := tlsHandshake(d.tlsAddr, &tls.Config{RootCAs: d.ca.pool(), ServerName: serverName})
	if err != nil {
		t.Fatalf("TLS handshake for %s: %v", serverName, err)
	}
	return c
}

// curlTLS fetches https://host:PORT/ through curl, resolving host to the data
// plane and trusting the test CA.
func (d *tlsDownstream) curlTLS(t *testing.T, host string, extra ...string) curlResult {
	t.Helper()
	args := append([]string{"--cacert", d.caFile, "--resolve", host + ":" + d.tlsPort + ":127.0.0.1"}, extra...)
	args = append(args, "https://"+host+":"+d.tlsPort+"/")
	return curlOK(t, args...)
}

// tlsReplaceFile atomically replaces path with data (write a temporary file
// beside it, then rename), so that a reader never sees a partial file.
func tlsReplaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
}

// rotateA replaces a.test's key and certificate (key first) with a newly
// issued pair and returns it.
func (d *tlsDownstream) rotateA(t *testing.T) issued {
	t.Helper()
	n := d.ca.issue(t, "a.test", "a.test")
	tlsReplaceFile(t, d.aKey, n.keyPEM)
	tlsReplaceFile(t, d.aCert, n.certPEM)
	return n
}

// TestTLSSNIAndALPN: the TLS listener serves each name its certificate (the
// first pair for unknown names), negotiates HTTP/1.1 or HTTP/2 by ALPN, and
// the plain listener speaks HTTP/1.1 and h2c with prior knowledge.
func TestTLSSNIAndALPN(t *testing.T) {
	d := tlsStartDownstream(t, 2*time.Second)

	t.Run("a.test over HTTP/1.1", func(t *testing.T) {
		r := d.curlTLS(t, "a.test", "--http1.1")
		if r.code != 200 || r.httpVersion != "1.1" || r.body != d.be.name {
			t.Fatalf("want 200 over HTTP/1.1 from the backend; %v", r)
		}
	})
	t.Run("a.test over HTTP/2", func(t *testing.T) {
		r := d.curlTLS(t, "a.test", "--http2")
		if r.code != 200 || r.httpVersion != "2" || r.body != d.be.name {
			t.Fatalf("want 200 over HTTP/2 from the backend; %v", r)
		}
	})
	t.Run("b.test gets its own certificate", func(t *testing.T) {
		// curl verifies the name: this only succeeds when b.test's
		// certificate is served (a.test's is not valid for b.test).
		r := d.curlTLS(t, "b.test", "--http2")
		if r.code != 200 || r.httpVersion != "2" || r.body != d.be.name {
			t.Fatalf("want 200 over HTTP/2 from the backend; %v", r)
		}
		leaf := d.leaf(t, "b.test")
		if leaf.Subject.CommonName != "b.test" || leaf.SerialNumber.Cmp(d.b.serial) != 0 {
			t.Fatalf("SNI b.test: served CN %q serial %v, want b.test serial %v", leaf.Subject.CommonName, leaf.SerialNumber, d.b.serial)
		}
		if leaf := d.leaf(t, "A.TEST"); leaf.Subject.CommonName != "a.test" {
			t.Fatalf("SNI A.TEST: served CN %q, want a.test (names match case-insensitively)", leaf.Subject.CommonName)
		}
	})
	t.Run("unknown SNI gets the default certificate", func(t *testing.T) {
		for _, name := range []string{"unknown.test", ""} {
			leaf, _, err := tlsHandshake(d.tlsAddr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
			if err != nil {
				t.Fatalf("handshake with SNI %q: %v", name, err)
			}
			if leaf.Subject.CommonName != "a.test" || leaf.SerialNumber.Cmp(d.a.serial) != 0 {
				t.Fatalf("SNI %q: served CN %q serial %v, want the default a.test serial %v", name, leaf.Subject.CommonName, leaf.SerialNumber, d.a.serial)
			}
		}
	})
	t.Run("plain listener h2c prior knowledge", func(t *testing.T) {
		r := curlOK(t, "--http2-prior-knowledge", "http://127.0.0.1:"+d.plainPort+"/")
		if r.code != 200 || r.httpVersion != "2" || r.body != d.be.name {
			t.Fatalf("want 200 over h2c from the backend; %v", r)
		}
	})
	t.Run("X-Forwarded-Proto names the client's scheme", func(t *testing.T) {
		// HTTP/2 connections reach the handler through the TLS mux's
		// write-gathering wrapper, which must still say TLS.
		for _, v := range []string{"--http1.1", "--http2"} {
			r := curlOK(t, "--cacert", d.caFile, "--resolve", "a.test:"+d.tlsPort+":127.0.0.1", v,
				"https://a.test:"+d.tlsPort+"/forwarded-proto")
			if r.code != 200 || r.body != "https" {
				t.Fatalf("TLS %s: backend saw X-Forwarded-Proto %q, want https; %v", v, r.body, r)
			}
		}
		for _, v := range []string{"--http1.1", "--http2-prior-knowledge"} {
			r := curlOK(t, v, "http://127.0.0.1:"+d.plainPort+"/forwarded-proto")
			if r.code != 200 || r.body != "http" {
				t.Fatalf("plain %s: backend saw X-Forwarded-Proto %q, want http; %v", v, r.body, r)
			}
		}
	})
	t.Run("plain listener HTTP/1.1", func(t *testing.T) {
		r := curlOK(t, "--http1.1", "http://127.0.0.1:"+d.plainPort+"/")
		if r.code != 200 || r.httpVersion != "1.1" || r.body != d.be.name {
			t.Fatalf("want 200 over HTTP/1.1 from the backend; %v", r)
		}
	})
}

// TestTLSVersions: TLS 1.2 and 1.3 are accepted, TLS 1.1 and older refused.
func TestTLSVersions(t *testing.T) {
	d := tlsStartDownstream(t, 2*time.Second)
	cases := []struct {
		name     string
		min, max uint16
		ok       bool
	}{
		{"TLS 1.0", tls.VersionTLS10, tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS10, tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, st, err := tlsHandshake(d.tlsAddr, &tls.Config{
				RootCAs: d.ca.pool(), ServerName: "a.test", MinVersion: tc.min, MaxVersion: tc.max,
			})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("handshake failed: %v", err)
			case tc.ok && st.Version != tc.max:
				t.Fatalf("negotiated %s, want %s", tls.VersionName(st.Version), tls.VersionName(tc.max))
			case !tc.ok && err == nil:
				t.Fatalf("handshake succeeded with %s; want it refused", tls.VersionName(st.Version))
			case !tc.ok && !strings.Contains(err.Error(), "protocol version"):
				t.Fatalf("handshake failed with %v; want the server to refuse the protocol version", err)
			case !tc.ok:
				t.Logf("refused as expected: %v", err)
			}
		})
	}
}

// tlsKeepAliveClient is one HTTPS client connection to the data plane for
// a.test, reused across requests.
type tlsKeepAliveClient struct {
	tr *http.Transport
	c  *http.Client
}

func tlsNewKeepAliveClient(d *tlsDownstream) *tlsKeepAliveClient {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: d.ca.pool(), ServerName: "a.test"},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", d.tlsAddr)
		},
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		DisableCompression:  true,
	}
	return &tlsKeepAliveClient{tr: tr, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// get sends GET / and reports whether an existing connection was reused and
// the leaf certificate of the connection.
func (k *tlsKeepAliveClient) get(t *testing.T, d *tlsDownstream) (reused bool, serial *big.Int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", "https://a.test:"+d.tlsPort+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := k.c.Do(req)
	if err != nil {
		t.Fatalf("GET over the keep-alive connection: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if resp.StatusCode != 200 || string(body) != d.be.name {
		t.Fatalf("GET over the keep-alive connection: %d %q, want 200 %q", resp.StatusCode, body, d.be.name)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		t.Fatal("response has no TLS peer certificate")
	}
	return reused, resp.TLS.PeerCertificates[0].SerialNumber
}

// TestTLSCertReload: with a short reload interval, a rotated certificate is
// served to new handshakes while established connections keep working; a
// broken file is logged and the last good certificate keeps serving.
func TestTLSCertReload(t *testing.T) {
	d := tlsStartDownstream(t, 100*time.Millisecond)
	k := tlsNewKeepAliveClient(d)
	defer k.tr.CloseIdleConnections()

	reused, serial := k.get(t, d)
	if reused || serial.Cmp(d.a.serial) != 0 {
		t.Fatalf("first request: reused=%v serial %v, want a new connection with serial %v", reused, serial, d.a.serial)
	}

	rotated := d.rotateA(t)
	waitFor(t, 10*time.Second, "new handshakes to get the rotated a.test certificate", func() bool {
		return d.leaf(t, "a.test").SerialNumber.Cmp(rotated.serial) == 0
	})
	if leaf := d.leaf(t, "b.test"); leaf.SerialNumber.Cmp(d.b.serial) != 0 {
		t.Fatalf("b.test serial %v after rotating a.test, want unchanged %v", leaf.SerialNumber, d.b.serial)
	}

	reused, serial = k.get(t, d)
	if !reused {
		t.Fatal("request after the reload did not reuse the original connection (it was closed?)")
	}
	if serial.Cmp(d.a.serial) != 0 {
		t.Fatalf("original connection reports serial %v, want the one it was established with, %v", serial, d.a.serial)
	}
	if r := d.curlTLS(t, "a.test", "--http2"); r.code != 200 {
		t.Fatalf("new connection after reload: %v", r)
	}

	// A broken certificate file: the error is logged naming the file and
	// the last good certificate keeps serving.
	logOffset := len(d.dp.log.String())
	if err := os.WriteFile(d.aCert, []byte("this is not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the data plane to log the reload error naming "+d.aCert, func() bool {
		for _, line := range strings.Split(d.dp.log.String()[logOffset:], "\n") {
			if strings.Contains(line, d.aCert) && strings.Contains(strings.ToLower(line), "fail") {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * d.reloadPeriod)
	if leaf := d.leaf(t, "a.test"); leaf.SerialNumber.Cmp(rotated.serial) != 0 {
		t.Fatalf("after a broken certificate file: served serial %v, want the last good one %v", leaf.SerialNumber, rotated.serial)
	}
	if r := d.curlTLS(t, "a.test", "--http1.1"); r.code != 200 || r.body != d.be.name {
		t.Fatalf("request after a broken certificate file: %v", r)
	}
	for _, line := range strings.Split(d.dp.log.String()[logOffset:], "\n") {
		if strings.Contains(line, d.aCert) {
			t.Logf("data plane log: %s", line)
		}
	}

	// Fixing the file is picked up again.
	fixed := d.ca.issue(t, "a.test", "a.test")
	tlsReplaceFile(t, d.aKey, fixed.keyPEM)
	tlsReplaceFile(t, d.aCert, fixed.certPEM)
	waitFor(t, 10*time.Second, "new handshakes to get the repaired a.test certificate", func() bool {
		return d.leaf(t, "a.test").SerialNumber.Cmp(fixed.serial) == 0
	})
}

// TestTLSCertReloadSIGHUP: with a long reload interval, a replaced certificate
// is served only after SIGHUP.
func TestTLSCertReloadSIGHUP(t *testing.T) {
	d := tlsStartDownstream(t, time.Hour)
	rotated := d.rotateA(t)
	time.Sleep(300 * time.Millisecond)
	if leaf := d.leaf(t, "a.test"); leaf.SerialNumber.Cmp(d.a.serial) != 0 {
		t.Fatalf("before SIGHUP (reload interval 1h): served serial %v, want the original %v", leaf.SerialNumber, d.a.serial)
	}
	if err := d.dp.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	waitFor(t, 10*time.Second, "SIGHUP to load the rotated a.test certificate", func() bool {
		return d.leaf(t, "a.test").SerialNumber.Cmp(rotated.serial) == 0
	})
	if r := d.curlTLS(t, "a.test", "--http2"); r.code != 200 || r.httpVersion != "2" {
		t.Fatalf("request after SIGHUP reload: %v", r)
	}
	select {
	case <-d.dp.done:
		t.Fatalf("data plane exited after SIGHUP: %v", d.dp.err)
	default:
	}
}
