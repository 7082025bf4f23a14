package poolspec

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// Protocol is the protocol spoken to a pool's backends.
type Protocol string

// Protocols. ProtocolAuto picks per request: HTTP/2 for gRPC, HTTP/1.1 otherwise.
const (
	ProtocolAuto  Protocol = ""
	ProtocolHTTP1 Protocol = "http1"
	ProtocolH2    Protocol = "h2"
	ProtocolH2C   Protocol = "h2c"
)

// Upstream says how data planes connect to a pool's backends. The zero value
// is plain HTTP with the protocol chosen per request and the client's Host.
type Upstream struct {
	Protocol           Protocol `json:"protocol,omitempty"`
	TLS                bool     `json:"tls,omitempty"`
	SNI                string   `json:"sni,omitempty"`
	CAPEM              string   `json:"ca_pem,omitempty"`
	InsecureSkipVerify bool     `json:"insecure_skip_verify,omitempty"`
	ClientCertPEM      string   `json:"client_cert_pem,omitempty"`
	ClientKeyPEM       string   `json:"client_key_pem,omitempty"`
	HostHeader         string   `json:"host_header,omitempty"`
}

// IsZero reports whether u is the default.
func (u Upstream) IsZero() bool { return u == Upstream{} }

// NormalizeUpstream validates u (field paths under prefix, e.g.
// "pool.upstream") and returns it in canonical form.
func NormalizeUpstream(prefix string, u Upstream) (Upstream, error) {
	var errs Errors
	add := func(field, value, reason string, args ...any) {
		errs = append(errs, fieldErr(prefix+"."+field, value, reason, args...))
	}
	switch u.Protocol {
	case ProtocolAuto, ProtocolHTTP1:
	case ProtocolH2:
		if !u.TLS {
			add("protocol", string(u.Protocol), "HTTP/2 over TLS needs tls; use h2c for cleartext HTTP/2")
		}
	case ProtocolH2C:
		if u.TLS {
			add("protocol", string(u.Protocol), "h2c is cleartext HTTP/2 and cannot be used with tls; use h2")
		}
	default:
		add("protocol", string(u.Protocol), "must be one of http1, h2, h2c (or empty for automatic)")
	}
	if u.SNI != "" {
		sni := strings.ToLower(strings.TrimSuffix(u.SNI, "."))
		if strings.HasPrefix(sni, "*.") {
			add("sni", u.SNI, "must be a host name, not a wildcard")
		} else if err := checkDNSName(sni); err != nil {
			add("sni", u.SNI, "%s", err.Error())
		}
		u.SNI = sni
	}
	if !u.TLS {
		for _, f := range []struct {
			name string
			set  bool
		}{{"sni", u.SNI != ""}, {"ca_pem", u.CAPEM != ""}, {"insecure_skip_verify", u.InsecureSkipVerify},
			{"client_cert_pem", u.ClientCertPEM != ""}, {"client_key_pem", u.ClientKeyPEM != ""}} {
			if f.set {
				add(f.name, "", "only applies with tls; enable upstream TLS too")
			}
		}
	}
	if u.CAPEM != "" {
		if u.InsecureSkipVerify {
			add("insecure_skip_verify", "true", "cannot be combined with ca_pem: a CA is only useful when certificates are verified")
		}
		if err := checkCAPEM(u.CAPEM); err != nil {
			add("ca_pem", abbreviate(u.CAPEM), "%s", err.Error())
		}
	}
	switch {
	case u.ClientCertPEM != "" && u.ClientKeyPEM == "":
		add("client_key_pem", "", "is required with client_cert_pem")
	case u.ClientCertPEM == "" && u.ClientKeyPEM != "":
		add("client_cert_pem", "", "is required with client_key_pem")
	case u.ClientCertPEM != "":
		if _, err := tls.X509KeyPair([]byte(u.ClientCertPEM), []byte(u.ClientKeyPEM)); err != nil {
			add("client_cert_pem", abbreviate(u.ClientCertPEM), "is not a valid certificate and key pair: %v", err)
		}
	}
	if u.HostHeader != "" {
		if err := checkHostHeader(u.HostHeader); err != nil {
			add("host_header", u.HostHeader, "%s", err.Error())
		}
	}
	if len(errs) > 0 {
		return Upstream{}, errs
	}
	return u, nil
}

// checkCAPEM checks that s holds at least one PEM certificate and nothing
// that is not one.
func checkCAPEM(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a %s block; only CERTIFICATE blocks belong in a CA bundle", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d does not parse: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("holds no PEM certificate")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("has trailing data that is not PEM")
	}
	return nil
}

// checkHostHeader checks a Host header value: a host name or IP, with an
// optional port.
func checkHostHeader(h string) error {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '@' || c == '?' || c == '#' {
			return fmt.Errorf("must be a host name with an optional port, without spaces or control characters")
		}
	}
	return nil
}

// abbreviate shortens long values (PEM blocks) for error messages.
func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
