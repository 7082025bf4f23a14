package lbctl

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

func dpb(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

var (
	algRoundRobin     = lbv1.Algorithm_ALGORITHM_ROUND_ROBIN
	algLeastRequest   = lbv1.Algorithm_ALGORITHM_LEAST_REQUEST
	algRandom         = lbv1.Algorithm_ALGORITHM_RANDOM
	algConsistentHash = lbv1.Algorithm_ALGORITHM_CONSISTENT_HASH
	checkHTTP         = lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP
	checkTCP          = lbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP
	checkGRPC         = lbv1.HealthCheckType_HEALTH_CHECK_TYPE_GRPC
	keyHeader         = lbv1.HashKeySource_HASH_KEY_SOURCE_HEADER
	keyCookie         = lbv1.HashKeySource_HASH_KEY_SOURCE_COOKIE
	keyClientIP       = lbv1.HashKeySource_HASH_KEY_SOURCE_CLIENT_IP
	keyPath           = lbv1.HashKeySource_HASH_KEY_SOURCE_PATH
)

// TestPolicyFlagsAgainstServer checks the exact requests "pool create" and
// "pool update" send for the load balancing, health check, outlier
// detection, retry and timeout flags, against a real gRPC server.
func TestPolicyFlagsAgainstServer(t *testing.T) {
	created := &lbv1.CreatePoolResponse{Pool: &lbv1.Pool{Name: "api", Version: 4}, Version: 4}
	updated := &lbv1.UpdatePoolResponse{Pool: webPool, Version: 8}
	create := func(p *lbv1.Pool) *lbv1.CreatePoolRequest {
		p.Name = "api"
		return &lbv1.CreatePoolRequest{Pool: p}
	}
	update := func(p *lbv1.Pool, paths ...string) *lbv1.UpdatePoolRequest {
		p.Name = "web"
		return &lbv1.UpdatePoolRequest{Pool: p, UpdateMask: mask(paths...)}
	}
	const createdLine = "pool \"api\": created with 0 backends; configuration version 4\n"
	updatedLine := func(what string) string { return "pool \"web\": " + what + "; configuration version 8\n" }
	tests := []struct {
		name    string
		args    []string
		resp    proto.Message
		err     func(t *testing.T) error
		wantReq proto.Message
		stdout  string
		stderr  string
		code    int
	}{
		// pool create.
		{
			name: "create founding example",
			args: []string{"pool", "create", "api", "--algorithm", "least-request", "--health-check", "http:/healthz",
				"--health-interval", "2s", "--retries", "3", "--backend", "10.0.0.5:8080", "--backend", "10.0.0.6:8080"},
			resp: created,
			wantReq: create(&lbv1.Pool{
				Backends:      []*lbv1.Backend{{Address: "10.0.0.5:8080", Weight: 1}, {Address: "10.0.0.6:8080", Weight: 1}},
				LoadBalancing: &lbv1.LoadBalancing{Algorithm: algLeastRequest},
				HealthCheck:   &lbv1.HealthCheck{Type: checkHTTP, Path: "/healthz", Interval: dpb(2 * time.Second)},
				Retry:         &lbv1.RetryPolicy{Retries: proto.Uint32(3)},
			}),
			stdout: createdLine,
		},
		{
			name: "create with every policy flag",
			args: []string{"pool", "create", "api",
				"--algorithm", "round-robin", "--slow-start", "30s",
				"--health-check", "http:/ready", "--health-host", "api.internal", "--health-status", "200-299",
				"--health-interval", "10s", "--health-timeout", "500ms", "--healthy-threshold", "4", "--unhealthy-threshold", "6",
				"--retries", "0",
				"--connect-timeout", "2s", "--response-timeout", "1m30s", "--idle-timeout", "2m",
				"--outlier-failures", "7", "--outlier-ejection-time", "45s", "--outlier-max-ejected", "30"},
			resp: created,
			wantReq: create(&lbv1.Pool{
				LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRoundRobin, SlowStart: dpb(30 * time.Second)},
				HealthCheck: &lbv1.HealthCheck{Type: checkHTTP, Path: "/ready", Host: "api.internal",
					ExpectedStatusMin: 200, ExpectedStatusMax: 299,
					Interval: dpb(10 * time.Second), Timeout: dpb(500 * time.Millisecond),
					HealthyThreshold: 4, UnhealthyThreshold: 6},
				OutlierDetection: &lbv1.OutlierDetection{ConsecutiveFailures: 7, BaseEjectionTime: dpb(45 * time.Second), MaxEjectionPercent: 30},
				Retry:            &lbv1.RetryPolicy{Retries: proto.Uint32(0)},
				Timeouts:         &lbv1.Timeouts{Connect: dpb(2 * time.Second), ResponseHeader: dpb(90 * time.Second), Idle: dpb(2 * time.Minute)},
			}),
			stdout: createdLine,
		},
		{
			name: "create consistent hash on a header",
			args: []string{"pool", "create", "api", "--algorithm", "consistent-hash", "--hash-key", "header:X-User-Id"},
			resp: created,
			wantReq: create(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash,
				HashKey: &lbv1.HashKey{Source: keyHeader, Name: "X-User-Id"}}}),
			stdout: createdLine,
		},
		{
			name: "create consistent hash on a cookie, any case",
			args: []string{"pool", "create", "api", "--algorithm", "Consistent-Hash", "--hash-key", "Cookie:session"},
			resp: created,
			wantReq: create(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash,
				HashKey: &lbv1.HashKey{Source: keyCookie, Name: "session"}}}),
			stdout: createdLine,
		},
		{
			name: "create consistent hash on the client IP",
			args: []string{"pool", "create", "api", "--algorithm=consistent-hash", "--hash-key=client-ip"},
			resp: created,
			wantReq: create(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash,
				HashKey: &lbv1.HashKey{Source: keyClientIP}}}),
			stdout: createdLine,
		},
		{
			name: "create consistent hash on the path",
			args: []string{"pool", "create", "api", "--algorithm", "consistent-hash", "--hash-key", "path"},
			resp: created,
			wantReq: create(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash,
				HashKey: &lbv1.HashKey{Source: keyPath}}}),
			stdout: createdLine,
		},
		{
			name:    "create random",
			args:    []string{"pool", "create", "api", "--algorithm", "random"},
			resp:    created,
			wantReq: create(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRandom}}),
			stdout:  createdLine,
		},
		{
			name:    "create tcp check",
			args:    []string{"pool", "create", "api", "--health-check", "tcp"},
			resp:    created,
			wantReq: create(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Type: checkTCP}}),
			stdout:  createdLine,
		},
		{
			name:    "create grpc check of the whole server",
			args:    []string{"pool", "create", "api", "--health-check", "grpc"},
			resp:    created,
			wantReq: create(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Type: checkGRPC}}),
			stdout:  createdLine,
		},
		{
			name:    "create grpc check of a service",
			args:    []string{"pool", "create", "api", "--health-check", "grpc:shop.v1.Cart"},
			resp:    created,
			wantReq: create(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Type: checkGRPC, GrpcService: "shop.v1.Cart"}}),
			stdout:  createdLine,
		},
		{
			name:    "create outlier detection off",
			args:    []string{"pool", "create", "api", "--no-outlier-detection"},
			resp:    created,
			wantReq: create(&lbv1.Pool{OutlierDetection: &lbv1.OutlierDetection{Disabled: true}}),
			stdout:  createdLine,
		},
		{
			name:    "create outlier detection off set to false sends nothing",
			args:    []string{"pool", "create", "api", "--no-outlier-detection=false"},
			resp:    created,
			wantReq: create(&lbv1.Pool{}),
			stdout:  createdLine,
		},
		{
			name:    "create percent with a percent sign and a single status",
			args:    []string{"pool", "create", "api", "--outlier-max-ejected", "100%", "--health-check", "http:/", "--health-status", "204"},
			resp:    created,
			wantReq: create(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Type: checkHTTP, Path: "/", ExpectedStatusMin: 204, ExpectedStatusMax: 204}, OutlierDetection: &lbv1.OutlierDetection{MaxEjectionPercent: 100}}),
			stdout:  createdLine,
		},
		{
			name:    "create zero durations are sent as zero",
			args:    []string{"pool", "create", "api", "--slow-start", "0", "--idle-timeout", "0s"},
			resp:    created,
			wantReq: create(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{SlowStart: dpb(0)}, Timeouts: &lbv1.Timeouts{Idle: dpb(0)}}),
			stdout:  createdLine,
		},
		{
			name: "create health fields without a check are left to the server",
			args: []string{"pool", "create", "api", "--health-interval", "2s"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `pool.health_check.type "": is required when other health check fields are set: http, tcp or grpc`)
			},
			wantReq: create(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Interval: dpb(2 * time.Second)}}),
			stderr:  "lbctl: pool.health_check.type \"\": is required when other health check fields are set: http, tcp or grpc\n",
			code:    1,
		},
		{
			name: "create consistent hash without key is left to the server",
			args: []string{"pool", "create", "api", "--algorithm", "consistent-hash"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `pool.load_balancing.hash_key "": is required with consistent-hash: header:NAME, cookie:NAME, client-ip or path`)
			},
			wantReq: create(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash}}),
			stderr:  "lbctl: pool.load_balancing.hash_key \"\": is required with consistent-hash: header:NAME, cookie:NAME, client-ip or path\n",
			code:    1,
		},

		// pool update, one flag at a time.
		{
			name:    "update algorithm",
			args:    []string{"pool", "update", "web", "--algorithm", "least-request"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algLeastRequest}}, "load_balancing.algorithm", "load_balancing.hash_key"),
			stdout:  updatedLine("algorithm set to least-request"),
		},
		{
			name:    "update to consistent hash removes the slow start",
			args:    []string{"pool", "update", "web", "--algorithm", "consistent-hash"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash}}, "load_balancing.algorithm", "load_balancing.slow_start"),
			stdout:  updatedLine("algorithm set to consistent-hash"),
		},
		{
			name: "update algorithm with slow start",
			args: []string{"pool", "update", "web", "--algorithm", "round-robin", "--slow-start", "20s"},
			resp: updated,
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRoundRobin, SlowStart: dpb(20 * time.Second)}},
				"load_balancing.algorithm", "load_balancing.hash_key", "load_balancing.slow_start"),
			stdout: updatedLine("algorithm set to round-robin, slow start set to 20s"),
		},
		{
			name:    "update hash key alone is left to the server",
			args:    []string{"pool", "update", "web", "--hash-key", "cookie:sid"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{HashKey: &lbv1.HashKey{Source: keyCookie, Name: "sid"}}}, "load_balancing.hash_key"),
			stdout:  updatedLine("hash key set to cookie:sid"),
		},
		{
			name: "update to consistent hash",
			args: []string{"pool", "update", "web", "--algorithm", "consistent-hash", "--hash-key", "client-ip"},
			resp: updated,
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash, HashKey: &lbv1.HashKey{Source: keyClientIP}}},
				"load_balancing.algorithm", "load_balancing.slow_start", "load_balancing.hash_key"),
			stdout: updatedLine("algorithm set to consistent-hash, hash key set to client-ip"),
		},
		{
			name:    "update slow start",
			args:    []string{"pool", "update", "web", "--slow-start", "1m"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{SlowStart: dpb(time.Minute)}}, "load_balancing.slow_start"),
			stdout:  updatedLine("slow start set to 60s"),
		},
		{
			name: "update hash key with another algorithm is left to the server",
			args: []string{"pool", "update", "web", "--algorithm", "random", "--hash-key", "path"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `pool.load_balancing.hash_key "path": only applies to algorithm consistent-hash`)
			},
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRandom, HashKey: &lbv1.HashKey{Source: keyPath}}},
				"load_balancing.algorithm", "load_balancing.hash_key"),
			stderr: "lbctl: pool.load_balancing.hash_key \"path\": only applies to algorithm consistent-hash\n",
			code:   1,
		},
		{
			name:    "update slow start off",
			args:    []string{"pool", "update", "web", "--slow-start", "0s"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{LoadBalancing: &lbv1.LoadBalancing{SlowStart: dpb(0)}}, "load_balancing.slow_start"),
			stdout:  updatedLine("slow start off"),
		},
		{
			name: "update http check",
			args: []string{"pool", "update", "web", "--health-check", "http:/healthz"},
			resp: updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Type: checkHTTP, Path: "/healthz"}},
				"health_check.type", "health_check.path", "health_check.grpc_service"),
			stdout: updatedLine("health check set to http GET /healthz"),
		},
		{
			name: "update tcp check removes the HTTP-only settings",
			args: []string{"pool", "update", "web", "--health-check", "tcp"},
			resp: updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Type: checkTCP}},
				"health_check.type", "health_check.path", "health_check.grpc_service",
				"health_check.host", "health_check.expected_status_min", "health_check.expected_status_max"),
			stdout: updatedLine("health check set to tcp connect"),
		},
		{
			name: "update grpc check with a host given keeps it for the server to refuse",
			args: []string{"pool", "update", "web", "--health-check", "grpc:svc", "--health-host", "x"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `pool.health_check "grpc": path, host and expected status only apply to http checks`)
			},
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Type: checkGRPC, GrpcService: "svc", Host: "x"}},
				"health_check.type", "health_check.path", "health_check.grpc_service",
				"health_check.expected_status_min", "health_check.expected_status_max", "health_check.host"),
			stderr: "lbctl: pool.health_check \"grpc\": path, host and expected status only apply to http checks\n",
			code:   1,
		},
		{
			name:    "update health host",
			args:    []string{"pool", "update", "web", "--health-host", "api.internal"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Host: "api.internal"}}, "health_check.host"),
			stdout:  updatedLine("health check host set to api.internal"),
		},
		{
			name:    "update empty health host clears it",
			args:    []string{"pool", "update", "web", "--health-host", ""},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{}}, "health_check.host"),
			stdout:  updatedLine("health check host cleared"),
		},
		{
			name: "update health status",
			args: []string{"pool", "update", "web", "--health-status", "200-299"},
			resp: updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{ExpectedStatusMin: 200, ExpectedStatusMax: 299}},
				"health_check.expected_status_min", "health_check.expected_status_max"),
			stdout: updatedLine("health check status set to 200-299"),
		},
		{
			name:    "update health interval",
			args:    []string{"pool", "update", "web", "--health-interval", "2s"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Interval: dpb(2 * time.Second)}}, "health_check.interval"),
			stdout:  updatedLine("health check interval set to 2s"),
		},
		{
			name:    "update health timeout",
			args:    []string{"pool", "update", "web", "--health-timeout", "750ms"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Timeout: dpb(750 * time.Millisecond)}}, "health_check.timeout"),
			stdout:  updatedLine("health check timeout set to 750ms"),
		},
		{
			name:    "update health interval back to the default",
			args:    []string{"pool", "update", "web", "--health-interval", "0s"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Interval: dpb(0)}}, "health_check.interval"),
			stdout:  updatedLine("health check interval reset to the default"),
		},
		{
			name:    "update healthy threshold",
			args:    []string{"pool", "update", "web", "--healthy-threshold", "1"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{HealthyThreshold: 1}}, "health_check.healthy_threshold"),
			stdout:  updatedLine("healthy threshold set to 1"),
		},
		{
			name:    "update unhealthy threshold",
			args:    []string{"pool", "update", "web", "--unhealthy-threshold", "5"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{UnhealthyThreshold: 5}}, "health_check.unhealthy_threshold"),
			stdout:  updatedLine("unhealthy threshold set to 5"),
		},
		{
			name:    "update no health check",
			args:    []string{"pool", "update", "web", "--no-health-check"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{}}, "health_check"),
			stdout:  updatedLine("health check removed"),
		},
		{
			name:    "update retries",
			args:    []string{"pool", "update", "web", "--retries", "10"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{Retry: &lbv1.RetryPolicy{Retries: proto.Uint32(10)}}, "retry.retries"),
			stdout:  updatedLine("retries set to 10"),
		},
		{
			name:    "update retries 0 is sent",
			args:    []string{"pool", "update", "web", "--retries", "0"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{Retry: &lbv1.RetryPolicy{Retries: proto.Uint32(0)}}, "retry.retries"),
			stdout:  updatedLine("retries set to 0"),
		},
		{
			name:    "update connect timeout",
			args:    []string{"pool", "update", "web", "--connect-timeout", "3s"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{Timeouts: &lbv1.Timeouts{Connect: dpb(3 * time.Second)}}, "timeouts.connect"),
			stdout:  updatedLine("connect timeout set to 3s"),
		},
		{
			name:    "update response timeout",
			args:    []string{"pool", "update", "web", "--response-timeout", "5m"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{Timeouts: &lbv1.Timeouts{ResponseHeader: dpb(5 * time.Minute)}}, "timeouts.response_header"),
			stdout:  updatedLine("response timeout set to 5m"),
		},
		{
			name:    "update response timeout of whole minutes",
			args:    []string{"pool", "update", "web", "--response-timeout", "120s"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{Timeouts: &lbv1.Timeouts{ResponseHeader: dpb(2 * time.Minute)}}, "timeouts.response_header"),
			stdout:  updatedLine("response timeout set to 2m"),
		},
		{
			name:    "update idle timeout to the default",
			args:    []string{"pool", "update", "web", "--idle-timeout", "0"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{Timeouts: &lbv1.Timeouts{Idle: dpb(0)}}, "timeouts.idle"),
			stdout:  updatedLine("idle timeout reset to the default"),
		},
		{
			name:    "update outlier failures",
			args:    []string{"pool", "update", "web", "--outlier-failures", "3"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{OutlierDetection: &lbv1.OutlierDetection{ConsecutiveFailures: 3}}, "outlier_detection.consecutive_failures"),
			stdout:  updatedLine("outlier detection failures set to 3"),
		},
		{
			name:    "update outlier ejection time",
			args:    []string{"pool", "update", "web", "--outlier-ejection-time", "1m"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{OutlierDetection: &lbv1.OutlierDetection{BaseEjectionTime: dpb(time.Minute)}}, "outlier_detection.base_ejection_time"),
			stdout:  updatedLine("outlier ejection time set to 60s"),
		},
		{
			name:    "update outlier max ejected",
			args:    []string{"pool", "update", "web", "--outlier-max-ejected", "25"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{OutlierDetection: &lbv1.OutlierDetection{MaxEjectionPercent: 25}}, "outlier_detection.max_ejection_percent"),
			stdout:  updatedLine("outlier max ejected set to 25%"),
		},
		{
			name:    "update no outlier detection",
			args:    []string{"pool", "update", "web", "--no-outlier-detection"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{OutlierDetection: &lbv1.OutlierDetection{Disabled: true}}, "outlier_detection.disabled"),
			stdout:  updatedLine("outlier detection off"),
		},
		{
			name:    "update outlier detection on again",
			args:    []string{"pool", "update", "web", "--no-outlier-detection=false"},
			resp:    updated,
			wantReq: update(&lbv1.Pool{OutlierDetection: &lbv1.OutlierDetection{}}, "outlier_detection.disabled"),
			stdout:  updatedLine("outlier detection on"),
		},
		{
			name: "update no health check and no outlier detection",
			args: []string{"pool", "update", "web", "--no-health-check", "--no-outlier-detection"},
			resp: updated,
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{}, OutlierDetection: &lbv1.OutlierDetection{Disabled: true}},
				"health_check", "outlier_detection.disabled"),
			stdout: updatedLine("health check removed, outlier detection off"),
		},
		{
			name: "update no health check set to false is ignored",
			args: []string{"pool", "update", "web", "--no-health-check=false", "--retries", "1"},
			resp: updated,
			wantReq: update(&lbv1.Pool{Retry: &lbv1.RetryPolicy{Retries: proto.Uint32(1)}},
				"retry.retries"),
			stdout: updatedLine("retries set to 1"),
		},
		{
			name: "update many at once with hosts and upstream",
			args: []string{"pool", "update", "web", "--host", "a.example.com", "--upstream-tls",
				"--algorithm", "random", "--health-interval", "3s", "--health-timeout", "1s", "--retries", "4", "--connect-timeout", "1s"},
			resp: updated,
			wantReq: update(&lbv1.Pool{
				Hosts:         []string{"a.example.com"},
				Upstream:      &lbv1.Upstream{Tls: true},
				LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRandom},
				HealthCheck:   &lbv1.HealthCheck{Interval: dpb(3 * time.Second), Timeout: dpb(time.Second)},
				Retry:         &lbv1.RetryPolicy{Retries: proto.Uint32(4)},
				Timeouts:      &lbv1.Timeouts{Connect: dpb(time.Second)},
			}, "hosts", "upstream.tls", "load_balancing.algorithm", "load_balancing.hash_key", "health_check.interval", "health_check.timeout",
				"retry.retries", "timeouts.connect"),
			stdout: updatedLine("hosts set to a.example.com, upstream TLS on, algorithm set to random, " +
				"health check interval set to 3s, health check timeout set to 1s, retries set to 4, connect timeout set to 1s"),
		},
		{
			name: "update health interval against the stored timeout is left to the server",
			args: []string{"pool", "update", "web", "--health-interval", "500ms"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `pool.health_check.interval "500ms": must be longer than the timeout (1s)`)
			},
			wantReq: update(&lbv1.Pool{HealthCheck: &lbv1.HealthCheck{Interval: dpb(500 * time.Millisecond)}}, "health_check.interval"),
			stderr:  "lbctl: pool.health_check.interval \"500ms\": must be longer than the timeout (1s)\n",
			code:    1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{resp: tt.resp}
			if tt.err != nil {
				f.err = tt.err(t)
			}
			addr := startServer(t, f)
			got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.stdout != tt.stdout {
				t.Errorf("stdout:\n%q\nwant:\n%q", got.stdout, tt.stdout)
			}
			if got.stderr != tt.stderr {
				t.Errorf("stderr:\n%q\nwant:\n%q", got.stderr, tt.stderr)
			}
			if got.code != tt.code {
				t.Errorf("exit code %d, want %d", got.code, tt.code)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("server got %d requests, want 1", len(reqs))
			}
			if !proto.Equal(reqs[0], tt.wantReq) {
				t.Errorf("request %T:\n got %v\nwant %v", reqs[0], reqs[0], tt.wantReq)
			}
		})
	}
}

