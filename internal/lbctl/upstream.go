package lbctl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// Names of the upstream flags of "pool create" and "pool update".
const (
	flagUpstreamProtocol = "upstream-protocol"
	flagUpstreamTLS      = "upstream-tls"
	flagSNI              = "sni"
	flagCAFile           = "ca-file"
	flagInsecure         = "insecure-skip-verify"
	flagClientCert       = "client-cert"
	flagClientKey        = "client-key"
	flagHostHeader       = "host-header"
	// Only on "pool update".
	flagClearCA         = "clear-ca"
	flagClearClientCert = "clear-client-cert"
	flagClearSNI        = "clear-sni"
	flagClearHostHeader = "clear-host-header"
)

// upstreamHelp is the part of the help of "pool create" and "pool update"
// about the upstream flags.
const upstreamHelp = `The upstream flags say how the data planes connect to the backends. Without
them they speak plain HTTP (HTTP/2 for gRPC requests, HTTP/1.1 for the rest)
and pass the client's Host header through. With --upstream-tls they connect
over TLS and verify the backends' certificates against the system roots, or
the CA certificates of --ca-file, for the --sni name, which defaults to
--host-header when set, else the backend's host.

lbctl reads the files of --ca-file, --client-cert and --client-key and sends
their PEM contents, which the control plane stores; the paths are not kept.
The control plane checks the settings together: h2, --sni, --ca-file,
--insecure-skip-verify and a client certificate all need --upstream-tls.`

// protocolNames maps the --upstream-protocol names to the API values.
var protocolNames = []struct {
	name  string
	proto lbv1.UpstreamProtocol
}{
	{"auto", lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_UNSPECIFIED},
	{"http1", lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_HTTP1},
	{"h2", lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2},
	{"h2c", lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_H2C},
}

// protocolChoices is the list of --upstream-protocol names for messages.
const protocolChoices = "auto, http1, h2 or h2c"

// protocolName returns the lbctl name of p: auto, http1, h2, h2c, or the
// enum's own name for a value this lbctl does not know.
func protocolName(p lbv1.UpstreamProtocol) string {
	for _, n := range protocolNames {
		if n.proto == p {
			return n.name
		}
	}
	return p.String()
}

// protocolValue is the pflag.Value of --upstream-protocol, so that an unknown
// name is reported while parsing flags.
type protocolValue lbv1.UpstreamProtocol

var _ pflag.Value = (*protocolValue)(nil)

// String returns "" for auto, so that help shows no default: on "pool
// update" an absent flag leaves the protocol as it is.
func (p *protocolValue) String() string {
	if lbv1.UpstreamProtocol(*p) == lbv1.UpstreamProtocol_UPSTREAM_PROTOCOL_UNSPECIFIED {
		return ""
	}
	return protocolName(lbv1.UpstreamProtocol(*p))
}

func (p *protocolValue) Set(s string) error {
	for _, n := range protocolNames {
		if strings.EqualFold(s, n.name) {
			*p = protocolValue(n.proto)
			return nil
		}
	}
	return fmt.Errorf("unknown upstream protocol %q; choose %s", s, protocolChoices)
}

func (p *protocolValue) Type() string { return "auto|http1|h2|h2c" }

// upstreamFlags holds the upstream flags of "pool create" and "pool update".
type upstreamFlags struct {
	protocol   protocolValue
	tls        bool
	sni        string
	caFile     string
	insecure   bool
	clientCert string
	clientKey  string
	hostHeader string

	clearCA, clearClientCert, clearSNI, clearHostHeader bool
}

