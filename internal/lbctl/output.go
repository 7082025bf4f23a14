package lbctl

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// jsonOptions renders responses for -o json: every field is present, with
// its proto JSON name, so automation can rely on them.
var jsonOptions = protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}

// printJSON writes m as JSON followed by a newline.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode response as JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// emit writes resp as JSON in JSON mode, or calls table otherwise.
func (a *app) emit(resp proto.Message, table func(w io.Writer) error) error {
	if a.output == outputJSON {
		return printJSON(a.stdout, resp)
	}
	return table(a.stdout)
}

// hostsText renders the hosts of a pool: comma-joined, "*" when any host.
func hostsText(hosts []string) string {
	if len(hosts) == 0 {
		return "*"
	}
	return strings.Join(hosts, ",")
}

// pathText renders a path prefix: "/" when empty.
func pathText(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// writePoolList writes the table of "pool list".
func writePoolList(w io.Writer, pools []*lbv1.Pool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHOSTS\tPATH\tBACKENDS\tUPSTREAM\tVERSION")
	for _, p := range pools {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\n",
			p.GetName(), hostsText(p.GetHosts()), pathText(p.GetPathPrefix()), len(p.GetBackends()),
			upstreamShort(p.GetUpstream()), p.GetVersion())
	}
	return tw.Flush()
}

// writePool writes the output of "pool get": a header block, the upstream
// block when the pool has upstream settings, then the backends.
func writePool(w io.Writer, p *lbv1.Pool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", p.GetName())
	fmt.Fprintf(tw, "Hosts:\t%s\n", hostsText(p.GetHosts()))
	fmt.Fprintf(tw, "Path prefix:\t%s\n", pathText(p.GetPathPrefix()))
	fmt.Fprintf(tw, "Version:\t%d\n", p.GetVersion())
	if u := p.GetUpstream(); u != nil {
		fmt.Fprintln(tw)
		writeUpstream(tw, u, time.Now())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(p.GetBackends()) == 0 {
		_, err := fmt.Fprintf(w, "No backends; add one with: lbctl add-backend --pool %s HOST:PORT\n", p.GetName())
		return err
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tWEIGHT")
	for _, b := range p.GetBackends() {
		fmt.Fprintf(tw, "%s\t%d\n", b.GetAddress(), b.GetWeight())
	}
	return tw.Flush()
}

// mutationLine writes the one-line summary of a change to pool.
func mutationLine(w io.Writer, pool, what string, version uint64) error {
	_, err := fmt.Fprintf(w, "pool %q: %s; configuration version %d\n", pool, what, version)
	return err
}

// plural returns "1 backend", "2 backends".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// upstreamShort renders the upstream of a pool for "pool list": the
// protocol, with "+tls" when the backends are reached over TLS.
func upstreamShort(u *lbv1.Upstream) string {
	s := protocolName(u.GetProtocol())
	if u.GetTls() {
		s += "+tls"
	}
	return s
}

// protocolText describes the protocol to the backends of u.
func protocolText(u *lbv1.Upstream) string {
	var s string
	switch p := u.GetProtocol(); p {
	case lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_UNSPECIFIED:
		s = "auto (HTTP/2 for gRPC, HTTP/1.1 otherwise)"
	case lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C:
		s = "h2c (cleartext HTTP/2)"
	default:
		s = protocolName(p)
	}
	if u.GetTls() {
		s += " over TLS"
	}
	return s
}

// writeUpstream writes the upstream lines of "pool get" to tw. The TLS
// details are left out when TLS is off. now is used to flag an expired
// client certificate.
func writeUpstream(tw io.Writer, u *lbv1.Upstream, now time.Time) {
	fmt.Fprintf(tw, "Upstream:\t%s\n", protocolText(u))
	fmt.Fprintf(tw, "TLS:\t%s\n", onOff(u.GetTls()))
	if u.GetTls() {
		fmt.Fprintf(tw, "SNI:\t%s\n", sniText(u))
		fmt.Fprintf(tw, "CA:\t%s\n", caText(u))
		verify := "on"
		if u.GetInsecureSkipVerify() {
			verify = "OFF (insecure-skip-verify)"
		}
		fmt.Fprintf(tw, "Verify:\t%s\n", verify)
		fmt.Fprintf(tw, "Client cert:\t%s\n", clientCertText(u, now))
	}
	host := u.GetHostHeader()
	if host == "" {
		host = "client's Host (passed through)"
	}
	fmt.Fprintf(tw, "Host header:\t%s\n", host)
}

// sniText describes the TLS server name sent to the backends.
func sniText(u *lbv1.Upstream) string {
	switch {
	case u.GetSni() != "":
		return u.GetSni()
	case u.GetHostHeader() != "":
		return u.GetHostHeader() + " (the host header)"
	default:
		return "each backend's host"
	}
}

// caText describes the CA certificates backends are verified against.
func caText(u *lbv1.Upstream) string {
	if u.GetCaPem() == "" {
		if u.GetInsecureSkipVerify() {
			return "none (certificates are not verified)"
		}
		return "system roots"
	}
	certs := parseCerts(u.GetCaPem())
	if len(certs) == 0 {
		return "custom CA (no readable certificate)"
	}
	return fmt.Sprintf("custom CA (%s, first: %s)", plural(len(certs), "certificate"), subjectText(certs[0]))
}

// clientCertText describes the client certificate presented to backends.
// The private key is never returned by the control plane, only whether one
// is stored.
func clientCertText(u *lbv1.Upstream, now time.Time) string {
	if u.GetClientCertPem() == "" {
		if u.GetClientKeySet() {
			return "none (but a key is stored)"
		}
		return "none"
	}
	certs := parseCerts(u.GetClientCertPem())
	if len(certs) == 0 {
		return "set (not a readable certificate)"
	}
	c := certs[0]
	expiry := "expires " + c.NotAfter.UTC().Format(time.RFC3339)
	if now.After(c.NotAfter) {
		expiry = "EXPIRED " + c.NotAfter.UTC().Format(time.RFC3339)
	}
	s := subjectText(c) + ", " + expiry
	if !u.GetClientKeySet() {
		s += ", no key stored"
	}
	return s
}

// parseCerts returns the certificates of the PEM CERTIFICATE blocks in s
// that parse.
func parseCerts(s string) []*x509.Certificate {
	var certs []*x509.Certificate
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return certs
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			certs = append(certs, c)
		}
	}
}

// subjectText names a certificate by its subject common name, or its whole
// subject when it has no common name.
func subjectText(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return "CN=" + c.Subject.CommonName
	case len(c.Subject.Names) > 0:
		return c.Subject.String()
	default:
		return "empty subject"
	}
}