// TestPolicyFlagErrors checks every mistake in the policy flags lbctl
// catches itself: each is one line naming the flag and value, exits
// ExitUsage and sends nothing.
func TestPolicyFlagErrors(t *testing.T) {
	const createHelp = "; see 'lbctl pool create --help'\n"
	const updateHelp = "; see 'lbctl pool update --help'\n"
	type tc struct {
		name   string
		args   []string // after "pool create api" and "pool update web"
		stderr string   // without "lbctl: " and the help pointer
	}
	both := []tc{
		{"unknown algorithm", []string{"--algorithm", "fastest"},
			"--algorithm fastest: unknown algorithm; choose round-robin, least-request, random or consistent-hash"},
		{"empty algorithm", []string{"--algorithm", ""},
			"--algorithm \"\": unknown algorithm; choose round-robin, least-request, random or consistent-hash"},
		{"hash key header without name", []string{"--algorithm", "consistent-hash", "--hash-key", "header:"},
			"--hash-key header: needs a header name, as in header:X-User-Id"},
		{"hash key header without colon", []string{"--algorithm", "consistent-hash", "--hash-key", "header"},
			"--hash-key header: needs a header name, as in header:X-User-Id"},
		{"hash key cookie without name", []string{"--algorithm", "consistent-hash", "--hash-key", "cookie:"},
			"--hash-key cookie: needs a cookie name, as in cookie:session"},
		{"hash key client-ip with name", []string{"--algorithm", "consistent-hash", "--hash-key", "client-ip:x"},
			"--hash-key client-ip:x: client-ip takes no name"},
		{"hash key path with name", []string{"--algorithm", "consistent-hash", "--hash-key", "path:/x"},
			"--hash-key path:/x: path takes no name"},
		{"hash key unknown", []string{"--algorithm", "consistent-hash", "--hash-key", "query:id"},
			"--hash-key query:id: unknown hash key; use header:NAME, cookie:NAME, client-ip or path"},
		{"slow start unparsable", []string{"--slow-start", "30"},
			"--slow-start 30: not a duration; use Go syntax like 2s or 500ms"},
		{"slow start negative", []string{"--slow-start", "-5s"},
			"--slow-start -5s: must not be negative"},
		{"health check http without path", []string{"--health-check", "http"},
			"--health-check http: http needs a path starting with \"/\", as in http:/healthz"},
		{"health check http with relative path", []string{"--health-check", "http:healthz"},
			"--health-check http:healthz: http needs a path starting with \"/\", as in http:/healthz"},
		{"health check tcp with suffix", []string{"--health-check", "tcp:80"},
			"--health-check tcp:80: tcp takes nothing after it"},
		{"health check unknown", []string{"--health-check", "udp"},
			"--health-check udp: unknown check; use http:/PATH, tcp or grpc[:SERVICE]"},
		{"health check empty", []string{"--health-check", ""},
			"--health-check \"\": unknown check; use http:/PATH, tcp or grpc[:SERVICE]"},
		{"health status not a range", []string{"--health-check", "http:/", "--health-status", "2xx"},
			"--health-status 2xx: must be MIN-MAX, as in 200-299"},
		{"health status open range", []string{"--health-check", "http:/", "--health-status", "200-"},
			"--health-status 200-: must be MIN-MAX, as in 200-299"},
		{"health interval unparsable", []string{"--health-check", "tcp", "--health-interval", "often"},
			"--health-interval often: not a duration; use Go syntax like 2s or 500ms"},
		{"health interval negative", []string{"--health-check", "tcp", "--health-interval", "-1s"},
			"--health-interval -1s: must not be negative"},
		{"health timeout negative", []string{"--health-check", "tcp", "--health-timeout", "-100ms"},
			"--health-timeout -100ms: must not be negative"},
		{"health interval shorter than timeout", []string{"--health-check", "tcp", "--health-interval", "1s", "--health-timeout", "2s"},
			"--health-interval 1s must be longer than --health-timeout 2s"},
		{"health interval equal to timeout", []string{"--health-check", "tcp", "--health-interval", "1000ms", "--health-timeout", "1s"},
			"--health-interval 1000ms must be longer than --health-timeout 1s"},
		{"healthy threshold 0", []string{"--health-check", "tcp", "--healthy-threshold", "0"},
			"--healthy-threshold 0: must be at least 1"},
		{"healthy threshold negative", []string{"--health-check", "tcp", "--healthy-threshold", "-2"},
			"--healthy-threshold -2: must be at least 1"},
		{"healthy threshold not a number", []string{"--health-check", "tcp", "--healthy-threshold", "two"},
			"--healthy-threshold two: not a whole number; it must be at least 1"},
		{"unhealthy threshold 0", []string{"--health-check", "tcp", "--unhealthy-threshold", "0"},
			"--unhealthy-threshold 0: must be at least 1"},
		{"unhealthy threshold too large", []string{"--health-check", "tcp", "--unhealthy-threshold", "4294967296"},
			"--unhealthy-threshold 4294967296: too large"},
		{"retries negative", []string{"--retries", "-1"},
			"--retries -1: must be 0 to 10"},
		{"retries too many", []string{"--retries", "11"},
			"--retries 11: must be 0 to 10"},
		{"retries not a number", []string{"--retries", "many"},
			"--retries many: not a whole number; it must be 0 to 10"},
		{"retries out of range", []string{"--retries", "99999999999999999999"},
			"--retries 99999999999999999999: out of range; it must be 0 to 10"},
		{"connect timeout unparsable", []string{"--connect-timeout", "5 s"},
			"--connect-timeout \"5 s\": not a duration; use Go syntax like 2s or 500ms"},
		{"connect timeout negative", []string{"--connect-timeout", "-5s"},
			"--connect-timeout -5s: must not be negative"},
		{"response timeout negative", []string{"--response-timeout", "-1m"},
			"--response-timeout -1m: must not be negative"},
		{"idle timeout unparsable", []string{"--idle-timeout", "1d"},
			"--idle-timeout 1d: not a duration; use Go syntax like 2s or 500ms"},
		{"outlier failures 0", []string{"--outlier-failures", "0"},
			"--outlier-failures 0: must be at least 1"},
		{"outlier ejection negative", []string{"--outlier-ejection-time", "-30s"},
			"--outlier-ejection-time -30s: must not be negative"},
		{"outlier max ejected 0", []string{"--outlier-max-ejected", "0"},
			"--outlier-max-ejected 0: must be a percentage from 1 to 100"},
		{"outlier max ejected over 100", []string{"--outlier-max-ejected", "101%"},
			"--outlier-max-ejected 101%: must be a percentage from 1 to 100"},
		{"outlier max ejected negative", []string{"--outlier-max-ejected", "-5"},
			"--outlier-max-ejected -5: must be a percentage from 1 to 100"},
		{"outlier max ejected not a number", []string{"--outlier-max-ejected", "half"},
			"--outlier-max-ejected half: not a whole number; it must be a percentage from 1 to 100"},
	}
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{}
	for _, c := range both {
		tests = append(tests,
			struct {
				name   string
				args   []string
				stderr string
			}{"create " + c.name, append([]string{"pool", "create", "api"}, c.args...), "lbctl: " + c.stderr + createHelp},
			struct {
				name   string
				args   []string
				stderr string
			}{"update " + c.name, append([]string{"pool", "update", "web"}, c.args...), "lbctl: " + c.stderr + updateHelp})
	}
	tests = append(tests, []struct {
		name   string
		args   []string
		stderr string
	}{
		{"create hash key without algorithm", []string{"pool", "create", "api", "--hash-key", "header:X-User-Id"},
			"lbctl: --hash-key header:X-User-Id needs --algorithm consistent-hash" + createHelp},
		{"create hash key with another algorithm", []string{"pool", "create", "api", "--algorithm", "random", "--hash-key", "client-ip"},
			"lbctl: --hash-key client-ip needs --algorithm consistent-hash" + createHelp},
		{"create has no --no-health-check", []string{"pool", "create", "api", "--no-health-check"},
			"lbctl: unknown flag: --no-health-check" + createHelp},
		{"update no health check with a health flag", []string{"pool", "update", "web", "--no-health-check", "--health-interval", "2s"},
			"lbctl: --no-health-check and --health-interval cannot be used together" + updateHelp},
		{"update no health check with a check", []string{"pool", "update", "web", "--health-check", "tcp", "--no-health-check"},
			"lbctl: --no-health-check and --health-check cannot be used together" + updateHelp},
		{"update only no-health-check=false", []string{"pool", "update", "web", "--no-health-check=false"},
			nothingToUpdate},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{}
			addr := startServer(t, f)
			got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.stderr != tt.stderr {
				t.Errorf("stderr\n got %q\nwant %q", got.stderr, tt.stderr)
			}
			if got.code != ExitUsage || got.stdout != "" {
				t.Errorf("exit %d stdout %q, want %d and nothing", got.code, got.stdout, ExitUsage)
			}
			if n := len(f.requests()); n != 0 {
				t.Errorf("server got %d requests, want none", n)
			}
		})
	}
}

