package certs_test

import (
	"crypto/tls"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lb-project/lb/dataplane/certs"
)

func TestSNISelection(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	def := ca.issue(t, nil, "", "default.example.net")
	wild := ca.issue(t, nil, "", "*.example.com")
	www := ca.issue(t, nil, "", "www.example.com", "alt.example.com")
	api := ca.issue(t, nil, "", "api.example.org")
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{
		writePair(t, dir, "default", def),
		writePair(t, dir, "wild", wild), // before www: exact must still beat it
		writePair(t, dir, "www", www),
		writePair(t, dir, "api", api),
	}})
	addr := startServer(t, s)

	tests := []struct {
		name string
		want leaf
		// verify: the client checks the certificate against the CA and the
		// name (false when the default certificate cannot match the name).
		verify bool
	}{
		{"www.example.com", www, true},
		{"alt.example.com", www, true},
		{"WWW.Example.COM", www, true},
		{"a.example.com", wild, true},
		{"Other.EXAMPLE.com", wild, true},
		{"api.example.org", api, true},
		{"default.example.net", def, true},
		{"example.com", def, false},     // the wildcard needs one label
		{"a.b.example.com", def, false}, // and only one
		{"unknown.example.org", def, false},
		{"unknown.test", def, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := servedSerial(t, addr, ca, tt.name, tt.verify); got.Cmp(tt.want.serial) != 0 {
				t.Fatalf("served serial %x, want %x", got, tt.want.serial)
			}
		})
	}

	t.Run("no SNI", func(t *testing.T) {
		// With no ServerName, and InsecureSkipVerify, the client sends no
		// server name indication, as when dialling an IP address.
		c := mustDial(t, addr, &tls.Config{InsecureSkipVerify: true})
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(def.serial) != 0 {
			t.Fatalf("served serial %x, want default %x", got, def.serial)
		}
	})
	t.Run("IP address", func(t *testing.T) {
		// crypto/tls does not send an IP address as SNI.
		c := mustDial(t, addr, &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true})
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(def.serial) != 0 {
			t.Fatalf("served serial %x, want default %x", got, def.serial)
		}
	})
}

func TestGetCertificateDirect(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	def := ca.issue(t, nil, "", "default.example.net")
	legacy := ca.issue(t, nil, "Legacy.Example.NET") // common name only
	www := ca.issue(t, nil, "", "WWW.Example.com.")  // upper case, final dot
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{
		writePair(t, dir, "default", def),
		writePair(t, dir, "legacy", legacy),
		writePair(t, dir, "www", www),
	}})

	serial := func(c *tls.Certificate) *big.Int { return c.Leaf.SerialNumber }
	tests := []struct {
		hello *tls.ClientHelloInfo
		want  leaf
	}{
		{nil, def},
		{&tls.ClientHelloInfo{}, def},
		{&tls.ClientHelloInfo{ServerName: "legacy.example.net"}, legacy},
		{&tls.ClientHelloInfo{ServerName: "LEGACY.example.net"}, legacy},
		{&tls.ClientHelloInfo{ServerName: "www.example.com"}, www},
		{&tls.ClientHelloInfo{ServerName: "www.example.com."}, www},
		{&tls.ClientHelloInfo{ServerName: "Www.Example.Com."}, www},
		{&tls.ClientHelloInfo{ServerName: ".example.com"}, def},
		{&tls.ClientHelloInfo{ServerName: strings.Repeat("A.", 200) + "example.com"}, def},
	}
	for _, tt := range tests {
		c, err := s.GetCertificate(tt.hello)
		if err != nil {
			t.Fatal(err)
		}
		if serial(c).Cmp(tt.want.serial) != 0 {
			name := "<nil>"
			if tt.hello != nil {
				name = tt.hello.ServerName
			}
			t.Errorf("GetCertificate(%.40q) = serial %x, want %x", name, serial(c), tt.want.serial)
		}
	}

	infos := s.Certificates()
	if got := infos[1].Names; !slices.Equal(got, []string{"legacy.example.net"}) {
		t.Errorf("legacy Names = %q", got)
	}
	if got := infos[2].Names; !slices.Equal(got, []string{"www.example.com"}) {
		t.Errorf("www Names = %q", got)
	}
}

