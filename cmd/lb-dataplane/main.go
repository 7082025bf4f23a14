// Command lb-dataplane proxies HTTP traffic to the backends configured in the
// control plane. See the README for the full reference.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lb-project/lb/dataplane"
	"github.com/lb-project/lb/internal/logging"
)

func main() {
	fs := flag.NewFlagSet("lb-dataplane", flag.ContinueOnError)
	cp := fs.String("controlplane", "127.0.0.1:7400", "control plane gRPC `address`")
	nodeID := fs.String("node-id", "", "`id` of this data plane in the fleet (default: the host name)")
	listen := fs.String("listen", "127.0.0.1:6188", "proxy HTTP listen `address`")
	adminListen := fs.String("admin-listen", "127.0.0.1:9901", "admin HTTP listen `address` (/healthz, /readyz, /config)")
	drain := fs.Duration("drain-timeout", 10*time.Second, "how long shutdown waits for requests in flight")
	logLevel := fs.String("log-level", "info", "log `level`: "+logging.Levels)
	logFormat := fs.String("log-format", "text", "log `format`: "+logging.Formats)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: lb-dataplane [flags]\n\nProxies HTTP traffic to the backends configured in the control plane.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	log, err := logging.New("lb-dataplane", *logLevel, *logFormat, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lb-dataplane:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = dataplane.Run(ctx, dataplane.Config{
		ControlPlane: *cp, NodeID: *nodeID, Listen: *listen, AdminListen: *adminListen,
		DrainTimeout: *drain, Logger: log,
	})
	if err != nil {
		log.Error("exiting", "error", err)
		os.Exit(1)
	}
}
