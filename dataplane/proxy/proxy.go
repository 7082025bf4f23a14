// Package proxy is the data plane's request path: it matches a request to a
// pool in the current routing table (one atomic load), picks a backend with
// the pool's selector, and forwards the request over a reused upstream
// connection, streaming bodies both ways.
//
// Errors the proxy itself answers are short plain-text bodies:
//
//	404  no pool matches the request's host and path
//	503  the matched pool has no backends, or no configuration yet
//	502  the backend could not be reached or broke the exchange
//	504  the backend did not answer in time
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lb-project/lb/dataplane/accesslog"
	"github.com/lb-project/lb/dataplane/h1guard"
	"github.com/lb-project/lb/dataplane/h1wire"
	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/stats"
	"github.com/lb-project/lb/dataplane/upstream"
)

// Config configures a Handler.
type Config struct {
	// Table is the routing table in use. Required.
	Table *routing.Current
	// Transport forwards requests for pools built without a transport of
	// their own. Default: NewTransport().
	Transport http.RoundTripper
	// WebSocketIdleTimeout closes a tunnelled (upgraded) connection after
	// this long without traffic in either direction. Default 10m.
	WebSocketIdleTimeout time.Duration
	// Logger receives the proxy's log lines. Default: a null logger.
	Logger hclog.Logger
	// AccessLog, when set, receives one entry per request; it must not
	// block.
	AccessLog AccessLog
}

// AccessLog receives the access log entries; Log must not block.
type AccessLog interface {
	Log(accesslog.Entry)
}

// Handler is the proxying http.Handler.
type Handler struct {
	table     *routing.Current
	transport http.RoundTripper
	wsIdle    time.Duration
	log       hclog.Logger
	access    AccessLog
	// unrouted counts requests answered without a pool: no route, no
	// configuration yet, or refused as malformed.
	unrouted stats.Requests
	tunnels  tunnels
}

// Unrouted returns the counters of requests answered without a pool.
func (h *Handler) Unrouted() *stats.Requests { return &h.unrouted }

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	if cfg.Table == nil {
		panic("proxy: Config.Table is required")
	}
	if cfg.Transport == nil {
		cfg.Transport = NewTransport()
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.WebSocketIdleTimeout <= 0 {
		cfg.WebSocketIdleTimeout = 10 * time.Minute
	}
	return &Handler{table: cfg.Table, transport: cfg.Transport, wsIdle: cfg.WebSocketIdleTimeout, log: cfg.Logger,
		access: cfg.AccessLog, tunnels: tunnels{set: make(map[*tunnelConn]struct{})}}
}

// NewTransport returns the default upstream transport: HTTP/1.1 with
// keep-alive, a large idle pool per backend so connections are reused under
// load, no proxy from the environment and no transparent decompression.
func NewTransport() *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		MaxIdleConns:          0, // no global cap; the per-host cap applies
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Field by field: a composite literal would take a second copy in
	// this frame, which is live for the whole request.
	var o outcome
	o.start = time.Now()
	o.host, o.method, o.client, o.path, o.proto = r.Host, r.Method, r.RemoteAddr, r.URL.Path, r.Proto
	defer h.finish(&o)
	h.serve(w, r, &o)
}

// outcome is what became of one request, for metrics and the access log.
type outcome struct {
	start time.Time
	// answered is when the response head came from the backend (zero:
	// none did).
	answered time.Time
	// host (the client's Host, before any rewrite), method, client
	// (host:port), path and proto describe the request.
	host, method, client, path, proto string

	status  int
	pool    *routing.Pool
	backend int // index into pool.Backends; -1: none
	retries int
	// upstreamStatus is the backend's status; 0 when it gave none.
	upstreamStatus    int
	bytesIn, bytesOut int64
	// body is the request body as streamed to the backend (not replayed);
	// the transport may still read it after the response began.
	body *trackedBody
}

