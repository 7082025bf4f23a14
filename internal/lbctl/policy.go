package lbctl

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// Names of the load balancing, health check, retry, timeout and outlier
// detection flags of "pool create" and "pool update".
const (
	flagAlgorithm          = "algorithm"
	flagHashKey            = "hash-key"
	flagSlowStart          = "slow-start"
	flagHealthCheck        = "health-check"
	flagHealthHost         = "health-host"
	flagHealthStatus       = "health-status"
	flagHealthInterval     = "health-interval"
	flagHealthTimeout      = "health-timeout"
	flagHealthyThreshold   = "healthy-threshold"
	flagUnhealthyThreshold = "unhealthy-threshold"
	flagRetries            = "retries"
	flagConnectTimeout     = "connect-timeout"
	flagResponseTimeout    = "response-timeout"
	flagIdleTimeout        = "idle-timeout"
	flagOutlierFailures    = "outlier-failures"
	flagOutlierEjection    = "outlier-ejection-time"
	flagOutlierMaxEjected  = "outlier-max-ejected"
	flagNoOutlier          = "no-outlier-detection"
	// Only on "pool update".
	flagNoHealthCheck = "no-health-check"
)

// healthFlags are the flags that set a field of the health check; they
// cannot be combined with --no-health-check.
var healthFlags = []string{
	flagHealthCheck, flagHealthHost, flagHealthStatus, flagHealthInterval,
	flagHealthTimeout, flagHealthyThreshold, flagUnhealthyThreshold,
}

// Defaults the control plane applies to unset fields, shown by "pool get".
const (
	defaultCheckInterval       = 5 * time.Second
	defaultCheckTimeout        = time.Second
	defaultHealthyThreshold    = 2
	defaultUnhealthyThreshold  = 3
	defaultStatusMin           = 200
	defaultStatusMax           = 399
	defaultOutlierFailures     = 5
	defaultOutlierEjectionTime = 30 * time.Second
	defaultOutlierMaxEjected   = 50
	defaultRetries             = 2
	maxRetries                 = 10
	defaultConnectTimeout      = 5 * time.Second
	defaultResponseTimeout     = 60 * time.Second
	defaultIdleTimeout         = 90 * time.Second
)

// policyHelp is the part of the help of "pool create" and "pool update"
// about the load balancing, health check, retry, timeout and outlier
// detection flags.
const policyHelp = `Load balancing: --algorithm chooses how requests are spread over the
backends: round-robin (the default; smooth weighted round robin),
least-request (the less loaded of two random backends, weighted), random
(weighted) or consistent-hash, which needs --hash-key: header:NAME or
cookie:NAME (the value of that header or cookie), client-ip or path. Requests
without the key are spread by round robin. --slow-start ramps the share of a
backend that joins or recovers up over that time (not with consistent-hash).

Health checks: every data plane checks every backend on its own.
--health-check is http:/PATH (a GET of PATH, healthy when the status is in
--health-status, default 200-399; sent with the --health-host Host header,
default the backend address), tcp (a TCP connect) or grpc[:SERVICE] (the gRPC
health checking protocol, for SERVICE or the whole server). A check runs every
--health-interval (default 5s), may take --health-timeout (default 1s, or half
the interval when that is shorter; less than the interval); a backend turns healthy after --healthy-threshold
passes in a row (default 2) and unhealthy after --unhealthy-threshold failures
in a row (default 3). Without --health-check there are no active checks.

Outlier detection (passive checks, on by default) ejects a backend after
--outlier-failures failed requests in a row (default 5) for
--outlier-ejection-time (default 30s, doubling with each further ejection),
with at most --outlier-max-ejected percent of the backends ejected at once
(default 50). --no-outlier-detection turns it off.

--retries is how often a request that could not reach a backend is retried on
another one, 0 to 10 (default 2). --connect-timeout (default 5s) limits
connecting to a backend, --response-timeout (default 60s) waiting for its
response headers, and --idle-timeout (default 90s) how long an idle
connection is kept for reuse.

Durations are written as in Go: 500ms, 2s, 1m30s.`

