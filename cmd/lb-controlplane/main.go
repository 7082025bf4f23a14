// Command lb-controlplane stores backend pools and pushes every change to the
// connected data planes. See the README for the full reference.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/lb-project/lb/controlplane"
	"github.com/lb-project/lb/internal/logging"
)

func main() {
	fs := flag.NewFlagSet("lb-controlplane", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7400", "gRPC `address` for the admin and discovery APIs")
	adminListen := fs.String("admin-listen", "127.0.0.1:7401", "admin HTTP listen `address` (/metrics, /healthz, /readyz, /log-level); empty: none")
	dataDir := fs.String("data-dir", "./data/controlplane", "`directory` of the embedded bbolt store")
	storeKind := fs.String("store", "bbolt", "where pools are kept: `bbolt` (embedded, in --data-dir) or etcd (shared by replicas)")
	etcdEndpoints := fs.String("etcd-endpoints", "", "etcd client `URLs`, comma-separated, for --store etcd")
	etcdPrefix := fs.String("etcd-prefix", "/lb/", "key `prefix` in etcd")
	tlsCert := fs.String("tls-cert", "", "server certificate `file` (PEM); with --tls-key, serve TLS")
	tlsKey := fs.String("tls-key", "", "server private key `file` (PEM)")
	tlsCA := fs.String("tls-ca", "", "CA `file` (PEM) for client certificates; data planes must then present one whose DNS SAN (or CN) is their node id")
	tokensFile := fs.String("tokens-file", "", "`file` of admin API bearer tokens, one \"TOKEN ROLE [NAME]\" per line, ROLE admin or viewer; without it the admin API is open")
	insecure := fs.Bool("insecure", false, "allow plain-text connections on a non-loopback --listen address")
	logLevel := fs.String("log-level", "info", "log `level`: "+logging.Levels+"; PUT /log-level on the admin listener changes it, SIGHUP resets it to this value")
	logFormat := fs.String("log-format", "text", "log `format`: "+logging.Formats)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: lb-controlplane [flags]\n\nStores backend pools and pushes every committed change to the connected data planes.\n"+
			"Signals: SIGTERM or SIGINT stops it gracefully; SIGHUP resets the log level to --log-level.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	log, err := logging.New("lb-controlplane", *logLevel, *logFormat, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb-controlplane:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	hupCtx, stopHUP := context.WithCancel(ctx)
	var hupDone sync.WaitGroup
	hupDone.Go(func() {
		if err := logging.ResetOnSignal(hupCtx, hup, log, *logLevel); err != nil {
			log.Error("SIGHUP will not reset the log level", "error", err)
		}
	})
	var endpoints []string
	for _, e := range strings.Split(*etcdEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			endpoints = append(endpoints, e)
		}
	}
	err = controlplane.Run(ctx, controlplane.Config{Listen: *listen, DataDir: *dataDir, Store: *storeKind,
		EtcdEndpoints: endpoints, EtcdPrefix: *etcdPrefix, TLSCert: *tlsCert, TLSKey: *tlsKey, TLSCA: *tlsCA,
		TokensFile: *tokensFile, Insecure: *insecure, AdminListen: *adminListen, Logger: log})
	signal.Stop(hup)
	stopHUP()
	hupDone.Wait()
	if err != nil {
		log.Error("exiting", "error", err)
		os.Exit(1)
	}
}
