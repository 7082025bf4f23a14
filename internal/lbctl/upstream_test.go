package lbctl

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// testNotAfter is the expiry of the certificates made by newTestCert.
var testNotAfter = time.Date(2099, 1, 2, 3, 4, 5, 0, time.UTC)

// testCert is a self-signed certificate and its key, both PEM.
type testCert struct {
	certPEM, keyPEM string
}

// newTestCert makes a self-signed ECDSA certificate for cn, valid until
// testNotAfter.
func newTestCert(t *testing.T, cn string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"lbctl test"}},
		NotBefore:             time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              testNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	}
}

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pemFiles are certificate files shared by the tests of one function.
type pemFiles struct {
	dir                    string
	ca, ca2                testCert // ca2 is a second CA in the bundle
	client                 testCert
	caFile, bundleFile     string
	certFile, keyFile      string
	emptyFile, missingFile string
}

func newPEMFiles(t *testing.T) *pemFiles {
	t.Helper()
	f := &pemFiles{dir: t.TempDir(), ca: newTestCert(t, "Test Root CA"), ca2: newTestCert(t, "Other Root CA"),
		client: newTestCert(t, "lb-client")}
	f.caFile = writeFile(t, f.dir, "ca.pem", f.ca.certPEM)
	f.bundleFile = writeFile(t, f.dir, "bundle.pem", f.ca.certPEM+f.ca2.certPEM)
	f.certFile = writeFile(t, f.dir, "client.pem", f.client.certPEM)
	f.keyFile = writeFile(t, f.dir, "client-key.pem", f.client.keyPEM)
	f.emptyFile = writeFile(t, f.dir, "empty.pem", " \n")
	f.missingFile = filepath.Join(f.dir, "missing.pem")
	return f
}

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

var (
	protoAuto  = lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_UNSPECIFIED
	protoHTTP1 = lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_HTTP1
	protoH2    = lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2
	protoH2C   = lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C
)