// algorithmNames maps the --algorithm names to the API values.
var algorithmNames = []struct {
	name string
	alg  lbv1.Algorithm
}{
	{"round-robin", lbv1.Algorithm_ALGORITHM_ROUND_ROBIN},
	{"least-request", lbv1.Algorithm_ALGORITHM_LEAST_REQUEST},
	{"random", lbv1.Algorithm_ALGORITHM_RANDOM},
	{"consistent-hash", lbv1.Algorithm_ALGORITHM_CONSISTENT_HASH},
}

// algorithmChoices is the list of --algorithm names for messages.
const algorithmChoices = "round-robin, least-request, random or consistent-hash"

// algorithmName returns the lbctl name of a: round-robin (also for unset),
// least-request, random, consistent-hash, or the enum's own name for a
// value this lbctl does not know.
func algorithmName(a lbv1.Algorithm) string {
	if a == lbv1.Algorithm_ALGORITHM_UNSPECIFIED {
		return "round-robin"
	}
	for _, n := range algorithmNames {
		if n.alg == a {
			return n.name
		}
	}
	return a.String()
}

// hashSourceNames maps the --hash-key sources to the API values; named
// sources take a header or cookie name after a colon.
var hashSourceNames = []struct {
	name   string
	source lbv1.HashKeySource
	named  bool
}{
	{"header", lbv1.HashKeySource_HASH_KEY_SOURCE_HEADER, true},
	{"cookie", lbv1.HashKeySource_HASH_KEY_SOURCE_COOKIE, true},
	{"client-ip", lbv1.HashKeySource_HASH_KEY_SOURCE_CLIENT_IP, false},
	{"path", lbv1.HashKeySource_HASH_KEY_SOURCE_PATH, false},
}

// hashKeyText renders k as --hash-key takes it: "header:X-User-Id",
// "client-ip".
func hashKeyText(k *lbv1.HashKey) string {
	s := k.GetSource().String()
	for _, n := range hashSourceNames {
		if n.source == k.GetSource() {
			s = n.name
		}
	}
	if k.GetName() != "" {
		s += ":" + k.GetName()
	}
	return s
}

// textValue is a pflag.Value that keeps the text given, to be checked when
// the command runs so that errors name the flag and value in lbctl's words.
// typ is the placeholder help shows after the flag name.
type textValue struct {
	s   string
	typ string
}

var _ pflag.Value = (*textValue)(nil)

func (v *textValue) String() string     { return v.s }
func (v *textValue) Set(s string) error { v.s = s; return nil }
func (v *textValue) Type() string       { return v.typ }

// policyFlags holds the load balancing, health check, retry, timeout and
// outlier detection flags of "pool create" and "pool update".
type policyFlags struct {
	algorithm, hashKey, slowStart textValue

	healthCheck, healthHost, healthStatus        textValue
	healthInterval, healthTimeout                textValue
	healthyThreshold, unhealthyThreshold         textValue
	noHealthCheck                                bool
	retries                                      textValue
	connectTimeout, responseTimeout, idleTimeout textValue

	outlierFailures, outlierEjection, outlierMaxEjected textValue
	noOutlier                                           bool
}

