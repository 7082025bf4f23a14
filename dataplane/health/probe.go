package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lb-project/lb/dataplane/upstream"
	"github.com/lb-project/lb/internal/poolspec"
)

// UserAgent is the User-Agent of HTTP and gRPC health checks.
const UserAgent = "lb-health-check/1"

// maxBody is how much of an HTTP check's response body is read; the rest
// is dropped with the connection.
const maxBody = 64 << 10

// prober runs one kind of probe for one target. It is owned by the target's
// goroutine.
type prober interface {
	probe(ctx context.Context) error
	close()
}

// run is the target's goroutine: probe on a jittered timer until cancelled.
func (r *runner) run() {
	defer close(r.done)
	p := r.newProber()
	defer p.close()

	interval := r.check.Interval
	timer := time.NewTimer(rand.N(interval)) // spread the first checks out
	defer timer.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-timer.C:
		}
		started := time.Now()
		ctx, cancel := context.WithTimeout(r.ctx, r.check.Timeout)
		err := p.probe(ctx)
		cancel()
		if r.ctx.Err() != nil {
			return // stopped mid-probe: the result says nothing about the backend
		}
		if flip, healthy, reason := r.record(err, started); flip {
			r.publish(healthy, reason)
		} else if err != nil {
			r.c.log.Trace("health check probe failed", "pool", r.target.Pool, "backend", r.target.Address,
				"check", r.check.Type, "error", reason)
		}
		// Keep the period (not the gap) near the interval, but never probe
		// back to back even when a probe took longer than the interval.
		next := jitter(interval) - time.Since(started)
		timer.Reset(max(next, interval/10))
	}
}

// jitter returns d ± 10%.
func jitter(d time.Duration) time.Duration {
	spread := d / 5
	if spread <= 0 {
		return d
	}
	return d - d/10 + rand.N(spread+1)
}

// publish records a flip in the backend's State, logs it and reports it.
func (r *runner) publish(healthy bool, reason string) {
	t := r.target
	if !t.State.SetHealthy(healthy, time.Now()) {
		return
	}
	if healthy {
		r.c.log.Info("backend passed health checks; back in rotation", "pool", t.Pool, "backend", t.Address,
			"check", r.check.Type, "healthy_threshold", threshold(r.check.HealthyThreshold))
	} else {
		r.c.log.Warn("backend failed health checks; out of rotation", "pool", t.Pool, "backend", t.Address,
			"check", r.check.Type, "error", reason, "unhealthy_threshold", threshold(r.check.UnhealthyThreshold))
	}
	if r.c.onChange != nil {
		r.c.onChange(t, healthy)
	}
}

// newProber builds the probe for the target's check type. Sync only admits
// known types.
func (r *runner) newProber() prober {
	switch r.check.Type {
	case poolspec.CheckHTTP:
		return newHTTPProber(r.target, r.check)
	case poolspec.CheckGRPC:
		return newGRPCProber(r.target, r.check)
	default:
		return tcpProber{addr: r.target.Address}
	}
}

// httpProber sends GET requests.
type httpProber struct {
	client *http.Client
	// own is the transport built for a target without one; closed on stop.
	own   *http.Transport
	url   string
	check poolspec.HealthCheck
}

func newHTTPProber(t Target, check poolspec.HealthCheck) *httpProber {
	p := &httpProber{check: check}
	rt := t.Transport
	if rt == nil {
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		p.own = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{}).DialContext,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     max(2*check.Interval, 90*time.Second),
			DisableCompression:  true,
			Protocols:           &protocols,
		}
		rt = p.own
	}
	p.client = &http.Client{
		Transport: rt,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect's status is the verdict
		},
	}
	scheme := t.Scheme
	if scheme == "" {
		scheme = "http"
	}
	p.url = scheme + "://" + t.Address + check.Path
	return p
}

func (p *httpProber) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	if p.check.Host != "" {
		req.Host = p.check.Host
	}
	req.Header.Set("User-Agent", UserAgent)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxBody)
	_ = resp.Body.Close()
	if code := uint32(resp.StatusCode); code < p.check.StatusMin || code > p.check.StatusMax {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func (p *httpProber) close() {
	if p.own != nil {
		p.own.CloseIdleConnections()
	}
}

// tcpProber opens and closes a connection.
type tcpProber struct{ addr string }

func (p tcpProber) probe(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

func (tcpProber) close() {}

// grpcProber calls grpc.health.v1.Health/Check over one connection kept for
// the target's life.
type grpcProber struct {
	conn    *grpc.ClientConn
	err     error // from building conn; every probe fails with it
	client  healthpb.HealthClient
	service string
}

func newGRPCProber(t Target, check poolspec.HealthCheck) *grpcProber {
	creds := insecure.NewCredentials()
	if t.TLS != nil {
		creds = credentials.NewTLS(t.TLS)
	}
	// Reconnect at least once per interval, so that a backend coming back
	// is seen promptly however long it was down.
	base := min(time.Second, check.Interval)
	conn, err := grpc.NewClient("passthrough:///"+t.Address,
		grpc.WithTransportCredentials(creds),
		grpc.WithNoProxy(),
		grpc.WithUserAgent(UserAgent),
		grpc.WithDisableServiceConfig(),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  base,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   max(base, check.Interval),
			},
			MinConnectTimeout: check.Timeout,
		}),
	)
	p := &grpcProber{conn: conn, service: check.GRPCService}
	if err != nil {
		p.err = fmt.Errorf("grpc client: %w", err)
		return p
	}
	p.client = healthpb.NewHealthClient(conn)
	return p
}

func (p *grpcProber) probe(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	resp, err := p.client.Check(ctx, &healthpb.HealthCheckRequest{Service: p.service})
	if err != nil {
		return err
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %s", s)
	}
	return nil
}

func (p *grpcProber) close() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
}

// describe turns a probe error into a short reason for logs and Status:
// "status 503", "dial tcp: connect: connection refused", "timeout after 1s".
func describe(err error, timeout time.Duration) string {
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.OK:
		case codes.DeadlineExceeded:
			return fmt.Sprintf("timeout after %v", timeout)
		default:
			return fmt.Sprintf("grpc %s: %s", s.Code(), s.Message())
		}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("timeout after %v", timeout)
	}
	if msg := err.Error(); strings.Contains(msg, "tls: ") || strings.Contains(msg, "x509: ") {
		return upstream.DescribeError(err)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		op := oe.Op
		if oe.Net != "" {
			op += " " + oe.Net
		}
		return op + ": " + oe.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