// register adds the upstream flags to cmd; update adds the --clear-* flags of
// "pool update".
func (u *upstreamFlags) register(cmd *cobra.Command, update bool) {
	f := cmd.Flags()
	f.Var(&u.protocol, flagUpstreamProtocol,
		"protocol to the backends: auto (HTTP/2 for gRPC, HTTP/1.1 otherwise), http1, h2 (HTTP/2, needs --upstream-tls) or h2c (cleartext HTTP/2)")
	f.BoolVar(&u.tls, flagUpstreamTLS, false, "connect to the backends over TLS")
	f.StringVar(&u.sni, flagSNI, "", "verify the backends' certificates for host `NAME`, also sent as TLS SNI (default: --host-header, else the backend's host)")
	f.StringVar(&u.caFile, flagCAFile, "", "read from `FILE` the CA certificates (PEM) the backends' certificates must chain to, instead of the system roots")
	f.BoolVar(&u.insecure, flagInsecure, false, "do not verify the backends' certificates (insecure)")
	f.StringVar(&u.clientCert, flagClientCert, "", "read from `FILE` the client certificate (PEM) presented to the backends; needs --client-key")
	f.StringVar(&u.clientKey, flagClientKey, "", "read from `FILE` the private key (PEM) of --client-cert")
	f.StringVar(&u.hostHeader, flagHostHeader, "", "send `VALUE` (HOST or HOST:PORT) as the Host header to the backends instead of the client's")
	for _, name := range []string{flagCAFile, flagClientCert, flagClientKey} {
		_ = cmd.MarkFlagFilename(name)
	}
	_ = cmd.RegisterFlagCompletionFunc(flagUpstreamProtocol, func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		names := make([]string, len(protocolNames))
		for i, n := range protocolNames {
			names[i] = n.name
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	if update {
		f.BoolVar(&u.clearSNI, flagClearSNI, false, "remove the SNI name, so the default is used")
		f.BoolVar(&u.clearCA, flagClearCA, false, "remove the CA certificates, so the system roots are used")
		f.BoolVar(&u.clearClientCert, flagClearClientCert, false, "remove the client certificate and its key")
		f.BoolVar(&u.clearHostHeader, flagClearHostHeader, false, "remove the Host header, so the client's is passed through")
	}
}

// upstreamChange is the result of the upstream flags: the fields to send, the
// update_mask paths of the fields given, and a description of each change.
type upstreamChange struct {
	upstream *lbv1.Upstream
	paths    []string
	what     []string
}

// build checks the upstream flags of cmd, reads the files they name and
// returns the change they ask for. Contradictory or incomplete flags are
// usage errors; files that cannot be read are plain errors naming the file.
// The control plane validates everything else (for example h2 without TLS).
func (u *upstreamFlags) build(cmd *cobra.Command) (*upstreamChange, error) {
	changed := cmd.Flags().Changed
	for _, pair := range [][2]string{
		{flagSNI, flagClearSNI},
		{flagCAFile, flagClearCA},
		{flagClientCert, flagClearClientCert},
		{flagClientKey, flagClearClientCert},
		{flagHostHeader, flagClearHostHeader},
	} {
		if changed(pair[0]) && changed(pair[1]) {
			return nil, usagef(cmd, "--%s and --%s cannot be used together", pair[0], pair[1])
		}
	}
	switch {
	case changed(flagClientCert) && !changed(flagClientKey):
		return nil, usagef(cmd, "--%s needs --%s, the file of its private key", flagClientCert, flagClientKey)
	case changed(flagClientKey) && !changed(flagClientCert):
		return nil, usagef(cmd, "--%s needs --%s, the file of its certificate", flagClientKey, flagClientCert)
	}

	c := &upstreamChange{upstream: &lbv1.Upstream{}}
	up := c.upstream
	add := func(what string, paths ...string) {
		c.paths = append(c.paths, paths...)
		c.what = append(c.what, what)
	}
	if changed(flagUpstreamProtocol) {
		up.Protocol = lbv1.UpstreamProtocol(u.protocol)
		add("upstream protocol set to "+protocolName(up.Protocol), "upstream.protocol")
	}
	if changed(flagUpstreamTLS) {
		up.Tls = u.tls
		add("upstream TLS "+onOff(u.tls), "upstream.tls")
	}
	switch {
	case changed(flagSNI):
		up.Sni = u.sni
		add(setOrCleared("SNI", u.sni), "upstream.sni")
	case changed(flagClearSNI) && u.clearSNI:
		add("SNI cleared", "upstream.sni")
	}
	switch {
	case changed(flagCAFile):
		pem, err := readPEMFile(flagCAFile, u.caFile, "PEM CA certificates")
		if err != nil {
			return nil, err
		}
		up.CaPem = pem
		add("CA set from "+u.caFile, "upstream.ca_pem")
	case changed(flagClearCA) && u.clearCA:
		add("CA cleared", "upstream.ca_pem")
	}
	if changed(flagInsecure) {
		up.InsecureSkipVerify = u.insecure
		add("certificate verification "+onOff(!u.insecure), "upstream.insecure_skip_verify")
	}
	switch {
	case changed(flagClientCert):
		cert, err := readPEMFile(flagClientCert, u.clientCert, "a PEM certificate")
		if err != nil {
			return nil, err
		}
		key, err := readPEMFile(flagClientKey, u.clientKey, "a PEM private key")
		if err != nil {
			return nil, err
		}
		up.ClientCertPem, up.ClientKeyPem = cert, key
		add("client certificate set from "+u.clientCert, "upstream.client_cert_pem", "upstream.client_key_pem")
	case changed(flagClearClientCert) && u.clearClientCert:
		add("client certificate cleared", "upstream.client_cert_pem", "upstream.client_key_pem")
	}
	switch {
	case changed(flagHostHeader):
		up.HostHeader = u.hostHeader
		add(setOrCleared("host header", u.hostHeader), "upstream.host_header")
	case changed(flagClearHostHeader) && u.clearHostHeader:
		add("host header cleared", "upstream.host_header")
	}
	return c, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func setOrCleared(what, v string) string {
	if v == "" {
		return what + " cleared"
	}
	return what + " set to " + v
}

// maxPEMFile is the largest file --ca-file, --client-cert and --client-key
// read; PEM bundles are far smaller, so anything larger is the wrong file.
const maxPEMFile = 1 << 20

// readPEMFile reads the file named by flag. The control plane checks the
// contents; only an unreadable, empty or oversized file is refused here.
// holds describes what the file should hold, for messages.
func readPEMFile(flag, path, holds string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fileError(flag, path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return "", fileError(flag, path, err)
	}
	if len(b) > maxPEMFile {
		return "", fmt.Errorf("--%s %q is larger than 1 MiB; it should hold %s", flag, path, holds)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "", fmt.Errorf("--%s %q is empty; it should hold %s", flag, path, holds)
	}
	return string(b), nil
}

// fileError reports a file that cannot be read, naming the flag and file
// once.
func fileError(flag, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("cannot read --%s %q: %w", flag, path, err)
}
