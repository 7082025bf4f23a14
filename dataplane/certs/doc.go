// Package certs is the data plane's downstream TLS certificate store: it loads
// the certificates the proxy listener presents to clients, picks one per
// handshake by SNI, and reloads them from disk without a restart.
//
// Data flow:
//
//	files: --tls-cert/--tls-key pairs, then --tls-dir DIR
//	  │
//	  │  New; Reload (on SIGHUP, by the caller; by Run when a file's stat changes)
//	  ▼
//	load: read, parse, check every file (all or nothing)
//	  │
//	  │  one atomic store, only when some content changed
//	  ▼
//	immutable index: exact names, wildcard suffixes, default certificate
//	  ▲
//	  │  one atomic load per handshake
//	  │
//	GetCertificate ◀── crypto/tls (the listener's tls.Config, from TLSConfig)
//
// New loads every configured file and builds an immutable index: a map from
// each certificate's DNS names (lower case) to the certificates, a map from the
// suffix of each "*.suffix" wildcard name, and the default certificate (the
// first one loaded: the first Pair, else the first file of Dir by name). A
// certificate without DNS names is indexed under its subject common name. In
// Dir, NAME.crt is paired with NAME.key, and NAME.pem holds both certificate
// and key (or, when there is a NAME.key but no NAME.crt, the certificate
// only).
//
// GetCertificate, called by crypto/tls for every handshake, does one atomic
// load of the current index and at most two map lookups: the exact server name
// (case-insensitively), then the wildcard whose suffix follows the name's first
// label (RFC 6125: "*" matches exactly one whole label, so *.example.com
// matches a.example.com but neither example.com nor a.b.example.com). Without
// a match, or without SNI (clients that dial an IP address send none), the
// default certificate is served. It takes no lock and does not allocate.
// (Only when several certificates match one name equally, for example an RSA
// and an ECDSA one, it asks tls.ClientHelloInfo.SupportsCertificate which of
// them the client accepts.)
//
// Reload re-reads every file and re-scans Dir and builds a new index. It is all
// or nothing: if any file is missing, unparsable, truncated (for example still
// being written) or its key does not match its certificate (for example a
// rotation that has replaced the certificate but not yet the key), the whole
// old index keeps serving, the error is logged naming the file, and Reload
// returns it. Otherwise, if any file's content differs, the new index replaces
// the old one with a single atomic store. Handshakes already under way, and
// connections already established, keep the certificate they started with;
// only new handshakes see the new index.
//
// Run polls the files' modification times, sizes and identities (and the
// listing of Dir) and calls Reload when any of them differs from what the last
// Reload saw. A failed Reload is retried when the files change again, so a
// half-written file is picked up once its writer finishes. On file systems
// whose modification times are coarse, a rewrite of a file with content of the
// same size within one time-stamp tick may go unnoticed by Run; a SIGHUP
// (Reload) always re-reads everything.
package certs
