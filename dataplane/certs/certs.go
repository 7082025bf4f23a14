package certs

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Pair names one certificate file and its key file (PEM). The certificate file
// holds the leaf certificate first, then any intermediates. CertFile and
// KeyFile may name the same file when it holds both.
type Pair struct{ CertFile, KeyFile string }

// Config configures a Store.
type Config struct {
	// Pairs are loaded in order; the first is the default certificate.
	Pairs []Pair
	// Dir, when not empty, is a directory from which every NAME.crt that has a
	// NAME.key beside it, and every NAME.pem holding both certificate and key,
	// is loaded, sorted by file name, after Pairs (a NAME.pem with a NAME.key
	// but no NAME.crt beside it holds the certificate only). If Pairs is empty
	// the first of them is the default certificate. Hidden files (".NAME"),
	// directories, other files, files a Pair already names, and a NAME.crt
	// without NAME.key are ignored (a warning is logged for the last). Dir is
	// re-scanned on every Reload.
	Dir string
	// Logger receives the store's log lines. Default: a null logger.
	Logger hclog.Logger
}

// CertInfo describes one loaded certificate.
type CertInfo struct {
	// Names are the names the certificate is selected by: its DNS subject
	// alternative names in lower case, or its subject common name when it has
	// no DNS names.
	Names []string
	// Subject is the certificate's subject distinguished name.
	Subject string
	// Issuer is the certificate's issuer distinguished name.
	Issuer string
	// Serial is the certificate's serial number in hexadecimal.
	Serial string
	// NotBefore and NotAfter bound the certificate's validity.
	NotBefore, NotAfter time.Time
	// Source is the certificate file's path.
	Source string
	// KeySource is the key file's path; equal to Source for a file holding
	// both.
	KeySource string
	// Default is true for the certificate served when no name matches.
	Default bool
}

// Store serves certificates for tls.Config.GetCertificate. It is safe for
// concurrent use; the handshake path does one atomic load of an immutable
// index (no locks, no allocations beyond what crypto/tls needs).
type Store struct {
	pairs []Pair
	dir   string
	log   hclog.Logger

	cur atomic.Pointer[index]

	mu   sync.Mutex // serializes Reload; guards seen
	seen snapshot   // file states the last load attempt read
}

// New loads every configured certificate and returns a Store serving them.
// Any error is returned (naming the file and the reason): a missing or
// unparsable file, a key that does not match its certificate, an unreadable
// Dir, or no certificate at all.
func New(cfg Config) (*Store, error) {
	for i, p := range cfg.Pairs {
		if p.CertFile == "" || p.KeyFile == "" {
			return nil, fmt.Errorf("certs: pair %d (%q, %q): certificate and key file must both be given", i+1, p.CertFile, p.KeyFile)
		}
	}
	s := &Store{pairs: slices.Clone(cfg.Pairs), dir: cfg.Dir, log: cfg.Logger}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	idx, snap, err := s.load()
	if err != nil {
		return nil, err
	}
	s.seen = snap
	s.cur.Store(idx)
	s.logLoaded("TLS certificates loaded", idx)
	return s, nil
}

// GetCertificate returns the certificate for a handshake: the first loaded
// certificate with a DNS name equal to the client's server name (ignoring
// case), else the first with a wildcard name matching it ("*.example.com"
// matches exactly one leading label), else the default certificate. A client
// that sends no server name gets the default certificate. When several
// certificates match equally (for example an ECDSA and an RSA certificate for
// one name), the first the client supports is chosen.
//
// It never returns an error; its signature is tls.Config.GetCertificate's.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	idx := s.cur.Load()
	if hello == nil || hello.ServerName == "" {
		return idx.def, nil
	}
	name := strings.TrimSuffix(hello.ServerName, ".")
	var cands []*tls.Certificate
	if hasUpper(name) {
		// Lower-case into a stack buffer: a map index by string(bytes)
		// does not allocate. No DNS name is longer than maxName, so a longer
		// server name matches nothing.
		var buf [maxName]byte
		if len(name) > len(buf) {
			return idx.def, nil
		}
		b := buf[:len(name)]
		for i := 0; i < len(name); i++ {
			c := name[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b[i] = c
		}
		cands = idx.findBytes(b)
	} else {
		cands = idx.find(name)
	}
	switch len(cands) {
	case 0:
		return idx.def, nil
	case 1:
		return cands[0], nil
	}
	for _, c := range cands {
		if hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return cands[0], nil
}

// Certificates describes every loaded certificate, in load order; the first is
// the default. The result is the caller's to modify.
func (s *Store) Certificates() []CertInfo {
	idx := s.cur.Load()
	out := make([]CertInfo, len(idx.entries))
	for i, e := range idx.entries {
		out[i] = e.info
		out[i].Names = slices.Clone(e.info.Names)
	}
	return out
}

// TLSConfig returns a new server configuration that takes its certificates
// from s: TLS 1.2 or later, ALPN offering "h2" then "http/1.1".
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// Reload re-reads every certificate and key file and re-scans Dir. If any
// file fails to load, the whole old set keeps serving, the error (naming the
// file and the reason) is logged and returned, and changed is false. If every
// file loads and any content, file or the set of files differs from what is
// serving, the new set replaces the old one atomically, it is logged, and
// changed is true; handshakes that already chose a certificate, and
// established connections, are not affected.
//
// Reload is safe to call concurrently with everything, including itself and
// Run (for example from a SIGHUP handler).
func (s *Store) Reload() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx, snap, err := s.load()
	s.seen = snap
	if err != nil {
		s.log.Error("TLS certificate reload failed; keeping the certificates in use", "error", err)
		return false, err
	}
	if sameContent(s.cur.Load(), idx) {
		s.log.Debug("TLS certificates unchanged")
		return false, nil
	}
	s.cur.Store(idx)
	s.logLoaded("TLS certificates reloaded", idx)
	return true, nil
}