// TestDrainBackend checks drain-backend and undrain-backend against a real
// gRPC server: the request (draining set, weight unset), the output line and
// the errors.
func TestDrainBackend(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		resp    proto.Message
		err     func(t *testing.T) error
		wantReq proto.Message // nil: no request expected
		stdout  string
		stderr  string
		code    int
	}{
		{
			name:    "drain",
			args:    []string{"drain-backend", "--pool", "web", "10.0.0.5:8080"},
			resp:    &lbv1.UpdateBackendResponse{Pool: webPool, Version: 14},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.5:8080", Draining: proto.Bool(true)},
			stdout:  "pool \"web\": backend 10.0.0.5:8080 draining (gets no new requests; in-flight requests finish); configuration version 14\n",
		},
		{
			name:    "undrain",
			args:    []string{"undrain-backend", "10.0.0.5:8080", "--pool=web"},
			resp:    &lbv1.UpdateBackendResponse{Pool: webPool, Version: 15},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.5:8080", Draining: proto.Bool(false)},
			stdout:  "pool \"web\": backend 10.0.0.5:8080 active again (gets new requests); configuration version 15\n",
		},
		{
			name:    "drain IPv6 backend",
			args:    []string{"drain-backend", "--pool", "api", "[fd00::7]:8080"},
			resp:    &lbv1.UpdateBackendResponse{Pool: &lbv1.Pool{Name: "api"}, Version: 3},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "api", Address: "[fd00::7]:8080", Draining: proto.Bool(true)},
			stdout:  "pool \"api\": backend [fd00::7]:8080 draining (gets no new requests; in-flight requests finish); configuration version 3\n",
		},
		{
			name:    "drain missing backend",
			args:    []string{"drain-backend", "--pool", "web", "10.0.0.9:8080"},
			err:     func(t *testing.T) error { return backendNotFound(t, "10.0.0.9:8080") },
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.9:8080", Draining: proto.Bool(true)},
			stderr:  "lbctl: backend 10.0.0.9:8080 is not in pool \"web\"; see its backends with: lbctl pool get web\n",
			code:    1,
		},
		{
			name:    "undrain missing pool",
			args:    []string{"undrain-backend", "--pool", "web", "10.0.0.5:8080"},
			err:     func(t *testing.T) error { return poolNotFound(t, "web") },
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.5:8080", Draining: proto.Bool(false)},
			stderr:  "lbctl: pool \"web\" does not exist; create it with: lbctl pool create web\n",
			code:    1,
		},
		{
			name:    "set-weight leaves draining unset",
			args:    []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "2"},
			resp:    &lbv1.UpdateBackendResponse{Pool: webPool, Version: 16},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.5:8080", Weight: proto.Uint32(2)},
			stdout:  "pool \"web\": backend 10.0.0.5:8080 weight set to 2; configuration version 16\n",
		},
		{
			name:   "drain without pool",
			args:   []string{"drain-backend", "10.0.0.5:8080"},
			stderr: "lbctl: --pool is required; see 'lbctl drain-backend --help'\n",
			code:   ExitUsage,
		},
		{
			name:   "undrain without address",
			args:   []string{"undrain-backend", "--pool", "web"},
			stderr: "lbctl: requires exactly 1 argument (HOST:PORT), received 0; see 'lbctl undrain-backend --help'\n",
			code:   ExitUsage,
		},
		{
			name:   "drain with two addresses",
			args:   []string{"drain-backend", "--pool", "web", "10.0.0.5:8080", "10.0.0.6:8080"},
			stderr: "lbctl: requires exactly 1 argument (HOST:PORT), received 2; see 'lbctl drain-backend --help'\n",
			code:   ExitUsage,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{resp: tt.resp}
			if tt.err != nil {
				f.err = tt.err(t)
			}
			addr := startServer(t, f)
			got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.stdout != tt.stdout {
				t.Errorf("stdout:\n%q\nwant:\n%q", got.stdout, tt.stdout)
			}
			if got.stderr != tt.stderr {
				t.Errorf("stderr:\n%q\nwant:\n%q", got.stderr, tt.stderr)
			}
			if got.code != tt.code {
				t.Errorf("exit code %d, want %d", got.code, tt.code)
			}
			reqs := f.requests()
			if tt.wantReq == nil {
				if len(reqs) != 0 {
					t.Errorf("server got %d requests, want none", len(reqs))
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("server got %d requests, want 1", len(reqs))
			}
			if !proto.Equal(reqs[0], tt.wantReq) {
				t.Errorf("request %T:\n got %v\nwant %v", reqs[0], reqs[0], tt.wantReq)
			}
		})
	}

	t.Run("json is the raw response", func(t *testing.T) {
		t.Parallel()
		resp := &lbv1.UpdateBackendResponse{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{
			{Address: "10.0.0.5:8080", Weight: 1, Draining: true}}}, Version: 14}
		f := &fakeAdmin{resp: resp}
		addr := startServer(t, f)
		got := runCLI(t, nil, "--controlplane", addr, "-o", "json", "drain-backend", "--pool", "web", "10.0.0.5:8080")
		want, err := jsonOptions.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if got.code != 0 || got.stderr != "" || got.stdout != string(want)+"\n" {
			t.Errorf("exit %d stderr %q stdout:\n%s\nwant:\n%s", got.code, got.stderr, got.stdout, want)
		}
	})
}