// register adds the flags to cmd; update adds --no-health-check of "pool
// update".
func (p *policyFlags) register(cmd *cobra.Command, update bool) {
	f := cmd.Flags()
	v := func(tv *textValue, name, typ, usage string) {
		tv.typ = typ
		f.Var(tv, name, usage)
	}
	v(&p.algorithm, flagAlgorithm, "round-robin|least-request|random|consistent-hash",
		"how requests are spread over the backends (default round-robin)")
	v(&p.hashKey, flagHashKey, "header:NAME|cookie:NAME|client-ip|path",
		"request attribute consistent-hash hashes: a header or cookie value, the client IP or the path")
	v(&p.slowStart, flagSlowStart, "DURATION",
		"ramp the share of a backend that joins or recovers up over this time (0: no ramp)")
	v(&p.healthCheck, flagHealthCheck, "http:/PATH|tcp|grpc[:SERVICE]",
		"active health check: HTTP GET of PATH, TCP connect, or gRPC health check of SERVICE (default: the whole server)")
	v(&p.healthHost, flagHealthHost, "HOST",
		"Host header of HTTP health checks (default: the backend address; empty: the default)")
	v(&p.healthStatus, flagHealthStatus, "MIN-MAX",
		"HTTP statuses that count as healthy, as in 200-299 (default 200-399)")
	v(&p.healthInterval, flagHealthInterval, "DURATION",
		"time between checks of a backend (default 5s)")
	v(&p.healthTimeout, flagHealthTimeout, "DURATION",
		"time a check may take, less than the interval (default 1s)")
	v(&p.healthyThreshold, flagHealthyThreshold, "N",
		"passes in a row that make an unhealthy backend healthy (default 2)")
	v(&p.unhealthyThreshold, flagUnhealthyThreshold, "N",
		"failures in a row that make a healthy backend unhealthy (default 3)")
	if update {
		f.BoolVar(&p.noHealthCheck, flagNoHealthCheck, false, "remove the active health check and all its settings")
	}
	v(&p.retries, flagRetries, "N",
		"retries of a request that could not reach a backend, 0 to 10 (default 2)")
	v(&p.connectTimeout, flagConnectTimeout, "DURATION",
		"limit on connecting to a backend, TCP and TLS (default 5s)")
	v(&p.responseTimeout, flagResponseTimeout, "DURATION",
		"limit on waiting for a backend's response headers; then 504 (default 60s)")
	v(&p.idleTimeout, flagIdleTimeout, "DURATION",
		"how long an idle backend connection is kept for reuse (default 90s)")
	v(&p.outlierFailures, flagOutlierFailures, "N",
		"failed requests in a row that eject a backend (default 5)")
	v(&p.outlierEjection, flagOutlierEjection, "DURATION",
		"how long a first ejection lasts; each further one doubles it, up to 10 times (default 30s)")
	v(&p.outlierMaxEjected, flagOutlierMaxEjected, "PERCENT",
		"most of the backends, 1 to 100 percent, that may be ejected at once (default 50)")
	if update {
		f.BoolVar(&p.noOutlier, flagNoOutlier, false, "turn outlier detection off (--no-outlier-detection=false turns it on again)")
	} else {
		f.BoolVar(&p.noOutlier, flagNoOutlier, false, "turn outlier detection off")
	}
	complete := func(name string, values ...string) {
		_ = cmd.RegisterFlagCompletionFunc(name, func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return values, cobra.ShellCompDirectiveNoFileComp
		})
	}
	algs := make([]string, len(algorithmNames))
	for i, n := range algorithmNames {
		algs[i] = n.name
	}
	complete(flagAlgorithm, algs...)
	complete(flagHashKey, "header:", "cookie:", "client-ip", "path")
	complete(flagHealthCheck, "http:/", "tcp", "grpc")
}

// policyChange is the result of the policy flags: the messages to send (nil
// when no flag of theirs was given), the update_mask paths of the fields
// given and a description of each change.
type policyChange struct {
	loadBalancing    *lbv1.LoadBalancing
	healthCheck      *lbv1.HealthCheck
	outlierDetection *lbv1.OutlierDetection
	retry            *lbv1.RetryPolicy
	timeouts         *lbv1.Timeouts
	paths            []string
	what             []string
}

func (c *policyChange) lb() *lbv1.LoadBalancing {
	if c.loadBalancing == nil {
		c.loadBalancing = &lbv1.LoadBalancing{}
	}
	return c.loadBalancing
}

func (c *policyChange) hc() *lbv1.HealthCheck {
	if c.healthCheck == nil {
		c.healthCheck = &lbv1.HealthCheck{}
	}
	return c.healthCheck
}

