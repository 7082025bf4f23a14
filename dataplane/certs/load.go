package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxFileSize bounds a certificate or key file; real ones are a few KiB.
const maxFileSize = 1 << 20

// load reads every configured file and builds an index from them. The
// returned snapshot describes the files as they were just before they were
// read, whether or not loading succeeded.
func (s *Store) load() (*index, snapshot, error) {
	pairs, skipped, dirErr := s.sources()
	snap := statAll(pairs, dirErr)
	if dirErr != nil {
		return nil, snap, dirErr
	}
	for _, msg := range skipped {
		s.log.Warn("ignoring file in TLS certificate directory", "reason", msg)
	}
	entries := make([]*entry, 0, len(pairs))
	var errs []error
	for _, p := range pairs {
		e, err := loadPair(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries = append(entries, e)
	}
	if len(errs) > 0 {
		return nil, snap, errors.Join(errs...)
	}
	idx, err := newIndex(entries)
	return idx, snap, err
}

// sources lists the files to load: the configured pairs, then those found in
// the directory. skipped describes directory entries that look like
// certificate files but are not loaded.
func (s *Store) sources() (pairs []Pair, skipped []string, err error) {
	if s.dir == "" {
		return s.pairs, nil, nil
	}
	found, skipped, err := scanDir(s.dir)
	if err != nil {
		return nil, nil, err
	}
	pairs = make([]Pair, 0, len(s.pairs)+len(found))
	pairs = append(pairs, s.pairs...)
	for _, p := range found {
		if !slices.Contains(s.pairs, p) { // a Pair may name files in Dir
			pairs = append(pairs, p)
		}
	}
	return pairs, skipped, nil
}

// scanDir finds the certificate files of dir, sorted by file name: NAME.crt
// with NAME.key; NAME.pem holding both, or with NAME.key when there is no
// NAME.crt.
func scanDir(dir string) (pairs []Pair, skipped []string, err error) {
	ents, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, nil, fmt.Errorf("certs: certificate directory %s: %w", dir, pathErr(err))
	}
	has := make(map[string]bool, len(ents))
	for _, e := range ents {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			has[e.Name()] = true
		}
	}
	for _, e := range ents {
		name := e.Name()
		if !has[name] {
			continue
		}
		path := filepath.Join(dir, name)
		switch ext := filepath.Ext(name); ext {
		case ".crt":
			base := strings.TrimSuffix(name, ext)
			if !has[base+".key"] {
				skipped = append(skipped, fmt.Sprintf("%s has no %s.key beside it", path, base))
				continue
			}
			pairs = append(pairs, Pair{CertFile: path, KeyFile: filepath.Join(dir, base+".key")})
		case ".pem":
			base := strings.TrimSuffix(name, ext)
			if has[base+".key"] && !has[base+".crt"] {
				pairs = append(pairs, Pair{CertFile: path, KeyFile: filepath.Join(dir, base+".key")})
			} else {
				pairs = append(pairs, Pair{CertFile: path, KeyFile: path})
			}
		case ".key":
			base := strings.TrimSuffix(name, ext)
			if !has[base+".crt"] && !has[base+".pem"] {
				skipped = append(skipped, fmt.Sprintf("%s has no %s.crt or %s.pem beside it", path, base, base))
			}
		}
	}
	return pairs, skipped, nil
}

// loadPair reads and checks one certificate and its key.
func loadPair(p Pair) (*entry, error) {
	combined := p.CertFile == p.KeyFile
	what := "certificate file"
	if combined {
		what = "certificate and key file"
	}
	certPEM, err := readFile(p.CertFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %s %s: %w", what, p.CertFile, err)
	}
	keyPEM := certPEM
	if !combined {
		if keyPEM, err = readFile(p.KeyFile); err != nil {
			return nil, fmt.Errorf("certs: key file %s: %w", p.KeyFile, err)
		}
	}
	chain, err := parseChain(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: %s %s: %w", what, p.CertFile, err)
	}
	if !combined {
		if _, err := pemBlocks(keyPEM); err != nil {
			return nil, fmt.Errorf("certs: key file %s: %w", p.KeyFile, err)
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if combined {
			return nil, fmt.Errorf("certs: %s %s: %w", what, p.CertFile, err)
		}
		return nil, fmt.Errorf("certs: key file %s (for certificate file %s): %w", p.KeyFile, p.CertFile, err)
	}
	if cert.Leaf == nil { // GODEBUG=x509keypairleaf=0
		cert.Leaf = chain[0]
	}
	leaf := cert.Leaf
	e := &entry{
		cert:    &cert,
		certSum: sha256.Sum256(certPEM),
		keySum:  sha256.Sum256(keyPEM),
		info: CertInfo{
			Names:     certNames(leaf),
			Subject:   leaf.Subject.String(),
			Issuer:    leaf.Issuer.String(),
			Serial:    hex.EncodeToString(leaf.SerialNumber.Bytes()),
			NotBefore: leaf.NotBefore,
			NotAfter:  leaf.NotAfter,
			Source:    p.CertFile,
			KeySource: p.KeyFile,
		},
	}
	return e, nil
}

// certNames returns the names leaf is selected by: its DNS names, or its
// subject common name when it has none; lower case, without a final dot.
func certNames(leaf *x509.Certificate) []string {
	names := leaf.DNSNames
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = []string{leaf.Subject.CommonName}
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n = strings.ToLower(strings.TrimSuffix(n, ".")); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// readFile reads a file of at most maxFileSize bytes. Errors do not repeat the
// path.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, pathErr(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, pathErr(err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	return b, nil
}

// pathErr strips the operation and path from a *fs.PathError, which the
// callers name themselves.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseChain parses every CERTIFICATE block of data, leaf first.
func parseChain(data []byte) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(data)
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for _, b := range blocks {
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return chain, nil
}

var pemBegin = []byte("-----BEGIN ")

// pemBlocks decodes every PEM block of data. pem.Decode skips a malformed or
// truncated block silently, which would let a half-written file load with
// part of its chain missing; so every "-----BEGIN " must start a block that
// decodes.
func pemBlocks(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if n := bytes.Count(data, pemBegin); n != len(blocks) {
		return nil, fmt.Errorf("%d of %d PEM blocks are malformed or incomplete (file truncated, or still being written?)", n-len(blocks), n)
	}
	if len(blocks) == 0 {
		return nil, errors.New("no PEM data")
	}
	return blocks, nil
}
