package lbctl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// nothingToUpdate is the error of "pool update" without a change.
const nothingToUpdate = "lbctl: nothing to update; give a flag that changes the pool, such as --host, " +
	"--path-prefix, --upstream-tls, --algorithm, --health-check, --retries or --connect-timeout; " +
	"see 'lbctl pool update --help'\n"

// TestUsageErrors checks command line mistakes: each is reported on one line
// with a pointer to the help, exits ExitUsage and sends nothing.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"get without name", []string{"pool", "get"},
			"lbctl: requires exactly 1 argument (NAME), received 0; see 'lbctl pool get --help'\n"},
		{"get with two names", []string{"pool", "get", "a", "b"},
			"lbctl: requires exactly 1 argument (NAME), received 2; see 'lbctl pool get --help'\n"},
		{"create without name", []string{"pool", "create"},
			"lbctl: requires exactly 1 argument (NAME), received 0; see 'lbctl pool create --help'\n"},
		{"delete without name", []string{"pool", "delete"},
			"lbctl: requires exactly 1 argument (NAME), received 0; see 'lbctl pool delete --help'\n"},
		{"list with argument", []string{"pool", "list", "web"},
			"lbctl: takes no arguments, received 1; see 'lbctl pool list --help'\n"},
		{"set-weight without weight", []string{"set-weight", "--pool", "web", "10.0.0.5:8080"},
			"lbctl: requires exactly 2 arguments (HOST:PORT WEIGHT), received 1; see 'lbctl set-weight --help'\n"},
		{"set-weight not a number", []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "heavy"},
			"lbctl: weight \"heavy\" is not a whole number; it must be a whole number from 1 to 10000; see 'lbctl set-weight --help'\n"},
		{"set-weight fraction", []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "1.5"},
			"lbctl: weight \"1.5\" is not a whole number; it must be a whole number from 1 to 10000; see 'lbctl set-weight --help'\n"},
		{"set-weight negative", []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "-5"},
			"lbctl: weight -5 is negative; it must be a whole number from 1 to 10000; see 'lbctl set-weight --help'\n"},
		{"set-weight negative after --", []string{"set-weight", "--pool", "web", "--", "10.0.0.5:8080", "-5"},
			"lbctl: weight -5 is negative; it must be a whole number from 1 to 10000; see 'lbctl set-weight --help'\n"},
		{"set-weight too large", []string{"set-weight", "--pool", "web", "10.0.0.5:8080", "99999999999"},
			"lbctl: weight 99999999999 is too large; it must be a whole number from 1 to 10000; see 'lbctl set-weight --help'\n"},
		{"set-weight without pool", []string{"set-weight", "10.0.0.5:8080", "3"},
			"lbctl: --pool is required; see 'lbctl set-weight --help'\n"},
		{"add-backend without pool", []string{"add-backend", "10.0.0.5:8080"},
			"lbctl: --pool is required; see 'lbctl add-backend --help'\n"},
		{"add-backend without address", []string{"add-backend", "--pool", "web"},
			"lbctl: requires exactly 1 argument (HOST:PORT), received 0; see 'lbctl add-backend --help'\n"},
		{"add-backend negative weight", []string{"add-backend", "--pool", "web", "10.0.0.5:8080", "--weight", "-1"},
			"lbctl: invalid argument \"-1\" for \"--weight\" flag: weight -1 is negative; it must be a whole number from 1 to 10000; see 'lbctl add-backend --help'\n"},
		{"add-backend bad weight", []string{"add-backend", "--pool", "web", "10.0.0.5:8080", "--weight", "x"},
			"lbctl: invalid argument \"x\" for \"--weight\" flag: weight \"x\" is not a whole number; it must be a whole number from 1 to 10000; see 'lbctl add-backend --help'\n"},
		{"remove-backend without pool", []string{"remove-backend", "10.0.0.5:8080"},
			"lbctl: --pool is required; see 'lbctl remove-backend --help'\n"},
		{"update with nothing", []string{"pool", "update", "web"},
			nothingToUpdate},
		{"update hosts and clear", []string{"pool", "update", "web", "--host", "a.example.com", "--clear-hosts"},
			"lbctl: --host and --clear-hosts cannot be used together; see 'lbctl pool update --help'\n"},
		{"update clear-hosts=false", []string{"pool", "update", "web", "--clear-hosts=false"},
			nothingToUpdate},
		{"create bad backend weight", []string{"pool", "create", "web", "--backend", "10.0.0.5:8080=x"},
			"lbctl: invalid --backend \"10.0.0.5:8080=x\": weight \"x\" is not a whole number; it must be a whole number from 1 to 10000; see 'lbctl pool create --help'\n"},
		{"create backend without address", []string{"pool", "create", "web", "--backend", "=3"},
			"lbctl: invalid --backend \"=3\": missing HOST:PORT (expected HOST:PORT[=WEIGHT]); see 'lbctl pool create --help'\n"},
		{"unknown flag", []string{"pool", "get", "web", "--bogus"},
			"lbctl: unknown flag: --bogus; see 'lbctl pool get --help'\n"},
		{"unknown command", []string{"pools"},
			"lbctl: unknown command \"pools\" for \"lbctl\" (did you mean \"pool\"?); see 'lbctl --help'\n"},
		{"unknown command far from any", []string{"frobnicate"},
			"lbctl: unknown command \"frobnicate\" for \"lbctl\"; see 'lbctl --help'\n"},
		{"unknown pool command", []string{"pool", "show", "web"},
			"lbctl: unknown command \"show\" for \"lbctl pool\"; see 'lbctl pool --help'\n"},
		{"bad output", []string{"-o", "yaml", "pool", "list"},
			"lbctl: invalid --output \"yaml\": must be \"table\" or \"json\"; see 'lbctl pool list --help'\n"},
		{"bad timeout", []string{"--timeout", "soon", "pool", "list"},
			"lbctl: invalid argument \"soon\" for \"--timeout\" flag: time: invalid duration \"soon\"; see 'lbctl pool list --help'\n"},
		{"zero timeout", []string{"--timeout", "0s", "pool", "list"},
			"lbctl: invalid --timeout 0s: must be positive; see 'lbctl pool list --help'\n"},
		{"version with argument", []string{"version", "x"},
			"lbctl: takes no arguments, received 1; see 'lbctl version --help'\n"},
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

