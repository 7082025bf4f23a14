package admin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// dataPlane is a fake data plane: a real StreamConfig stream on which the
// test sends the hello, acks, nacks and health reports.
type dataPlane struct {
	id     string
	s      lbv1.DiscoveryService_StreamConfigClient
	cancel context.CancelFunc
}

// connect opens node id's stream, holding version held, and reads its first
// update.
func (e *env) connect(t *testing.T, id string, held uint64) *dataPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	s, err := e.dc.StreamConfig(ctx)
	if err != nil {
		t.Fatalf("StreamConfig: %v", err)
	}
	d := &dataPlane{id: id, s: s, cancel: cancel}
	d.send(t, &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Hello{Hello: &lbv1.Hello{NodeId: id, Version: held}}})
	d.recv(t)
	return d
}

func (d *dataPlane) send(t *testing.T, m *lbv1.StreamConfigRequest) {
	t.Helper()
	if err := d.s.Send(m); err != nil {
		t.Fatalf("%s: send %v: %v", d.id, m, err)
	}
}

func (d *dataPlane) recv(t *testing.T) *lbv1.StreamConfigResponse {
	t.Helper()
	m, err := d.s.Recv()
	if err != nil {
		t.Fatalf("%s: Recv: %v", d.id, err)
	}
	return m
}

// recvUntil reads updates until one of version v or later.
func (d *dataPlane) recvUntil(t *testing.T, v uint64) {
	t.Helper()
	for d.recv(t).GetVersion() < v {
	}
}

func (d *dataPlane) ack(t *testing.T, v uint64) {
	t.Helper()
	d.send(t, &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Ack{Ack: &lbv1.Ack{Version: v}}})
}

func (d *dataPlane) nack(t *testing.T, v uint64, reason string) {
	t.Helper()
	d.send(t, &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_Nack{Nack: &lbv1.Nack{Version: v, Reason: reason}}})
}

// waitDataPlanes polls ListDataPlanes until cond holds of its answer.
func (e *env) waitDataPlanes(t *testing.T, what string, cond func(r *lbv1.ListDataPlanesResponse) bool) *lbv1.ListDataPlanesResponse {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := e.c.ListDataPlanes(testCtx(t), &lbv1.ListDataPlanesRequest{})
		if err != nil {
			t.Fatalf("ListDataPlanes: %v", err)
		}
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; ListDataPlanes = %v", what, r)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// acked reports whether every data plane named is listed with version acked.
func acked(v uint64, ids ...string) func(r *lbv1.ListDataPlanesResponse) bool {
	return func(r *lbv1.ListDataPlanesResponse) bool {
		got := make(map[string]uint64)
		for _, d := range r.GetDataPlanes() {
			got[d.GetNodeId()] = d.GetAckedVersion()
		}
		for _, id := range ids {
			if a, ok := got[id]; !ok || a < v {
				return false
			}
		}
		return true
	}
}

func TestListDataPlanes(t *testing.T) {
	ctx := testCtx(t)
	e := newFleetEnv(t)
	equal(t, "ListDataPlanes on an empty fleet", e.waitDataPlanes(t, "nothing", func(*lbv1.ListDataPlanesResponse) bool { return true }),
		&lbv1.ListDataPlanesResponse{Version: 0})
	e.seed(t, ctx) // version 1

	before := time.Now()
	dp2 := e.connect(t, "dp-2", 0)
	dp1 := e.connect(t, "dp-1", 1) // holds version 1 already
	dp1.ack(t, 1)
	dp2.nack(t, 1, "pool web: cannot apply")
	r := e.waitDataPlanes(t, "dp-1's ack and dp-2's nack", func(r *lbv1.ListDataPlanesResponse) bool {
		ds := r.GetDataPlanes()
		return len(ds) == 2 && ds[0].GetAckedVersion() == 1 && ds[1].GetNackedVersion() == 1 &&
			ds[0].GetSentVersion() == 1 && ds[1].GetSentVersion() == 1
	})
	after := time.Now()
	if r.GetVersion() != 1 {
		t.Errorf("ListDataPlanes version = %d, want 1", r.GetVersion())
	}
	for _, d := range r.GetDataPlanes() {
		if !strings.HasPrefix(d.GetPeer(), "127.0.0.1:") {
			t.Errorf("%s: peer %q, want 127.0.0.1:PORT", d.GetNodeId(), d.GetPeer())
		}
		if at := d.GetConnectedAt().AsTime(); !d.GetConnectedAt().IsValid() || at.Before(before) || at.After(after) {
			t.Errorf("%s: connected at %v, want between %v and %v", d.GetNodeId(), at, before, after)
		}
		d.Peer, d.ConnectedAt = "", nil
	}
	equal(t, "ListDataPlanes", r, &lbv1.ListDataPlanesResponse{Version: 1, DataPlanes: []*lbv1.DataPlane{
		{NodeId: "dp-1", SentVersion: 1, AckedVersion: 1},
		{NodeId: "dp-2", SentVersion: 1, NackedVersion: 1, NackReason: "pool web: cannot apply"},
	}})

	// Versions move on; a data plane that leaves is no longer listed.
	if _, err := e.c.AddBackend(ctx, &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.3:80"}); err != nil {
		t.Fatal(err)
	}
	dp1.recvUntil(t, 2)
	dp1.ack(t, 2)
	dp2.cancel()
	r = e.waitDataPlanes(t, "dp-2 gone, dp-1 at 2", func(r *lbv1.ListDataPlanesResponse) bool {
		return len(r.GetDataPlanes()) == 1 && r.GetDataPlanes()[0].GetAckedVersion() == 2
	})
	if d := r.GetDataPlanes()[0]; r.GetVersion() != 2 || d.GetNodeId() != "dp-1" || d.GetSentVersion() != 2 {
		t.Errorf("ListDataPlanes = %v, want version 2 and dp-1 sent 2", r)
	}
}

// waitForVersion runs WaitForVersion in the background.
func (e *env) waitForVersion(ctx context.Context, req *lbv1.WaitForVersionRequest) <-chan waitResult {
	done := make(chan waitResult, 1)
	go func() {
		r, err := e.c.WaitForVersion(ctx, req)
		done <- waitResult{r, err}
	}()
	return done
}

type waitResult struct {
	resp *lbv1.WaitForVersionResponse
	err  error
}

func result(t *testing.T, done <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("WaitForVersion did not return within 5s")
		return waitResult{}
	}
}