// logLoaded logs idx's certificates, one line each.
func (s *Store) logLoaded(msg string, idx *index) {
	s.log.Info(msg, "count", len(idx.entries))
	now := time.Now()
	for _, e := range idx.entries {
		in := e.info
		args := []any{"source", in.Source, "subject", in.Subject, "names", in.Names,
			"serial", in.Serial, "not_after", in.NotAfter.UTC().Format(time.RFC3339), "default", in.Default}
		switch {
		case now.After(in.NotAfter):
			s.log.Warn("TLS certificate has expired", args...)
		case now.Before(in.NotBefore):
			s.log.Warn("TLS certificate is not yet valid", args...)
		case len(in.Names) == 0 && !in.Default:
			s.log.Warn("TLS certificate has no DNS name and is not the default; it will never be served", args...)
		default:
			s.log.Info("TLS certificate", args...)
		}
	}
}

// maxName is the longest DNS name, in its textual form without a final dot.
const maxName = 253

// index is an immutable set of loaded certificates.
type index struct {
	entries  []*entry                      // load order; entries[0] is the default
	def      *tls.Certificate              // entries[0].cert
	exact    map[string][]*tls.Certificate // lower-case DNS name → certificates, load order
	wildcard map[string][]*tls.Certificate // "example.com" of "*.example.com" → certificates
}

// entry is one loaded certificate.
type entry struct {
	cert    *tls.Certificate
	info    CertInfo
	certSum [32]byte // SHA-256 of the certificate file
	keySum  [32]byte // SHA-256 of the key file
}

// find returns the certificates for a lower-case server name.
func (x *index) find(name string) []*tls.Certificate {
	if c, ok := x.exact[name]; ok {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return x.wildcard[name[i+1:]]
	}
	return nil
}

// findBytes is find for a name in a byte slice, without converting it to a
// string (and so without allocating).
func (x *index) findBytes(name []byte) []*tls.Certificate {
	if c, ok := x.exact[string(name)]; ok {
		return c
	}
	if i := bytes.IndexByte(name, '.'); i > 0 {
		return x.wildcard[string(name[i+1:])]
	}
	return nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// newIndex indexes entries; entries[0] becomes the default.
func newIndex(entries []*entry) (*index, error) {
	if len(entries) == 0 {
		return nil, errors.New("certs: no TLS certificate configured")
	}
	x := &index{
		entries:  entries,
		def:      entries[0].cert,
		exact:    make(map[string][]*tls.Certificate),
		wildcard: make(map[string][]*tls.Certificate),
	}
	add := func(m map[string][]*tls.Certificate, key string, c *tls.Certificate) {
		if l := m[key]; len(l) == 0 || l[len(l)-1] != c {
			m[key] = append(l, c)
		}
	}
	for i, e := range entries {
		e.info.Default = i == 0
		for _, n := range e.info.Names {
			switch {
			case strings.HasPrefix(n, "*."):
				if suffix := n[2:]; suffix != "" && !strings.Contains(suffix, "*") {
					add(x.wildcard, suffix, e.cert)
				}
			case strings.Contains(n, "*"):
				// Partial wildcards ("w*.example.com") are not honoured
				// (RFC 6125 section 6.4.3 allows refusing them).
			default:
				add(x.exact, n, e.cert)
			}
		}
	}
	return x, nil
}

// sameContent reports whether a and b hold the same files with the same
// content in the same order.
func sameContent(a, b *index) bool {
	if a == nil || b == nil || len(a.entries) != len(b.entries) {
		return false
	}
	for i, ea := range a.entries {
		eb := b.entries[i]
		if ea.info.Source != eb.info.Source || ea.info.KeySource != eb.info.KeySource ||
			ea.certSum != eb.certSum || ea.keySum != eb.keySum {
			return false
		}
	}
	return true
}
