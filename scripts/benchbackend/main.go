// Command benchbackend is the backend of scripts/bench.sh, a benchmark tool
// and nothing else. One process serves three listeners:
//
//	--http  a minimal HTTP/1.1 server (h1.go): GET /small answers 64 bytes,
//	        /large 64 KiB, anything else 404; keep-alive, pipelining
//	--grpc  gRPC over cleartext HTTP/2 (h2c): grpc.health.v1.Health (SERVING)
//	        and server reflection
//	--ws    net/http: WebSocket upgrades on any path (echo), GET /stats (the
//	        counters below as JSON), anything else the 64-byte body
//
// The counters let the benchmark see upstream connection reuse of every
// proxy from the backend's side: requests answered and connections accepted
// per listener.
//
//	benchbackend --http 127.0.0.1:18431 --grpc 127.0.0.1:18432 --ws 127.0.0.1:18433
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/lb-project/lb/internal/logging"
)

// stats is the JSON document served at /stats.
type stats struct {
	HTTPRequests int64 `json:"http_requests"`
	HTTPConns    int64 `json:"http_connections"`
	GRPCRequests int64 `json:"grpc_requests"`
	GRPCConns    int64 `json:"grpc_connections"`
	WSSessions   int64 `json:"websocket_sessions"`
	WSOpen       int64 `json:"websocket_open"`
}

func main() {
	fs := flag.NewFlagSet("benchbackend", flag.ContinueOnError)
	httpAddr := fs.String("http", "127.0.0.1:18431", "minimal HTTP/1.1 listen `address` (/small, /large)")
	grpcAddr := fs.String("grpc", "", "gRPC (h2c) listen `address`; empty: none")
	wsAddr := fs.String("ws", "", "net/http listen `address` for WebSocket echo and /stats; empty: none")
	small := fs.Int("small", 64, "size in `bytes` of the /small body")
	large := fs.Int("large", 64<<10, "size in `bytes` of the /large body")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	log, _ := logging.New("benchbackend", "info", "text", os.Stderr)
	if err := run(log, *httpAddr, *grpcAddr, *wsAddr, *small, *large); err != nil {
		log.Error("exiting", "error", err)
		os.Exit(1)
	}
}

func run(log hclog.Logger, httpAddr, grpcAddr, wsAddr string, small, large int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	smallBody := body(small)
	h1 := newH1Server(map[string][]byte{"/small": smallBody, "/large": body(large), "/": smallBody})
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	errc := make(chan error, 3)
	go func() { errc <- h1.Serve(hl) }()
	log.Info("serving HTTP/1.1", "listen", httpAddr, "small", small, "large", large)

	var grpcRequests, grpcConns atomic.Int64
	var gs *grpc.Server
	if grpcAddr != "" {
		gl, err := net.Listen("tcp", grpcAddr)
		if err != nil {
			return fmt.Errorf("grpc listener: %w", err)
		}
		gs = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			grpcRequests.Add(1)
			return h(ctx, req)
		}))
		hs := health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(gs, hs)
		reflection.Register(gs)
		go func() { errc <- gs.Serve(countingListener{gl, &grpcConns}) }()
		log.Info("serving gRPC (h2c)", "listen", grpcAddr)
	}

	var wsSessions, wsOpen atomic.Int64
	var ws *http.Server
	if wsAddr != "" {
		wl, err := net.Listen("tcp", wsAddr)
		if err != nil {
			return fmt.Errorf("ws listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(stats{
				HTTPRequests: h1.Requests.Load(), HTTPConns: h1.Conns.Load(),
				GRPCRequests: grpcRequests.Load(), GRPCConns: grpcConns.Load(),
				WSSessions: wsSessions.Load(), WSOpen: wsOpen.Load(),
			})
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") == "" {
				w.Header().Set("Content-Type", "application/octet-stream")
				_, _ = w.Write(smallBody)
				return
			}
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
			if err != nil {
				return // Accept has answered the client
			}
			wsSessions.Add(1)
			wsOpen.Add(1)
			defer wsOpen.Add(-1)
			echo(ctx, c)
		})
		ws = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- ws.Serve(wl) }()
		log.Info("serving WebSocket echo and /stats", "listen", wsAddr)
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	_ = hl.Close()
	h1.Close()
	if gs != nil {
		gs.Stop()
	}
	if ws != nil {
		_ = ws.Close() // hijacked WebSocket connections end with ctx
	}
	log.Info("stopped", "http_requests", h1.Requests.Load(), "http_connections", h1.Conns.Load(),
		"grpc_requests", grpcRequests.Load(), "websocket_sessions", wsSessions.Load())
	return nil
}

// echo sends every message back until a read fails or ctx ends.
func echo(ctx context.Context, c *websocket.Conn) {
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(1 << 20)
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// body returns n bytes of printable text ending in a newline.
func body(n int) []byte {
	b := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
	if n > 0 {
		b[n-1] = '\n'
	}
	return b
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