// finish counts the request and writes its access log entry.
func (h *Handler) finish(o *outcome) {
	d := time.Since(o.start)
	m := stats.MethodClass(o.method)
	if o.body != nil {
		o.bytesIn = o.body.n.Load()
	}
	switch {
	case o.pool == nil:
		h.unrouted.Add(m, o.status)
	case o.backend < 0:
		o.pool.Stats.NoBackend.Add(m, o.status)
		o.pool.Stats.Duration.Observe(d)
	default:
		st := &o.pool.States[o.backend].Stats
		st.Requests.Add(m, o.status)
		st.RequestBytes.Add(uint64(o.bytesIn))
		st.ResponseBytes.Add(uint64(o.bytesOut))
		o.pool.Stats.Duration.Observe(d)
	}
	if h.access == nil {
		return
	}
	e := accesslog.Entry{
		Time: o.start, Client: o.client, Host: o.host, Method: o.method, Path: o.path, Proto: o.proto,
		Status: o.status, BytesIn: o.bytesIn, BytesOut: o.bytesOut, Duration: d,
		Retries: o.retries, UpstreamStatus: o.upstreamStatus,
	}
	if o.pool != nil {
		e.Pool = o.pool.Name
		if o.backend >= 0 {
			e.Backend = o.pool.Backends[o.backend].Address
		}
	}
	h.access.Log(e)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, o *outcome) {
	o.backend = -1
	if reason, ok := h1guard.Rejected(r); ok {
		h.refuse(w, r, o, reason)
		return
	}
	upgrade := upgradeType(r)
	if upgrade != "" {
		// Until the backend answers 101, what follows the request on this
		// connection is not HTTP; any answer but 101 closes it.
		w.Header()["Connection"] = connectionClose
	}
	t := h.table.Load()
	if t == nil {
		h.fail(w, r, o, http.StatusServiceUnavailable, grpcUnavailable, "not ready: no configuration received from the control plane yet")
		return
	}
	pool := t.Match(normalizeHost(r.Host), r.URL.Path)
	if pool == nil {
		h.fail(w, r, o, http.StatusNotFound, grpcUnimplemented, "no route: no pool matches this host and path")
		return
	}
	o.pool = pool
	resp, idx, err := h.roundTrip(r, pool, upgrade, o)
	o.backend = idx
	if err != nil {
		h.roundTripFailed(w, r, o, err)
		return
	}
	h.relay(w, r, o, resp, upgrade)
}

// refuse answers a request h1guard refused.
//
//go:noinline
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, o *outcome, reason string) {
	h.log.Info("request refused", "client", r.RemoteAddr, "reason", reason)
	w.Header()["Connection"] = connectionClose
	h.fail(w, r, o, http.StatusBadRequest, grpcUnavailable, "bad request: "+reason)
}

// roundTripFailed answers a request no backend answered.
//
// It and relay are apart from serve so that serve's stack frame, which is
// live during the exchange with the backend, stays small: HTTP/2 runs each
// request on a new goroutine, whose stack is copied when it outgrows its
// start.
//
//go:noinline
func (h *Handler) roundTripFailed(w http.ResponseWriter, r *http.Request, o *outcome, err error) {
	if errors.Is(err, errNoBackend) {
		o.backend = -1
		h.fail(w, r, o, http.StatusServiceUnavailable, grpcUnavailable, "no backend: pool "+o.pool.Name+" has no backends")
		return
	}
	h.upstreamError(w, r, o, o.pool.Name, o.pool.Backends[o.backend].Address, err)
}

