// Command benchconns is the idle-connection client of scripts/bench.sh, a
// benchmark tool and nothing else. It opens --n connections to a proxy, makes
// one exchange on each so that the proxy has really set it up, then keeps them
// all open and idle, prints one line
//
//	ready open=N failed=M seconds=S
//
// and holds them until SIGTERM/SIGINT or until --hold passes, then closes them.
//
//	--mode keepalive  HTTP/1.1: one GET of --path on each connection, read whole
//	--mode websocket  WebSocket: an upgrade to --path, one message echoed
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	fs := flag.NewFlagSet("benchconns", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:6188", "proxy `address` (host:port)")
	n := fs.Int("n", 10000, "connections to open")
	mode := fs.String("mode", "keepalive", "`mode`: keepalive or websocket")
	path := fs.String("path", "/small", "request `path`")
	parallel := fs.Int("parallel", 64, "connections being set up at once")
	timeout := fs.Duration("timeout", 120*time.Second, "give up setting up connections after this long")
	hold := fs.Duration("hold", 10*time.Minute, "close everything after this long at the latest")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *mode != "keepalive" && *mode != "websocket" {
		fmt.Fprintf(os.Stderr, "benchconns: --mode %q: want keepalive or websocket\n", *mode)
		os.Exit(2)
	}
	if err := run(*addr, *n, *mode, *path, *parallel, *timeout, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "benchconns:", err)
		os.Exit(1)
	}
}

func run(addr string, n int, mode, path string, parallel int, timeout, hold time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	setupCtx, cancelSetup := context.WithTimeout(ctx, timeout)
	defer cancelSetup()
	// One transport for every WebSocket dial; an upgraded connection leaves
	// its pool, so each dial opens its own connection.
	client := &http.Client{Transport: &http.Transport{}}

	var (
		mu      sync.Mutex // guards closers and first
		closers []io.Closer
		failed  atomic.Int64
		first   error
	)
	start := time.Now()
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range max(parallel, 1) {
		wg.Go(func() {
			for range next {
				c, err := open(setupCtx, client, addr, mode, path)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if first == nil {
						first = err
					}
				} else {
					closers = append(closers, c)
				}
				mu.Unlock()
			}
		})
	}
feed:
	for range n {
		select {
		case next <- struct{}{}:
		case <-setupCtx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	fmt.Printf("ready open=%d failed=%d seconds=%.1f\n", len(closers), failed.Load(), time.Since(start).Seconds())
	if first != nil {
		fmt.Fprintln(os.Stderr, "benchconns: first failure:", first)
	}

	holdCtx, cancelHold := context.WithTimeout(ctx, hold)
	defer cancelHold()
	<-holdCtx.Done()
	for _, c := range closers {
		_ = c.Close()
	}
	return nil
}

// open sets up one connection and makes its one exchange.
func open(ctx context.Context, client *http.Client, addr, mode, path string) (io.Closer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if mode == "websocket" {
		c, _, err := websocket.Dial(ctx, "ws://"+addr+path, &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			return nil, fmt.Errorf("websocket dial: %w", err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
			_ = c.CloseNow()
			return nil, fmt.Errorf("websocket write: %w", err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			_ = c.CloseNow()
			return nil, fmt.Errorf("websocket read: %w", err)
		}
		return closerFunc(c.CloseNow), nil
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		_ = c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		if err == nil && resp.Close {
			err = errors.New("the proxy closes the connection after the response")
		}
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
