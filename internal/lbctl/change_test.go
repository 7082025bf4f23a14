package lbctl

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// mutation is one mutating command: its arguments, the canned response (at
// configuration version 20), the request it must send and its output line.
type mutation struct {
	name    string
	args    []string
	resp    proto.Message
	wantReq proto.Message
	line    string
}

// mutations lists every mutating command. wantReq has no expected version.
func mutations() []mutation {
	drain, undrain := true, false
	web := &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{{Address: "10.0.0.7:8080", Weight: 2}}, Version: 20}
	return []mutation{
		{
			name:    "pool create",
			args:    []string{"pool", "create", "web"},
			resp:    &lbv1.CreatePoolResponse{Pool: web, Version: 20},
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "web"}},
			line:    "pool \"web\": created with 1 backend; configuration version 20\n",
		},
		{
			name:    "pool update",
			args:    []string{"pool", "update", "web", "--path-prefix", "/v2/"},
			resp:    &lbv1.UpdatePoolResponse{Pool: web, Version: 20},
			wantReq: &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", PathPrefix: "/v2/"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"path_prefix"}}},
			line:    "pool \"web\": path prefix set to /v2/; configuration version 20\n",
		},
		{
			name:    "pool delete",
			args:    []string{"pool", "delete", "web"},
			resp:    &lbv1.DeletePoolResponse{Version: 20},
			wantReq: &lbv1.DeletePoolRequest{Name: "web"},
			line:    "pool \"web\": deleted; configuration version 20\n",
		},
		{
			name:    "add-backend",
			args:    []string{"add-backend", "--pool", "web", "10.0.0.7:8080", "--weight", "2"},
			resp:    &lbv1.AddBackendResponse{Pool: web, Version: 20},
			wantReq: &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Weight: u32(2)},
			line:    "pool \"web\": added backend 10.0.0.7:8080 (weight 2); configuration version 20\n",
		},
		{
			name:    "remove-backend",
			args:    []string{"remove-backend", "--pool", "web", "10.0.0.5:8080"},
			resp:    &lbv1.RemoveBackendResponse{Pool: web, Version: 20},
			wantReq: &lbv1.RemoveBackendRequest{Pool: "web", Address: "10.0.0.5:8080"},
			line:    "pool \"web\": removed backend 10.0.0.5:8080; configuration version 20\n",
		},
		{
			name:    "set-weight",
			args:    []string{"set-weight", "--pool", "web", "10.0.0.7:8080", "2"},
			resp:    &lbv1.UpdateBackendResponse{Pool: web, Version: 20},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Weight: u32(2)},
			line:    "pool \"web\": backend 10.0.0.7:8080 weight set to 2; configuration version 20\n",
		},
		{
			name:    "drain-backend",
			args:    []string{"drain-backend", "--pool", "web", "10.0.0.7:8080"},
			resp:    &lbv1.UpdateBackendResponse{Pool: web, Version: 20},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Draining: &drain},
			line:    "pool \"web\": backend 10.0.0.7:8080 draining (gets no new requests; in-flight requests finish); configuration version 20\n",
		},
		{
			name:    "undrain-backend",
			args:    []string{"undrain-backend", "--pool", "web", "10.0.0.7:8080"},
			resp:    &lbv1.UpdateBackendResponse{Pool: web, Version: 20},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Draining: &undrain},
			line:    "pool \"web\": backend 10.0.0.7:8080 active again (gets new requests); configuration version 20\n",
		},
	}
}

// withExpected returns a copy of the request req with expected_version v.
func withExpected(t *testing.T, req proto.Message, v uint64) proto.Message {
	t.Helper()
	req = proto.Clone(req)
	m := req.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("expected_version")
	if fd == nil {
		t.Fatalf("%T has no expected_version", req)
	}
	m.Set(fd, protoreflect.ValueOfUint64(v))
	return req
}

// checkRequests compares the requests f received with want.
func checkRequests(t *testing.T, f *fakeAdmin, want ...proto.Message) {
	t.Helper()
	got := f.requests()
	if len(got) != len(want) {
		t.Fatalf("server got %d requests %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("request %d %T:\n got %v\nwant %v", i, got[i], got[i], want[i])
		}
	}
}