// relay sends the backend's response to the client.
//
//go:noinline
func (h *Handler) relay(w http.ResponseWriter, r *http.Request, o *outcome, resp *http.Response, upgrade string) {
	pool, idx := o.pool, o.backend
	o.upstreamStatus = resp.StatusCode
	st := pool.States[idx]
	defer st.End()
	b := &pool.Backends[idx]
	defer resp.Body.Close()

	if resp.StatusCode == http.StatusSwitchingProtocols {
		h.tunnel(w, r, resp, upgrade, o, b.Address)
		return
	}

	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	removeHopByHop(dst)
	if upgrade != "" {
		// The backend refused the upgrade. Whatever the client sent after
		// its request was meant for a tunnel that does not exist: close the
		// connection after this response rather than parse it as requests.
		dst["Connection"] = connectionClose
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = keys
	}
	// Streams (unknown length, gRPC) are flushed as they go, headers first,
	// so that server-streaming calls and event streams are not held back.
	flush := resp.ContentLength < 0 || upstream.IsGRPC(r)
	o.status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	// A gRPC "trailers-only" answer carries its status in the headers and
	// must reach the client as one HEADERS frame that ends the stream, so
	// it is not flushed early; net/http sends it so when the handler returns.
	if _, trailersOnly := resp.Header["Grpc-Status"]; flush && !trailersOnly {
		_ = http.NewResponseController(w).Flush()
	}
	n, err := copyBody(w, resp.Body, flush)
	o.bytesOut = n
	if err != nil {
		if r.Context().Err() == nil {
			h.log.Warn("response body copy failed", "pool", pool.Name, "backend", b.Address, "error", err)
		}
		// The status line is out: abort the connection (or HTTP/2 stream)
		// so the client sees a truncated response rather than a short one
		// that looks complete.
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vv
	}
}

// prepareOutbound turns the incoming request into the upstream request in
// place. The server has already read everything it needs from r (keep-alive
// decisions are taken before the handler runs), so reusing r saves copying
// the request, its URL and its headers.
func prepareOutbound(r *http.Request, pool *routing.Pool, upgrade string) *http.Request {
	r.URL.Scheme = pool.Scheme
	if r.URL.Scheme == "" {
		r.URL.Scheme = "http"
	}
	r.RequestURI = ""
	r.Close = false
	if r.ContentLength == 0 {
		r.Body = nil // http.NoBody or empty: send no body
	}
	removeHopByHop(r.Header)
	if upgrade != "" {
		r.Header["Connection"] = connectionUpgrade
		r.Header["Upgrade"] = []string{upgrade}
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior, ok := r.Header["X-Forwarded-For"]; ok && len(prior) > 0 {
			r.Header["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
		} else {
			r.Header["X-Forwarded-For"] = []string{ip}
		}
	}
	if isTLS(r) {
		r.Header["X-Forwarded-Proto"] = protoHTTPS
	} else {
		r.Header["X-Forwarded-Proto"] = protoHTTP
	}
	if r.Host != "" {
		// Set, not appended: a client-supplied value must not be trusted.
		r.Header["X-Forwarded-Host"] = []string{r.Host}
	}
	if pool.HostHeader != "" {
		r.Host = pool.HostHeader
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		// Keep Go's transport from inventing a User-Agent the client did not send.
		r.Header["User-Agent"] = emptyValue
	}
	return r
}

// isTLS reports whether r arrived over TLS, also for HTTP/1.1 connections
// that net/http sees through h1guard (and so without r.TLS).
func isTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if r.ProtoMajor != 1 {
		return false
	}
	if gc, ok := h1guard.FromContext(r.Context()); ok {
		_, tlsConn := gc.Unwrap().(*tls.Conn)
		return tlsConn
	}
	return false
}

// upgradeType returns the protocol an HTTP/1.1 request asks to upgrade to,
// when the proxy passes that upgrade through (WebSocket only), else "".
func upgradeType(r *http.Request) string {
	if r.ProtoMajor != 1 || r.Method != http.MethodGet || !hasToken(r.Header["Connection"], "upgrade") {
		return ""
	}
	up := r.Header["Upgrade"]
	if len(up) != 1 || !strings.EqualFold(strings.TrimSpace(up[0]), "websocket") {
		return ""
	}
	return up[0]
}

// Shared, never-modified header values.
var (
	protoHTTP         = []string{"http"}
	protoHTTPS        = []string{"https"}
	emptyValue        = []string{""}
	connectionClose   = []string{"close"}
	connectionUpgrade = []string{"Upgrade"}
)