func (c *policyChange) od() *lbv1.OutlierDetection {
	if c.outlierDetection == nil {
		c.outlierDetection = &lbv1.OutlierDetection{}
	}
	return c.outlierDetection
}

func (c *policyChange) to() *lbv1.Timeouts {
	if c.timeouts == nil {
		c.timeouts = &lbv1.Timeouts{}
	}
	return c.timeouts
}

// apply sets the messages of c on pool.
func (c *policyChange) apply(pool *lbv1.Pool) {
	pool.LoadBalancing = c.loadBalancing
	pool.HealthCheck = c.healthCheck
	pool.OutlierDetection = c.outlierDetection
	pool.Retry = c.retry
	pool.Timeouts = c.timeouts
}

// build checks the policy flags of cmd and returns the change they ask for.
// Malformed values, values out of the range every pool allows and
// contradictory flags are usage errors; the control plane validates the
// rest (for example a hash key with another algorithm, on update).
func (p *policyFlags) build(cmd *cobra.Command, update bool) (*policyChange, error) {
	changed := cmd.Flags().Changed
	usage := func(err error) error { return &usageError{cmdPath: cmd.CommandPath(), err: err} }
	if update && changed(flagNoHealthCheck) && p.noHealthCheck {
		for _, name := range healthFlags {
			if changed(name) {
				return nil, usagef(cmd, "--%s and --%s cannot be used together", flagNoHealthCheck, name)
			}
		}
	}

	c := &policyChange{}
	add := func(what string, paths ...string) {
		c.paths = append(c.paths, paths...)
		c.what = append(c.what, what)
	}
	// duration parses the duration flag name when it was given, sets it
	// and describes the change (zero when the duration is 0).
	duration := func(name string, v *textValue, set func(*durationpb.Duration), what, zero, path string) (time.Duration, error) {
		if !changed(name) {
			return 0, nil
		}
		d, err := parseDurationFlag(name, v.s)
		if err != nil {
			return 0, usage(err)
		}
		set(durationpb.New(d))
		if d == 0 {
			add(zero, path)
		} else {
			add(what+" set to "+durText(d), path)
		}
		return d, nil
	}
	count := func(name string, v *textValue, set func(uint32), what, path string) error {
		if !changed(name) {
			return nil
		}
		n, err := parseCountFlag(name, v.s)
		if err != nil {
			return usage(err)
		}
		set(n)
		add(fmt.Sprintf("%s set to %d", what, n), path)
		return nil
	}

	// Load balancing.
	alg := lbv1.Algorithm_ALGORITHM_UNSPECIFIED
	if changed(flagAlgorithm) {
		a, err := parseAlgorithm(p.algorithm.s)
		if err != nil {
			return nil, usage(err)
		}
		alg = a
		c.lb().Algorithm = a
		paths := []string{"load_balancing.algorithm"}
		if update {
			// A hash key only applies to consistent-hash and a slow start
			// to the others: switching removes the one that no longer
			// applies, unless it is given too.
			switch {
			case a != lbv1.Algorithm_ALGORITHM_CONSISTENT_HASH && !changed(flagHashKey):
				paths = append(paths, "load_balancing.hash_key")
			case a == lbv1.Algorithm_ALGORITHM_CONSISTENT_HASH && !changed(flagSlowStart):
				paths = append(paths, "load_balancing.slow_start")
			}
		}
		add("algorithm set to "+algorithmName(a), paths...)
	}
	if changed(flagHashKey) {
		k, err := parseHashKey(p.hashKey.s)
		if err != nil {
			return nil, usage(err)
		}
		if !update && alg != lbv1.Algorithm_ALGORITHM_CONSISTENT_HASH {
			return nil, usagef(cmd, "--%s %s needs --%s consistent-hash", flagHashKey, quoteIfNeeded(p.hashKey.s), flagAlgorithm)
		}
		c.lb().HashKey = k
		add("hash key set to "+hashKeyText(k), "load_balancing.hash_key")
	}
	if _, err := duration(flagSlowStart, &p.slowStart, func(d *durationpb.Duration) { c.lb().SlowStart = d },
		"slow start", "slow start off", "load_balancing.slow_start"); err != nil {
		return nil, err
	}

	// Health check.
	if changed(flagHealthCheck) {
		hc, err := parseHealthCheck(p.healthCheck.s)
		if err != nil {
			return nil, usage(err)
		}
		h := c.hc()
		h.Type, h.Path, h.GrpcService = hc.GetType(), hc.GetPath(), hc.GetGrpcService()
		paths := []string{"health_check.type", "health_check.path", "health_check.grpc_service"}
		if update && hc.GetType() != lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP {
			// The Host header and status range only apply to HTTP
			// checks: switching to another kind removes them.
			if !changed(flagHealthHost) {
				paths = append(paths, "health_check.host")
			}
			if !changed(flagHealthStatus) {
				paths = append(paths, "health_check.expected_status_min", "health_check.expected_status_max")
			}
		}
		add("health check set to "+checkKindText(hc), paths...)
	}
	if changed(flagHealthHost) {
		c.hc().Host = p.healthHost.s
		add(setOrCleared("health check host", p.healthHost.s), "health_check.host")
	}
	if changed(flagHealthStatus) {
		lo, hi, err := parseStatusRange(p.healthStatus.s)
		if err != nil {
			return nil, usage(err)
		}
		c.hc().ExpectedStatusMin, c.hc().ExpectedStatusMax = lo, hi
		add(fmt.Sprintf("health check status set to %d-%d", lo, hi),
			"health_check.expected_status_min", "health_check.expected_status_max")
	}
	interval, err := duration(flagHealthInterval, &p.healthInterval, func(d *durationpb.Duration) { c.hc().Interval = d },
		"health check interval", "health check interval reset to the default", "health_check.interval")
	if err != nil {
		return nil, err
	}
	timeout, err := duration(flagHealthTimeout, &p.healthTimeout, func(d *durationpb.Duration) { c.hc().Timeout = d },
		"health check timeout", "health check timeout reset to the default", "health_check.timeout")
	if err != nil {
		return nil, err
	}
	if interval > 0 && timeout > 0 && interval <= timeout {
		return nil, usagef(cmd, "--%s %s must be longer than --%s %s",
			flagHealthInterval, quoteIfNeeded(p.healthInterval.s), flagHealthTimeout, quoteIfNeeded(p.healthTimeout.s))
	}
	if err := count(flagHealthyThreshold, &p.healthyThreshold, func(n uint32) { c.hc().HealthyThreshold = n },
		"healthy threshold", "health_check.healthy_threshold"); err != nil {
		return nil, err
	}
	if err := count(flagUnhealthyThreshold, &p.unhealthyThreshold, func(n uint32) { c.hc().UnhealthyThreshold = n },
		"unhealthy threshold", "health_check.unhealthy_threshold"); err != nil {
		return nil, err
	}
	if update && changed(flagNoHealthCheck) && p.noHealthCheck {
		c.healthCheck = &lbv1.HealthCheck{}
		add("health check removed", "health_check")
	}

	// Outlier detection.
	if err := count(flagOutlierFailures, &p.outlierFailures, func(n uint32) { c.od().ConsecutiveFailures = n },
		"outlier detection failures", "outlier_detection.consecutive_failures"); err != nil {
		return nil, err
	}
	if _, err := duration(flagOutlierEjection, &p.outlierEjection, func(d *durationpb.Duration) { c.od().BaseEjectionTime = d },
		"outlier ejection time", "outlier ejection time reset to the default", "outlier_detection.base_ejection_time"); err != nil {
		return nil, err
	}
	if changed(flagOutlierMaxEjected) {
		n, err := parsePercentFlag(flagOutlierMaxEjected, p.outlierMaxEjected.s)
		if err != nil {
			return nil, usage(err)
		}
		c.od().MaxEjectionPercent = n
		add(fmt.Sprintf("outlier max ejected set to %d%%", n), "outlier_detection.max_ejection_percent")
	}
	if changed(flagNoOutlier) && (p.noOutlier || update) {
		c.od().Disabled = p.noOutlier
		add("outlier detection "+onOff(!p.noOutlier), "outlier_detection.disabled")
	}

	// Retries.
	if changed(flagRetries) {
		n, err := parseRetriesFlag(p.retries.s)
		if err != nil {
			return nil, usage(err)
		}
		c.retry = &lbv1.RetryPolicy{Retries: &n}
		add(fmt.Sprintf("retries set to %d", n), "retry.retries")
	}

	// Timeouts.
	for _, t := range []struct {
		name string
		v    *textValue
		set  func(*durationpb.Duration)
		what string
		path string
	}{
		{flagConnectTimeout, &p.connectTimeout, func(d *durationpb.Duration) { c.to().Connect = d }, "connect timeout", "timeouts.connect"},
		{flagResponseTimeout, &p.responseTimeout, func(d *durationpb.Duration) { c.to().ResponseHeader = d }, "response timeout", "timeouts.response_header"},
		{flagIdleTimeout, &p.idleTimeout, func(d *durationpb.Duration) { c.to().Idle = d }, "idle timeout", "timeouts.idle"},
	} {
		if _, err := duration(t.name, t.v, t.set, t.what, t.what+" reset to the default", t.path); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// quoteIfNeeded returns s as it is, or quoted when it is empty or holds
// spaces, so that a value in a message stands out.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t") {
		return strconv.Quote(s)
	}
	return s
}