// TestIfVersion checks that --if-version sends expected_version, and the
// message for a pool that changed since.
func TestIfVersion(t *testing.T) {
	for _, m := range mutations() {
		if m.name == "pool create" {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			t.Run("sent", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{resp: m.resp}
				addr := startServer(t, f)
				got := runCLI(t, nil, slices.Concat([]string{"--controlplane", addr}, m.args, []string{"--if-version", "19"})...)
				if got.stdout != m.line || got.stderr != "" || got.code != 0 {
					t.Errorf("exit %d stderr %q stdout %q, want %q", got.code, got.stderr, got.stdout, m.line)
				}
				checkRequests(t, f, withExpected(t, m.wantReq, 19))
			})
			t.Run("not sent without the flag", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{resp: m.resp}
				addr := startServer(t, f)
				got := runCLI(t, nil, append([]string{"--controlplane", addr}, m.args...)...)
				if got.stdout != m.line || got.code != 0 {
					t.Errorf("exit %d stderr %q stdout %q, want %q", got.code, got.stderr, got.stdout, m.line)
				}
				checkRequests(t, f, m.wantReq)
			})
			t.Run("stale", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{err: staleErr(t, "web", 19, 23), waitResp: &lbv1.WaitForVersionResponse{}}
				addr := startServer(t, f)
				args := slices.Concat([]string{"--controlplane", addr}, m.args, []string{"--if-version=19", "--wait"})
				got := runCLI(t, nil, args...)
				want := "lbctl: pool \"web\" changed since version 19 (it is now at version 23); run 'lbctl pool get web' and retry\n"
				if got.stderr != want || got.stdout != "" || got.code != ExitError {
					t.Errorf("exit %d stdout %q stderr\n%q\nwant\n%q", got.code, got.stdout, got.stderr, want)
				}
				// The refused change is not waited for.
				checkRequests(t, f, withExpected(t, m.wantReq, 19))
			})
		})
	}
}

// TestStaleMessages checks how a FAILED_PRECONDITION is explained when the
// detail or the message differs from what lbctl expects.
func TestStaleMessages(t *testing.T) {
	tests := []struct {
		name   string
		err    func(t *testing.T) error
		stderr string
	}{
		{
			name:   "from the detail",
			err:    func(t *testing.T) error { return staleErr(t, "web", 7, 9) },
			stderr: "lbctl: pool \"web\" changed since version 7 (it is now at version 9); run 'lbctl pool get web' and retry\n",
		},
		{
			name: "from the message without a detail",
			err: func(t *testing.T) error {
				return statusErr(t, codes.FailedPrecondition, `pool "web" changed since version 7 (it is now at version 8); read it again and retry`)
			},
			stderr: "lbctl: pool \"web\" changed since version 7 (it is now at version 8); run 'lbctl pool get web' and retry\n",
		},
		{
			name: "detail without the pool name",
			err: func(t *testing.T) error {
				return statusErr(t, codes.FailedPrecondition, "stale",
					&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
						Type: "VERSION", Description: "expected version 7, found 11",
					}}})
			},
			stderr: "lbctl: pool \"web\" changed since version 7 (it is now at version 11); run 'lbctl pool get web' and retry\n",
		},
		{
			name: "unparsable: the server's message",
			err: func(t *testing.T) error {
				return statusErr(t, codes.FailedPrecondition, "pool web is locked\nby a migration",
					&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
						Type: "LOCK", Subject: "pool/web", Description: "locked",
					}}})
			},
			stderr: "lbctl: pool web is locked; by a migration\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeAdmin{err: tt.err(t)}
			addr := startServer(t, f)
			got := runCLI(t, nil, "--controlplane", addr, "set-weight", "--pool", "web", "10.0.0.5:8080", "3", "--if-version", "7")
			if got.stderr != tt.stderr || got.code != ExitError {
				t.Errorf("exit %d stderr\n%q\nwant\n%q", got.code, got.stderr, tt.stderr)
			}
		})
	}
}

