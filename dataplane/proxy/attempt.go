package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lb-project/lb/dataplane/routing"
	"github.com/lb-project/lb/dataplane/selector"
	"github.com/lb-project/lb/internal/poolspec"
)

// errNoBackend says the pool had no backend to offer (none configured, or
// all draining).
var errNoBackend = errors.New("no backend")

// maxReplayBody is the largest request body kept in memory so that an
// idempotent request can be retried after its body was sent.
const maxReplayBody = 64 << 10

// panicLogInterval spaces out "panic mode" log lines per pool.
const panicLogInterval = 10 * time.Second

// roundTrip sends r to a backend of pool, retrying on another backend when
// a connection could not be established or broke before any response and a
// retry is safe. It returns the response with the chosen backend's index;
// the caller must call pool.States[idx].End() when done with it. On error,
// idx names the last backend tried (or is 0 with errNoBackend). It notes
// retries and request body bytes in o.
func (h *Handler) roundTrip(r *http.Request, pool *routing.Pool, upgrade string, o *outcome) (*http.Response, int, error) {
	outreq := prepareOutbound(r, pool, upgrade)
	var rt http.RoundTripper = h.transport
	if pool.Transport != nil {
		rt = pool.Transport
	}
	key := hashKey(pool, headerLookup(r.Header), r.RemoteAddr, r.URL.Path)
	body, replay := replayableBody(r)
	o.body, o.bytesIn = body, int64(len(replay))
	var resp *http.Response
	idx, err := h.tryBackends(r.Context(), pool, key, o, func() bool {
		return replay != nil || body == nil || !body.consumed.Load()
	}, func(idx int) (int, error) {
		outreq.URL.Host = pool.Backends[idx].Address
		if replay != nil {
			outreq.Body = io.NopCloser(bytes.NewReader(replay))
		} else if body != nil {
			outreq.Body = body
		}
		var err error
		if resp, err = rt.RoundTrip(outreq); err != nil {
			return 0, err
		}
		return resp.StatusCode, nil
	})
	return resp, idx, err
}

// errSource says whether the client is gone (Err not nil): a request's
// context, or the H1Server connection.
type errSource interface{ Err() error }

// tryBackends runs try on a backend of pool picked by its selector, and on
// another one when try fails before any response, the client is still
// there, safe says the request may be sent again, the error is retryable and
// the pool allows more attempts. try sends the request to backend idx and
// returns its status. On success the backend's request stays counted in
// flight: the caller calls pool.States[idx].End() when done with it. On
// error, idx names the last backend tried (or is 0 with errNoBackend). It
// counts upstream requests, retries, successes and failures.
func (h *Handler) tryBackends(client errSource, pool *routing.Pool, key uint64, o *outcome,
	safe func() bool, try func(idx int) (int, error)) (int, error) {
	var tried uint64
	attempts := int(pool.Retries) + 1
	for attempt := 1; ; attempt++ {
		now := o.start // a clock read saved: the request began a moment ago
		if attempt > 1 {
			now = time.Now()
		}
		idx, sel, panicking := pool.Pick(key, tried, now.UnixNano())
		if idx < 0 {
			return 0, errNoBackend
		}
		if panicking && pool.ShouldLogPanic(now.UnixNano(), panicLogInterval) {
			h.log.Warn("no healthy backend in pool; sending to unhealthy ones (panic mode)", "pool", pool.Name)
		}
		addr := pool.Backends[idx].Address
		if h.log.IsDebug() {
			h.log.Debug("upstream peer is", "backend", addr, "pool", pool.Name, "attempt", attempt)
		}
		st := pool.States[idx]
		st.Begin()
		st.Stats.UpstreamRequests.Add(1)
		status, err := try(idx)
		if err == nil {
			d := time.Since(now)
			o.answered = now.Add(d) // time.Now, for one reading of the clock
			pool.Stats.Upstream.Observe(d)
			if status >= 500 {
				h.recordFailure(pool, idx, "status "+strconv.Itoa(status))
			} else {
				st.RecordSuccess()
			}
			return idx, nil
		}
		st.End()
		if client.Err() != nil {
			return idx, err // the client left; not the backend's fault
		}
		h.recordFailure(pool, idx, err.Error())
		if attempt >= attempts || !safe() || !retryable(err) {
			return idx, err
		}
		if sel < 64 {
			tried |= 1 << sel
		}
		o.retries++
		pool.Stats.Retries.Add(1)
		h.log.Debug("retrying on another backend", "pool", pool.Name, "failed_backend", addr, "attempt", attempt, "error", err)
	}
}