// policyPool is a pool with every policy set, two of its three backends
// reported on by data planes and one draining.
var policyPool = &lbv1.Pool{
	Name:    "api",
	Hosts:   []string{"api.example.com"},
	Version: 12,
	Backends: []*lbv1.Backend{
		{Address: "10.0.0.5:8080", Weight: 1},
		{Address: "10.0.0.6:8080", Weight: 3, Draining: true},
		{Address: "10.0.0.7:8080", Weight: 1},
	},
	LoadBalancing: &lbv1.LoadBalancing{Algorithm: algConsistentHash, HashKey: &lbv1.HashKey{Source: keyHeader, Name: "X-User-Id"}},
	HealthCheck: &lbv1.HealthCheck{Type: checkHTTP, Path: "/healthz", Host: "api.internal",
		ExpectedStatusMin: 200, ExpectedStatusMax: 299, Interval: dpb(2 * time.Second), Timeout: dpb(500 * time.Millisecond),
		HealthyThreshold: 1, UnhealthyThreshold: 4},
	OutlierDetection: &lbv1.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: dpb(10 * time.Second), MaxEjectionPercent: 100},
	Retry:            &lbv1.RetryPolicy{Retries: proto.Uint32(0)},
	Timeouts:         &lbv1.Timeouts{Connect: dpb(250 * time.Millisecond), ResponseHeader: dpb(5 * time.Minute), Idle: dpb(2 * time.Hour)},
}