// fleetAt1 is a fleet env with pool web at version 1 and two data planes,
// dp-1 and dp-2, that acknowledged it.
func fleetAt1(t *testing.T) (e *env, dp1, dp2 *dataPlane) {
	t.Helper()
	e = newFleetEnv(t)
	e.seed(t, testCtx(t))
	dp1, dp2 = e.connect(t, "dp-1", 0), e.connect(t, "dp-2", 0)
	dp1.ack(t, 1)
	dp2.ack(t, 1)
	e.waitDataPlanes(t, "both at 1", acked(1, "dp-1", "dp-2"))
	return e, dp1, dp2
}

// addBackendNow adds a backend to web and returns the version committed.
func (e *env) addBackendNow(t *testing.T, addr string) uint64 {
	t.Helper()
	r, err := e.c.AddBackend(testCtx(t), &lbv1.AddBackendRequest{Pool: "web", Address: addr})
	if err != nil {
		t.Fatalf("AddBackend: %v", err)
	}
	return r.GetVersion()
}

func TestWaitForVersion(t *testing.T) {
	t.Run("every data plane acknowledges", func(t *testing.T) {
		e, dp1, dp2 := fleetAt1(t)
		v := e.addBackendNow(t, "10.0.0.3:80")
		dp1.recvUntil(t, v)
		dp2.recvUntil(t, v)
		done := e.waitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: v, Timeout: durationpb.New(5 * time.Second)})
		select {
		case r := <-done:
			t.Fatalf("WaitForVersion returned before any ack: %v, %v", r.resp, r.err)
		case <-time.After(50 * time.Millisecond):
		}
		dp1.ack(t, v)
		dp2.ack(t, v+1) // a later version counts
		r := result(t, done)
		if r.err != nil {
			t.Fatalf("WaitForVersion: %v", r.err)
		}
		for _, d := range r.resp.GetDataPlanes() {
			d.Peer, d.ConnectedAt = "", nil
		}
		equal(t, "WaitForVersion", r.resp, &lbv1.WaitForVersionResponse{DataPlanes: []*lbv1.DataPlane{
			{NodeId: "dp-1", SentVersion: v, AckedVersion: v},
			{NodeId: "dp-2", SentVersion: v, AckedVersion: v + 1},
		}})
		// Without a timeout (30s by default), an acknowledged version
		// returns at once; so does an older one.
		for _, old := range []uint64{v, 1, 0} {
			r, err := e.c.WaitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: old})
			if err != nil || len(r.GetDataPlanes()) != 2 {
				t.Errorf("WaitForVersion(%d) once acknowledged: %v, %v", old, r, err)
			}
		}
	})

	t.Run("deadline names the laggard", func(t *testing.T) {
		e, dp1, dp2 := fleetAt1(t)
		v := e.addBackendNow(t, "10.0.0.3:80")
		dp1.recvUntil(t, v)
		dp2.recvUntil(t, v)
		dp1.ack(t, v)
		e.waitDataPlanes(t, "dp-1's ack", acked(v, "dp-1"))
		start := time.Now()
		_, err := e.c.WaitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: v, Timeout: durationpb.New(200 * time.Millisecond)})
		if el := time.Since(start); el < 200*time.Millisecond || el > 4*time.Second {
			t.Errorf("WaitForVersion with a 200ms timeout took %v", el)
		}
		checkErr(t, err, wantErr{codes.DeadlineExceeded,
			"after 200ms, 1 of 2 data planes have not acknowledged version 2: dp-2 (at version 1)", nil})

		// Both lag behind a version not yet committed.
		_, err = e.c.WaitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: 7, Timeout: durationpb.New(100 * time.Millisecond)})
		checkErr(t, err, wantErr{codes.DeadlineExceeded,
			"after 100ms, 2 of 2 data planes have not acknowledged version 7: dp-1 (at version 2), dp-2 (at version 1)", nil})
	})

	t.Run("a refusal fails it at once", func(t *testing.T) {
		e, dp1, dp2 := fleetAt1(t)
		v := e.addBackendNow(t, "10.0.0.3:80")
		dp1.recvUntil(t, v)
		dp2.recvUntil(t, v)
		done := e.waitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: v, Timeout: durationpb.New(time.Minute)})
		dp1.ack(t, v)
		dp2.nack(t, v, "pool web: backend 10.0.0.3:80 unresolvable")
		checkErr(t, result(t, done).err, wantErr{codes.FailedPrecondition,
			"data plane dp-2 refused version 2: pool web: backend 10.0.0.3:80 unresolvable: refused by a data plane", nil})
		// And so does a later call.
		_, err := e.c.WaitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: v})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("WaitForVersion after the refusal: %v, want FailedPrecondition", err)
		}
	})

	t.Run("no data planes", func(t *testing.T) {
		e := newFleetEnv(t)
		e.seed(t, testCtx(t))
		r, err := e.c.WaitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: 1, Timeout: durationpb.New(5 * time.Second)})
		if err != nil || len(r.GetDataPlanes()) != 0 {
			t.Errorf("WaitForVersion with no data planes: %v, %v", r, err)
		}
	})
}

