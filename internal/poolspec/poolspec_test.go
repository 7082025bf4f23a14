package poolspec_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lb-project/lb/internal/poolspec"
)

// Reasons shared by several cases.
const (
	nameCharsReason  = "may hold only a-z, 0-9, '-', '_' and '.', and must begin and end with a letter or digit"
	emptyLabelReason = "has an empty label; write it like api.example.com or *.example.com"
	starReason       = "may only use '*' as its whole first label, as in *.example.com"
	hostPortReason   = "must be HOST:PORT, e.g. 10.0.0.5:8080 or [2001:db8::1]:8080"
	pathCharsReason  = "must not contain spaces, control characters, '?' or '#'"
	weightReason     = "must be between 1 and 10000"
)

// checkFieldErr reports whether err is exactly one *FieldError equal to want,
// with the message `field "value": reason`. A nil want means err must be nil.
func checkFieldErr(t *testing.T, err error, want *poolspec.FieldError) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("error = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("error = nil, want %v", want)
	}
	var fe *poolspec.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	if *fe != *want {
		t.Fatalf("error = %#v, want %#v", *fe, *want)
	}
	if got, wantMsg := err.Error(), fmt.Sprintf("%s %q: %s", want.Field, want.Value, want.Reason); got != wantMsg {
		t.Fatalf("message = %q, want %q", got, wantMsg)
	}
}

func TestValidateName(t *testing.T) {
	long := strings.Repeat("a", poolspec.MaxNameLen)
	tests := []struct {
		name   string
		reason string // "" when valid
	}{
		{"a", ""},
		{"0", ""},
		{"web", ""},
		{"web-1.prod_eu", ""},
		{"a-b", ""},
		{"a.b", ""},
		{"a_b", ""},
		{"1a", ""},
		{long, ""},
		{"", "must not be empty"},
		{long + "a", "must be at most 63 characters, not 64"},
		{strings.Repeat("a", 100), "must be at most 63 characters, not 100"},
		{"Web", nameCharsReason},
		{"wEb", nameCharsReason},
		{"-web", nameCharsReason},
		{"web-", nameCharsReason},
		{".web", nameCharsReason},
		{"web.", nameCharsReason},
		{"_web", nameCharsReason},
		{"web_", nameCharsReason},
		{"-", nameCharsReason},
		{"we b", nameCharsReason},
		{"web/1", nameCharsReason},
		{"wéb", nameCharsReason},
		{"web\x00", nameCharsReason},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.20q", tt.name), func(t *testing.T) {
			var want *poolspec.FieldError
			if tt.reason != "" {
				want = &poolspec.FieldError{Field: "pool.name", Value: tt.name, Reason: tt.reason}
			}
			checkFieldErr(t, poolspec.ValidateName("pool.name", tt.name), want)
		})
	}
}