// TestHelp checks that --help works on every command and that each has a
// description and an example.
func TestHelp(t *testing.T) {
	a := &app{getenv: func(string) string { return "" }}
	root := a.newRootCmd()
	var paths [][]string
	for _, c := range root.Commands() {
		if c.Name() == "help" {
			continue
		}
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%s: Short, Long and Example must be set", c.CommandPath())
		}
		paths = append(paths, []string{c.Name()})
		for _, sub := range c.Commands() {
			if sub.Short == "" || sub.Long == "" || sub.Example == "" {
				t.Errorf("%s: Short, Long and Example must be set", sub.CommandPath())
			}
			paths = append(paths, []string{c.Name(), sub.Name()})
		}
	}
	if root.Short == "" || root.Long == "" || root.Example == "" {
		t.Errorf("lbctl: Short, Long and Example must be set")
	}
	paths = append(paths, nil)
	if len(paths) != 17 {
		t.Errorf("found %d commands, want 17: %v", len(paths), paths)
	}
	for _, p := range paths {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string(nil), p...), h)
			got := runCLI(t, nil, args...)
			if got.code != 0 || got.stderr != "" {
				t.Errorf("%v: exit %d stderr %q", args, got.code, got.stderr)
			}
			want := "lbctl " + strings.Join(p, " ")
			if !strings.Contains(got.stdout, "Usage:\n  "+strings.TrimSpace(want)) || !strings.Contains(got.stdout, "Examples:") {
				t.Errorf("%v: help lacks usage of %q or examples:\n%s", args, want, got.stdout)
			}
		}
	}
	// A group command without a subcommand prints its help.
	for _, args := range [][]string{nil, {"pool"}} {
		got := runCLI(t, nil, args...)
		if got.code != 0 || !strings.Contains(got.stdout, "Available Commands:") {
			t.Errorf("%v: exit %d stdout %q", args, got.code, got.stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "1.2.3"
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"version"}, "lbctl 1.2.3\n"},
		{[]string{"version", "-o", "json"}, "{\n  \"version\": \"1.2.3\"\n}\n"},
	}
	for _, tt := range tests {
		got := runCLI(t, nil, tt.args...)
		if got.stdout != tt.want || got.stderr != "" || got.code != 0 {
			t.Errorf("%v: %+v, want stdout %q", tt.args, got, tt.want)
		}
	}
}

