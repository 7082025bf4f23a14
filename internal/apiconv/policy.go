package apiconv

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
	"github.com/lb-project/lb/internal/poolspec"
)

var algorithmToProto = map[poolspec.Algorithm]lbv1.Algorithm{
	"":                               lbv1.Algorithm_ALGORITHM_UNSPECIFIED,
	poolspec.AlgorithmRoundRobin:     lbv1.Algorithm_ALGORITHM_ROUND_ROBIN,
	poolspec.AlgorithmLeastRequest:   lbv1.Algorithm_ALGORITHM_LEAST_REQUEST,
	poolspec.AlgorithmRandom:         lbv1.Algorithm_ALGORITHM_RANDOM,
	poolspec.AlgorithmConsistentHash: lbv1.Algorithm_ALGORITHM_CONSISTENT_HASH,
}

var algorithmFromProto = invert(algorithmToProto)

var hashSourceToProto = map[string]lbv1.HashKeySource{
	"":                    lbv1.HashKeySource_HASH_KEY_SOURCE_UNSPECIFIED,
	poolspec.HashHeader:   lbv1.HashKeySource_HASH_KEY_SOURCE_HEADER,
	poolspec.HashCookie:   lbv1.HashKeySource_HASH_KEY_SOURCE_COOKIE,
	poolspec.HashClientIP: lbv1.HashKeySource_HASH_KEY_SOURCE_CLIENT_IP,
	poolspec.HashPath:     lbv1.HashKeySource_HASH_KEY_SOURCE_PATH,
}

var hashSourceFromProto = invert(hashSourceToProto)

var checkTypeToProto = map[string]lbv1.HealthCheckType{
	"":                 lbv1.HealthCheckType_HEALTH_CHECK_TYPE_UNSPECIFIED,
	poolspec.CheckHTTP: lbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP,
	poolspec.CheckTCP:  lbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP,
	poolspec.CheckGRPC: lbv1.HealthCheckType_HEALTH_CHECK_TYPE_GRPC,
}

var checkTypeFromProto = invert(checkTypeToProto)

func invert[K, V comparable](m map[K]V) map[V]K {
	out := make(map[V]K, len(m))
	for k, v := range m {
		if _, dup := out[v]; !dup || k != *new(K) {
			out[v] = k
		}
	}
	return out
}

// enumName maps an enum value through m; an unknown value becomes its
// number's name, which the validator refuses.
func enumName[E interface {
	comparable
	String() string
}, K ~string](m map[E]K, e E) K {
	if k, ok := m[e]; ok {
		return k
	}
	return K(e.String())
}

func dur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// policiesToProto sets the selection, health, retry and timeout fields of out.
func policiesToProto(p poolspec.Pool, out *lbv1.Pool) {
	if lb := p.LoadBalancing; lb != (poolspec.LoadBalancing{}) {
		out.LoadBalancing = &lbv1.LoadBalancing{
			Algorithm: algorithmToProto[lb.Algorithm],
			SlowStart: dur(lb.SlowStart),
		}
		if lb.HashKey != (poolspec.HashKey{}) {
			out.LoadBalancing.HashKey = &lbv1.HashKey{Source: hashSourceToProto[lb.HashKey.Source], Name: lb.HashKey.Name}
		}
	}
	if h := p.HealthCheck; h != (poolspec.HealthCheck{}) {
		out.HealthCheck = &lbv1.HealthCheck{
			Type: checkTypeToProto[h.Type], Path: h.Path, Host: h.Host,
			ExpectedStatusMin: h.StatusMin, ExpectedStatusMax: h.StatusMax, GrpcService: h.GRPCService,
			Interval: dur(h.Interval), Timeout: dur(h.Timeout),
			HealthyThreshold: h.HealthyThreshold, UnhealthyThreshold: h.UnhealthyThreshold,
		}
	}
	if o := p.OutlierDetection; o != (poolspec.OutlierDetection{}) {
		out.OutlierDetection = &lbv1.OutlierDetection{
			ConsecutiveFailures: o.ConsecutiveFailures, BaseEjectionTime: dur(o.BaseEjectionTime),
			MaxEjectionPercent: o.MaxEjectionPercent, Disabled: o.Disabled,
		}
	}
	if p.Retries != nil {
		r := *p.Retries
		out.Retry = &lbv1.RetryPolicy{Retries: &r}
	}
	if t := p.Timeouts; t != (poolspec.Timeouts{}) {
		out.Timeouts = &lbv1.Timeouts{Connect: dur(t.Connect), ResponseHeader: dur(t.ResponseHeader), Idle: dur(t.Idle)}
	}
}

// policiesFromProto reads the selection, health, retry and timeout fields.
// Durations that do not convert (out of range) become -1ns, which the
// validator refuses.
func policiesFromProto(p *lbv1.Pool, out *poolspec.Pool) {
	lb := p.GetLoadBalancing()
	out.LoadBalancing = poolspec.LoadBalancing{
		Algorithm: enumName(algorithmFromProto, lb.GetAlgorithm()),
		SlowStart: fromDur(lb.GetSlowStart()),
	}
	if k := lb.GetHashKey(); k != nil {
		out.LoadBalancing.HashKey = poolspec.HashKey{Source: enumName(hashSourceFromProto, k.GetSource()), Name: k.GetName()}
	}
	h := p.GetHealthCheck()
	out.HealthCheck = poolspec.HealthCheck{
		Type: enumName(checkTypeFromProto, h.GetType()), Path: h.GetPath(), Host: h.GetHost(),
		StatusMin: h.GetExpectedStatusMin(), StatusMax: h.GetExpectedStatusMax(), GRPCService: h.GetGrpcService(),
		Interval: fromDur(h.GetInterval()), Timeout: fromDur(h.GetTimeout()),
		HealthyThreshold: h.GetHealthyThreshold(), UnhealthyThreshold: h.GetUnhealthyThreshold(),
	}
	o := p.GetOutlierDetection()
	out.OutlierDetection = poolspec.OutlierDetection{
		ConsecutiveFailures: o.GetConsecutiveFailures(), BaseEjectionTime: fromDur(o.GetBaseEjectionTime()),
		MaxEjectionPercent: o.GetMaxEjectionPercent(), Disabled: o.GetDisabled(),
	}
	if r := p.GetRetry(); r != nil && r.Retries != nil {
		v := r.GetRetries()
		out.Retries = &v
	}
	t := p.GetTimeouts()
	out.Timeouts = poolspec.Timeouts{Connect: fromDur(t.GetConnect()), ResponseHeader: fromDur(t.GetResponseHeader()), Idle: fromDur(t.GetIdle())}
}

func fromDur(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	if err := d.CheckValid(); err != nil {
		return -1
	}
	return d.AsDuration()
}