func TestNormalizeHost(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".")
	tests := []struct {
		host   string
		want   string
		reason string // "" when valid
	}{
		{host: "api.example.com", want: "api.example.com"},
		{host: "API.Example.COM", want: "api.example.com"},
		{host: "api.example.com.", want: "api.example.com"},
		{host: "localhost", want: "localhost"},
		{host: "_srv._tcp.example.com", want: "_srv._tcp.example.com"},
		{host: "a-b.example.com", want: "a-b.example.com"},
		{host: "*.example.com", want: "*.example.com"},
		{host: "*.Example.COM.", want: "*.example.com"},
		{host: "10.0.0.1", want: "10.0.0.1"},
		{host: "2001:db8::1", want: "2001:db8::1"},
		{host: "2001:DB8::1", want: "2001:db8::1"},
		{host: "[2001:db8::1]", want: "2001:db8::1"},
		{host: "2001:0DB8:0:0::1", want: "2001:db8::1"},
		{host: "[::FFFF:10.0.0.1]", want: "::ffff:10.0.0.1"},
		{host: name253, want: name253},
		{host: name253 + ".", want: name253},
		{host: label63 + ".com", want: label63 + ".com"},

		{host: "", reason: "must not be empty"},
		{host: ".", reason: "must not be empty"},
		{host: "example.com:80", reason: "must be a host name without a port"},
		{host: "[2001:db8::1]:80", reason: "must be a host name without a port"},
		{host: "10.0.0.1:80", reason: "must be a host name without a port"},
		{host: "fe80::1%eth0", reason: "must not carry an IPv6 zone"},
		{host: "[fe80::1%eth0]", reason: "must not carry an IPv6 zone"},
		{host: "fe80::1%", reason: "must not carry an IPv6 zone"},
		{host: "a..example.com", reason: emptyLabelReason},
		{host: ".example.com", reason: emptyLabelReason},
		{host: "example.com..", reason: emptyLabelReason},
		{host: "*.", reason: starReason},
		{host: "*", reason: starReason},
		{host: "*example.com", reason: starReason},
		{host: "*.*.example.com", reason: starReason},
		{host: "api.*.example.com", reason: starReason},
		{host: "-api.example.com", reason: `is not a valid host name: "-" is not allowed there`},
		{host: "api-.example.com", reason: `is not a valid host name: "-" is not allowed there`},
		{host: "a b.example.com", reason: `is not a valid host name: " " is not allowed there`},
		{host: "api/v1.example.com", reason: `is not a valid host name: "/" is not allowed there`},
		{host: label63 + "a.com", reason: "has a label longer than 63 characters"},
		{host: name253 + "b", reason: "is longer than 253 characters"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.30q", tt.host), func(t *testing.T) {
			got, err := poolspec.NormalizeHost("pool.hosts[0]", tt.host)
			var want *poolspec.FieldError
			if tt.reason != "" {
				want = &poolspec.FieldError{Field: "pool.hosts[0]", Value: tt.host, Reason: tt.reason}
			}
			checkFieldErr(t, err, want)
			if got != tt.want {
				t.Errorf("NormalizeHost(%q) = %q, want %q", tt.host, got, tt.want)
			}
		})
	}
}

// TestNormalizeHostRejectsZone checks that a route host never carries an IPv6
// zone. A zone may hold any bytes (spaces, slashes, a trailing dot), so
// accepting one would let them into a host name and break idempotence.
func TestNormalizeHostRejectsZone(t *testing.T) {
	for _, host := range []string{
		"fe80::1%eth0",
		"[fe80::1%eth0]",
		"fe80::1%a b/c",
		"fe80::1%a.]",
		"::% ",
	} {
		t.Run(fmt.Sprintf("%q", host), func(t *testing.T) {
			got, err := poolspec.NormalizeHost("host", host)
			checkFieldErr(t, err, &poolspec.FieldError{Field: "host", Value: host, Reason: "must not carry an IPv6 zone"})
			if got != "" {
				t.Errorf("NormalizeHost(%q) = %q, want \"\"", host, got)
			}
		})
	}
}