// parseAlgorithm parses an --algorithm name, in any case.
func parseAlgorithm(s string) (lbv1.Algorithm, error) {
	for _, n := range algorithmNames {
		if strings.EqualFold(s, n.name) {
			return n.alg, nil
		}
	}
	return 0, fmt.Errorf("--%s %s: unknown algorithm; choose %s", flagAlgorithm, quoteIfNeeded(s), algorithmChoices)
}

// parseHashKey parses a --hash-key value: header:NAME, cookie:NAME,
// client-ip or path. Whether NAME is a valid header or cookie name is
// checked by the control plane.
func parseHashKey(s string) (*lbv1.HashKey, error) {
	src, name, hasName := strings.Cut(s, ":")
	for _, n := range hashSourceNames {
		if !strings.EqualFold(src, n.name) {
			continue
		}
		switch {
		case n.named && name == "":
			example := "X-User-Id"
			if n.name == "cookie" {
				example = "session"
			}
			// "header:" and "header" both read "--hash-key header: ...".
			return nil, fmt.Errorf("--%s %s: needs a %s name, as in %s:%s", flagHashKey, src, n.name, n.name, example)
		case !n.named && hasName:
			return nil, fmt.Errorf("--%s %s: %s takes no name", flagHashKey, quoteIfNeeded(s), n.name)
		}
		return &lbv1.HashKey{Source: n.source, Name: name}, nil
	}
	return nil, fmt.Errorf("--%s %s: unknown hash key; use header:NAME, cookie:NAME, client-ip or path", flagHashKey, quoteIfNeeded(s))
}