// TestUpstreamFlagsAgainstServer checks the exact requests "pool create" and
// "pool update" send for the upstream flags, against a real gRPC server.
func TestUpstreamFlagsAgainstServer(t *testing.T) {
	files := newPEMFiles(t)
	created := func(name string) *lbv1.CreatePoolResponse {
		return &lbv1.CreatePoolResponse{Pool: &lbv1.Pool{Name: name, Version: 4}, Version: 4}
	}
	updated := &lbv1.UpdatePoolResponse{Pool: webPool, Version: 8}
	update := func(up *lbv1.Upstream, paths ...string) *lbv1.UpdatePoolRequest {
		return &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", Upstream: up}, UpdateMask: mask(paths...)}
	}
	tests := []struct {
		name    string
		args    []string
		resp    proto.Message
		err     func(t *testing.T) error
		wantReq proto.Message
		stdout  string
		stderr  string
		code    int
	}{
		{
			name: "create founding example",
			args: []string{"pool", "create", "origin", "--upstream-tls", "--sni", "one.one.one.one",
				"--host-header", "one.one.one.one", "--backend", "1.1.1.1:443", "--backend", "1.0.0.1:443"},
			resp: created("origin"),
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{
				Name:     "origin",
				Backends: []*lbv1.Backend{{Address: "1.1.1.1:443", Weight: 1}, {Address: "1.0.0.1:443", Weight: 1}},
				Upstream: &lbv1.Upstream{Tls: true, Sni: "one.one.one.one", HostHeader: "one.one.one.one"},
			}},
			stdout: "pool \"origin\": created with 0 backends; configuration version 4\n",
		},
		{
			name: "create with every upstream flag",
			args: []string{"pool", "create", "grpc", "--upstream-protocol", "h2", "--upstream-tls",
				"--sni", "grpc.internal", "--ca-file", files.bundleFile, "--insecure-skip-verify",
				"--client-cert", files.certFile, "--client-key", files.keyFile, "--host-header", "grpc.internal:8443"},
			resp: created("grpc"),
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "grpc", Upstream: &lbv1.Upstream{
				Protocol: protoH2, Tls: true, Sni: "grpc.internal", CaPem: files.ca.certPEM + files.ca2.certPEM,
				InsecureSkipVerify: true, ClientCertPem: files.client.certPEM, ClientKeyPem: files.client.keyPEM,
				HostHeader: "grpc.internal:8443",
			}}},
			stdout: "pool \"grpc\": created with 0 backends; configuration version 4\n",
		},
		{
			name:    "create h2c",
			args:    []string{"pool", "create", "api", "--upstream-protocol=h2c"},
			resp:    created("api"),
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", Upstream: &lbv1.Upstream{Protocol: protoH2C}}},
			stdout:  "pool \"api\": created with 0 backends; configuration version 4\n",
		},
		{
			name:    "create http1 any case",
			args:    []string{"pool", "create", "api", "--upstream-protocol", "HTTP1"},
			resp:    created("api"),
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", Upstream: &lbv1.Upstream{Protocol: protoHTTP1}}},
			stdout:  "pool \"api\": created with 0 backends; configuration version 4\n",
		},
		{
			name:    "create auto sets an empty upstream",
			args:    []string{"pool", "create", "api", "--upstream-protocol", "auto"},
			resp:    created("api"),
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", Upstream: &lbv1.Upstream{Protocol: protoAuto}}},
			stdout:  "pool \"api\": created with 0 backends; configuration version 4\n",
		},
		{
			name:    "create with TLS and a CA",
			args:    []string{"pool", "create", "api", "--upstream-tls", "--ca-file", files.caFile},
			resp:    created("api"),
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", Upstream: &lbv1.Upstream{Tls: true, CaPem: files.ca.certPEM}}},
			stdout:  "pool \"api\": created with 0 backends; configuration version 4\n",
		},
		{
			name:    "create without upstream flags sends no upstream",
			args:    []string{"pool", "create", "api", "--backend", "10.0.0.5:8080"},
			resp:    created("api"),
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", Backends: []*lbv1.Backend{{Address: "10.0.0.5:8080", Weight: 1}}}},
			stdout:  "pool \"api\": created with 0 backends; configuration version 4\n",
		},
		{
			name: "create h2 without TLS is left to the server",
			args: []string{"pool", "create", "api", "--upstream-protocol", "h2"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `pool.upstream.protocol "h2": HTTP/2 over TLS needs tls; use h2c for cleartext HTTP/2`)
			},
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api", Upstream: &lbv1.Upstream{Protocol: protoH2}}},
			stderr:  "lbctl: pool.upstream.protocol \"h2\": HTTP/2 over TLS needs tls; use h2c for cleartext HTTP/2\n",
			code:    1,
		},
		{
			name:    "update sni",
			args:    []string{"pool", "update", "web", "--sni", "x.example.com"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{Sni: "x.example.com"}, "upstream.sni"),
			stdout:  "pool \"web\": SNI set to x.example.com; configuration version 8\n",
		},
		{
			name:    "update clear sni",
			args:    []string{"pool", "update", "web", "--clear-sni"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{}, "upstream.sni"),
			stdout:  "pool \"web\": SNI cleared; configuration version 8\n",
		},
		{
			name:    "update protocol",
			args:    []string{"pool", "update", "web", "--upstream-protocol", "h2"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{Protocol: protoH2}, "upstream.protocol"),
			stdout:  "pool \"web\": upstream protocol set to h2; configuration version 8\n",
		},
		{
			name:    "update protocol auto",
			args:    []string{"pool", "update", "web", "--upstream-protocol", "auto"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{}, "upstream.protocol"),
			stdout:  "pool \"web\": upstream protocol set to auto; configuration version 8\n",
		},
		{
			name:    "update tls on",
			args:    []string{"pool", "update", "web", "--upstream-tls"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{Tls: true}, "upstream.tls"),
			stdout:  "pool \"web\": upstream TLS on; configuration version 8\n",
		},
		{
			name:    "update tls off",
			args:    []string{"pool", "update", "web", "--upstream-tls=false"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{}, "upstream.tls"),
			stdout:  "pool \"web\": upstream TLS off; configuration version 8\n",
		},
		{
			name:    "update ca file",
			args:    []string{"pool", "update", "web", "--ca-file", files.caFile},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{CaPem: files.ca.certPEM}, "upstream.ca_pem"),
			stdout:  "pool \"web\": CA set from " + files.caFile + "; configuration version 8\n",
		},
		{
			name:    "update clear ca",
			args:    []string{"pool", "update", "web", "--clear-ca"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{}, "upstream.ca_pem"),
			stdout:  "pool \"web\": CA cleared; configuration version 8\n",
		},
		{
			name:    "update insecure skip verify",
			args:    []string{"pool", "update", "web", "--insecure-skip-verify"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{InsecureSkipVerify: true}, "upstream.insecure_skip_verify"),
			stdout:  "pool \"web\": certificate verification off; configuration version 8\n",
		},
		{
			name:    "update insecure skip verify off",
			args:    []string{"pool", "update", "web", "--insecure-skip-verify=false"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{}, "upstream.insecure_skip_verify"),
			stdout:  "pool \"web\": certificate verification on; configuration version 8\n",
		},
		{
			name: "update client cert and key",
			args: []string{"pool", "update", "web", "--client-cert", files.certFile, "--client-key", files.keyFile},
			resp: updated,
			wantReq: update(&lbv1.Upstream{ClientCertPem: files.client.certPEM, ClientKeyPem: files.client.keyPEM},
				"upstream.client_cert_pem", "upstream.client_key_pem"),
			stdout: "pool \"web\": client certificate set from " + files.certFile + "; configuration version 8\n",
		},
		{
			name:    "update clear client cert",
			args:    []string{"pool", "update", "web", "--clear-client-cert"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{}, "upstream.client_cert_pem", "upstream.client_key_pem"),
			stdout:  "pool \"web\": client certificate cleared; configuration version 8\n",
		},
		{
			name:    "update host header",
			args:    []string{"pool", "update", "web", "--host-header", "origin.example.com"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{HostHeader: "origin.example.com"}, "upstream.host_header"),
			stdout:  "pool \"web\": host header set to origin.example.com; configuration version 8\n",
		},
		{
			name:    "update clear host header",
			args:    []string{"pool", "update", "web", "--clear-host-header"},
			resp:    updated,
			wantReq: update(&lbv1.Upstream{}, "upstream.host_header"),
			stdout:  "pool \"web\": host header cleared; configuration version 8\n",
		},
		{
			name: "update founding example with hosts and path prefix",
			args: []string{"pool", "update", "web", "--host", "a.example.com", "--path-prefix", "/x/",
				"--upstream-tls", "--sni", "one.one.one.one", "--host-header", "one.one.one.one"},
			resp: updated,
			wantReq: &lbv1.UpdatePoolRequest{
				Pool: &lbv1.Pool{Name: "web", Hosts: []string{"a.example.com"}, PathPrefix: "/x/",
					Upstream: &lbv1.Upstream{Tls: true, Sni: "one.one.one.one", HostHeader: "one.one.one.one"}},
				UpdateMask: mask("hosts", "path_prefix", "upstream.tls", "upstream.sni", "upstream.host_header"),
			},
			stdout: "pool \"web\": hosts set to a.example.com, path prefix set to /x/, upstream TLS on, " +
				"SNI set to one.one.one.one, host header set to one.one.one.one; configuration version 8\n",
		},
		{
			name:    "update clear flags set to false are ignored",
			args:    []string{"pool", "update", "web", "--path-prefix", "/", "--clear-ca=false", "--clear-sni=false"},
			resp:    updated,
			wantReq: &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", PathPrefix: "/"}, UpdateMask: mask("path_prefix")},
			stdout:  "pool \"web\": path prefix set to /; configuration version 8\n",
		},
		{
			name: "update sni without tls is left to the server",
			args: []string{"pool", "update", "web", "--sni", "x.example.com"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `pool.upstream.sni: only applies with tls; enable upstream TLS too`)
			},
			wantReq: update(&lbv1.Upstream{Sni: "x.example.com"}, "upstream.sni"),
			stderr:  "lbctl: pool.upstream.sni: only applies with tls; enable upstream TLS too\n",
			code:    1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{resp: tt.resp}
			if tt.err != nil {
				f.err = tt.err(t)
			}
			addr := startServer(t, f)
			got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.stdout != tt.stdout {
				t.Errorf("stdout:\n%q\nwant:\n%q", got.stdout, tt.stdout)
			}
			if got.stderr != tt.stderr {
				t.Errorf("stderr:\n%q\nwant:\n%q", got.stderr, tt.stderr)
			}
			if got.code != tt.code {
				t.Errorf("exit code %d, want %d", got.code, tt.code)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("server got %d requests, want 1", len(reqs))
			}
			if !proto.Equal(reqs[0], tt.wantReq) {
				t.Errorf("request %T:\n got %v\nwant %v", reqs[0], reqs[0], tt.wantReq)
			}
		})
	}
}

