package lbctl

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// fleetNow is the fixed clock of the fleet tests.
var fleetNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// threePlanes is a fleet at version 12: one in sync, one behind, one that
// refused version 12.
var threePlanes = &lbv1.ListDataPlanesResponse{
	Version: 12,
	DataPlanes: []*lbv1.DataPlane{
		{NodeId: "dp-a", Peer: "10.0.1.5:50122", ConnectedAt: timestamppb.New(fleetNow.Add(-3*time.Minute - 12*time.Second - 400*time.Millisecond)),
			SentVersion: 12, AckedVersion: 12},
		{NodeId: "dp-b", Peer: "10.0.1.6:41000", ConnectedAt: timestamppb.New(fleetNow.Add(-2*time.Hour - 5*time.Minute - 30*time.Second)),
			SentVersion: 12, AckedVersion: 11},
		{NodeId: "dp-c", Peer: "10.0.1.7:39001", ConnectedAt: timestamppb.New(fleetNow.Add(-76 * time.Hour)),
			SentVersion: 12, AckedVersion: 11, NackedVersion: 12, NackReason: "pool \"web\": tls:\tbad CA\nbundle"},
	},
}

func TestFleet(t *testing.T) {
	tests := []struct {
		name   string
		resp   *lbv1.ListDataPlanesResponse
		stdout string
	}{
		{
			name: "in sync, behind and refused",
			resp: threePlanes,
			stdout: "configuration version 12, 3 data planes\n" +
				"NODE  PEER            CONNECTED  ACKED  SENT  STATUS\n" +
				"dp-a  10.0.1.5:50122  3m12s ago  12     12    in sync\n" +
				"dp-b  10.0.1.6:41000  2h5m ago   11     12    behind\n" +
				"dp-c  10.0.1.7:39001  3d4h ago   11     12    refused v12: pool \"web\": tls: bad CA; bundle\n",
		},
		{
			name: "an old refusal since overtaken, and an unknown connection time",
			resp: &lbv1.ListDataPlanesResponse{Version: 5, DataPlanes: []*lbv1.DataPlane{
				{NodeId: "edge-1", ConnectedAt: timestamppb.New(fleetNow.Add(-42 * time.Second)),
					SentVersion: 5, AckedVersion: 5, NackedVersion: 4, NackReason: "old"},
				{NodeId: "edge-2", Peer: "[fd00::9]:4000", SentVersion: 5, AckedVersion: 3, NackedVersion: 4},
			}},
			stdout: "configuration version 5, 2 data planes\n" +
				"NODE    PEER            CONNECTED  ACKED  SENT  STATUS\n" +
				"edge-1  -               42s ago    5      5     in sync\n" +
				"edge-2  [fd00::9]:4000  -          3      5     refused v4: no reason given\n",
		},
		{
			name: "one",
			resp: &lbv1.ListDataPlanesResponse{Version: 1, DataPlanes: []*lbv1.DataPlane{
				{NodeId: "dp-a", Peer: "127.0.0.1:5000", ConnectedAt: timestamppb.New(fleetNow), SentVersion: 1, AckedVersion: 1},
			}},
			stdout: "configuration version 1, 1 data plane\n" +
				"NODE  PEER            CONNECTED  ACKED  SENT  STATUS\n" +
				"dp-a  127.0.0.1:5000  0s ago     1      1     in sync\n",
		},
		{
			name:   "none",
			resp:   &lbv1.ListDataPlanesResponse{Version: 3},
			stdout: "configuration version 3, 0 data planes\nNo data plane is connected.\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{resp: tt.resp}
			addr := startServer(t, f)
			got := runCLIAt(t, fleetNow, "--controlplane", addr, "fleet")
			if got.stdout != tt.stdout || got.stderr != "" || got.code != 0 {
				t.Errorf("exit %d stderr %q stdout:\n%s\nwant:\n%s", got.code, got.stderr, got.stdout, tt.stdout)
			}
			reqs := f.requests()
			if len(reqs) != 1 || !proto.Equal(reqs[0], &lbv1.ListDataPlanesRequest{}) {
				t.Errorf("requests %v, want one ListDataPlanesRequest", reqs)
			}
		})
	}
}