// TestWaitAfterChange checks --wait on every mutating command: it waits for
// the version the change returned, with the wait timeout, and prints the
// result after the change.
func TestWaitAfterChange(t *testing.T) {
	planes := &lbv1.WaitForVersionResponse{DataPlanes: threePlanes.GetDataPlanes()}
	wait20 := func(d time.Duration) *lbv1.WaitForVersionRequest {
		return &lbv1.WaitForVersionRequest{Version: 20, Timeout: durationpb.New(d)}
	}
	for _, m := range mutations() {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			run := func(t *testing.T, f *fakeAdmin, extra ...string) result {
				t.Helper()
				addr := startServer(t, f)
				return runCLIAt(t, fleetNow, slices.Concat([]string{"--controlplane", addr}, m.args, extra)...)
			}
			t.Run("applied", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{resp: m.resp, waitResp: planes}
				got := run(t, f, "--wait")
				want := m.line + "all 3 data planes have applied version 20\n"
				if got.stdout != want || got.stderr != "" || got.code != 0 {
					t.Errorf("exit %d stderr %q stdout\n%s\nwant\n%s", got.code, got.stderr, got.stdout, want)
				}
				checkRequests(t, f, m.wantReq, wait20(30*time.Second))
				if left := f.lastWaitLeft(); left > 35*time.Second || left < 32*time.Second {
					t.Errorf("WaitForVersion had %v left before its deadline, want about 35s", left)
				}
			})
			t.Run("wait timeout", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{resp: m.resp, waitResp: planes}
				got := run(t, f, "--wait-timeout", "1m", "--wait")
				if got.code != 0 {
					t.Errorf("exit %d stderr %q", got.code, got.stderr)
				}
				checkRequests(t, f, m.wantReq, wait20(time.Minute))
			})
			t.Run("laggards", func(t *testing.T) {
				t.Parallel()
				msg := "after 30s, 1 of 3 data planes have not acknowledged version 20: dp-b (at version 19)"
				f := &fakeAdmin{resp: m.resp, waitErr: statusErr(t, codes.DeadlineExceeded, msg)}
				got := run(t, f, "--wait")
				if got.stdout != m.line || got.stderr != "lbctl: "+msg+"\n" || got.code != ExitError {
					t.Errorf("exit %d stdout %q stderr %q", got.code, got.stdout, got.stderr)
				}
				checkRequests(t, f, m.wantReq, wait20(30*time.Second))
			})
			t.Run("refused", func(t *testing.T) {
				t.Parallel()
				msg := "data plane dp-c refused version 20: bad CA: refused by a data plane"
				f := &fakeAdmin{resp: m.resp, waitErr: statusErr(t, codes.FailedPrecondition, msg)}
				got := run(t, f, "--wait")
				if got.stdout != m.line || got.stderr != "lbctl: "+msg+"\n" || got.code != ExitError {
					t.Errorf("exit %d stdout %q stderr %q", got.code, got.stdout, got.stderr)
				}
			})
			t.Run("json", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{resp: m.resp, waitResp: planes}
				got := run(t, f, "--wait", "-o", "json")
				if got.code != 0 || got.stderr != "" {
					t.Fatalf("exit %d stderr %q", got.code, got.stderr)
				}
				back := m.resp.ProtoReflect().New().Interface()
				if err := protojson.Unmarshal([]byte(got.stdout), back); err != nil || !proto.Equal(back, m.resp) {
					t.Errorf("stdout is not just the change's response (%v):\n%s", err, got.stdout)
				}
				checkRequests(t, f, m.wantReq, wait20(30*time.Second))
			})
			t.Run("json laggards", func(t *testing.T) {
				t.Parallel()
				msg := "after 30s, 1 of 3 data planes have not acknowledged version 20: dp-b (at version 19)"
				f := &fakeAdmin{resp: m.resp, waitErr: statusErr(t, codes.DeadlineExceeded, msg)}
				got := run(t, f, "--wait", "-o", "json")
				back := m.resp.ProtoReflect().New().Interface()
				if err := protojson.Unmarshal([]byte(got.stdout), back); err != nil || !proto.Equal(back, m.resp) {
					t.Errorf("stdout is not just the change's response (%v):\n%s", err, got.stdout)
				}
				if got.stderr != "lbctl: "+msg+"\n" || got.code != ExitError {
					t.Errorf("exit %d stderr %q", got.code, got.stderr)
				}
			})
			t.Run("no wait without the flag", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{resp: m.resp, waitResp: planes}
				got := run(t, f)
				if got.stdout != m.line || got.code != 0 {
					t.Errorf("exit %d stdout %q stderr %q", got.code, got.stdout, got.stderr)
				}
				checkRequests(t, f, m.wantReq)
			})
			t.Run("failed change is not waited for", func(t *testing.T) {
				t.Parallel()
				f := &fakeAdmin{err: statusErr(t, codes.Internal, "disk on fire"), waitResp: planes}
				got := run(t, f, "--wait")
				if got.stdout != "" || got.code != ExitError ||
					got.stderr != "lbctl: the control plane failed the request: disk on fire (Internal)\n" {
					t.Errorf("exit %d stdout %q stderr %q", got.code, got.stdout, got.stderr)
				}
				checkRequests(t, f, m.wantReq)
			})
		})
	}
}