// parseHealthCheck parses a --health-check value: http:/PATH, tcp or
// grpc[:SERVICE].
func parseHealthCheck(s string) (*lbv1.HealthCheck, error) {
	kind, rest, hasRest := strings.Cut(s, ":")
	bad := func(reason string) error {
		return fmt.Errorf("--%s %s: %s", flagHealthCheck, quoteIfNeeded(s), reason)
	}
	switch strings.ToLower(kind) {
	case "http":
		if !strings.HasPrefix(rest, "/") {
			return nil, bad(`http needs a path starting with "/", as in http:/healthz`)
		}
		return &lbv1.HealthCheck{Type: lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Path: rest}, nil
	case "tcp":
		if hasRest {
			return nil, bad("tcp takes nothing after it")
		}
		return &lbv1.HealthCheck{Type: lbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP}, nil
	case "grpc":
		return &lbv1.HealthCheck{Type: lbv1.HealthCheckType_HEALTH_CHECK_TYPE_GRPC, GrpcService: rest}, nil
	}
	return nil, bad("unknown check; use http:/PATH, tcp or grpc[:SERVICE]")
}

// parseStatusRange parses a --health-status value: MIN-MAX, or one status.
// The statuses themselves are checked by the control plane.
func parseStatusRange(s string) (uint32, uint32, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 32)
	h, err2 := strconv.ParseUint(hi, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("--%s %s: must be MIN-MAX, as in 200-299", flagHealthStatus, quoteIfNeeded(s))
	}
	return uint32(l), uint32(h), nil
}