// TestUpstreamFlagErrors checks the upstream flag mistakes lbctl catches
// itself: usage errors (ExitUsage) and files it cannot use (ExitError). In
// both cases nothing is sent.
func TestUpstreamFlagErrors(t *testing.T) {
	files := newPEMFiles(t)
	const createHelp = "; see 'lbctl pool create --help'\n"
	const updateHelp = "; see 'lbctl pool update --help'\n"
	tests := []struct {
		name   string
		args   []string
		stderr string
		code   int
	}{
		{"create bad protocol", []string{"pool", "create", "web", "--upstream-protocol", "h3"},
			"lbctl: invalid argument \"h3\" for \"--upstream-protocol\" flag: unknown upstream protocol \"h3\"; choose auto, http1, h2 or h2c" + createHelp, ExitUsage},
		{"update bad protocol", []string{"pool", "update", "web", "--upstream-protocol=http2"},
			"lbctl: invalid argument \"http2\" for \"--upstream-protocol\" flag: unknown upstream protocol \"http2\"; choose auto, http1, h2 or h2c" + updateHelp, ExitUsage},
		{"update empty protocol", []string{"pool", "update", "web", "--upstream-protocol", ""},
			"lbctl: invalid argument \"\" for \"--upstream-protocol\" flag: unknown upstream protocol \"\"; choose auto, http1, h2 or h2c" + updateHelp, ExitUsage},
		{"create client cert without key", []string{"pool", "create", "web", "--upstream-tls", "--client-cert", files.certFile},
			"lbctl: --client-cert needs --client-key, the file of its private key" + createHelp, ExitUsage},
		{"create client key without cert", []string{"pool", "create", "web", "--client-key", files.keyFile},
			"lbctl: --client-key needs --client-cert, the file of its certificate" + createHelp, ExitUsage},
		{"update client cert without key", []string{"pool", "update", "web", "--client-cert", files.certFile},
			"lbctl: --client-cert needs --client-key, the file of its private key" + updateHelp, ExitUsage},
		{"pairing is checked before reading", []string{"pool", "update", "web", "--client-cert", files.missingFile},
			"lbctl: --client-cert needs --client-key, the file of its private key" + updateHelp, ExitUsage},
		{"update sni and clear sni", []string{"pool", "update", "web", "--sni", "a", "--clear-sni"},
			"lbctl: --sni and --clear-sni cannot be used together" + updateHelp, ExitUsage},
		{"update ca and clear ca", []string{"pool", "update", "web", "--ca-file", files.caFile, "--clear-ca"},
			"lbctl: --ca-file and --clear-ca cannot be used together" + updateHelp, ExitUsage},
		{"update client cert and clear", []string{"pool", "update", "web", "--client-cert", files.certFile, "--client-key", files.keyFile, "--clear-client-cert"},
			"lbctl: --client-cert and --clear-client-cert cannot be used together" + updateHelp, ExitUsage},
		{"update client key and clear", []string{"pool", "update", "web", "--client-key", files.keyFile, "--clear-client-cert"},
			"lbctl: --client-key and --clear-client-cert cannot be used together" + updateHelp, ExitUsage},
		{"update host header and clear", []string{"pool", "update", "web", "--host-header", "a", "--clear-host-header"},
			"lbctl: --host-header and --clear-host-header cannot be used together" + updateHelp, ExitUsage},
		{"update only clear flags set to false", []string{"pool", "update", "web", "--clear-ca=false", "--clear-client-cert=false", "--clear-sni=false", "--clear-host-header=false"},
			nothingToUpdate, ExitUsage},
		{"create has no clear flags", []string{"pool", "create", "web", "--clear-ca"},
			"lbctl: unknown flag: --clear-ca" + createHelp, ExitUsage},
		{"create missing ca file", []string{"pool", "create", "web", "--upstream-tls", "--ca-file", files.missingFile},
			"lbctl: cannot read --ca-file \"" + files.missingFile + "\": no such file or directory\n", ExitError},
		{"update missing ca file", []string{"pool", "update", "web", "--ca-file", files.missingFile},
			"lbctl: cannot read --ca-file \"" + files.missingFile + "\": no such file or directory\n", ExitError},
		{"update ca file is a directory", []string{"pool", "update", "web", "--ca-file", files.dir},
			"lbctl: cannot read --ca-file \"" + files.dir + "\": is a directory\n", ExitError},
		{"update empty ca file", []string{"pool", "update", "web", "--ca-file", files.emptyFile},
			"lbctl: --ca-file \"" + files.emptyFile + "\" is empty; it should hold PEM CA certificates\n", ExitError},
		{"create missing client cert", []string{"pool", "create", "web", "--client-cert", files.missingFile, "--client-key", files.keyFile},
			"lbctl: cannot read --client-cert \"" + files.missingFile + "\": no such file or directory\n", ExitError},
		{"update missing client key", []string{"pool", "update", "web", "--client-cert", files.certFile, "--client-key", files.missingFile},
			"lbctl: cannot read --client-key \"" + files.missingFile + "\": no such file or directory\n", ExitError},
		{"update empty client key", []string{"pool", "update", "web", "--client-cert", files.certFile, "--client-key", files.emptyFile},
			"lbctl: --client-key \"" + files.emptyFile + "\" is empty; it should hold a PEM private key\n", ExitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{}
			addr := startServer(t, f)
			got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.stderr != tt.stderr {
				t.Errorf("stderr\n got %q\nwant %q", got.stderr, tt.stderr)
			}
			if got.code != tt.code || got.stdout != "" {
				t.Errorf("exit %d stdout %q, want %d and nothing", got.code, got.stdout, tt.code)
			}
			if n := len(f.requests()); n != 0 {
				t.Errorf("server got %d requests, want none", n)
			}
		})
	}
}