// TestChangeUsageErrors checks the mistakes in --wait, --wait-timeout,
// --if-version and "wait": each exits ExitUsage and sends nothing.
func TestChangeUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"wait-timeout without wait", []string{"pool", "delete", "web", "--wait-timeout", "1m"},
			"lbctl: --wait-timeout needs --wait; see 'lbctl pool delete --help'\n"},
		{"zero wait-timeout", []string{"add-backend", "--pool", "web", "10.0.0.5:8080", "--wait", "--wait-timeout", "0s"},
			"lbctl: invalid --wait-timeout 0s: must be positive; see 'lbctl add-backend --help'\n"},
		{"bad wait-timeout", []string{"drain-backend", "--pool", "web", "10.0.0.5:8080", "--wait", "--wait-timeout", "soon"},
			"lbctl: invalid argument \"soon\" for \"--wait-timeout\" flag: time: invalid duration \"soon\"; see 'lbctl drain-backend --help'\n"},
		{"if-version 0", []string{"pool", "update", "web", "--path-prefix", "/", "--if-version", "0"},
			"lbctl: invalid argument \"0\" for \"--if-version\" flag: version 0 is not a version; versions start at 1; see 'lbctl pool update --help'\n"},
		{"if-version negative", []string{"remove-backend", "--pool", "web", "10.0.0.5:8080", "--if-version", "-3"},
			"lbctl: invalid argument \"-3\" for \"--if-version\" flag: version -3 is negative; it must be a whole number from 1; see 'lbctl remove-backend --help'\n"},
		{"if-version not a number", []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "3", "--if-version", "latest"},
			"lbctl: invalid argument \"latest\" for \"--if-version\" flag: version \"latest\" is not a whole number; it must be a whole number from 1; see 'lbctl set-weight --help'\n"},
		{"if-version on create", []string{"pool", "create", "web", "--if-version", "3"},
			"lbctl: unknown flag: --if-version; see 'lbctl pool create --help'\n"},
		{"wait without version", []string{"wait"},
			"lbctl: --version is required; see 'lbctl wait --help'\n"},
		{"wait version 0", []string{"wait", "--version", "0"},
			"lbctl: invalid argument \"0\" for \"--version\" flag: version 0 is not a version; versions start at 1; see 'lbctl wait --help'\n"},
		{"wait version too large", []string{"wait", "--version", "18446744073709551616"},
			"lbctl: invalid argument \"18446744073709551616\" for \"--version\" flag: version 18446744073709551616 is too large; see 'lbctl wait --help'\n"},
		{"wait zero timeout", []string{"wait", "--version", "3", "--timeout", "0s"},
			"lbctl: invalid --timeout 0s: must be positive; see 'lbctl wait --help'\n"},
		{"wait with argument", []string{"wait", "3"},
			"lbctl: takes no arguments, received 1; see 'lbctl wait --help'\n"},
		{"fleet with argument", []string{"fleet", "dp-a"},
			"lbctl: takes no arguments, received 1; see 'lbctl fleet --help'\n"},
	}
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

// TestChangeHelp checks that the help of each mutating command explains
// --wait (and --if-version where it applies) and shows them in an example.
func TestChangeHelp(t *testing.T) {
	for _, m := range mutations() {
		args := m.args[:1]
		if args[0] == "pool" {
			args = m.args[:2]
		}
		got := runCLI(t, nil, slices.Concat(args, []string{"--help"})...)
		wantFlags := []string{"--wait ", "--wait-timeout duration"}
		if m.name != "pool create" {
			wantFlags = append(wantFlags, "--if-version version")
		}
		for _, s := range wantFlags {
			if !strings.Contains(got.stdout, s) {
				t.Errorf("%v --help lacks %q", args, s)
			}
		}
		_, examples, _ := strings.Cut(got.stdout, "Examples:")
		examples, _, _ = strings.Cut(examples, "Flags:")
		if !strings.Contains(examples, "--wait") {
			t.Errorf("%v --help has no example with --wait:\n%s", args, examples)
		}
		if m.name != "pool create" && !strings.Contains(examples, "--if-version") {
			t.Errorf("%v --help has no example with --if-version:\n%s", args, examples)
		}
	}
}
