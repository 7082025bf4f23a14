// Package poolspec holds the rules for what a valid pool is: its name, routes,
// backend addresses and weights. The control plane applies them at its API
// boundary before anything is stored; the data plane applies them again to
// every configuration it receives before it builds a routing table, so that
// neither side trusts the other blindly.
//
// Validators return normalized values (lower-case host names, canonical
// HOST:PORT addresses) so that equal things compare equal.
package poolspec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Limits of the configuration model.
const (
	// MaxNameLen is the longest pool name.
	MaxNameLen = 63
	// MinWeight and MaxWeight bound a backend's weight.
	MinWeight = 1
	MaxWeight = 10000
	// DefaultWeight is the weight of a backend added without one.
	DefaultWeight = 1
	// MaxBackends is the most backends one pool may hold.
	MaxBackends = 10000
	// MaxHosts is the most host names one pool may list.
	MaxHosts = 100
	// MaxPathPrefixLen is the longest path prefix.
	MaxPathPrefixLen = 1024
)

// FieldError says which field of a request is invalid, with which value and why.
// Its message reads `field "value": reason`.
type FieldError struct {
	// Field is the path of the field, e.g. "pool.backends[2].address".
	Field string
	// Value is the offending value as given.
	Value string
	// Reason says what is wrong, in words a person can act on.
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// Errors is a non-empty list of field errors. Its message is the first error's,
// followed by a count of the others.
type Errors []*FieldError

// Error implements error.
func (es Errors) Error() string {
	switch len(es) {
	case 0:
		return "no errors"
	case 1:
		return es[0].Error()
	default:
		return fmt.Sprintf("%s (and %d more invalid fields)", es[0].Error(), len(es)-1)
	}
}

// AsFieldErrors returns the field errors carried by err, if any.
func AsFieldErrors(err error) []*FieldError {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return []*FieldError{fe}
	}
	return nil
}

func fieldErr(field, value, reason string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: value, Reason: fmt.Sprintf(reason, args...)}
}

// ValidateName checks a pool name: 1 to 63 characters of a-z, 0-9, '-', '_'
// and '.', beginning and ending with a letter or digit.
func ValidateName(field, name string) error {
	if name == "" {
		return fieldErr(field, name, "must not be empty")
	}
	if len(name) > MaxNameLen {
		return fieldErr(field, name, "must be at most %d characters, not %d", MaxNameLen, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if (c == '-' || c == '_' || c == '.') && i > 0 && i < len(name)-1 {
			continue
		}
		return fieldErr(field, name, "may hold only a-z, 0-9, '-', '_' and '.', and must begin and end with a letter or digit")
	}
	return nil
}

// NormalizeHost checks a route host name and returns it in lower case. It
// accepts a DNS name ("api.example.com"), a wildcard covering every subdomain
// of a name ("*.example.com") or an IP address; never a port.
func NormalizeHost(field, host string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "" {
		return "", fieldErr(field, host, "must not be empty")
	}
	if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		if ip.Zone() != "" {
			return "", fieldErr(field, host, "must not carry an IPv6 zone")
		}
		return ip.String(), nil
	}
	if strings.Contains(h, "%") {
		return "", fieldErr(field, host, "must not carry an IPv6 zone")
	}
	if strings.Contains(h, ":") {
		return "", fieldErr(field, host, "must be a host name without a port")
	}
	name := h
	if strings.HasPrefix(h, "*.") {
		name = h[2:]
	}
	if err := checkDNSName(name); err != nil {
		return "", fieldErr(field, host, "%s", err.Error())
	}
	return h, nil
}

// checkDNSName checks the syntax of a DNS name (RFC 1123 labels; underscores
// allowed, as real names use them).
func checkDNSName(name string) error {
	if len(name) > 253 {
		return fmt.Errorf("is longer than 253 characters")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return fmt.Errorf("has an empty label; write it like api.example.com or *.example.com")
		}
		if len(label) > 63 {
			return fmt.Errorf("has a label longer than 63 characters")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' ||
				c == '-' && i > 0 && i < len(label)-1
			if !ok {
				if c == '*' {
					return fmt.Errorf("may only use '*' as its whole first label, as in *.example.com")
				}
				return fmt.Errorf("is not a valid host name: %q is not allowed there", string(c))
			}
		}
	}
	return nil
}

// ValidatePathPrefix checks a route path prefix: empty, or beginning with "/",
// without spaces, control characters, '?' or '#'.
func ValidatePathPrefix(field, prefix string) error {
	if prefix == "" {
		return nil
	}
	if prefix[0] != '/' {
		return fieldErr(field, prefix, "must begin with \"/\"")
	}
	if len(prefix) > MaxPathPrefixLen {
		return fieldErr(field, prefix, "must be at most %d characters", MaxPathPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return fieldErr(field, prefix, "must not contain spaces, control characters, '?' or '#'")
		}
	}
	return nil
}

// NormalizeAddress checks a backend address, HOST:PORT, and returns it in
// canonical form: host in lower case, IPv6 in brackets, port without leading
// zeros.
func NormalizeAddress(field, addr string) (string, error) {
	if addr == "" {
		return "", fieldErr(field, addr, "must not be empty; write it as HOST:PORT, e.g. 10.0.0.5:8080")
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fieldErr(field, addr, "must be HOST:PORT, e.g. 10.0.0.5:8080 or [2001:db8::1]:8080")
	}
	if host == "" {
		return "", fieldErr(field, addr, "has no host; write it as HOST:PORT, e.g. 10.0.0.5:8080")
	}
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil {
		return "", fieldErr(field, addr, "port %q is not a number", portStr)
	}
	if port < 1 || port > 65535 {
		return "", fieldErr(field, addr, "port %d is out of range 1-65535", port)
	}
	host = strings.TrimSuffix(host, ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return "", fieldErr(field, addr, "must not carry an IPv6 zone")
		}
		if ip.Unmap().IsUnspecified() {
			return "", fieldErr(field, addr, "host %s is the unspecified address; give a reachable address", host)
		}
		return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10)), nil
	}
	lower := strings.ToLower(host)
	if err := checkDNSName(lower); err != nil {
		return "", fieldErr(field, addr, "host %s", err.Error())
	}
	return net.JoinHostPort(lower, strconv.FormatUint(port, 10)), nil
}

// ValidateWeight checks a backend weight: MinWeight to MaxWeight.
func ValidateWeight(field string, w int64) error {
	if w < MinWeight || w > MaxWeight {
		return fieldErr(field, strconv.FormatInt(w, 10), "must be between %d and %d", MinWeight, MaxWeight)
	}
	return nil
}
