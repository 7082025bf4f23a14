package poolspec_test

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/lb-project/lb/internal/poolspec"
)

// FuzzNormalizeAddress checks that NormalizeAddress never panics, reports
// refusals as one FieldError naming the input, and accepts only what it would
// accept again unchanged: a HOST:PORT that net.SplitHostPort splits, with a
// port of 1 to 65535 written without leading zeros.
func FuzzNormalizeAddress(f *testing.F) {
	for _, s := range []string{
		"10.0.0.5:8080",
		"10.0.0.5:08080",
		"[2001:db8::1]:8080",
		"[2001:DB8:0::1]:443",
		"[::ffff:10.0.0.5]:80",
		"[fe80::1%eth0]:80",
		"Backend.Example.COM:443",
		"backend.example.com.:443",
		"0.0.0.0:80",
		"[::]:80",
		"10.0.0.5:0",
		"10.0.0.5:65535",
		"10.0.0.5:65536",
		"10.0.0.5",
		":80",
		"",
		"[]:80",
		"*.example.com:80",
		"a..b:80",
		"0.0.0.0.:1", // once accepted as "0.0.0.0:1"
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		out, err := poolspec.NormalizeAddress("address", addr)
		if err != nil {
			if out != "" {
				t.Errorf("NormalizeAddress(%q) = %q with error %v, want \"\"", addr, out, err)
			}
			fes := poolspec.AsFieldErrors(err)
			if len(fes) != 1 || fes[0].Field != "address" || fes[0].Value != addr || fes[0].Reason == "" {
				t.Fatalf("NormalizeAddress(%q) error = %#v, want one FieldError for field \"address\" with the input as value", addr, fes)
			}
			return
		}
		again, err := poolspec.NormalizeAddress("address", out)
		if err != nil {
			t.Fatalf("NormalizeAddress(%q) = %q, which is then refused: %v", addr, out, err)
		}
		if again != out {
			t.Fatalf("NormalizeAddress(%q) = %q, but NormalizeAddress(%q) = %q; want idempotence", addr, out, out, again)
		}
		host, portStr, err := net.SplitHostPort(out)
		if err != nil {
			t.Fatalf("NormalizeAddress(%q) = %q, which net.SplitHostPort refuses: %v", addr, out, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 1 || port > 65535 || strconv.Itoa(port) != portStr {
			t.Fatalf("NormalizeAddress(%q) = %q: port %q is not a canonical 1-65535", addr, out, portStr)
		}
		if host == "" || host != strings.ToLower(host) {
			t.Fatalf("NormalizeAddress(%q) = %q: host %q is empty or not lower case", addr, out, host)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if ip.Zone() != "" || ip.IsUnspecified() || ip.String() != host {
				t.Fatalf("NormalizeAddress(%q) = %q: IP host %q is zoned, unspecified or not canonical", addr, out, host)
			}
		}
	})
}

// FuzzNormalizeHost checks that NormalizeHost never panics, reports refusals
// as one FieldError naming the input, and accepts only what it would accept
// again unchanged: a non-empty lower-case name without spaces or control
// characters.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"api.example.com",
		"API.Example.COM.",
		"*.example.com",
		"*.",
		"*",
		"10.0.0.1",
		"2001:DB8::1",
		"[2001:db8::1]",
		"[2001:db8::1]:80",
		"fe80::1%eth0",
		"::% ", // once accepted unchanged, space and all
		"example.com:80",
		"a..b",
		"-a.com",
		"_srv.example.com",
		"",
		".",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		out, err := poolspec.NormalizeHost("host", host)
		if err != nil {
			if out != "" {
				t.Errorf("NormalizeHost(%q) = %q with error %v, want \"\"", host, out, err)
			}
			fes := poolspec.AsFieldErrors(err)
			if len(fes) != 1 || fes[0].Field != "host" || fes[0].Value != host || fes[0].Reason == "" {
				t.Fatalf("NormalizeHost(%q) error = %#v, want one FieldError for field \"host\" with the input as value", host, fes)
			}
			return
		}
		again, err := poolspec.NormalizeHost("host", out)
		if err != nil {
			t.Fatalf("NormalizeHost(%q) = %q, which is then refused: %v", host, out, err)
		}
		if again != out {
			t.Fatalf("NormalizeHost(%q) = %q, but NormalizeHost(%q) = %q; want idempotence", host, out, out, again)
		}
		if out == "" || out != strings.ToLower(out) {
			t.Fatalf("NormalizeHost(%q) = %q: empty or not lower case", host, out)
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("NormalizeHost(%q) = %q: byte %#x at %d is not allowed in a host", host, out, c, i)
			}
		}
	})
}