func TestDuplicateNames(t *testing.T) {
	// Two certificates for one name: the first loaded that the client
	// supports wins.
	ca := newCA(t)
	dir := t.TempDir()
	first := ca.issue(t, nil, "", "dup.example.com")
	second := ca.issue(t, nil, "", "dup.example.com")
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{writePair(t, dir, "a", first), writePair(t, dir, "b", second)}})
	addr := startServer(t, s)
	if got := servedSerial(t, addr, ca, "dup.example.com", true); got.Cmp(first.serial) != 0 {
		t.Fatalf("served serial %x, want the first loaded %x", got, first.serial)
	}
}

func TestDirectory(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	b := ca.issue(t, nil, "", "b.example.com")
	a := ca.issue(t, nil, "", "a.example.com")           // a.pem: certificate and key
	c := ca.issue(t, nil, "", "c.example.com")           // c.pem with c.key
	stray := ca.issue(t, nil, "", "stray.example.com")   // no key: ignored
	hidden := ca.issue(t, nil, "", "hidden.example.com") // hidden: ignored
	writePair(t, dir, "b", b)
	writeFile(t, filepath.Join(dir, "a.pem"), a.combined())
	writeFile(t, filepath.Join(dir, "c.pem"), c.certPEM)
	writeFile(t, filepath.Join(dir, "c.key"), c.keyPEM)
	writeFile(t, filepath.Join(dir, "stray.crt"), stray.certPEM)
	writeFile(t, filepath.Join(dir, ".hidden.pem"), hidden.combined())
	writeFile(t, filepath.Join(dir, "README.txt"), []byte("not a certificate"))
	if err := os.Mkdir(filepath.Join(dir, "sub.pem"), 0o755); err != nil {
		t.Fatal(err)
	}

	var logs logBuffer
	s := mustNew(t, certs.Config{Dir: dir, Logger: newLogger(&logs)})
	infos := s.Certificates()
	var got []string
	for _, in := range infos {
		got = append(got, filepath.Base(in.Source)+"+"+filepath.Base(in.KeySource))
	}
	if want := []string{"a.pem+a.pem", "b.crt+b.key", "c.pem+c.key"}; !slices.Equal(got, want) {
		t.Fatalf("loaded %q, want %q", got, want)
	}
	for i, in := range infos {
		if in.Default != (i == 0) {
			t.Errorf("%s: Default = %v", in.Source, in.Default)
		}
	}
	if len(logs.lines("WARN", "stray.crt")) != 1 {
		t.Errorf("no warning about stray.crt; log:\n%s", logs.String())
	}

	addr := startServer(t, s)
	for _, tt := range []struct {
		name   string
		want   leaf
		verify bool
	}{
		{"a.example.com", a, true},
		{"b.example.com", b, true},
		{"c.example.com", c, true},
		{"stray.example.com", a, false},
		{"hidden.example.com", a, false},
	} {
		if got := servedSerial(t, addr, ca, tt.name, tt.verify); got.Cmp(tt.want.serial) != 0 {
			t.Errorf("%s: served serial %x, want %x", tt.name, got, tt.want.serial)
		}
	}

	// Reload re-scans the directory: a new pair is served, a removed one is
	// not.
	d := ca.issue(t, nil, "", "d.example.com")
	writePair(t, dir, "d", d)
	if err := os.Remove(filepath.Join(dir, "b.crt")); err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Reload(); err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want true, nil", changed, err)
	}
	if got := servedSerial(t, addr, ca, "d.example.com", true); got.Cmp(d.serial) != 0 {
		t.Errorf("d.example.com: served serial %x, want %x", got, d.serial)
	}
	if got := servedSerial(t, addr, ca, "b.example.com", false); got.Cmp(a.serial) != 0 {
		t.Errorf("b.example.com after removal: served serial %x, want default %x", got, a.serial)
	}
}

