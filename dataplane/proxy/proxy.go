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
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lb-project/lb/dataplane/routing"
)

// Config configures a Handler.
type Config struct {
	// Table is the routing table in use. Required.
	Table *routing.Current
	// Transport forwards requests to backends. Default: NewTransport().
	Transport http.RoundTripper
	// Logger receives the proxy's log lines. Default: a null logger.
	Logger hclog.Logger
}

// Handler is the proxying http.Handler.
type Handler struct {
	table     *routing.Current
	transport http.RoundTripper
	log       hclog.Logger
}

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
	return &Handler{table: cfg.Table, transport: cfg.Transport, log: cfg.Logger}
}

// NewTransport returns the upstream transport: HTTP/1.1 with keep-alive,
// a large idle pool per backend so connections are reused under load, no
// proxy from the environment and no transparent decompression.
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
	t := h.table.Load()
	if t == nil {
		plainError(w, http.StatusServiceUnavailable, "not ready: no configuration received from the control plane yet\n")
		return
	}
	pool := t.Match(normalizeHost(r.Host), r.URL.Path)
	if pool == nil {
		plainError(w, http.StatusNotFound, "no route: no pool matches this host and path\n")
		return
	}
	b := pool.Pick()
	if b == nil {
		plainError(w, http.StatusServiceUnavailable, "no backend: pool "+pool.Name+" has no backends\n")
		return
	}
	if h.log.IsDebug() {
		h.log.Debug("upstream peer is", "peer", b.Address, "pool", pool.Name)
	}

	outreq := prepareOutbound(r, b.Address)
	resp, err := h.transport.RoundTrip(outreq)
	if err != nil {
		h.upstreamError(w, r, pool.Name, b.Address, err)
		return
	}
	defer resp.Body.Close()

	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	removeHopByHop(dst)
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = keys
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyBody(w, resp.Body, resp.ContentLength < 0); err != nil {
		if r.Context().Err() == nil {
			h.log.Warn("response body copy failed", "pool", pool.Name, "peer", b.Address, "error", err)
		}
		// The status line is out: abort the connection so the client sees a
		// truncated response rather than a short one that looks complete.
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
func prepareOutbound(r *http.Request, addr string) *http.Request {
	r.URL.Scheme = "http"
	r.URL.Host = addr
	r.RequestURI = ""
	r.Close = false
	if r.ContentLength == 0 {
		r.Body = nil // http.NoBody or empty: send no body
	}
	removeHopByHop(r.Header)
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior, ok := r.Header["X-Forwarded-For"]; ok && len(prior) > 0 {
			r.Header["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
		} else {
			r.Header["X-Forwarded-For"] = []string{ip}
		}
	}
	if r.TLS != nil {
		r.Header["X-Forwarded-Proto"] = protoHTTPS
	} else {
		r.Header["X-Forwarded-Proto"] = protoHTTP
	}
	if r.Host != "" {
		// Set, not appended: a client-supplied value must not be trusted.
		r.Header["X-Forwarded-Host"] = []string{r.Host}
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		// Keep Go's transport from inventing a User-Agent the client did not send.
		r.Header["User-Agent"] = emptyValue
	}
	return r
}

// Shared, never-modified header values.
var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
	emptyValue = []string{""}
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
		for _, f := range strings.Split(v, ",") {
			if i := strings.IndexByte(f, ';'); i >= 0 {
				f = f[:i]
			}
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// upstreamError answers a request whose backend exchange failed.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, pool, addr string, err error) {
	if r.Context().Err() != nil {
		// The client went away; there is nobody to answer.
		h.log.Debug("client canceled request", "pool", pool, "peer", addr)
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		h.log.Warn("upstream timed out", "pool", pool, "peer", addr, "error", err)
		plainError(w, http.StatusGatewayTimeout, "gateway timeout: backend "+addr+" did not answer in time\n")
		return
	}
	h.log.Warn("upstream unreachable", "pool", pool, "peer", addr, "error", err)
	plainError(w, http.StatusBadGateway, "bad gateway: backend "+addr+" unreachable: "+reason(err)+"\n")
}

// reason shortens a transport error to its innermost cause.
func reason(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && i+2 < len(s) {
		s = s[i+2:]
	}
	return s
}

func plainError(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

var (
	textPlain = []string{"text/plain; charset=utf-8"}
	noSniff   = []string{"nosniff"}
)

// normalizeHost strips the port and a trailing dot from a Host header value
// and lower-cases it, allocating only when it must change case.
func normalizeHost(host string) string {
	if host == "" {
		return ""
	}
	if host[0] == '[' {
		if i := strings.IndexByte(host, ']'); i > 0 {
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

// copyBody streams src to w. With flush, every chunk is flushed at once, so
// streamed responses (unknown length, server-sent events) are not held back.
func copyBody(w http.ResponseWriter, src io.Reader, flush bool) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var flusher http.Flusher
	if flush {
		flusher, _ = w.(http.Flusher)
	}
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