// policyStatus is what two data planes report about policyPool's backends.
var policyStatus = []*lbv1.BackendStatus{
	{Address: "10.0.0.5:8080", HealthyDataPlanes: 2, DataPlanes: []*lbv1.DataPlaneBackendStatus{
		{NodeId: "dp-1", Healthy: true, InFlight: 3},
		{NodeId: "dp-2", Healthy: true, InFlight: 4},
	}},
	{Address: "10.0.0.6:8080", HealthyDataPlanes: 1, UnhealthyDataPlanes: 1, DataPlanes: []*lbv1.DataPlaneBackendStatus{
		{NodeId: "dp-1", Healthy: true, InFlight: 12},
		{NodeId: "dp-2", Healthy: true, Ejected: true},
	}},
	{Address: "10.0.0.7:8080"},
}

// TestPolicyOutput checks "pool get" and "pool list" for pools with
// policies, draining backends and data plane reports.
func TestPolicyOutput(t *testing.T) {
	header := func(name, hosts string, version string) string {
		return "Name:         " + name + "\n" +
			"Hosts:        " + hosts + "\n" +
			"Path prefix:  /\n" +
			"Version:      " + version + "\n" +
			"\n"
	}
	tests := []struct {
		name   string
		args   []string
		resp   proto.Message
		stdout string
	}{
		{
			name: "get with every policy and backend status",
			args: []string{"pool", "get", "api"},
			resp: &lbv1.GetPoolResponse{Pool: policyPool, Version: 20, BackendStatus: policyStatus},
			stdout: header("api", "api.example.com", "12") +
				"Algorithm:          consistent-hash, hash key header:X-User-Id\n" +
				"Health check:       http GET /healthz (Host api.internal) every 2s, timeout 500ms, healthy after 1, unhealthy after 4, status 200-299\n" +
				"Outlier detection:  eject after 3 failures for 10s+, at most 100% of backends\n" +
				"Retries:            0\n" +
				"Timeouts:           connect 250ms, response 5m, idle 2h\n" +
				"\n" +
				"BACKEND        WEIGHT  STATE     HEALTHY          IN-FLIGHT\n" +
				"10.0.0.5:8080  1       active    2/2 data planes  7\n" +
				"10.0.0.6:8080  3       draining  1/2 data planes  12\n" +
				"10.0.0.7:8080  1       active    -                -\n",
		},
		{
			name: "get with defaults shown for unset fields",
			args: []string{"pool", "get", "web"},
			resp: &lbv1.GetPoolResponse{Version: 9, Pool: &lbv1.Pool{
				Name: "web", Version: 8,
				Backends:         []*lbv1.Backend{{Address: "10.0.0.5:8080", Weight: 2}},
				LoadBalancing:    &lbv1.LoadBalancing{Algorithm: algLeastRequest, SlowStart: dpb(30 * time.Second)},
				HealthCheck:      &lbv1.HealthCheck{Type: checkHTTP, Path: "/healthz"},
				OutlierDetection: &lbv1.OutlierDetection{},
				Retry:            &lbv1.RetryPolicy{},
				Timeouts:         &lbv1.Timeouts{ResponseHeader: dpb(90 * time.Second)},
			}, BackendStatus: []*lbv1.BackendStatus{
				{Address: "10.0.0.5:8080", UnhealthyDataPlanes: 1, DataPlanes: []*lbv1.DataPlaneBackendStatus{{NodeId: "dp-1"}}},
			}},
			stdout: header("web", "*", "8") +
				"Algorithm:          least-request, slow start 30s\n" +
				"Health check:       http GET /healthz every 5s, timeout 1s, healthy after 2, unhealthy after 3, status 200-399\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 90s, idle 90s\n" +
				"\n" +
				"BACKEND        WEIGHT  STATE   HEALTHY          IN-FLIGHT\n" +
				"10.0.0.5:8080  2       active  0/1 data planes  0\n",
		},
		{
			name: "get tcp check, outlier detection off, status out of order",
			args: []string{"pool", "get", "db"},
			resp: &lbv1.GetPoolResponse{Pool: &lbv1.Pool{
				Name: "db", Version: 3,
				Backends:         []*lbv1.Backend{{Address: "10.0.1.1:5432", Weight: 1}, {Address: "10.0.1.2:5432", Weight: 1, Draining: true}},
				LoadBalancing:    &lbv1.LoadBalancing{Algorithm: algRandom},
				HealthCheck:      &lbv1.HealthCheck{Type: checkTCP, Interval: dpb(10 * time.Second), Timeout: dpb(3 * time.Second)},
				OutlierDetection: &lbv1.OutlierDetection{Disabled: true, ConsecutiveFailures: 9},
				Retry:            &lbv1.RetryPolicy{Retries: proto.Uint32(5)},
			}, BackendStatus: []*lbv1.BackendStatus{
				{Address: "10.0.1.2:5432", HealthyDataPlanes: 1, DataPlanes: []*lbv1.DataPlaneBackendStatus{{NodeId: "dp-1", Healthy: true, InFlight: 2}}},
				{Address: "10.0.1.1:5432", HealthyDataPlanes: 1, DataPlanes: []*lbv1.DataPlaneBackendStatus{{NodeId: "dp-1", Healthy: true}}},
			}},
			stdout: header("db", "*", "3") +
				"Algorithm:          random\n" +
				"Health check:       tcp connect every 10s, timeout 3s, healthy after 2, unhealthy after 3\n" +
				"Outlier detection:  off\n" +
				"Retries:            5\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"BACKEND        WEIGHT  STATE     HEALTHY          IN-FLIGHT\n" +
				"10.0.1.1:5432  1       active    1/1 data planes  0\n" +
				"10.0.1.2:5432  1       draining  1/1 data planes  2\n",
		},
		{
			name: "get grpc checks and a short interval",
			args: []string{"pool", "get", "grpc"},
			resp: &lbv1.GetPoolResponse{Pool: &lbv1.Pool{
				Name: "grpc", Version: 4,
				LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRoundRobin},
				HealthCheck:   &lbv1.HealthCheck{Type: checkGRPC, GrpcService: "shop.v1.Cart", Interval: dpb(time.Second)},
			}},
			stdout: header("grpc", "*", "4") +
				"Algorithm:          round-robin\n" +
				"Health check:       grpc service shop.v1.Cart every 1s, timeout 500ms, healthy after 2, unhealthy after 3\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"No backends; add one with: lbctl add-backend --pool grpc HOST:PORT\n",
		},
		{
			name: "get with upstream block and policy block",
			args: []string{"pool", "get", "origin"},
			resp: &lbv1.GetPoolResponse{Pool: &lbv1.Pool{
				Name: "origin", Version: 5,
				Upstream:    &lbv1.Upstream{Protocol: protoH2C},
				HealthCheck: &lbv1.HealthCheck{Type: checkGRPC},
			}},
			stdout: header("origin", "*", "5") +
				"Upstream:     h2c (cleartext HTTP/2)\n" +
				"TLS:          off\n" +
				"Host header:  client's Host (passed through)\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       grpc (whole server) every 5s, timeout 1s, healthy after 2, unhealthy after 3\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"No backends; add one with: lbctl add-backend --pool origin HOST:PORT\n",
		},
		{
			name: "list algorithms",
			args: []string{"pool", "list"},
			resp: &lbv1.ListPoolsResponse{Version: 20, Pools: []*lbv1.Pool{
				policyPool,
				{Name: "b", Version: 2, LoadBalancing: &lbv1.LoadBalancing{Algorithm: algLeastRequest}},
				{Name: "c", Version: 3, LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRandom}},
				{Name: "d", Version: 4, LoadBalancing: &lbv1.LoadBalancing{Algorithm: algRoundRobin}},
				{Name: "e", Version: 5},
			}},
			stdout: "NAME  HOSTS            PATH  BACKENDS  ALGORITHM        UPSTREAM  VERSION\n" +
				"api   api.example.com  /     3         consistent-hash  auto      12\n" +
				"b     *                /     0         least-request    auto      2\n" +
				"c     *                /     0         random           auto      3\n" +
				"d     *                /     0         round-robin      auto      4\n" +
				"e     *                /     0         round-robin      auto      5\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{resp: tt.resp}
			addr := startServer(t, f)
			got := runCLI(t, nil, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.code != 0 || got.stderr != "" {
				t.Fatalf("exit %d, stderr %q", got.code, got.stderr)
			}
			if got.stdout != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, tt.stdout)
			}
		})
	}

	t.Run("json is the raw response with each data plane's view", func(t *testing.T) {
		t.Parallel()
		resp := &lbv1.GetPoolResponse{Pool: policyPool, Version: 20, BackendStatus: policyStatus}
		f := &fakeAdmin{resp: resp}
		addr := startServer(t, f)
		got := runCLI(t, nil, "--controlplane", addr, "-o", "json", "pool", "get", "api")
		if got.code != 0 || got.stderr != "" {
			t.Fatalf("exit %d, stderr %q", got.code, got.stderr)
		}
		want, err := jsonOptions.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if got.stdout != string(want)+"\n" {
			t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, want)
		}
		var doc struct {
			Pool struct {
				HealthCheck map[string]any   `json:"healthCheck"`
				Backends    []map[string]any `json:"backends"`
			} `json:"pool"`
			BackendStatus []struct {
				Address    string           `json:"address"`
				DataPlanes []map[string]any `json:"dataPlanes"`
			} `json:"backendStatus"`
		}
		if err := json.Unmarshal([]byte(got.stdout), &doc); err != nil {
			t.Fatalf("stdout is not JSON: %v", err)
		}
		if hc := doc.Pool.HealthCheck; hc["interval"] != "2s" || hc["type"] != "HEALTH_CHECK_TYPE_HTTP" {
			t.Errorf("healthCheck = %v", hc)
		}
		if len(doc.Pool.Backends) != 3 || doc.Pool.Backends[1]["draining"] != true {
			t.Errorf("backends = %v", doc.Pool.Backends)
		}
		if len(doc.BackendStatus) != 3 || len(doc.BackendStatus[1].DataPlanes) != 2 {
			t.Fatalf("backendStatus = %+v", doc.BackendStatus)
		}
		dp := doc.BackendStatus[1].DataPlanes[1]
		if dp["nodeId"] != "dp-2" || dp["ejected"] != true || dp["inFlight"] != float64(0) {
			t.Errorf("backendStatus[1].dataPlanes[1] = %v", dp)
		}
	})
}

