package poolspec

import (
	"strconv"
	"time"
)

// Algorithm is a backend selection policy.
type Algorithm string

// Algorithms; AlgorithmRoundRobin is the default, also spelt "".
const (
	AlgorithmRoundRobin     Algorithm = "round-robin"
	AlgorithmLeastRequest   Algorithm = "least-request"
	AlgorithmRandom         Algorithm = "random"
	AlgorithmConsistentHash Algorithm = "consistent-hash"
)

// Hash key sources.
const (
	HashHeader   = "header"
	HashCookie   = "cookie"
	HashClientIP = "client-ip"
	HashPath     = "path"
)

// HashKey names the request attribute consistent hashing uses.
type HashKey struct {
	// Source is HashHeader, HashCookie, HashClientIP or HashPath.
	Source string `json:"source,omitempty"`
	// Name of the header or cookie.
	Name string `json:"name,omitempty"`
}

// String renders the key as the CLI writes it: "header:X-User", "client-ip".
func (k HashKey) String() string {
	if k.Name != "" {
		return k.Source + ":" + k.Name
	}
	return k.Source
}

// LoadBalancing is a pool's selection policy.
type LoadBalancing struct {
	Algorithm Algorithm     `json:"algorithm,omitempty"`
	HashKey   HashKey       `json:"hash_key,omitzero"`
	SlowStart time.Duration `json:"slow_start,omitempty"`
}

// Health check types; "" means no active checks.
const (
	CheckHTTP = "http"
	CheckTCP  = "tcp"
	CheckGRPC = "grpc"
)

// HealthCheck configures active health checks. Zero durations and counts
// mean the defaults (see WithDefaults).
type HealthCheck struct {
	Type               string        `json:"type,omitempty"`
	Path               string        `json:"path,omitempty"`
	Host               string        `json:"host,omitempty"`
	StatusMin          uint32        `json:"status_min,omitempty"`
	StatusMax          uint32        `json:"status_max,omitempty"`
	GRPCService        string        `json:"grpc_service,omitempty"`
	Interval           time.Duration `json:"interval,omitempty"`
	Timeout            time.Duration `json:"timeout,omitempty"`
	HealthyThreshold   uint32        `json:"healthy_threshold,omitempty"`
	UnhealthyThreshold uint32        `json:"unhealthy_threshold,omitempty"`
}

// Health check defaults.
const (
	DefaultCheckInterval      = 5 * time.Second
	DefaultCheckTimeout       = time.Second
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
	DefaultStatusMin          = 200
	DefaultStatusMax          = 399
)

// WithDefaults fills unset fields of an active check.
func (h HealthCheck) WithDefaults() HealthCheck {
	if h.Type == "" {
		return h
	}
	if h.Interval == 0 {
		h.Interval = DefaultCheckInterval
	}
	if h.Timeout == 0 {
		h.Timeout = min(DefaultCheckTimeout, h.Interval/2)
	}
	if h.HealthyThreshold == 0 {
		h.HealthyThreshold = DefaultHealthyThreshold
	}
	if h.UnhealthyThreshold == 0 {
		h.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if h.Type == CheckHTTP {
		if h.Path == "" {
			h.Path = "/"
		}
		if h.StatusMin == 0 {
			h.StatusMin = DefaultStatusMin
		}
		if h.StatusMax == 0 {
			h.StatusMax = max(DefaultStatusMax, h.StatusMin)
		}
	}
	return h
}

// OutlierDetection configures passive checks. Zero values mean the defaults.
type OutlierDetection struct {
	ConsecutiveFailures uint32        `json:"consecutive_failures,omitempty"`
	BaseEjectionTime    time.Duration `json:"base_ejection_time,omitempty"`
	MaxEjectionPercent  uint32        `json:"max_ejection_percent,omitempty"`
	Disabled            bool          `json:"disabled,omitempty"`
}

// Outlier detection defaults.
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionPercent  = 50
)