func TestValidatePathPrefix(t *testing.T) {
	max := "/" + strings.Repeat("a", poolspec.MaxPathPrefixLen-1)
	tests := []struct {
		prefix string
		reason string // "" when valid
	}{
		{"", ""},
		{"/", ""},
		{"/api", ""},
		{"/api/v1/", ""},
		{"/a%20b", ""},
		{"/ünïcode", ""},
		{"/~user;x=1", ""},
		{max, ""},
		{"api", `must begin with "/"`},
		{" /api", `must begin with "/"`},
		{"*", `must begin with "/"`},
		{max + "a", "must be at most 1024 characters"},
		{"/a b", pathCharsReason},
		{"/a\tb", pathCharsReason},
		{"/a\x00", pathCharsReason},
		{"/a\x1f", pathCharsReason},
		{"/a\x7f", pathCharsReason},
		{"/a?b=1", pathCharsReason},
		{"/a#frag", pathCharsReason},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.20q", tt.prefix), func(t *testing.T) {
			var want *poolspec.FieldError
			if tt.reason != "" {
				want = &poolspec.FieldError{Field: "pool.path_prefix", Value: tt.prefix, Reason: tt.reason}
			}
			checkFieldErr(t, poolspec.ValidatePathPrefix("pool.path_prefix", tt.prefix), want)
		})
	}
}

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		addr   string
		want   string
		reason string // "" when valid
	}{
		{addr: "10.0.0.5:8080", want: "10.0.0.5:8080"},
		{addr: "10.0.0.5:08080", want: "10.0.0.5:8080"},
		{addr: "10.0.0.5:000443", want: "10.0.0.5:443"},
		{addr: "10.0.0.5:1", want: "10.0.0.5:1"},
		{addr: "10.0.0.5:65535", want: "10.0.0.5:65535"},
		{addr: "[10.0.0.5]:80", want: "10.0.0.5:80"},
		{addr: "127.0.0.1:80", want: "127.0.0.1:80"},
		{addr: "[2001:db8::1]:8080", want: "[2001:db8::1]:8080"},
		{addr: "[2001:DB8::1]:8080", want: "[2001:db8::1]:8080"},
		{addr: "[2001:0db8:0:0:0:0:0:1]:80", want: "[2001:db8::1]:80"},
		{addr: "[::1]:80", want: "[::1]:80"},
		{addr: "[::ffff:10.0.0.5]:80", want: "[::ffff:10.0.0.5]:80"},
		{addr: "backend.example.com:443", want: "backend.example.com:443"},
		{addr: "Backend.Example.COM:443", want: "backend.example.com:443"},
		{addr: "backend.example.com.:443", want: "backend.example.com:443"},
		{addr: "LOCALHOST:0080", want: "localhost:80"},
		{addr: "_svc.internal:9000", want: "_svc.internal:9000"},

		{addr: "", reason: "must not be empty; write it as HOST:PORT, e.g. 10.0.0.5:8080"},
		{addr: "10.0.0.5", reason: hostPortReason},
		{addr: "backend.example.com", reason: hostPortReason},
		{addr: "2001:db8::1:8080", reason: hostPortReason},
		{addr: "[2001:db8::1]", reason: hostPortReason},
		{addr: "[2001:db8::1:8080", reason: hostPortReason},
		{addr: ":8080", reason: "has no host; write it as HOST:PORT, e.g. 10.0.0.5:8080"},
		{addr: "[]:8080", reason: "has no host; write it as HOST:PORT, e.g. 10.0.0.5:8080"},
		{addr: "10.0.0.5:", reason: `port "" is not a number`},
		{addr: "10.0.0.5:http", reason: `port "http" is not a number`},
		{addr: "10.0.0.5:-1", reason: `port "-1" is not a number`},
		{addr: "10.0.0.5:+80", reason: `port "+80" is not a number`},
		{addr: "10.0.0.5:0", reason: "port 0 is out of range 1-65535"},
		{addr: "10.0.0.5:00", reason: "port 0 is out of range 1-65535"},
		{addr: "10.0.0.5:65536", reason: "port 65536 is out of range 1-65535"},
		{addr: "10.0.0.5:4294967295", reason: "port 4294967295 is out of range 1-65535"},
		{addr: "0.0.0.0:80", reason: "host 0.0.0.0 is the unspecified address; give a reachable address"},
		{addr: "[::]:80", reason: "host :: is the unspecified address; give a reachable address"},
		{addr: "[fe80::1%eth0]:80", reason: "must not carry an IPv6 zone"},
		{addr: "[fe80::1%25eth0]:80", reason: "must not carry an IPv6 zone"},
		{addr: "bad..example.com:80", reason: "host " + emptyLabelReason},
		{addr: ".:80", reason: "host " + emptyLabelReason},
		{addr: "bad!host:80", reason: `host is not a valid host name: "!" is not allowed there`},
		{addr: "-bad.example.com:80", reason: `host is not a valid host name: "-" is not allowed there`},
		{addr: "*.example.com:80", reason: "host " + starReason},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.addr), func(t *testing.T) {
			got, err := poolspec.NormalizeAddress("pool.backends[0].address", tt.addr)
			var want *poolspec.FieldError
			if tt.reason != "" {
				want = &poolspec.FieldError{Field: "pool.backends[0].address", Value: tt.addr, Reason: tt.reason}
			}
			checkFieldErr(t, err, want)
			if got != tt.want {
				t.Errorf("NormalizeAddress(%q) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}

// TestNormalizeAddressUnspecifiedTrailingDot checks that a trailing dot does
// not smuggle the unspecified address past the check: "0.0.0.0." is not an
// IP to netip, so unless the dot is trimmed first it passes as a DNS name.
func TestNormalizeAddressUnspecifiedTrailingDot(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"10.0.0.5.:80", "10.0.0.5:80"},
		{"[2001:db8::1.]:80", "[2001:db8::1]:80"},
		{"0.0.0.0.:1", ""},
		{"0.0.0.0.:8080", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got, err := poolspec.NormalizeAddress("address", tt.addr)
			if got != tt.want {
				t.Fatalf("NormalizeAddress(%q) = %q, want %q", tt.addr, got, tt.want)
			}
			if tt.want != "" {
				checkFieldErr(t, err, nil)
				return
			}
			fes := poolspec.AsFieldErrors(err)
			if len(fes) != 1 || fes[0].Field != "address" || fes[0].Value != tt.addr {
				t.Fatalf("NormalizeAddress(%q) error = %v, want one FieldError for field \"address\"", tt.addr, err)
			}
		})
	}
}

