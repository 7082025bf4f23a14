// Command lbctl is the operator command line of the load balancer: it manages
// pools and backends through the control plane's AdminService.
//
// Run "lbctl --help" for the commands. All the logic lives in package
// github.com/lb-project/lb/internal/lbctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lb-project/lb/internal/lbctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := lbctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
