// Command lb-demo-backend is a tiny HTTP server for demos and benchmarks: it
// answers every request with its own name, so you can see which backend the
// load balancer chose.
//
//	lb-demo-backend --listen 127.0.0.1:9001 --name a
//	curl http://127.0.0.1:9001/hello   →   backend a: GET /hello
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lb-project/lb/internal/logging"
)

func main() {
	fs := flag.NewFlagSet("lb-demo-backend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9001", "HTTP listen `address`")
	name := fs.String("name", "demo", "`name` this backend answers with")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	log, _ := logging.New("lb-demo-backend", "info", "text", os.Stderr)
	srv := &http.Server{
		Addr:              *listen,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Backend", *name)
			fmt.Fprintf(w, "backend %s: %s %s\n", *name, r.Method, r.URL.RequestURI())
		}),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	log.Info("demo backend serving", "listen", *listen, "name", *name)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("exiting", "error", err)
		os.Exit(1)
	}
}
