// Package stats holds the data plane's request-path counters: plain atomics
// that the proxy updates without locks or allocation, and that the metrics
// collector reads when Prometheus scrapes. Counters live in the objects the
// request path already holds (a backend's State, a routing Pool), so
// recording a request costs a few atomic adds and no lookup.
package stats

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Method classes: the label values of a request's method. Any other method
// counts as "other", so a client cannot grow the label set.
const (
	MethodGet = iota
	MethodHead
	MethodPost
	MethodPut
	MethodDelete
	MethodPatch
	MethodOptions
	MethodOther
	// NumMethods is the number of method classes.
	NumMethods
)

// MethodNames are the label values of the method classes, by index.
var MethodNames = [NumMethods]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}

// MethodClass returns the method class of m.
func MethodClass(m string) int {
	switch m {
	case http.MethodGet:
		return MethodGet
	case http.MethodHead:
		return MethodHead
	case http.MethodPost:
		return MethodPost
	case http.MethodPut:
		return MethodPut
	case http.MethodDelete:
		return MethodDelete
	case http.MethodPatch:
		return MethodPatch
	case http.MethodOptions:
		return MethodOptions
	}
	return MethodOther
}

// NumCodes is the number of status classes (1xx to 5xx).
const NumCodes = 5

// CodeNames are the label values of the status classes, by index.
var CodeNames = [NumCodes]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// CodeClass returns the status class index of an HTTP status code; codes
// outside 100-599 count as 5xx.
func CodeClass(code int) int {
	c := code/100 - 1
	if c < 0 || c >= NumCodes {
		return NumCodes - 1
	}
	return c
}

// Requests counts requests by method class and status class.
type Requests [NumMethods][NumCodes]atomic.Uint64

// Add counts one request of method class m answered with status code.
func (r *Requests) Add(m, code int) { r[m][CodeClass(code)].Add(1) }

// Backend holds one backend's counters in one pool.
type Backend struct {
	// Requests answered with this backend's response, or with the proxy's
	// error after this backend was the last one tried.
	Requests Requests
	// UpstreamRequests counts requests sent to the backend, retries
	// included; with the connections opened it gives the reuse ratio.
	UpstreamRequests atomic.Uint64
	// RequestBytes and ResponseBytes count body bytes relayed.
	RequestBytes, ResponseBytes atomic.Uint64
	// Ejections counts passive-health ejections.
	Ejections atomic.Uint64
}

// Pool holds one pool's counters.
type Pool struct {
	// NoBackend counts requests the pool could not send anywhere (no
	// backend configured, or all draining).
	NoBackend Requests
	// Retries counts requests sent again to another backend.
	Retries atomic.Uint64
	// Duration is the whole request's time, as the proxy saw it.
	Duration Histogram
	// Upstream is the time from sending a request to a backend to its
	// response headers.
	Upstream Histogram
}

// Buckets are the histograms' upper bounds in seconds.
var Buckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// bucketNanos are Buckets in nanoseconds, for lookups without floats.
var bucketNanos = func() (b [len(Buckets)]int64) {
	for i, s := range Buckets {
		b[i] = int64(s * float64(time.Second))
	}
	return b
}()

// Histogram is a fixed-bucket latency histogram updated with atomics.
type Histogram struct {
	counts   [len(Buckets) + 1]atomic.Uint64 // the last is +Inf
	sumNanos atomic.Uint64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	n := int64(d)
	if n < 0 {
		n = 0
	}
	i := 0
	for i < len(bucketNanos) && n > bucketNanos[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNanos.Add(uint64(n))
}

// Snapshot returns the observation count, the sum in seconds, and the
// cumulative count per upper bound of Buckets, in Prometheus's form.
func (h *Histogram) Snapshot() (count uint64, sum float64, cumulative map[float64]uint64) {
	cumulative = make(map[float64]uint64, len(Buckets))
	for i, le := range Buckets {
		count += h.counts[i].Load()
		cumulative[le] = count
	}
	count += h.counts[len(Buckets)].Load()
	return count, float64(h.sumNanos.Load()) / float64(time.Second), cumulative
}

// Listener and protocol indexes of downstream connections.
const (
	ListenerHTTP = iota
	ListenerHTTPS
	// NumListeners is the number of listener kinds.
	NumListeners
)

// Downstream protocols.
const (
	ProtoHTTP1 = iota
	ProtoHTTP2
	// NumProtos is the number of downstream protocols.
	NumProtos
)

// ListenerNames and ProtoNames are the label values, by index.
var (
	ListenerNames = [NumListeners]string{"http", "https"}
	ProtoNames    = [NumProtos]string{"http1", "h2"}
)

// Conns counts downstream (client) connections.
type Conns struct {
	// Active are the open connections by listener and protocol.
	Active [NumListeners][NumProtos]atomic.Int64
	// Accepted counts connections accepted, by listener.
	Accepted [NumListeners]atomic.Uint64
}
