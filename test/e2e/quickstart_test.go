package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestQuickstart runs scripts/quickstart.sh as a newcomer would and checks
// what it shows: round robin between a and b, then only a after b is removed,
// and no process left behind once it exits.
func TestQuickstart(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "quickstart.sh"))
	cmd.Env = append(os.Environ(),
		"LB_CP_ADDR="+freeAddr(t), "LB_CP_ADMIN_ADDR="+freeAddr(t), "LB_DP_ADDR="+freeAddr(t), "LB_ADMIN_ADDR="+freeAddr(t),
		"LB_BACKEND_A="+freeAddr(t), "LB_BACKEND_B="+freeAddr(t), "QUICKSTART_WORKDIR="+work)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("quickstart.sh: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`request (\d+) -> backend (\w+)`)
	var seq []string
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		seq = append(seq, m[2])
	}
	if len(seq) != 10 {
		t.Fatalf("want 10 request lines, got %d:\n%s", len(seq), out)
	}
	for i := 1; i < 6; i++ {
		if seq[i] == seq[i-1] {
			t.Fatalf("first six requests do not alternate: %v\n%s", seq[:6], out)
		}
	}
	if got := strings.Join(seq[6:], ""); got != "aaaa" {
		t.Fatalf("after removing b, requests went to %v, want only a\n%s", seq[6:], out)
	}
	// No process of the quickstart survives it.
	bin := filepath.Join(work, "bin")
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, exe := range exes {
		if target, err := os.Readlink(exe); err == nil && strings.HasPrefix(target, bin) {
			t.Errorf("process %s (%s) is still running after quickstart exited", filepath.Base(filepath.Dir(exe)), target)
		}
	}
}