// hopByHop are the headers that describe one connection, not the message
// (RFC 9110 section 7.6.1), and are never forwarded.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop deletes hop-by-hop headers and the headers the Connection
// header names. "TE: trailers" survives, as gRPC needs it end to end; it is
// looked for before the Connection tokens are removed, since a conforming
// client lists TE in Connection.
func removeHopByHop(h http.Header) {
	teTrailers := hasToken(h["Te"], "trailers")
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopByHop {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
	if teTrailers {
		h["Te"] = teTrailersValue
	}
}

var teTrailersValue = []string{"trailers"}

// hasToken reports whether the comma-separated header values hold token
// (ignoring case and ";" parameters).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		if h1wire.HasToken(v, token) {
			return true
		}
	}
	return false
}

// upstreamError answers a request whose backend exchange failed.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, o *outcome, pool, addr string, err error) {
	code, msg := h.describeUpstreamError(r.Context().Err() != nil, pool, addr, err)
	h.fail(w, r, o, code, grpcUnavailable, msg)
}

// describeUpstreamError logs a failed backend exchange and returns the
// status and message to answer it with; clientGone says the client left
// (or half-closed its connection, which net/http takes for the same).
func (h *Handler) describeUpstreamError(clientGone bool, pool, addr string, err error) (int, string) {
	if clientGone {
		h.log.Debug("client canceled request", "pool", pool, "backend", addr)
		return http.StatusBadGateway, "bad gateway: the client canceled the request before backend " + addr + " answered"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		h.log.Warn("upstream timed out", "pool", pool, "backend", addr, "error", err)
		return http.StatusGatewayTimeout, "gateway timeout: backend " + addr + " did not answer in time"
	}
	reason := upstream.DescribeError(err)
	h.log.Warn("upstream unreachable", "pool", pool, "backend", addr, "reason", reason, "error", err)
	return http.StatusBadGateway, "bad gateway: backend " + addr + " unreachable: " + reason
}

// gRPC status codes the proxy answers with.
const (
	grpcUnimplemented = "12"
	grpcUnavailable   = "14"
)

// fail answers a request the proxy cannot forward: as a gRPC status
// (HTTP 200, trailers-only, grpc-status and grpc-message) for gRPC clients,
// else with the HTTP status and msg as a plain-text body.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, o *outcome, code int, grpcCode, msg string) {
	hdr := w.Header()
	o.status = code
	if upstream.IsGRPC(r) {
		o.status = http.StatusOK
		hdr["Content-Type"] = grpcContentType
		hdr["Grpc-Status"] = []string{grpcCode}
		hdr["Grpc-Message"] = []string{grpcEncodeMessage(msg)}
		w.WriteHeader(http.StatusOK)
		return
	}
	hdr["Content-Type"] = textPlain
	hdr["X-Content-Type-Options"] = noSniff
	w.WriteHeader(code)
	n, _ := io.WriteString(w, msg+"\n")
	o.bytesOut = int64(n)
}

var (
	textPlain       = []string{"text/plain; charset=utf-8"}
	noSniff         = []string{"nosniff"}
	grpcContentType = []string{"application/grpc"}
)

// grpcEncodeMessage percent-encodes a grpc-message value as the gRPC
// HTTP/2 protocol requires: bytes outside printable ASCII, and '%'.
func grpcEncodeMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// normalizeHost strips the port and a trailing dot from a Host header value
// and lower-cases it, allocating only when it must change case.
func normalizeHost(host string) string {
	if host == "" {
		return ""
	}
	if host[0] == '[' {
		if i := strings.IndexByte(host, ']'); i > 0 {
			// Routes hold IPv6 addresses in canonical form (poolspec).
			lit := host[1:i]
			if ip, err := netip.ParseAddr(lit); err == nil {
				var buf [64]byte
				if canon := ip.AppendTo(buf[:0]); string(canon) != lit {
					return string(canon)
				}
				return lit
			}
			return strings.ToLower(host[1:i])
		}
		return ""
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// bufPool holds copy buffers, so streaming a body allocates nothing.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// copyBody streams src to w and returns the bytes written. With flush,
// every chunk is flushed at once, so streamed responses (unknown length,
// server-sent events) are not held back.
func copyBody(w http.ResponseWriter, src io.Reader, flush bool) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var flusher http.Flusher
	if flush {
		flusher, _ = w.(http.Flusher)
	}
	var written int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
}
