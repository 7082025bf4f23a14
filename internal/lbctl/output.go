package lbctl

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

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
	fmt.Fprintln(tw, "NAME\tHOSTS\tPATH\tBACKENDS\tALGORITHM\tUPSTREAM\tVERSION")
	for _, p := range pools {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\n",
			p.GetName(), hostsText(p.GetHosts()), pathText(p.GetPathPrefix()), len(p.GetBackends()),
			algorithmName(p.GetLoadBalancing().GetAlgorithm()), upstreamShort(p.GetUpstream()), p.GetVersion())
	}
	return tw.Flush()
}

// writePool writes the output of "pool get": a header block, the upstream
// block when the pool has upstream settings, the policy block, then the
// backends with what the data planes report about them (statuses, matched
// by address).
func writePool(w io.Writer, p *lbv1.Pool, statuses []*lbv1.BackendStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", p.GetName())
	fmt.Fprintf(tw, "Hosts:\t%s\n", hostsText(p.GetHosts()))
	fmt.Fprintf(tw, "Path prefix:\t%s\n", pathText(p.GetPathPrefix()))
	fmt.Fprintf(tw, "Version:\t%d\n", p.GetVersion())
	if u := p.GetUpstream(); u != nil {
		fmt.Fprintln(tw)
		writeUpstream(tw, u, time.Now())
	}
	fmt.Fprintln(tw)
	writePolicies(tw, p)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(p.GetBackends()) == 0 {
		_, err := fmt.Fprintf(w, "No backends; add one with: lbctl add-backend --pool %s HOST:PORT\n", p.GetName())
		return err
	}
	byAddr := make(map[string]*lbv1.BackendStatus, len(statuses))
	for _, st := range statuses {
		byAddr[st.GetAddress()] = st
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tWEIGHT\tSTATE\tHEALTHY\tIN-FLIGHT")
	for _, b := range p.GetBackends() {
		state := "active"
		if b.GetDraining() {
			state = "draining"
		}
		healthy, inFlight := backendStatusText(byAddr[b.GetAddress()])
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", b.GetAddress(), b.GetWeight(), state, healthy, inFlight)
	}
	return tw.Flush()
}

// backendStatusText renders the HEALTHY and IN-FLIGHT columns of a backend:
// "N/M data planes" and the requests in flight summed over the data planes,
// or "-" for both when no data plane reports on it.
func backendStatusText(st *lbv1.BackendStatus) (healthy, inFlight string) {
	total := st.GetHealthyDataPlanes() + st.GetUnhealthyDataPlanes()
	if total == 0 && len(st.GetDataPlanes()) == 0 {
		return "-", "-"
	}
	var sum uint64
	for _, dp := range st.GetDataPlanes() {
		sum += uint64(dp.GetInFlight())
	}
	return fmt.Sprintf("%d/%d data planes", st.GetHealthyDataPlanes(), total), strconv.FormatUint(sum, 10)
}

// writePolicies writes the load balancing, health check, outlier detection,
// retry and timeout lines of "pool get" to tw, with the defaults the
// control plane applies to unset fields.
func writePolicies(tw io.Writer, p *lbv1.Pool) {
	fmt.Fprintf(tw, "Algorithm:\t%s\n", loadBalancingText(p.GetLoadBalancing()))
	fmt.Fprintf(tw, "Health check:\t%s\n", healthCheckText(p.GetHealthCheck()))
	fmt.Fprintf(tw, "Outlier detection:\t%s\n", outlierText(p.GetOutlierDetection()))
	retries := uint32(defaultRetries)
	if r := p.GetRetry(); r != nil && r.Retries != nil {
		retries = r.GetRetries()
	}
	fmt.Fprintf(tw, "Retries:\t%d\n", retries)
	fmt.Fprintf(tw, "Timeouts:\t%s\n", timeoutsText(p.GetTimeouts()))
}

// durOr returns d as a time.Duration, or def when d is unset or 0.
func durOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if v := d.AsDuration(); d != nil && v > 0 {
		return v
	}
	return def
}

// orDefault returns v, or def when v is 0.
func orDefault(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

// loadBalancingText describes the selection policy: the algorithm, its hash
// key with consistent-hash, and the slow start when set.
func loadBalancingText(lb *lbv1.LoadBalancing) string {
	s := algorithmName(lb.GetAlgorithm())
	if lb.GetAlgorithm() == lbv1.Algorithm_ALGORITHM_CONSISTENT_HASH {
		key := "none"
		if lb.GetHashKey() != nil {
			key = hashKeyText(lb.GetHashKey())
		}
		s += ", hash key " + key
	}
	if d := lb.GetSlowStart().AsDuration(); lb.GetSlowStart() != nil && d > 0 {
		s += ", slow start " + durText(d)
	}
	return s
}

// healthCheckText describes the active health check, as in "http GET
// /healthz every 5s, timeout 1s, healthy after 2, unhealthy after 3, status
// 200-399", or "none".
func healthCheckText(h *lbv1.HealthCheck) string {
	switch h.GetType() {
	case lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, lbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP,
		lbv1.HealthCheckType_HEALTH_CHECK_TYPE_GRPC:
	default:
		return "none"
	}
	s := checkKindText(h)
	isHTTP := h.GetType() == lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP
	if isHTTP && h.GetHost() != "" {
		s += " (Host " + h.GetHost() + ")"
	}
	interval := durOr(h.GetInterval(), defaultCheckInterval)
	// As the control plane: the default timeout is 1s, or half an
	// interval shorter than 2s.
	timeout := durOr(h.GetTimeout(), min(defaultCheckTimeout, interval/2))
	s += fmt.Sprintf(" every %s, timeout %s, healthy after %d, unhealthy after %d",
		durText(interval), durText(timeout),
		orDefault(h.GetHealthyThreshold(), defaultHealthyThreshold),
		orDefault(h.GetUnhealthyThreshold(), defaultUnhealthyThreshold))
	if isHTTP {
		lo := orDefault(h.GetExpectedStatusMin(), defaultStatusMin)
		hi := orDefault(h.GetExpectedStatusMax(), max(defaultStatusMax, lo))
		s += fmt.Sprintf(", status %d-%d", lo, hi)
	}
	return s
}

// outlierText describes passive health checking, as in "eject after 5
// failures for 30s+, at most 50% of backends", or "off".
func outlierText(o *lbv1.OutlierDetection) string {
	if o.GetDisabled() {
		return "off"
	}
	return fmt.Sprintf("eject after %d failures for %s+, at most %d%% of backends",
		orDefault(o.GetConsecutiveFailures(), defaultOutlierFailures),
		durText(durOr(o.GetBaseEjectionTime(), defaultOutlierEjectionTime)),
		orDefault(o.GetMaxEjectionPercent(), defaultOutlierMaxEjected))
}

// timeoutsText describes the timeouts towards the backends, as in "connect
// 5s, response 60s, idle 90s".
func timeoutsText(t *lbv1.Timeouts) string {
	return fmt.Sprintf("connect %s, response %s, idle %s",
		durText(durOr(t.GetConnect(), defaultConnectTimeout)),
		durText(durOr(t.GetResponseHeader(), defaultResponseTimeout)),
		durText(durOr(t.GetIdle(), defaultIdleTimeout)))
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
