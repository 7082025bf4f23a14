package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secureControlPlane starts a control plane with TLS, client-certificate
// verification against ca and the given tokens file.
func secureControlPlane(t *testing.T, ca *testCA, tokens string) (addr, caFile string) {
	t.Helper()
	dir := t.TempDir()
	addr = freeAddr(t)
	certFile, keyFile := ca.issue(t, "controlplane", "localhost").writeFiles(t, dir, "cp")
	caFile = writePEM(t, dir, "ca.crt", ca.certPEM)
	tokensFile := writePEM(t, dir, "tokens", []byte(tokens))
	start(t, "lb-controlplane", "--listen", addr, "--admin-listen", "", "--data-dir", filepath.Join(dir, "data"),
		"--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile, "--tokens-file", tokensFile, "--log-level", "debug")
	waitFor(t, 20*time.Second, "secure control plane to listen", func() bool {
		r := lbctl(t, addr, "--tls-ca", caFile, "--token", "viewer-token-0123456789", "pool", "list")
		return r.code == 0
	})
	return addr, caFile
}

const securityTokens = "# test tokens\nadmin-token-0123456789 admin alice\nviewer-token-0123456789 viewer bob\n"

// TestSecurityTokensAndRoles: no token, a wrong token and a viewer token
// cannot change anything; the admin token can; refusals name what is
// missing; and a plain-text client cannot talk to a TLS control plane.
func TestSecurityTokensAndRoles(t *testing.T) {
	ca := newTestCA(t, "lb-test-ca")
	addr, caFile := secureControlPlane(t, ca, securityTokens)
	tlsArgs := func(args ...string) []string { return append([]string{"--tls-ca", caFile}, args...) }

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no token", tlsArgs("pool", "create", "web"), "missing bearer token"},
		{"wrong token", tlsArgs("--token", "wrong-token-0123456789", "pool", "create", "web"), "invalid bearer token"},
		{"viewer token", tlsArgs("--token", "viewer-token-0123456789", "pool", "create", "web"), "may only read"},
		{"plain text to a TLS control plane", []string{"--token", "admin-token-0123456789", "pool", "list"}, "cannot reach the control plane"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := lbctl(t, addr, tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("lbctl %v: exit %d, stderr %q; want failure mentioning %q", tc.args, r.code, r.stderr, tc.want)
			}
		})
	}
	if out := mustLbctl(t, addr, tlsArgs("--token", "viewer-token-0123456789", "-o", "json", "pool", "list")...); strings.Contains(out, "web") {
		t.Fatalf("a refused create changed the configuration: %s", out)
	}
	mustLbctl(t, addr, tlsArgs("--token", "admin-token-0123456789", "pool", "create", "web")...)
	out := mustLbctl(t, addr, tlsArgs("--token", "viewer-token-0123456789", "pool", "list")...)
	if !strings.Contains(out, "web") {
		t.Fatalf("viewer cannot read the pool the admin created: %s", out)
	}
}

// TestSecurityDataPlaneIdentity: a data plane whose certificate names its
// node id is served; one with a certificate from another CA, or for another
// node id, is refused; a data-plane certificate cannot use the admin API.
func TestSecurityDataPlaneIdentity(t *testing.T) {
	ca := newTestCA(t, "lb-test-ca")
	addr, caFile := secureControlPlane(t, ca, securityTokens)
	mustLbctl(t, addr, "--tls-ca", caFile, "--token", "admin-token-0123456789", "pool", "create", "web")
	dir := t.TempDir()

	dpArgs := func(certFile, keyFile string) []string {
		return []string{"--controlplane-tls-ca", caFile, "--controlplane-tls-cert", certFile, "--controlplane-tls-key", keyFile}
	}
	goodCert, goodKey := ca.issue(t, "dp-good", "dp-good").writeFiles(t, dir, "good")
	good := startDataPlaneWith(t, addr, "dp-good", dpArgs(goodCert, goodKey)...)
	waitFor(t, 20*time.Second, "the data plane with a matching certificate to connect", func() bool {
		c := good.config(t)
		return c.Connected && len(c.Pools) == 1
	})

	wrongNameCert, wrongNameKey := ca.issue(t, "dp-other", "dp-other").writeFiles(t, dir, "other")
	impostor := startDataPlaneWith(t, addr, "dp-claimed", dpArgs(wrongNameCert, wrongNameKey)...)
	otherCA := newTestCA(t, "some-other-ca")
	foreignCert, foreignKey := otherCA.issue(t, "dp-foreign", "dp-foreign").writeFiles(t, dir, "foreign")
	foreign := startDataPlaneWith(t, addr, "dp-foreign", dpArgs(foreignCert, foreignKey)...)

	// Give the refused ones time to try several times, then check they never
	// got a configuration.
	waitFor(t, 20*time.Second, "the impostor's refusal to be logged", func() bool {
		return strings.Contains(impostor.log.String(), "does not match the client certificate")
	})
	for _, dp := range []*dataPlane{impostor, foreign} {
		if c := dp.config(t); c.Connected || len(c.Pools) != 0 {
			t.Fatalf("data plane %s was served: %+v", dp.addr, c)
		}
	}
	out := mustLbctl(t, addr, "--tls-ca", caFile, "--token", "viewer-token-0123456789", "fleet")
	if !strings.Contains(out, "dp-good") || strings.Contains(out, "dp-claimed") || strings.Contains(out, "dp-foreign") {
		t.Fatalf("fleet should list only dp-good:\n%s", out)
	}
	_ = os.Remove(goodKey) // nothing else reads it
}