func TestReadPEMFileTooLarge(t *testing.T) {
	p := writeFile(t, t.TempDir(), "big.pem", strings.Repeat("A", maxPEMFile+1))
	_, err := readPEMFile(flagCAFile, p, "PEM CA certificates")
	want := "--ca-file \"" + p + "\" is larger than 1 MiB; it should hold PEM CA certificates"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}

// TestUpstreamOutput checks "pool get" and "pool list" for pools with
// upstream settings, as the control plane returns them (no client key).
func TestUpstreamOutput(t *testing.T) {
	files := newPEMFiles(t)
	origin := &lbv1.Pool{
		Name:     "origin",
		Backends: []*lbv1.Backend{{Address: "1.1.1.1:443", Weight: 1}, {Address: "1.0.0.1:443", Weight: 1}},
		Version:  5,
		Upstream: &lbv1.Upstream{Tls: true, Sni: "one.one.one.one", HostHeader: "one.one.one.one"},
	}
	grpcPool := &lbv1.Pool{
		Name:    "grpc",
		Hosts:   []string{"grpc.example.com"},
		Version: 6,
		Upstream: &lbv1.Upstream{
			Protocol: protoH2, Tls: true, CaPem: files.ca.certPEM + files.ca2.certPEM,
			ClientCertPem: files.client.certPEM, ClientKeySet: true,
		},
	}
	tests := []struct {
		name   string
		args   []string
		resp   proto.Message
		stdout string
	}{
		{
			name: "get founding example",
			args: []string{"pool", "get", "origin"},
			resp: &lbv1.GetPoolResponse{Pool: origin, Version: 9},
			stdout: "Name:         origin\n" +
				"Hosts:        *\n" +
				"Path prefix:  /\n" +
				"Version:      5\n" +
				"\n" +
				"Upstream:     auto (HTTP/2 for gRPC, HTTP/1.1 otherwise) over TLS\n" +
				"TLS:          on\n" +
				"SNI:          one.one.one.one\n" +
				"CA:           system roots\n" +
				"Verify:       on\n" +
				"Client cert:  none\n" +
				"Host header:  one.one.one.one\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       none\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"BACKEND      WEIGHT  STATE   HEALTHY  IN-FLIGHT\n" +
				"1.1.1.1:443  1       active  -        -\n" +
				"1.0.0.1:443  1       active  -        -\n",
		},
		{
			name: "get h2 with custom CA and client certificate",
			args: []string{"pool", "get", "grpc"},
			resp: &lbv1.GetPoolResponse{Pool: grpcPool, Version: 9},
			stdout: "Name:         grpc\n" +
				"Hosts:        grpc.example.com\n" +
				"Path prefix:  /\n" +
				"Version:      6\n" +
				"\n" +
				"Upstream:     h2 over TLS\n" +
				"TLS:          on\n" +
				"SNI:          each backend's host\n" +
				"CA:           custom CA (2 certificates, first: CN=Test Root CA)\n" +
				"Verify:       on\n" +
				"Client cert:  CN=lb-client, expires 2099-01-02T03:04:05Z\n" +
				"Host header:  client's Host (passed through)\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       none\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"No backends; add one with: lbctl add-backend --pool grpc HOST:PORT\n",
		},
		{
			name: "get http1 over TLS without verification",
			args: []string{"pool", "get", "legacy"},
			resp: &lbv1.GetPoolResponse{Pool: &lbv1.Pool{Name: "legacy", Version: 2, Upstream: &lbv1.Upstream{
				Protocol: protoHTTP1, Tls: true, InsecureSkipVerify: true, HostHeader: "legacy.internal",
			}}},
			stdout: "Name:         legacy\n" +
				"Hosts:        *\n" +
				"Path prefix:  /\n" +
				"Version:      2\n" +
				"\n" +
				"Upstream:     http1 over TLS\n" +
				"TLS:          on\n" +
				"SNI:          legacy.internal (the host header)\n" +
				"CA:           none (certificates are not verified)\n" +
				"Verify:       OFF (insecure-skip-verify)\n" +
				"Client cert:  none\n" +
				"Host header:  legacy.internal\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       none\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"No backends; add one with: lbctl add-backend --pool legacy HOST:PORT\n",
		},
		{
			name: "get h2c shows no TLS details",
			args: []string{"pool", "get", "api"},
			resp: &lbv1.GetPoolResponse{Pool: &lbv1.Pool{Name: "api", Version: 2, Upstream: &lbv1.Upstream{Protocol: protoH2C}}},
			stdout: "Name:         api\n" +
				"Hosts:        *\n" +
				"Path prefix:  /\n" +
				"Version:      2\n" +
				"\n" +
				"Upstream:     h2c (cleartext HTTP/2)\n" +
				"TLS:          off\n" +
				"Host header:  client's Host (passed through)\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       none\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"No backends; add one with: lbctl add-backend --pool api HOST:PORT\n",
		},
		{
			name: "get http1 in cleartext",
			args: []string{"pool", "get", "api"},
			resp: &lbv1.GetPoolResponse{Pool: &lbv1.Pool{Name: "api", Version: 2, Upstream: &lbv1.Upstream{Protocol: protoHTTP1}}},
			stdout: "Name:         api\n" +
				"Hosts:        *\n" +
				"Path prefix:  /\n" +
				"Version:      2\n" +
				"\n" +
				"Upstream:     http1\n" +
				"TLS:          off\n" +
				"Host header:  client's Host (passed through)\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       none\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"No backends; add one with: lbctl add-backend --pool api HOST:PORT\n",
		},
		{
			name: "list",
			args: []string{"pool", "list"},
			resp: &lbv1.ListPoolsResponse{Version: 9, Pools: []*lbv1.Pool{
				{Name: "a", Version: 1, Upstream: &lbv1.Upstream{Protocol: protoHTTP1}},
				{Name: "b", Version: 2, Upstream: &lbv1.Upstream{Protocol: protoH2, Tls: true}},
				{Name: "c", Version: 3, Upstream: &lbv1.Upstream{Protocol: protoH2C}},
				{Name: "d", Version: 4, Upstream: &lbv1.Upstream{Tls: true}},
				{Name: "e", Version: 5},
				{Name: "f", Version: 6, Upstream: &lbv1.Upstream{Protocol: protoHTTP1, Tls: true}},
			}},
			stdout: "NAME  HOSTS  PATH  BACKENDS  ALGORITHM    UPSTREAM   VERSION\n" +
				"a     *      /     0         round-robin  http1      1\n" +
				"b     *      /     0         round-robin  h2+tls     2\n" +
				"c     *      /     0         round-robin  h2c        3\n" +
				"d     *      /     0         round-robin  auto+tls   4\n" +
				"e     *      /     0         round-robin  auto       5\n" +
				"f     *      /     0         round-robin  http1+tls  6\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{resp: tt.resp}
			addr := startServer(t, f)
			got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.code != 0 || got.stderr != "" {
				t.Fatalf("exit %d, stderr %q", got.code, got.stderr)
			}
			if got.stdout != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, tt.stdout)
			}
		})
	}

	t.Run("json is the raw response", func(t *testing.T) {
		t.Parallel()
		resp := &lbv1.GetPoolResponse{Pool: grpcPool, Version: 9}
		f := &fakeAdmin{resp: resp}
		addr := startServer(t, f)
		got := runCLI(t, nil, "--controlplane", addr, "-o", "json", "pool", "get", "grpc")
		if got.code != 0 || got.stderr != "" {
			t.Fatalf("exit %d, stderr %q", got.code, got.stderr)
		}
		want, err := jsonOptions.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if got.stdout != string(want)+"\n" {
			t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, want)
		}
		// protojson varies its spacing on purpose, so look at the decoded JSON.
		var doc struct {
			Pool struct {
				Upstream map[string]any `json:"upstream"`
			} `json:"pool"`
		}
		if err := json.Unmarshal([]byte(got.stdout), &doc); err != nil {
			t.Fatalf("stdout is not JSON: %v", err)
		}
		up := doc.Pool.Upstream
		for k, v := range map[string]any{"protocol": "UPSTREAM_PROTOCOL_H2", "tls": true, "clientKeySet": true,
			"clientKeyPem": "", "hostHeader": "", "caPem": files.ca.certPEM + files.ca2.certPEM} {
			if up[k] != v {
				t.Errorf("upstream.%s = %#v, want %#v", k, up[k], v)
			}
		}
	})
}