func TestWaitForVersionInvalidTimeout(t *testing.T) {
	for name, e := range map[string]*env{"with a fleet": newFleetEnv(t), "without": newEnv(t)} {
		for _, tc := range []struct {
			name string
			d    *durationpb.Duration
		}{
			{"negative", durationpb.New(-time.Second)},
			{"zero", durationpb.New(0)},
			{"invalid", &durationpb.Duration{Seconds: 1, Nanos: -1}},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				_, err := e.c.WaitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: 1, Timeout: tc.d})
				st := status.Convert(err)
				if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), `timeout "`) ||
					!strings.HasSuffix(st.Message(), `": must be a positive duration`) {
					t.Fatalf("WaitForVersion with timeout %v: %v, want InvalidArgument on timeout", tc.d, err)
				}
				if ds := st.Details(); len(ds) != 1 {
					t.Errorf("details %v, want a BadRequest", ds)
				} else if br, ok := ds[0].(*errdetails.BadRequest); !ok || len(br.GetFieldViolations()) != 1 ||
					br.GetFieldViolations()[0].GetField() != "timeout" || br.GetFieldViolations()[0].GetDescription() != st.Message() {
					t.Errorf("detail %v, want a BadRequest on field timeout", ds[0])
				}
			})
		}
	}
}

