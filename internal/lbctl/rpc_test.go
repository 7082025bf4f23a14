package lbctl

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

func u32(v uint32) *uint32 { return &v }

var webPool = &lbv1.Pool{
	Name:       "web",
	Hosts:      []string{"www.example.com", "example.com"},
	PathPrefix: "/app/",
	Backends: []*lbv1.Backend{
		{Address: "10.0.0.5:8080", Weight: 1},
		{Address: "10.0.0.6:8080", Weight: 3},
	},
	Version: 7,
}

// TestCommandsAgainstServer runs each command against a real gRPC server and
// checks the request it sent, its output and its exit code.
func TestCommandsAgainstServer(t *testing.T) {
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
			name: "pool create with everything",
			args: []string{"pool", "create", "web", "--host", "www.example.com", "--host", "example.com",
				"--path-prefix", "/app/", "--backend", "10.0.0.5:8080", "--backend", "10.0.0.6:8080=3"},
			resp: &lbv1.CreatePoolResponse{Pool: webPool, Version: 7},
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{
				Name: "web", Hosts: []string{"www.example.com", "example.com"}, PathPrefix: "/app/",
				Backends: []*lbv1.Backend{{Address: "10.0.0.5:8080", Weight: 1}, {Address: "10.0.0.6:8080", Weight: 3}},
			}},
			stdout: "pool \"web\": created with 2 backends; configuration version 7\n",
		},
		{
			name:    "pool create bare",
			args:    []string{"pool", "create", "api"},
			resp:    &lbv1.CreatePoolResponse{Pool: &lbv1.Pool{Name: "api", Version: 3}, Version: 3},
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "api"}},
			stdout:  "pool \"api\": created with 0 backends; configuration version 3\n",
		},
		{
			name:    "pool create sends weight 0 for the server to refuse",
			args:    []string{"pool", "create", "web", "--backend", "10.0.0.5:8080=0"},
			err:     func(t *testing.T) error { return backendWeightInvalid(t) },
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{{Address: "10.0.0.5:8080", Weight: 0}}}},
			stderr:  "lbctl: backend.weight 0: weight must be 1 to 10000\n",
			code:    1,
		},
		{
			name: "pool create already exists",
			args: []string{"pool", "create", "web"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.AlreadyExists, `pool "web" already exists`,
					&errdetails.ResourceInfo{ResourceType: "pool", ResourceName: "web"})
			},
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "web"}},
			stderr:  "lbctl: pool \"web\" already exists; see it with: lbctl pool get web, or change it with: lbctl pool update web\n",
			code:    1,
		},
		{
			name: "pool create invalid address",
			args: []string{"pool", "create", "web", "--backend", "10.0.0.5:0"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, `backend.address "10.0.0.5:0": port 0 is out of range 1-65535`,
					&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
						{Field: "pool.backends[0].address", Description: "port 0 is out of range 1-65535"},
					}})
			},
			wantReq: &lbv1.CreatePoolRequest{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{{Address: "10.0.0.5:0", Weight: 1}}}},
			stderr:  "lbctl: backend.address \"10.0.0.5:0\": port 0 is out of range 1-65535\n",
			code:    1,
		},
		{
			name:    "pool list",
			args:    []string{"pool", "list"},
			resp:    &lbv1.ListPoolsResponse{Pools: []*lbv1.Pool{{Name: "api", Version: 2}, webPool}, Version: 9},
			wantReq: &lbv1.ListPoolsRequest{},
			stdout: "NAME  HOSTS                        PATH   BACKENDS  ALGORITHM    UPSTREAM  VERSION\n" +
				"api   *                            /      0         round-robin  auto      2\n" +
				"web   www.example.com,example.com  /app/  2         round-robin  auto      7\n",
		},
		{
			name:    "pool list empty",
			args:    []string{"pool", "ls"},
			resp:    &lbv1.ListPoolsResponse{Version: 1},
			wantReq: &lbv1.ListPoolsRequest{},
			stdout:  "NAME  HOSTS  PATH  BACKENDS  ALGORITHM  UPSTREAM  VERSION\n",
		},
		{
			name:    "pool get",
			args:    []string{"pool", "get", "web"},
			resp:    &lbv1.GetPoolResponse{Pool: webPool, Version: 9},
			wantReq: &lbv1.GetPoolRequest{Name: "web"},
			stdout: "Name:         web\n" +
				"Hosts:        www.example.com,example.com\n" +
				"Path prefix:  /app/\n" +
				"Version:      7\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       none\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"BACKEND        WEIGHT  STATE   HEALTHY  IN-FLIGHT\n" +
				"10.0.0.5:8080  1       active  -        -\n" +
				"10.0.0.6:8080  3       active  -        -\n",
		},
		{
			name:    "pool get without backends",
			args:    []string{"pool", "get", "api"},
			resp:    &lbv1.GetPoolResponse{Pool: &lbv1.Pool{Name: "api", Version: 2}, Version: 9},
			wantReq: &lbv1.GetPoolRequest{Name: "api"},
			stdout: "Name:         api\n" +
				"Hosts:        *\n" +
				"Path prefix:  /\n" +
				"Version:      2\n" +
				"\n" +
				"Algorithm:          round-robin\n" +
				"Health check:       none\n" +
				"Outlier detection:  eject after 5 failures for 30s+, at most 50% of backends\n" +
				"Retries:            2\n" +
				"Timeouts:           connect 5s, response 60s, idle 90s\n" +
				"\n" +
				"No backends; add one with: lbctl add-backend --pool api HOST:PORT\n",
		},
		{
			name:    "pool get not found",
			args:    []string{"pool", "get", "web"},
			err:     func(t *testing.T) error { return poolNotFound(t, "web") },
			wantReq: &lbv1.GetPoolRequest{Name: "web"},
			stderr:  "lbctl: pool \"web\" does not exist; create it with: lbctl pool create web\n",
			code:    1,
		},
		{
			name:    "pool delete",
			args:    []string{"pool", "delete", "web"},
			resp:    &lbv1.DeletePoolResponse{Version: 10},
			wantReq: &lbv1.DeletePoolRequest{Name: "web"},
			stdout:  "pool \"web\": deleted; configuration version 10\n",
		},
		{
			name:    "pool update hosts only",
			args:    []string{"pool", "update", "web", "--host", "a.example.com", "--host", "*.example.org"},
			resp:    &lbv1.UpdatePoolResponse{Pool: webPool, Version: 8},
			wantReq: &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", Hosts: []string{"a.example.com", "*.example.org"}}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hosts"}}},
			stdout:  "pool \"web\": hosts set to a.example.com,*.example.org; configuration version 8\n",
		},
		{
			name:    "pool update path prefix only",
			args:    []string{"pool", "update", "web", "--path-prefix", "/api/"},
			resp:    &lbv1.UpdatePoolResponse{Pool: webPool, Version: 8},
			wantReq: &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", PathPrefix: "/api/"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"path_prefix"}}},
			stdout:  "pool \"web\": path prefix set to /api/; configuration version 8\n",
		},
		{
			name:    "pool update clear hosts and empty path prefix",
			args:    []string{"pool", "update", "web", "--clear-hosts", "--path-prefix", ""},
			resp:    &lbv1.UpdatePoolResponse{Pool: webPool, Version: 8},
			wantReq: &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hosts", "path_prefix"}}},
			stdout:  "pool \"web\": hosts cleared, path prefix set to /; configuration version 8\n",
		},
		{
			name:    "add-backend default weight is sent",
			args:    []string{"add-backend", "--pool", "web", "10.0.0.7:8080"},
			resp:    &lbv1.AddBackendResponse{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{{Address: "10.0.0.7:8080", Weight: 1}}}, Version: 7},
			wantReq: &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Weight: u32(1)},
			stdout:  "pool \"web\": added backend 10.0.0.7:8080 (weight 1); configuration version 7\n",
		},
		{
			name:    "add-backend weight",
			args:    []string{"add-backend", "10.0.0.7:8080", "--pool=web", "--weight", "5"},
			resp:    &lbv1.AddBackendResponse{Pool: &lbv1.Pool{Name: "web", Backends: []*lbv1.Backend{{Address: "10.0.0.7:8080", Weight: 5}}}, Version: 11},
			wantReq: &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Weight: u32(5)},
			stdout:  "pool \"web\": added backend 10.0.0.7:8080 (weight 5); configuration version 11\n",
		},
		{
			name:    "add-backend weight 0 is left to the server",
			args:    []string{"add-backend", "--pool", "web", "10.0.0.7:8080", "--weight", "0"},
			err:     func(t *testing.T) error { return backendWeightInvalid(t) },
			wantReq: &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Weight: u32(0)},
			stderr:  "lbctl: backend.weight 0: weight must be 1 to 10000\n",
			code:    1,
		},
		{
			name:    "add-backend to missing pool",
			args:    []string{"add-backend", "--pool", "web", "10.0.0.7:8080"},
			err:     func(t *testing.T) error { return poolNotFound(t, "web") },
			wantReq: &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.7:8080", Weight: u32(1)},
			stderr:  "lbctl: pool \"web\" does not exist; create it with: lbctl pool create web\n",
			code:    1,
		},
		{
			name: "add-backend already there",
			args: []string{"add-backend", "--pool", "web", "10.0.0.5:8080"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.AlreadyExists, "backend exists",
					&errdetails.ResourceInfo{ResourceType: "backend", ResourceName: "10.0.0.5:8080"})
			},
			wantReq: &lbv1.AddBackendRequest{Pool: "web", Address: "10.0.0.5:8080", Weight: u32(1)},
			stderr:  "lbctl: backend 10.0.0.5:8080 is already in pool \"web\"; change its weight with: lbctl set-weight --pool web 10.0.0.5:8080 WEIGHT\n",
			code:    1,
		},
		{
			name:    "remove-backend",
			args:    []string{"remove-backend", "--pool", "web", "10.0.0.5:8080"},
			resp:    &lbv1.RemoveBackendResponse{Pool: &lbv1.Pool{Name: "web"}, Version: 12},
			wantReq: &lbv1.RemoveBackendRequest{Pool: "web", Address: "10.0.0.5:8080"},
			stdout:  "pool \"web\": removed backend 10.0.0.5:8080; configuration version 12\n",
		},
		{
			name:    "remove-backend not in pool",
			args:    []string{"remove-backend", "--pool", "web", "10.0.0.9:8080"},
			err:     func(t *testing.T) error { return backendNotFound(t, "10.0.0.9:8080") },
			wantReq: &lbv1.RemoveBackendRequest{Pool: "web", Address: "10.0.0.9:8080"},
			stderr:  "lbctl: backend 10.0.0.9:8080 is not in pool \"web\"; see its backends with: lbctl pool get web\n",
			code:    1,
		},
		{
			name:    "set-weight",
			args:    []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "7"},
			resp:    &lbv1.UpdateBackendResponse{Pool: webPool, Version: 13},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.5:8080", Weight: proto.Uint32(7)},
			stdout:  "pool \"web\": backend 10.0.0.5:8080 weight set to 7; configuration version 13\n",
		},
		{
			name: "set-weight out of server range",
			args: []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "20000"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, "weight 20000: must be 1 to 10000")
			},
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.5:8080", Weight: proto.Uint32(20000)},
			stderr:  "lbctl: weight 20000: must be 1 to 10000\n",
			code:    1,
		},
		{
			name:    "set-weight missing backend",
			args:    []string{"set-weight", "--pool", "web", "10.0.0.9:8080", "2"},
			err:     func(t *testing.T) error { return backendNotFound(t, "10.0.0.9:8080") },
			wantReq: &lbv1.UpdateBackendRequest{Pool: "web", Address: "10.0.0.9:8080", Weight: proto.Uint32(2)},
			stderr:  "lbctl: backend 10.0.0.9:8080 is not in pool \"web\"; see its backends with: lbctl pool get web\n",
			code:    1,
		},
		{
			name: "invalid argument without message uses field violations",
			args: []string{"pool", "update", "web", "--path-prefix", "api"},
			err: func(t *testing.T) error {
				return statusErr(t, codes.InvalidArgument, "", &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
					{Field: "pool.path_prefix", Description: `"api" must start with "/"`},
				}})
			},
			wantReq: &lbv1.UpdatePoolRequest{Pool: &lbv1.Pool{Name: "web", PathPrefix: "api"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"path_prefix"}}},
			stderr:  "lbctl: pool.path_prefix: \"api\" must start with \"/\"\n",
			code:    1,
		},
		{
			name:    "other codes",
			args:    []string{"pool", "delete", "web"},
			err:     func(t *testing.T) error { return statusErr(t, codes.Internal, "disk on fire\nreally") },
			wantReq: &lbv1.DeletePoolRequest{Name: "web"},
			stderr:  "lbctl: the control plane failed the request: disk on fire; really (Internal)\n",
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
				t.Errorf("stdout:\n%s\nwant:\n%s", got.stdout, tt.stdout)
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

func backendWeightInvalid(t *testing.T) error {
	return statusErr(t, codes.InvalidArgument, "backend.weight 0: weight must be 1 to 10000",
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "backend.weight", Description: "weight must be 1 to 10000"},
		}})
}