// TestClientCertText checks the client certificate line for an expired
// certificate, a certificate stored without key and an unreadable one.
func TestClientCertText(t *testing.T) {
	c := newTestCert(t, "lb-client")
	later := testNotAfter.Add(time.Hour)
	tests := []struct {
		name string
		u    *lbv1.Upstream
		now  time.Time
		want string
	}{
		{"valid", &lbv1.Upstream{ClientCertPem: c.certPEM, ClientKeySet: true}, testNotAfter,
			"CN=lb-client, expires 2099-01-02T03:04:05Z"},
		{"expired", &lbv1.Upstream{ClientCertPem: c.certPEM, ClientKeySet: true}, later,
			"CN=lb-client, EXPIRED 2099-01-02T03:04:05Z"},
		{"no key", &lbv1.Upstream{ClientCertPem: c.certPEM}, testNotAfter,
			"CN=lb-client, expires 2099-01-02T03:04:05Z, no key stored"},
		{"unreadable", &lbv1.Upstream{ClientCertPem: "junk", ClientKeySet: true}, testNotAfter,
			"set (not a readable certificate)"},
		{"none", &lbv1.Upstream{}, testNotAfter, "none"},
	}
	for _, tt := range tests {
		if got := clientCertText(tt.u, tt.now); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	var b bytes.Buffer
	writeUpstream(&b, &lbv1.Upstream{Tls: true, ClientCertPem: c.certPEM, ClientKeySet: true}, later)
	if !strings.Contains(b.String(), "Client cert:\tCN=lb-client, EXPIRED 2099-01-02T03:04:05Z\n") {
		t.Errorf("writeUpstream:\n%s", b.String())
	}
}

func TestCAText(t *testing.T) {
	c := newTestCert(t, "Only CA")
	tests := []struct {
		u    *lbv1.Upstream
		want string
	}{
		{&lbv1.Upstream{Tls: true}, "system roots"},
		{&lbv1.Upstream{Tls: true, CaPem: c.certPEM}, "custom CA (1 certificate, first: CN=Only CA)"},
		{&lbv1.Upstream{Tls: true, CaPem: "not pem"}, "custom CA (no readable certificate)"},
	}
	for _, tt := range tests {
		if got := caText(tt.u); got != tt.want {
			t.Errorf("caText(%v) = %q, want %q", tt.u, got, tt.want)
		}
	}
}

// TestUpstreamHelp checks that the help of "pool create" and "pool update"
// shows the founding example and the upstream flags.
func TestUpstreamHelp(t *testing.T) {
	const founding = "lbctl pool create origin --upstream-tls --sni one.one.one.one --host-header one.one.one.one --backend 1.1.1.1:443 --backend 1.0.0.1:443"
	for _, sub := range []string{"create", "update"} {
		got := runCLI(t, nil, "pool", sub, "--help")
		if got.code != 0 {
			t.Fatalf("%s --help: exit %d", sub, got.code)
		}
		for _, s := range []string{"--upstream-protocol auto|http1|h2|h2c", "--upstream-tls", "--sni NAME", "--ca-file FILE",
			"--insecure-skip-verify", "--client-cert FILE", "--client-key FILE", "--host-header VALUE",
			"--upstream-tls --sni one.one.one.one --host-header one.one.one.one"} {
			if !strings.Contains(got.stdout, s) {
				t.Errorf("pool %s --help lacks %q", sub, s)
			}
		}
		hasClear := strings.Contains(got.stdout, "--clear-client-cert")
		if hasClear != (sub == "update") {
			t.Errorf("pool %s --help: --clear-client-cert shown %v", sub, hasClear)
		}
	}
	if got := runCLI(t, nil, "pool", "create", "--help"); !strings.Contains(got.stdout, founding) {
		t.Errorf("pool create --help lacks the founding example %q", founding)
	}
}