func TestFleetJSON(t *testing.T) {
	f := &fakeAdmin{resp: threePlanes}
	addr := startServer(t, f)
	got := runCLIAt(t, fleetNow, "--controlplane", addr, "fleet", "-o", "json")
	if got.code != 0 || got.stderr != "" {
		t.Fatalf("exit %d stderr %q", got.code, got.stderr)
	}
	back := &lbv1.ListDataPlanesResponse{}
	if err := protojson.Unmarshal([]byte(got.stdout), back); err != nil {
		t.Fatalf("stdout is not the response as JSON: %v\n%s", err, got.stdout)
	}
	if !proto.Equal(back, threePlanes) {
		t.Errorf("decoded %v, want %v", back, threePlanes)
	}
	// protojson randomizes its spacing.
	compact := strings.Join(strings.Fields(got.stdout), "")
	for _, s := range []string{`"dataPlanes":[`, `"nodeId":"dp-a"`, `"ackedVersion":"12"`, `"nackedVersion":"0"`, `"nackReason":""`,
		`"connectedAt":"2025-06-01T11:56:47.600Z"`, `"version":"12"`} {
		if !strings.Contains(compact, s) {
			t.Errorf("stdout lacks %s:\n%s", s, got.stdout)
		}
	}
}

func TestAgeText(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-5 * time.Second, "0s ago"},
		{999 * time.Millisecond, "0s ago"},
		{59 * time.Second, "59s ago"},
		{time.Minute, "1m0s ago"},
		{3*time.Minute + 12*time.Second + 900*time.Millisecond, "3m12s ago"},
		{59*time.Minute + 59*time.Second, "59m59s ago"},
		{time.Hour, "1h0m ago"},
		{23*time.Hour + 59*time.Minute + 59*time.Second, "23h59m ago"},
		{24 * time.Hour, "1d0h ago"},
		{400*time.Hour + 30*time.Minute, "16d16h ago"},
	}
	for _, tt := range tests {
		if got := ageText(tt.d); got != tt.want {
			t.Errorf("ageText(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestWait runs "lbctl wait" against a real gRPC server.
func TestWait(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		resp    *lbv1.WaitForVersionResponse
		err     func(t *testing.T) error
		wantReq *lbv1.WaitForVersionRequest
		stdout  string
		stderr  string
		code    int
	}{
		{
			name:    "all applied",
			args:    []string{"wait", "--version", "12"},
			resp:    &lbv1.WaitForVersionResponse{DataPlanes: threePlanes.GetDataPlanes()},
			wantReq: &lbv1.WaitForVersionRequest{Version: 12, Timeout: durationpb.New(30 * time.Second)},
			stdout:  "all 3 data planes have applied version 12\n",
		},
		{
			name:    "timeout",
			args:    []string{"wait", "--timeout", "2m", "--version=7"},
			resp:    &lbv1.WaitForVersionResponse{DataPlanes: threePlanes.GetDataPlanes()[:1]},
			wantReq: &lbv1.WaitForVersionRequest{Version: 7, Timeout: durationpb.New(2 * time.Minute)},
			stdout:  "all 1 data plane has applied version 7\n",
		},
		{
			name:    "timeout given before the command",
			args:    []string{"--timeout", "1500ms", "wait", "--version", "3"},
			resp:    &lbv1.WaitForVersionResponse{},
			wantReq: &lbv1.WaitForVersionRequest{Version: 3, Timeout: durationpb.New(1500 * time.Millisecond)},
			stdout:  "all 0 data planes have applied version 3\n",
		},
		{
			name: "laggards",
			args: []string{"wait", "--version", "12", "--timeout", "10s"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.DeadlineExceeded,
					"after 10s, 2 of 3 data planes have not acknowledged version 12: dp-b (at version 11), dp-c (at version 10)")
			},
			wantReq: &lbv1.WaitForVersionRequest{Version: 12, Timeout: durationpb.New(10 * time.Second)},
			stderr:  "lbctl: after 10s, 2 of 3 data planes have not acknowledged version 12: dp-b (at version 11), dp-c (at version 10)\n",
			code:    1,
		},
		{
			name: "refused",
			args: []string{"wait", "--version", "12"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.FailedPrecondition,
					"data plane dp-c refused version 12: pool \"web\": bad CA\nbundle: refused by a data plane")
			},
			wantReq: &lbv1.WaitForVersionRequest{Version: 12, Timeout: durationpb.New(30 * time.Second)},
			stderr:  "lbctl: data plane dp-c refused version 12: pool \"web\": bad CA; bundle: refused by a data plane\n",
			code:    1,
		},
		{
			name:    "older control plane",
			args:    []string{"wait", "--version", "12"},
			err:     func(t *testing.T) error { return statusErr(t, codes.Unimplemented, "unknown method WaitForVersion") },
			wantReq: &lbv1.WaitForVersionRequest{Version: 12, Timeout: durationpb.New(30 * time.Second)},
			stderr:  "lbctl: the control plane at ADDR does not support this command (unknown method WaitForVersion); is it older than lbctl?\n",
			code:    1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{waitResp: tt.resp}
			if tt.err != nil {
				f.waitErr = tt.err(t)
			}
			addr := startServer(t, f)
			got := runCLIAt(t, fleetNow, append([]string{"--controlplane", addr}, tt.args...)...)
			if got.stdout != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, tt.stdout)
			}
			if want := strings.ReplaceAll(tt.stderr, "ADDR", addr); got.stderr != want {
				t.Errorf("stderr:\n%q\nwant:\n%q", got.stderr, want)
			}
			if got.code != tt.code {
				t.Errorf("exit code %d, want %d", got.code, tt.code)
			}
			reqs := f.requests()
			if len(reqs) != 1 || !proto.Equal(reqs[0], tt.wantReq) {
				t.Errorf("requests %v, want %v", reqs, tt.wantReq)
			}
			// The call's deadline is the wait timeout plus 5s.
			limit := tt.wantReq.GetTimeout().AsDuration() + 5*time.Second
			if left := f.lastWaitLeft(); left > limit || left < limit-3*time.Second {
				t.Errorf("WaitForVersion had %v left before its deadline, want about %v", left, limit)
			}
		})
	}
}