func TestPairsBeforeDirectory(t *testing.T) {
	ca := newCA(t)
	dir, pairDir := t.TempDir(), t.TempDir()
	a := ca.issue(t, nil, "", "a.example.com")
	z := ca.issue(t, nil, "", "z.example.com")
	writePair(t, dir, "a", a)
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{writePair(t, pairDir, "z", z)}, Dir: dir})
	infos := s.Certificates()
	if len(infos) != 2 || !infos[0].Default || infos[0].Serial != hex.EncodeToString(z.serial.Bytes()) || infos[1].Default {
		t.Fatalf("Certificates = %+v; want z (default) then a", infos)
	}
	addr := startServer(t, s)
	if got := servedSerial(t, addr, ca, "other.example.com", false); got.Cmp(z.serial) != 0 {
		t.Fatalf("default: served serial %x, want %x", got, z.serial)
	}
}

func TestCertificates(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	l := ca.issue(t, nil, "", "one.example.com", "*.two.example.com")
	p := writePair(t, dir, "one", l)
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{p}})
	infos := s.Certificates()
	if len(infos) != 1 {
		t.Fatalf("%d certificates, want 1", len(infos))
	}
	in := infos[0]
	leafCert := mustLeaf(t, s, "one.example.com").Leaf
	if !slices.Equal(in.Names, []string{"one.example.com", "*.two.example.com"}) || in.Source != p.CertFile ||
		in.KeySource != p.KeyFile || !in.Default || !in.NotAfter.Equal(leafCert.NotAfter) ||
		!strings.Contains(in.Subject, "CN=one.example.com") || !strings.Contains(in.Issuer, "certs test CA") {
		t.Fatalf("CertInfo = %+v", in)
	}
	in.Names[0] = "changed"
	if s.Certificates()[0].Names[0] != "one.example.com" {
		t.Fatal("Certificates shares its Names with the store")
	}
}

func mustLeaf(t *testing.T, s *certs.Store, name string) *tls.Certificate {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestALPNAndVersions(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{writePair(t, dir, "www", ca.issue(t, nil, "", "www.example.com"))}})
	addr := startServer(t, s)

	for _, tt := range []struct {
		offer []string
		want  string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1", "h2"}, "h2"}, // the server's preference
		{[]string{"http/1.1"}, "http/1.1"},
		{nil, ""},
	} {
		cfg := ca.clientConfig("www.example.com")
		cfg.NextProtos = tt.offer
		c := mustDial(t, addr, cfg)
		if got := c.ConnectionState().NegotiatedProtocol; got != tt.want {
			t.Errorf("offering %q: negotiated %q, want %q", tt.offer, got, tt.want)
		}
		c.Close()
	}

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := ca.clientConfig("www.example.com")
		cfg.MinVersion, cfg.MaxVersion = v, v
		c := mustDial(t, addr, cfg)
		if got := c.ConnectionState().Version; got != v {
			t.Errorf("version %s: negotiated %s", tls.VersionName(v), tls.VersionName(got))
		}
		c.Close()
	}

	cfg := ca.clientConfig("www.example.com")
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := dial(t, addr, cfg); err == nil {
		t.Fatalf("a TLS 1.1 client connected, with %s", tls.VersionName(c.ConnectionState().Version))
	}

	if got := s.TLSConfig(); got.MinVersion != tls.VersionTLS12 || !slices.Equal(got.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("TLSConfig = MinVersion %x, NextProtos %q", got.MinVersion, got.NextProtos)
	}
}