// TestControlPlaneAddress checks the precedence flag > environment > default.
func TestControlPlaneAddress(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"default", "", nil, DefaultControlPlane},
		{"env", "cp.internal:7400", nil, "cp.internal:7400"},
		{"flag", "", []string{"--controlplane", "10.1.1.1:9000"}, "10.1.1.1:9000"},
		{"flag wins over env", "cp.internal:7400", []string{"--controlplane=10.1.1.1:9000"}, "10.1.1.1:9000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			a := &app{stdout: &out, stderr: &out, getenv: func(k string) string {
				if k == EnvControlPlane {
					return tt.env
				}
				return ""
			}}
			root := a.newRootCmd()
			root.SetArgs(append(tt.args, "version"))
			root.SetOut(&out)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if a.controlPlane != tt.want {
				t.Errorf("control plane %q, want %q", a.controlPlane, tt.want)
			}
		})
	}
}

func TestParseWeight(t *testing.T) {
	tests := []struct {
		in      string
		want    uint32
		wantErr string
	}{
		{"1", 1, ""},
		{"0", 0, ""},
		{"10000", 10000, ""},
		{"4294967295", 4294967295, ""},
		{"4294967296", 0, "weight 4294967296 is too large"},
		{"-1", 0, "weight -1 is negative"},
		{"", 0, `weight "" is not a whole number`},
		{"2.5", 0, `weight "2.5" is not a whole number`},
		{"+3", 0, `weight "+3" is not a whole number`},
		{"-x", 0, `weight "-x" is not a whole number`},
	}
	for _, tt := range tests {
		got, err := parseWeight(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("parseWeight(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
			t.Errorf("parseWeight(%q) error %v, want prefix %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestParseBackend(t *testing.T) {
	tests := []struct {
		in         string
		addr       string
		weight     uint32
		wantErrSub string
	}{
		{"10.0.0.5:8080", "10.0.0.5:8080", 1, ""},
		{"10.0.0.5:8080=3", "10.0.0.5:8080", 3, ""},
		{"[fd00::7]:8080=2", "[fd00::7]:8080", 2, ""},
		{"b.internal:80=0", "b.internal:80", 0, ""},
		{"10.0.0.5:8080=", "", 0, `weight "" is not a whole number`},
		{"=5", "", 0, "missing HOST:PORT"},
		{"10.0.0.5:8080=-2", "", 0, "weight -2 is negative"},
	}
	for _, tt := range tests {
		b, err := parseBackend(tt.in)
		if tt.wantErrSub != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
				t.Errorf("parseBackend(%q) error %v, want %q", tt.in, err, tt.wantErrSub)
			}
			continue
		}
		if err != nil || b.GetAddress() != tt.addr || b.GetWeight() != tt.weight {
			t.Errorf("parseBackend(%q) = %v, %v; want %s weight %d", tt.in, b, err, tt.addr, tt.weight)
		}
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a\nb", "a; b"},
		{"unknown command \"x\"\n\nDid you mean this?\n\tpool\n", "unknown command \"x\"; Did you mean this?; pool"},
		{"a\r\n  b  ", "a; b"},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestLocalErrorIsNotUsage checks that an error that is neither a usage
// error nor from the control plane is printed as is, with ExitError.
func TestLocalErrorIsNotUsage(t *testing.T) {
	var stderr bytes.Buffer
	a := &app{stderr: &stderr, controlPlane: "x", timeout: time.Second}
	if got, want := a.describe(errors.New("boom")), "boom"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}

// TestMainCancelled checks that a cancelled context aborts a call.
func TestMainCancelled(t *testing.T) {
	f := &fakeAdmin{block: true}
	addr := startServer(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(f.requests()) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, []string{"--controlplane", addr, "pool", "list"}, &stdout, &stderr)
	if code != ExitError || !strings.HasPrefix(stderr.String(), "lbctl: interrupted") {
		t.Errorf("exit %d stderr %q", code, stderr.String())
	}
}