// Without a fleet there are no data planes to list or wait for.
func TestNoFleet(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	r, err := e.c.ListDataPlanes(ctx, &lbv1.ListDataPlanesRequest{})
	if err != nil || len(r.GetDataPlanes()) != 0 {
		t.Errorf("ListDataPlanes without a fleet: %v, %v", r, err)
	}
	w, err := e.c.WaitForVersion(ctx, &lbv1.WaitForVersionRequest{Version: 5})
	if err != nil || len(w.GetDataPlanes()) != 0 {
		t.Errorf("WaitForVersion without a fleet: %v, %v", w, err)
	}
	e.seed(t, ctx)
	equal(t, "GetPool without a fleet", e.get(t, ctx, "web"), &lbv1.GetPoolResponse{Version: 1, Pool: &lbv1.Pool{
		Name: "web", Hosts: []string{"www.example.com"}, Backends: []*lbv1.Backend{be("10.0.0.1:80", 1), be("10.0.0.2:80", 5)}, Version: 1}})
}

// ListDataPlanesResponse.version is the current configuration version
// whether or not a fleet is attached.
//
// BUG (admin.go, ListDataPlanes): with a nil fleet it returns an empty
// response before reading the store, so version is 0 whatever the store
// holds.
func TestListDataPlanesWithoutFleetReportsVersion(t *testing.T) {
	ctx := testCtx(t)
	e := newEnv(t)
	e.seed(t, ctx)
	r, err := e.c.ListDataPlanes(ctx, &lbv1.ListDataPlanesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "ListDataPlanes without a fleet", r, &lbv1.ListDataPlanesResponse{Version: 1})
}

func TestGetPoolBackendStatus(t *testing.T) {
	ctx := testCtx(t)
	e := newFleetEnv(t)
	web := e.seed(t, ctx)
	pool := proto.Clone(web).(*lbv1.Pool)

	// Before any report every backend is listed, seen by no one.
	equal(t, "GetPool before any report", e.get(t, ctx, "web"), &lbv1.GetPoolResponse{Pool: pool, Version: 1, BackendStatus: []*lbv1.BackendStatus{
		{Address: "10.0.0.1:80"}, {Address: "10.0.0.2:80"},
	}})

	report := func(d *dataPlane, bs ...*lbv1.BackendHealth) {
		d.send(t, &lbv1.StreamConfigRequest{Kind: &lbv1.StreamConfigRequest_HealthReport{HealthReport: &lbv1.HealthReport{Backends: bs}}})
	}
	dp2, dp1 := e.connect(t, "dp-2", 0), e.connect(t, "dp-1", 0)
	report(dp1,
		&lbv1.BackendHealth{Pool: "web", Address: "10.0.0.1:80", Healthy: true, InFlight: 2},
		&lbv1.BackendHealth{Pool: "web", Address: "10.0.0.2:80", Healthy: true, Ejected: true},
		&lbv1.BackendHealth{Pool: "web", Address: "10.0.0.9:80", Healthy: true}, // not configured: not listed
		&lbv1.BackendHealth{Pool: "other", Address: "10.0.0.1:80"},
	)
	report(dp2, &lbv1.BackendHealth{Pool: "web", Address: "10.0.0.1:80", Healthy: false})

	want := &lbv1.GetPoolResponse{Pool: pool, Version: 1, BackendStatus: []*lbv1.BackendStatus{
		{Address: "10.0.0.1:80", HealthyDataPlanes: 1, UnhealthyDataPlanes: 1, DataPlanes: []*lbv1.DataPlaneBackendStatus{
			{NodeId: "dp-1", Healthy: true, InFlight: 2}, {NodeId: "dp-2"},
		}},
		{Address: "10.0.0.2:80", UnhealthyDataPlanes: 1, DataPlanes: []*lbv1.DataPlaneBackendStatus{
			{NodeId: "dp-1", Healthy: true, Ejected: true},
		}},
	}}
	deadline := time.Now().Add(5 * time.Second)
	for got := e.get(t, ctx, "web"); !proto.Equal(got, want); got = e.get(t, ctx, "web") {
		if time.Now().After(deadline) {
			equal(t, "GetPool after both reported", got, want)
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The refusal of a bad timeout shows the value as a person wrote it, like
// every other field error, and the same in every build.
//
// BUG (admin.go, WaitForVersion, the FieldError for timeout): Value is
// d.String(), the protobuf text format ("seconds:-1"), which protobuf-go
// deliberately varies between builds (internal/detrand adds random spaces),
// so the message is neither readable nor stable. d.AsDuration().String()
// ("-1s") would be.
func TestWaitForVersionTimeoutMessage(t *testing.T) {
	e := newEnv(t)
	_, err := e.c.WaitForVersion(testCtx(t), &lbv1.WaitForVersionRequest{Version: 1, Timeout: durationpb.New(-time.Second)})
	checkErr(t, err, invalid("timeout", `timeout "-1s": must be a positive duration`))
}