// WithDefaults fills unset fields.
func (o OutlierDetection) WithDefaults() OutlierDetection {
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if o.BaseEjectionTime == 0 {
		o.BaseEjectionTime = DefaultBaseEjectionTime
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	return o
}

// DefaultRetries is the retries of a pool that does not set them.
const DefaultRetries = 2

// MaxRetries bounds a pool's retries.
const MaxRetries = 10

// Timeouts towards backends. Zero values mean the defaults.
type Timeouts struct {
	Connect        time.Duration `json:"connect,omitempty"`
	ResponseHeader time.Duration `json:"response_header,omitempty"`
	Idle           time.Duration `json:"idle,omitempty"`
}

// Timeout defaults.
const (
	DefaultConnectTimeout        = 5 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultIdleTimeout           = 90 * time.Second
)

// WithDefaults fills unset timeouts.
func (t Timeouts) WithDefaults() Timeouts {
	if t.Connect == 0 {
		t.Connect = DefaultConnectTimeout
	}
	if t.ResponseHeader == 0 {
		t.ResponseHeader = DefaultResponseHeaderTimeout
	}
	if t.Idle == 0 {
		t.Idle = DefaultIdleTimeout
	}
	return t
}

// validatePolicies checks a pool's selection, health, retry and timeout
// settings, adding field errors under prefix.
func validatePolicies(prefix string, p Pool, add func(err error)) {
	fe := func(field, value, reason string, args ...any) {
		add(fieldErr(prefix+"."+field, value, reason, args...))
	}
	durField := func(field string, d, lo, hi time.Duration) {
		if d != 0 && (d < lo || d > hi) {
			fe(field, d.String(), "must be between %v and %v", lo, hi)
		}
	}
	lb := p.LoadBalancing
	switch lb.Algorithm {
	case "", AlgorithmRoundRobin, AlgorithmLeastRequest, AlgorithmRandom:
		if lb.HashKey != (HashKey{}) {
			fe("load_balancing.hash_key", lb.HashKey.String(), "only applies to algorithm consistent-hash")
		}
	case AlgorithmConsistentHash:
		k := lb.HashKey
		switch k.Source {
		case HashHeader, HashCookie:
			if k.Name == "" {
				fe("load_balancing.hash_key", k.String(), "%s needs a name, as in %s:X-User-Id", k.Source, k.Source)
			} else if !isToken(k.Name) {
				fe("load_balancing.hash_key.name", k.Name, "is not a valid %s name", k.Source)
			}
		case HashClientIP, HashPath:
			if k.Name != "" {
				fe("load_balancing.hash_key", k.String(), "%s takes no name", k.Source)
			}
		case "":
			fe("load_balancing.hash_key", "", "is required with consistent-hash: header:NAME, cookie:NAME, client-ip or path")
		default:
			fe("load_balancing.hash_key.source", k.Source, "must be header, cookie, client-ip or path")
		}
		if lb.SlowStart != 0 {
			fe("load_balancing.slow_start", lb.SlowStart.String(), "does not apply to consistent-hash")
		}
	default:
		fe("load_balancing.algorithm", string(lb.Algorithm), "must be round-robin, least-request, random or consistent-hash")
	}
	durField("load_balancing.slow_start", lb.SlowStart, time.Second, time.Hour)

	h := p.HealthCheck
	switch h.Type {
	case "":
		if h != (HealthCheck{}) {
			fe("health_check.type", "", "is required when other health check fields are set: http, tcp or grpc")
		}
	case CheckHTTP, CheckTCP, CheckGRPC:
	default:
		fe("health_check.type", h.Type, "must be http, tcp or grpc")
	}
	if h.Type != CheckHTTP {
		if h.Path != "" || h.Host != "" || h.StatusMin != 0 || h.StatusMax != 0 {
			fe("health_check", h.Type, "path, host and expected status only apply to http checks")
		}
	}
	if h.Type != CheckGRPC && h.GRPCService != "" {
		fe("health_check.grpc_service", h.GRPCService, "only applies to grpc checks")
	}
	if h.Path != "" {
		if err := ValidatePathPrefix(prefix+".health_check.path", h.Path); err != nil {
			add(err)
		}
	}
	if h.Host != "" {
		if err := checkHostHeader(h.Host); err != nil {
			fe("health_check.host", h.Host, "%s", err.Error())
		}
	}
	for _, s := range []struct {
		name string
		v    uint32
	}{{"expected_status_min", h.StatusMin}, {"expected_status_max", h.StatusMax}} {
		if s.v != 0 && (s.v < 100 || s.v > 599) {
			fe("health_check."+s.name, strconv.Itoa(int(s.v)), "must be an HTTP status, 100 to 599")
		}
	}
	if h.StatusMin != 0 && h.StatusMax != 0 && h.StatusMin > h.StatusMax {
		fe("health_check.expected_status_max", strconv.Itoa(int(h.StatusMax)), "must not be below expected_status_min %d", h.StatusMin)
	}
	durField("health_check.interval", h.Interval, 100*time.Millisecond, time.Hour)
	durField("health_check.timeout", h.Timeout, time.Millisecond, time.Minute)
	if d := h.WithDefaults(); h.Type != "" && d.Timeout >= d.Interval {
		fe("health_check.interval", d.Interval.String(), "must be longer than the timeout (%v)", d.Timeout)
	}
	for _, s := range []struct {
		name string
		v    uint32
	}{{"healthy_threshold", h.HealthyThreshold}, {"unhealthy_threshold", h.UnhealthyThreshold}} {
		if s.v > 100 {
			fe("health_check."+s.name, strconv.Itoa(int(s.v)), "must be between 1 and 100")
		}
	}

	o := p.OutlierDetection
	if o.ConsecutiveFailures > 1000 {
		fe("outlier_detection.consecutive_failures", strconv.Itoa(int(o.ConsecutiveFailures)), "must be between 1 and 1000")
	}
	durField("outlier_detection.base_ejection_time", o.BaseEjectionTime, time.Second, time.Hour)
	if o.MaxEjectionPercent > 100 {
		fe("outlier_detection.max_ejection_percent", strconv.Itoa(int(o.MaxEjectionPercent)), "must be between 1 and 100")
	}

	if p.Retries != nil && *p.Retries > MaxRetries {
		fe("retry.retries", strconv.Itoa(int(*p.Retries)), "must be between 0 and %d", MaxRetries)
	}
	durField("timeouts.connect", p.Timeouts.Connect, time.Millisecond, 5*time.Minute)
	durField("timeouts.response_header", p.Timeouts.ResponseHeader, time.Millisecond, time.Hour)
	durField("timeouts.idle", p.Timeouts.Idle, time.Second, time.Hour)
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '!' || c == '#' || c == '$' || c == '%' ||
			c == '&' || c == '\'' || c == '*' || c == '+' || c == '^' || c == '`' || c == '|' || c == '~'
		if !ok {
			return false
		}
	}
	return true
}

// RetriesOrDefault returns the pool's retries, or the default.
func (p Pool) RetriesOrDefault() uint32 {
	if p.Retries == nil {
		return DefaultRetries
	}
	return *p.Retries
}