// TestJSONOutput checks that -o json prints the whole response message, with
// unpopulated fields, as protojson.
func TestJSONOutput(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		resp     proto.Message
		contains []string
	}{
		{
			name:     "pool get",
			args:     []string{"pool", "get", "api", "-o", "json"},
			resp:     &lbv1.GetPoolResponse{Pool: &lbv1.Pool{Name: "api"}, Version: 9},
			contains: []string{`"name"`, `"hosts"`, `"pathPrefix"`, `"backends"`, `"version"`, `"9"`},
		},
		{
			name:     "pool list",
			args:     []string{"--output", "json", "pool", "list"},
			resp:     &lbv1.ListPoolsResponse{Pools: []*lbv1.Pool{webPool}, Version: 9},
			contains: []string{`"pools"`, `"10.0.0.6:8080"`, `"weight"`},
		},
		{
			name:     "mutation",
			args:     []string{"-o", "json", "pool", "delete", "web"},
			resp:     &lbv1.DeletePoolResponse{Version: 10},
			contains: []string{`"version"`, `"10"`},
		},
		{
			name:     "add-backend",
			args:     []string{"-ojson", "add-backend", "--pool", "web", "10.0.0.5:8080"},
			resp:     &lbv1.AddBackendResponse{Pool: webPool, Version: 11},
			contains: []string{`"pool"`, `"version"`},
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
			if !strings.HasSuffix(got.stdout, "}\n") || strings.Count(got.stdout, "\n") < 3 {
				t.Errorf("stdout is not multi-line JSON:\n%s", got.stdout)
			}
			back := tt.resp.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal([]byte(got.stdout), back); err != nil {
				t.Fatalf("stdout is not the response as JSON: %v\n%s", err, got.stdout)
			}
			if !proto.Equal(back, tt.resp) {
				t.Errorf("decoded %v, want %v", back, tt.resp)
			}
			for _, s := range tt.contains {
				if !strings.Contains(got.stdout, s) {
					t.Errorf("stdout lacks %s:\n%s", s, got.stdout)
				}
			}
		})
	}
}