// TestPolicyHelp checks that the help of "pool create" and "pool update"
// documents every policy flag and shows the examples, and that the root and
// drain-backend helps show the drain example.
func TestPolicyHelp(t *testing.T) {
	const createExample = "lbctl pool create api --algorithm least-request --health-check http:/healthz --health-interval 2s --retries 3 --backend 10.0.0.5:8080 --backend 10.0.0.6:8080"
	const drainExample = "lbctl drain-backend --pool api 10.0.0.5:8080"
	flags := []string{
		"--algorithm round-robin|least-request|random|consistent-hash",
		"--hash-key header:NAME|cookie:NAME|client-ip|path",
		"--slow-start DURATION",
		"--health-check http:/PATH|tcp|grpc[:SERVICE]",
		"--health-host HOST", "--health-status MIN-MAX", "--health-interval DURATION", "--health-timeout DURATION",
		"--healthy-threshold N", "--unhealthy-threshold N",
		"--retries N",
		"--connect-timeout DURATION", "--response-timeout DURATION", "--idle-timeout DURATION",
		"--outlier-failures N", "--outlier-ejection-time DURATION", "--outlier-max-ejected PERCENT", "--no-outlier-detection",
	}
	for _, sub := range []string{"create", "update"} {
		got := runCLI(t, nil, "pool", sub, "--help")
		if got.code != 0 {
			t.Fatalf("pool %s --help: exit %d", sub, got.code)
		}
		for _, s := range flags {
			if !strings.Contains(got.stdout, s) {
				t.Errorf("pool %s --help lacks %q", sub, s)
			}
		}
		if has := strings.Contains(got.stdout, "--no-health-check"); has != (sub == "update") {
			t.Errorf("pool %s --help: --no-health-check shown %v", sub, has)
		}
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{createExample, drainExample, "drain-backend", "undrain-backend"}},
		{[]string{"pool", "--help"}, []string{createExample}},
		{[]string{"pool", "create", "--help"}, []string{createExample}},
		{[]string{"drain-backend", "--help"}, []string{drainExample, "Usage:\n  lbctl drain-backend --pool NAME HOST:PORT"}},
		{[]string{"undrain-backend", "--help"}, []string{"lbctl undrain-backend --pool api 10.0.0.5:8080"}},
	} {
		got := runCLI(t, nil, c.args...)
		for _, s := range c.want {
			if !strings.Contains(got.stdout, s) {
				t.Errorf("%v lacks %q", c.args, s)
			}
		}
	}
}

func TestDurText(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{500 * time.Millisecond, "500ms"},
		{time.Second, "1s"},
		{60 * time.Second, "60s"},
		{90 * time.Second, "90s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{5 * time.Minute, "5m"},
		{2 * time.Hour, "2h"},
		{1500 * time.Millisecond, "1.5s"},
		{time.Microsecond, "1µs"},
	}
	for _, tt := range tests {
		if got := durText(tt.d); got != tt.want {
			t.Errorf("durText(%v) = %q, want %q", tt.d, got, tt.want)
		}
		if d, err := time.ParseDuration(durText(tt.d)); err != nil || d != tt.d {
			t.Errorf("durText(%v) = %q does not parse back: %v, %v", tt.d, durText(tt.d), d, err)
		}
	}
}
