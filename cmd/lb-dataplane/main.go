// Command lb-dataplane proxies HTTP/1.1, HTTP/2, gRPC and WebSocket traffic to
// the backends configured in the control plane. See the README for the full
// reference.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lb-project/lb/dataplane"
	"github.com/lb-project/lb/dataplane/accesslog"
	"github.com/lb-project/lb/dataplane/certs"
	"github.com/lb-project/lb/internal/logging"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	fs := flag.NewFlagSet("lb-dataplane", flag.ContinueOnError)
	cp := fs.String("controlplane", "127.0.0.1:7400", "control plane gRPC `address`; several, comma-separated, to fail over between")
	cpCA := fs.String("controlplane-tls-ca", "", "CA `file` (PEM) to verify the control plane's certificate; enables TLS to the control plane")
	cpCert := fs.String("controlplane-tls-cert", "", "client certificate `file` (PEM) presented to the control plane; its DNS SAN (or CN) must be the node id")
	cpKey := fs.String("controlplane-tls-key", "", "private key `file` (PEM) of --controlplane-tls-cert")
	cacheDir := fs.String("cache-dir", "", "`directory` keeping the last applied configuration, served at start-up when no control plane answers")
	nodeID := fs.String("node-id", "", "`id` of this data plane in the fleet (default: the host name)")
	listen := fs.String("listen", "127.0.0.1:6188", "proxy listen `address`: HTTP/1.1 and h2c (HTTP/2 with prior knowledge)")
	tlsListen := fs.String("tls-listen", "", "TLS proxy listen `address`: HTTP/1.1 and HTTP/2 by ALPN (needs --tls-cert/--tls-key or --tls-dir)")
	var certFiles, keyFiles stringList
	fs.Var(&certFiles, "tls-cert", "certificate `file` (PEM, chain allowed); repeatable, paired in order with --tls-key; the first is the default for clients without a matching SNI name")
	fs.Var(&keyFiles, "tls-key", "private key `file` (PEM) for the --tls-cert at the same position; repeatable")
	tlsDir := fs.String("tls-dir", "", "`directory` of certificates: NAME.crt with NAME.key, or NAME.pem holding both")
	reloadEvery := fs.Duration("cert-reload-interval", 2*time.Second, "how often certificate files are checked for changes (SIGHUP reloads at once)")
	adminListen := fs.String("admin-listen", "127.0.0.1:9901", "admin HTTP listen `address` (/healthz, /readyz, /config)")
	wsIdle := fs.Duration("websocket-idle-timeout", 10*time.Minute, "close WebSocket (upgraded) connections idle this long in both directions")
	drain := fs.Duration("drain-timeout", 10*time.Second, "how long shutdown (SIGTERM, SIGINT, or a handover to a successor) waits for requests in flight and WebSocket tunnels; tunnels still open then get a close frame 1001 (going away)")
	upgradeSocket := fs.String("upgrade-socket", "", "Unix socket `path` where this data plane hands its listening sockets to a successor for a zero-downtime upgrade; empty: no upgrades")
	takeOver := fs.Bool("upgrade", false, "take the listening sockets over from the data plane serving --upgrade-socket (start the new binary with the old one's flags plus --upgrade); the old one then drains and exits")
	upgradeTimeout := fs.Duration("upgrade-timeout", 20*time.Second, "with --upgrade, how long to wait for a configuration before giving up (the old data plane keeps serving)")
	pprofOn := fs.Bool("pprof", false, "serve Go's profiler at /debug/pprof/ on the admin listener (CPU, heap, goroutine profiles)")
	accessLog := fs.String("access-log", "off", "access log `destination`: off, stdout, stderr, or a file path (opened for appending)")
	accessFormat := fs.String("access-log-format", "json", "access log `format`: json or logfmt")
	logLevel := fs.String("log-level", "info", "log `level`: "+logging.Levels+"; PUT /log-level on the admin listener changes it, SIGHUP resets it to this value")
	logFormat := fs.String("log-format", "text", "log `format`: "+logging.Formats)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: lb-dataplane [flags]\n\nProxies HTTP/1.1, HTTP/2, gRPC and WebSocket traffic to the backends configured in the control plane.\nSignals: SIGTERM or SIGINT drains and stops it; SIGHUP re-reads the TLS certificate files and resets the log level to --log-level.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if len(certFiles) != len(keyFiles) {
		fmt.Fprintf(os.Stderr, "lb-dataplane: %d --tls-cert but %d --tls-key flags; give them in pairs\n", len(certFiles), len(keyFiles))
		os.Exit(2)
	}
	log, err := logging.New("lb-dataplane", *logLevel, *logFormat, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb-dataplane:", err)
		os.Exit(2)
	}
	accessOut, accessFmt, err := openAccessLog(*accessLog, *accessFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb-dataplane:", err)
		os.Exit(2)
	}
	if c, ok := accessOut.(io.Closer); ok && accessOut != os.Stdout && accessOut != os.Stderr {
		defer c.Close()
	}
	cpTLS, err := controlPlaneTLS(*cpCA, *cpCert, *cpKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb-dataplane:", err)
		os.Exit(2)
	}
	var pairs []certs.Pair
	for i := range certFiles {
		pairs = append(pairs, certs.Pair{CertFile: certFiles[i], KeyFile: keyFiles[i]})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	// The SIGHUP relay lives as long as the data plane: main ends it on
	// the way out.
	hupCtx, stopHUP := context.WithCancel(ctx)
	hupDone := make(chan struct{})
	defer func() {
		stopHUP()
		<-hupDone
	}()
	go func() {
		defer close(hupDone)
		for {
			select {
			case <-hupCtx.Done():
				return
			case <-hup:
			}
			// SIGHUP re-reads certificates and undoes a run-time log
			// level change (PUT /log-level).
			if err := logging.SetLevel(log, *logLevel); err != nil {
				log.Error("cannot reset the log level", "error", err)
			}
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	err = dataplane.Run(ctx, dataplane.Config{
		ControlPlane: *cp, CacheDir: *cacheDir, ControlPlaneTLS: cpTLS, NodeID: *nodeID, Listen: *listen, AdminListen: *adminListen,
		TLSListen: *tlsListen, TLSCerts: pairs, TLSDir: *tlsDir, CertReloadInterval: *reloadEvery,
		WebSocketIdleTimeout: *wsIdle, DrainTimeout: *drain, Logger: log,
		AccessLog: accessOut, AccessLogFormat: accessFmt, LogLevel: logging.LevelHandler(log),
		UpgradeSocket: *upgradeSocket, TakeOver: *takeOver, UpgradeTimeout: *upgradeTimeout, Pprof: *pprofOn,
	}, reload)
	if err != nil {
		log.Error("exiting", "error", err)
		os.Exit(1)
	}
}

// openAccessLog opens the --access-log destination; nil for "off".
func openAccessLog(dest, format string) (io.Writer, accesslog.Format, error) {
	f, err := accesslog.ParseFormat(format)
	if err != nil {
		return nil, 0, fmt.Errorf("--access-log-format: %w", err)
	}
	switch dest {
	case "", "off":
		return nil, f, nil
	case "stdout":
		return os.Stdout, f, nil
	case "stderr":
		return os.Stderr, f, nil
	}
	file, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, 0, fmt.Errorf("--access-log: %w", err)
	}
	return file, f, nil
}

// controlPlaneTLS builds the TLS configuration towards the control plane
// from the --controlplane-tls-* flags; nil when none is given.
func controlPlaneTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if caFile == "" {
		return nil, fmt.Errorf("--controlplane-tls-cert/--controlplane-tls-key need --controlplane-tls-ca")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read --controlplane-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--controlplane-tls-ca %s holds no PEM certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("give --controlplane-tls-cert and --controlplane-tls-key together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load --controlplane-tls-cert/--controlplane-tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