// TestUnreachable checks the errors for a control plane that is down or
// does not answer in time.
func TestUnreachable(t *testing.T) {
	t.Run("nothing listening", func(t *testing.T) {
		t.Parallel()
		addr := closedAddr(t)
		got := runCLI(t, nil, "--controlplane", addr, "pool", "list")
		wantPrefix := "lbctl: cannot reach the control plane at " + addr + ": "
		wantSuffix := "; is lb-controlplane running? (set --controlplane or LBCTL_CONTROLPLANE)\n"
		if !strings.HasPrefix(got.stderr, wantPrefix) || !strings.HasSuffix(got.stderr, wantSuffix) || strings.Count(got.stderr, "\n") != 1 {
			t.Errorf("stderr %q, want %q...%q on one line", got.stderr, wantPrefix, wantSuffix)
		}
		if got.code != ExitError || got.stdout != "" {
			t.Errorf("exit %d, stdout %q", got.code, got.stdout)
		}
	})
	t.Run("env address", func(t *testing.T) {
		t.Parallel()
		addr := closedAddr(t)
		got := runCLI(t, map[string]string{EnvControlPlane: addr}, "pool", "get", "web")
		if want := "lbctl: cannot reach the control plane at " + addr + ": "; !strings.HasPrefix(got.stderr, want) {
			t.Errorf("stderr %q, want prefix %q", got.stderr, want)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		f := &fakeAdmin{block: true}
		addr := startServer(t, f)
		got := runCLI(t, nil, "--controlplane", addr, "--timeout", "200ms", "pool", "delete", "web")
		want := "lbctl: cannot reach the control plane at " + addr +
			": no answer within 200ms (raise --timeout if it is only slow); is lb-controlplane running? (set --controlplane or LBCTL_CONTROLPLANE)\n"
		if got.stderr != want || got.code != ExitError {
			t.Errorf("exit %d stderr %q, want 1 %q", got.code, got.stderr, want)
		}
		if n := len(f.requests()); n != 1 {
			t.Errorf("server got %d requests, want 1", n)
		}
	})
}
