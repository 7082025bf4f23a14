package certs_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lb-project/lb/dataplane/certs"
)

func TestRun(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certDir := t.TempDir()
	old := ca.issue(t, nil, "", "www.example.com")
	p := writePair(t, dir, "www", old)
	var logs logBuffer
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{p}, Dir: certDir, Logger: newLogger(&logs)})
	addr := startServer(t, s)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx, 50*time.Millisecond) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	serves := func(name string, l leaf) func() bool {
		return func() bool { return servedSerial(t, addr, ca, name, false).Cmp(l.serial) == 0 }
	}

	// A renewed certificate renamed into place (same key).
	renewed := ca.issue(t, old.key, "", "www.example.com")
	replaceFile(t, p.CertFile, renewed.certPEM)
	eventually(t, "the renewed certificate", serves("www.example.com", renewed))

	// A new certificate and key, each renamed into place: the certificate first.
	// In between, the pair does not match; Run keeps the old one serving.
	rotated := ca.issue(t, nil, "", "www.example.com")
	replaceFile(t, p.CertFile, rotated.certPEM)
	eventually(t, "the mismatch to be logged", func() bool {
		return len(logs.lines("ERROR", p.KeyFile, "does not match")) > 0
	})
	if !serves("www.example.com", renewed)() {
		t.Fatal("a mismatched pair replaced the serving certificate")
	}
	replaceFile(t, p.KeyFile, rotated.keyPEM)
	eventually(t, "the rotated certificate", serves("www.example.com", rotated))

	// A file added to the directory.
	added := ca.issue(t, nil, "", "added.example.com")
	replaceFile(t, filepath.Join(certDir, "added.pem"), added.combined())
	eventually(t, "the added certificate", serves("added.example.com", added))

	// A broken file keeps the old certificate serving; repaired, it is
	// picked up.
	replaceFile(t, p.CertFile, []byte("garbage"))
	eventually(t, "the broken file to be logged", func() bool {
		return len(logs.lines("ERROR", p.CertFile, "no PEM data")) > 0
	})
	if !serves("www.example.com", rotated)() {
		t.Fatal("a broken file replaced the serving certificate")
	}
	replaceFile(t, p.CertFile, renewed.certPEM) // renewed matches old.key, not rotated's
	replaceFile(t, p.KeyFile, old.keyPEM)
	eventually(t, "the repaired certificate", serves("www.example.com", renewed))

	cancel()
	wg.Wait() // Run returns when ctx is done
}

func TestRunStopsWithContext(t *testing.T) {
	ca := newCA(t)
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{writePair(t, t.TempDir(), "a", ca.issue(t, nil, "", "a.example.com"))}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx, 0) // returns at once
}