func TestValidateWeight(t *testing.T) {
	tests := []struct {
		w     int64
		valid bool
	}{
		{-1, false},
		{0, false},
		{1, true},
		{2, true},
		{10000, true},
		{10001, false},
		{1 << 32, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.w), func(t *testing.T) {
			var want *poolspec.FieldError
			if !tt.valid {
				want = &poolspec.FieldError{Field: "pool.backends[0].weight", Value: fmt.Sprint(tt.w), Reason: weightReason}
			}
			checkFieldErr(t, poolspec.ValidateWeight("pool.backends[0].weight", tt.w), want)
		})
	}
}

func TestErrors(t *testing.T) {
	a := &poolspec.FieldError{Field: "pool.name", Value: "X", Reason: "bad"}
	b := &poolspec.FieldError{Field: "pool.hosts[0]", Value: "", Reason: "must not be empty"}
	c := &poolspec.FieldError{Field: "pool.path_prefix", Value: "x", Reason: "worse"}
	tests := []struct {
		name      string
		err       error
		wantMsg   string
		wantField []*poolspec.FieldError
	}{
		{"none", poolspec.Errors{}, "no errors", nil},
		{"one", poolspec.Errors{a}, `pool.name "X": bad`, []*poolspec.FieldError{a}},
		{"two", poolspec.Errors{a, b}, `pool.name "X": bad (and 1 more invalid fields)`, []*poolspec.FieldError{a, b}},
		{"three", poolspec.Errors{a, b, c}, `pool.name "X": bad (and 2 more invalid fields)`, []*poolspec.FieldError{a, b, c}},
		{"single", a, `pool.name "X": bad`, []*poolspec.FieldError{a}},
		{"wrapped single", fmt.Errorf("apply: %w", b), `apply: pool.hosts[0] "": must not be empty`, []*poolspec.FieldError{b}},
		{"wrapped list", fmt.Errorf("apply: %w", poolspec.Errors{b, c}), `apply: pool.hosts[0] "": must not be empty (and 1 more invalid fields)`, []*poolspec.FieldError{b, c}},
		{"other", errors.New("boom"), "boom", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.wantMsg {
				t.Errorf("Error() = %q, want %q", got, tt.wantMsg)
			}
			got := poolspec.AsFieldErrors(tt.err)
			if len(got) != len(tt.wantField) {
				t.Fatalf("AsFieldErrors = %v, want %v", got, tt.wantField)
			}
			for i := range got {
				if got[i] != tt.wantField[i] {
					t.Errorf("AsFieldErrors[%d] = %v, want %v", i, got[i], tt.wantField[i])
				}
			}
		})
	}
	if got := poolspec.AsFieldErrors(nil); got != nil {
		t.Errorf("AsFieldErrors(nil) = %v, want nil", got)
	}
}