func TestWaitJSON(t *testing.T) {
	resp := &lbv1.WaitForVersionResponse{DataPlanes: threePlanes.GetDataPlanes()}
	f := &fakeAdmin{waitResp: resp}
	addr := startServer(t, f)
	got := runCLI(t, nil, "--controlplane", addr, "-o", "json", "wait", "--version", "12")
	if got.code != 0 || got.stderr != "" {
		t.Fatalf("exit %d stderr %q", got.code, got.stderr)
	}
	back := &lbv1.WaitForVersionResponse{}
	if err := protojson.Unmarshal([]byte(got.stdout), back); err != nil || !proto.Equal(back, resp) {
		t.Errorf("stdout is not the response as JSON (%v):\n%s", err, got.stdout)
	}
}

// TestWaitNoAnswer checks that a control plane that does not answer within
// the wait timeout plus 5s is reported as such, not as lagging data planes.
func TestWaitNoAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 5s")
	}
	t.Parallel()
	// The server never answers (its handler ignores the call's deadline),
	// so only lbctl's own deadline ends the call.
	f := &fakeAdmin{hang: make(chan struct{})}
	addr := startServer(t, f)
	t.Cleanup(func() { close(f.hang) }) // runs before the server stops
	got := runCLI(t, nil, "--controlplane", addr, "wait", "--version", "4", "--timeout", "100ms")
	want := "lbctl: cannot reach the control plane at " + addr +
		": no answer within 5.1s while waiting for version 4; is lb-controlplane running? (set --controlplane or LBCTL_CONTROLPLANE)\n"
	if got.stderr != want || got.code != ExitError || got.stdout != "" {
		t.Errorf("exit %d stdout %q stderr %q, want 1 and %q", got.code, got.stdout, got.stderr, want)
	}
}