func TestReload(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	def := ca.issue(t, nil, "", "default.example.net")
	old := ca.issue(t, nil, "", "www.example.com")
	p := writePair(t, dir, "www", old)
	var logs logBuffer
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{writePair(t, dir, "default", def), p}, Logger: newLogger(&logs)})
	addr := startServer(t, s)
	cfg := ca.clientConfig("www.example.com")

	before := mustDial(t, addr, cfg)
	echo(t, before, "before reload")
	if got := before.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(old.serial) != 0 {
		t.Fatalf("served serial %x, want %x", got, old.serial)
	}

	if changed, err := s.Reload(); err != nil || changed {
		t.Fatalf("Reload of unchanged files = %v, %v; want false, nil", changed, err)
	}

	// A new certificate for the same name and key, written in place.
	renewed := ca.issue(t, old.key, "", "www.example.com")
	writeFile(t, p.CertFile, renewed.certPEM)
	if changed, err := s.Reload(); err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want true, nil", changed, err)
	}
	if got := servedSerial(t, addr, ca, "www.example.com", true); got.Cmp(renewed.serial) != 0 {
		t.Fatalf("after reload: served serial %x, want %x", got, renewed.serial)
	}
	echo(t, before, "after reload") // the old connection is unaffected
	wantSerial := hex.EncodeToString(renewed.serial.Bytes())
	if len(logs.lines("INFO", p.CertFile, wantSerial, "not_after=")) != 1 {
		t.Errorf("reload not logged with the new certificate; log:\n%s", logs.String())
	}

	// Broken files: the error names the file, the old set keeps serving.
	other := ca.issue(t, nil, "", "www.example.com")
	half := renewed.certPEM[:len(renewed.certPEM)/2]
	chainCut := append(append([]byte(nil), renewed.certPEM...), ca.pem[:len(ca.pem)-40]...)
	for _, tt := range []struct {
		name       string
		file, data string
		wantErr    []string
	}{
		{"garbage certificate", p.CertFile, "garbage", []string{p.CertFile, "no PEM data"}},
		{"half-written certificate", p.CertFile, string(half), []string{p.CertFile, "incomplete"}},
		{"truncated chain", p.CertFile, string(chainCut), []string{p.CertFile, "incomplete"}},
		{"empty certificate", p.CertFile, "", []string{p.CertFile}},
		{"garbage key", p.KeyFile, "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n", []string{p.KeyFile}},
		{"mismatched key", p.KeyFile, string(other.keyPEM), []string{p.KeyFile, p.CertFile, "does not match"}},
		{"certificate only, rotated before its key", p.CertFile, string(other.certPEM), []string{p.KeyFile, "does not match"}},
		{"missing key", p.KeyFile, "", []string{p.KeyFile, "no such file"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			saved, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "missing key" {
				if err := os.Remove(tt.file); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, tt.file, []byte(tt.data))
			}
			changed, err := s.Reload()
			if err == nil || changed {
				t.Fatalf("Reload = %v, %v; want an error", changed, err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if len(logs.lines("ERROR", tt.wantErr[0])) == 0 {
				t.Errorf("error not logged; log:\n%s", logs.String())
			}
			if got := servedSerial(t, addr, ca, "www.example.com", true); got.Cmp(renewed.serial) != 0 {
				t.Fatalf("served serial %x, want the old %x", got, renewed.serial)
			}
			if got := servedSerial(t, addr, ca, "default.example.net", true); got.Cmp(def.serial) != 0 {
				t.Fatalf("default: served serial %x, want %x", got, def.serial)
			}
			writeFile(t, tt.file, saved)
			if changed, err := s.Reload(); err != nil || changed {
				t.Fatalf("Reload after restoring = %v, %v; want false, nil", changed, err)
			}
		})
	}
	echo(t, before, "still open")
}

func TestPairInDirectoryLoadedOnce(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	a := writePair(t, dir, "a", ca.issue(t, nil, "", "a.example.com"))
	writePair(t, dir, "b", ca.issue(t, nil, "", "b.example.com"))
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{{CertFile: filepath.Join(dir, "b.crt"), KeyFile: filepath.Join(dir, "b.key")}}, Dir: dir})
	var got []string
	for _, in := range s.Certificates() {
		got = append(got, filepath.Base(in.Source))
	}
	if want := []string{"b.crt", filepath.Base(a.CertFile)}; !slices.Equal(got, want) {
		t.Fatalf("loaded %q, want %q", got, want)
	}
}