func TestNewErrors(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	good := writePair(t, dir, "good", ca.issue(t, nil, "", "good.example.com"))
	other := ca.issue(t, nil, "", "other.example.com")
	garbage := filepath.Join(dir, "garbage.crt")
	writeFile(t, garbage, []byte("this is not PEM"))
	otherKey := filepath.Join(dir, "other.key")
	writeFile(t, otherKey, other.keyPEM)
	missing := filepath.Join(dir, "missing.crt")
	combinedNoKey := filepath.Join(dir, "nokey.pem")
	writeFile(t, combinedNoKey, other.certPEM)
	emptyDir := t.TempDir()
	badDir := t.TempDir()
	writeFile(t, filepath.Join(badDir, "bad.pem"), []byte("garbage"))

	for _, tt := range []struct {
		name    string
		cfg     certs.Config
		wantErr []string
	}{
		{"nothing", certs.Config{}, []string{"no TLS certificate"}},
		{"missing certificate", certs.Config{Pairs: []certs.Pair{good, {missing, good.KeyFile}}}, []string{missing, "no such file"}},
		{"missing key", certs.Config{Pairs: []certs.Pair{{good.CertFile, missing}}}, []string{missing, "no such file"}},
		{"garbage certificate", certs.Config{Pairs: []certs.Pair{{garbage, good.KeyFile}}}, []string{garbage, "no PEM data"}},
		{"garbage key", certs.Config{Pairs: []certs.Pair{{good.CertFile, garbage}}}, []string{garbage, "no PEM data"}},
		{"mismatched key", certs.Config{Pairs: []certs.Pair{{good.CertFile, otherKey}}}, []string{otherKey, good.CertFile, "does not match"}},
		{"combined file without key", certs.Config{Pairs: []certs.Pair{{combinedNoKey, combinedNoKey}}}, []string{combinedNoKey, "key"}},
		{"empty key name", certs.Config{Pairs: []certs.Pair{{good.CertFile, ""}}}, []string{good.CertFile, "must both be given"}},
		{"missing directory", certs.Config{Dir: filepath.Join(dir, "nodir")}, []string{filepath.Join(dir, "nodir"), "no such file"}},
		{"empty directory", certs.Config{Dir: emptyDir}, []string{"no TLS certificate"}},
		{"bad file in directory", certs.Config{Pairs: []certs.Pair{good}, Dir: badDir}, []string{filepath.Join(badDir, "bad.pem")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := certs.New(tt.cfg)
			if err == nil {
				t.Fatalf("New succeeded with %d certificates", len(s.Certificates()))
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestGetCertificateAllocs(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{
		writePair(t, dir, "default", ca.issue(t, nil, "", "default.example.net")),
		writePair(t, dir, "www", ca.issue(t, nil, "", "www.example.com")),
		writePair(t, dir, "wild", ca.issue(t, nil, "", "*.example.org")),
	}})
	for _, name := range []string{"www.example.com", "WWW.Example.Com", "a.example.org", "A.Example.ORG", "unknown.test", ""} {
		hello := &tls.ClientHelloInfo{ServerName: name}
		if n := testing.AllocsPerRun(1000, func() {
			if c, err := s.GetCertificate(hello); c == nil || err != nil {
				panic("no certificate")
			}
		}); n != 0 {
			t.Errorf("GetCertificate(%q) allocates %v times", name, n)
		}
	}
}

// TestConcurrentReload runs handshakes, lookups and Certificates while
// certificates are swapped, for the race detector.
func TestConcurrentReload(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	l1 := ca.issue(t, nil, "", "www.example.com")
	l2 := ca.issue(t, l1.key, "", "www.example.com")
	p := writePair(t, dir, "www", l1)
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{p}})
	addr := startServer(t, s)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx, time.Millisecond) })
	for range 2 {
		wg.Go(func() {
			hello := &tls.ClientHelloInfo{ServerName: "www.example.com"}
			for ctx.Err() == nil {
				c, _ := s.GetCertificate(hello)
				if sn := c.Leaf.SerialNumber; sn.Cmp(l1.serial) != 0 && sn.Cmp(l2.serial) != 0 {
					panic("unexpected certificate")
				}
				_ = s.Certificates()
			}
		})
	}
	for i := range 20 {
		l := l1
		if i%2 == 0 {
			l = l2
		}
		replaceFile(t, p.CertFile, l.certPEM)
		if _, err := s.Reload(); err != nil {
			t.Error(err)
		}
		c := mustDial(t, addr, ca.clientConfig("www.example.com"))
		echo(t, c, "ping")
		c.Close()
	}
	cancel()
	wg.Wait()
}

// TestPollRetriesOnChange checks Run's tick: it reloads only when the files
// change, so a broken file is logged once and retried once it changes.
func TestPollRetriesOnChange(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	old := ca.issue(t, nil, "", "www.example.com")
	p := writePair(t, t.TempDir(), "www", old)
	var logs logBuffer
	s := mustNew(t, certs.Config{Pairs: []certs.Pair{p}, Dir: dir, Logger: newLogger(&logs)})
	serial := func() string { return s.Certificates()[0].Serial }
	oldSerial := serial()

	if s.Poll() {
		t.Fatal("Poll reloaded unchanged files")
	}
	replaceFile(t, p.CertFile, []byte("garbage"))
	if !s.Poll() {
		t.Fatal("Poll did not notice a replaced file")
	}
	for range 3 {
		if s.Poll() {
			t.Fatal("Poll retried a broken file that did not change")
		}
	}
	if n := len(logs.lines("ERROR", p.CertFile, "no PEM data")); n != 1 {
		t.Errorf("the broken file was logged %d times, want once; log:\n%s", n, logs.String())
	}
	if serial() != oldSerial {
		t.Fatal("a broken file replaced the serving certificate")
	}

	renewed := ca.issue(t, old.key, "", "www.example.com")
	replaceFile(t, p.CertFile, renewed.certPEM)
	if !s.Poll() || serial() == oldSerial {
		t.Fatal("Poll did not load the repaired file")
	}

	// A file added to, then removed from, the directory is a change.
	extra := filepath.Join(dir, "extra.pem")
	writeFile(t, extra, ca.issue(t, nil, "", "extra.example.com").combined())
	if !s.Poll() || len(s.Certificates()) != 2 {
		t.Fatalf("Poll did not load an added file: %d certificates", len(s.Certificates()))
	}
	if err := os.Remove(extra); err != nil {
		t.Fatal(err)
	}
	if !s.Poll() || len(s.Certificates()) != 1 {
		t.Fatalf("Poll did not notice a removed file: %d certificates", len(s.Certificates()))
	}

	// Reload (SIGHUP) records what it read, so the next tick does not repeat
	// it.
	replaceFile(t, p.CertFile, old.certPEM)
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload = %v, %v", changed, err)
	}
	if s.Poll() {
		t.Fatal("Poll repeated the Reload")
	}
}