// parseDurationFlag parses the duration s of flag name: Go syntax, not
// negative.
func parseDurationFlag(name, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--%s %s: not a duration; use Go syntax like 2s or 500ms", name, quoteIfNeeded(s))
	}
	if d < 0 {
		return 0, fmt.Errorf("--%s %s: must not be negative", name, s)
	}
	return d, nil
}

// parseInt parses a whole number for flag name; reason says what it must
// be, for messages.
func parseInt(name, s, reason string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("--%s %s: out of range; %s", name, s, reason)
		}
		return 0, fmt.Errorf("--%s %s: not a whole number; %s", name, quoteIfNeeded(s), reason)
	}
	return n, nil
}

// parseCountFlag parses a threshold: a whole number of at least 1. The upper
// bounds are checked by the control plane.
func parseCountFlag(name, s string) (uint32, error) {
	n, err := parseInt(name, s, "it must be at least 1")
	if err != nil {
		return 0, err
	}
	if n < 1 {
		return 0, fmt.Errorf("--%s %s: must be at least 1", name, s)
	}
	if n > math.MaxUint32 {
		return 0, fmt.Errorf("--%s %s: too large", name, s)
	}
	return uint32(n), nil
}

// parseRetriesFlag parses --retries: 0 to maxRetries.
func parseRetriesFlag(s string) (uint32, error) {
	reason := fmt.Sprintf("must be 0 to %d", maxRetries)
	n, err := parseInt(flagRetries, s, "it "+reason)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > maxRetries {
		return 0, fmt.Errorf("--%s %s: %s", flagRetries, s, reason)
	}
	return uint32(n), nil
}

// parsePercentFlag parses a percentage, 1 to 100, with an optional "%".
func parsePercentFlag(name, s string) (uint32, error) {
	const reason = "must be a percentage from 1 to 100"
	n, err := strconv.ParseInt(strings.TrimSuffix(s, "%"), 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("--%s %s: not a whole number; it %s", name, quoteIfNeeded(s), reason)
	}
	if err != nil || n < 1 || n > 100 {
		return 0, fmt.Errorf("--%s %s: %s", name, s, reason)
	}
	return uint32(n), nil
}

// durText renders d for people, in units that parse back: "500ms", "60s",
// "90s", "2m", "1h"; whole seconds stay seconds below 2 minutes.
func durText(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0 && d >= 2*time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	case d%time.Millisecond == 0 && d < time.Second:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	default:
		return d.String()
	}
}

// checkKindText describes what a health check checks: "http GET /healthz",
// "tcp connect", "grpc service NAME", "grpc (whole server)".
func checkKindText(h *lbv1.HealthCheck) string {
	switch h.GetType() {
	case lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP:
		path := h.GetPath()
		if path == "" {
			path = "/"
		}
		return "http GET " + path
	case lbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP:
		return "tcp connect"
	case lbv1.HealthCheckType_HEALTH_CHECK_TYPE_GRPC:
		if h.GetGrpcService() == "" {
			return "grpc (whole server)"
		}
		return "grpc service " + h.GetGrpcService()
	default:
		return h.GetType().String()
	}
}