// recordFailure counts a failed request against backend idx and logs an
// ejection if it caused one.
func (h *Handler) recordFailure(pool *routing.Pool, idx int, reason string) {
	if d := pool.RecordFailure(idx, time.Now()); d > 0 {
		h.log.Warn("backend ejected after consecutive failures", "pool", pool.Name,
			"backend", pool.Backends[idx].Address, "for", d, "last_error", reason)
	}
}

// trackedBody passes a request body through while noting whether anything
// read it; its Close does nothing, so that a transport closing it after a
// failed attempt does not stop a retry.
type trackedBody struct {
	body     io.Reader
	consumed atomic.Bool
	n        atomic.Int64 // bytes read
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.consumed.Store(true)
	n, err := b.body.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *trackedBody) Close() error { return nil }

// replayableBody prepares r's body for retries: a small body of an
// idempotent request is read into memory (replay); any other body is
// tracked, so a retry happens only if it was never read. Both are nil for a
// request without a body.
func replayableBody(r *http.Request) (*trackedBody, []byte) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if idempotent(r.Method) && r.ContentLength > 0 && r.ContentLength <= maxReplayBody {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err == nil {
			return nil, buf
		}
		// A short body: let the transport see the same failure.
	}
	return &trackedBody{body: r.Body}, nil
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// retryable reports whether err means the request never got to a backend or
// the connection broke before any response: a failed dial (refused,
// unreachable, connect timeout), a failed TLS handshake, or a reset or EOF
// before the response. A response-header timeout is not retried: the
// backend may be working on it.
func retryable(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	var verr *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	if errors.As(err, &rh) || errors.As(err, &alert) || errors.As(err, &verr) || errors.As(err, &ua) || errors.As(err, &he) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout awaiting response headers") {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED)
}

// headerLookup finds header fields of a request net/http parsed.
type headerLookup http.Header

// values returns the values of the field named by its canonical name.
func (h headerLookup) values(name string, each func(string) bool) {
	for _, v := range h[name] {
		if !each(v) {
			return
		}
	}
}

// fieldSource gives the values of a request's header fields, in order;
// each returns false to stop.
type fieldSource interface {
	values(canonicalName string, each func(string) bool)
}

// hashKey returns the consistent-hash key for pool of a request with
// header fields hdr from client (host:port) for path, or 0 for other
// policies. A request without the key's attribute gets a random key, so
// such requests spread over the pool.
func hashKey(pool *routing.Pool, hdr fieldSource, client, path string) uint64 {
	if pool.LoadBalancing.Algorithm != poolspec.AlgorithmConsistentHash {
		return 0
	}
	k := pool.LoadBalancing.HashKey
	var v string
	switch k.Source {
	case poolspec.HashHeader:
		hdr.values(k.Name, func(s string) bool { v = s; return false })
	case poolspec.HashCookie:
		hdr.values("Cookie", func(line string) bool { v = cookieValue(line, k.Name); return v == "" })
	case poolspec.HashClientIP:
		v = client
		if i := strings.LastIndexByte(v, ':'); i >= 0 {
			v = v[:i]
		}
	case poolspec.HashPath:
		v = path
	}
	if v == "" {
		return rand.Uint64()
	}
	return selector.HashString(v)
}

// cookieValue finds a cookie's value in a Cookie header line without
// allocating.
func cookieValue(line, name string) string {
	for line != "" {
		var part string
		part, line, _ = strings.Cut(line, ";")
		part = strings.TrimSpace(part)
		if n, v, ok := strings.Cut(part, "="); ok && n == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
