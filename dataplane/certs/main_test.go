package certs_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package when a test leaves a goroutine running.
//
// It does what goleak.VerifyTestMain(m) does; go.uber.org/goleak is not a
// requirement of go.mod, and these tests may not change go.mod.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := verifyNoLeaks(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// verifyNoLeaks waits up to timeout for every goroutine but this one and the
// runtime's own to end, and reports those that did not.
func verifyNoLeaks(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		leaked := leakedGoroutines()
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("found %d leaked goroutines:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		// Goroutines need time to end after the tests that started them; poll
		// with a growing back-off until the deadline.
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaked []string
	// The first stack is the calling goroutine's own.
	for _, g := range strings.Split(string(buf), "\n\n")[1:] {
		if g = strings.TrimSpace(g); g != "" && !ignoredGoroutine(g) {
			leaked = append(leaked, g)
		}
	}
	return leaked
}

// ignoredGoroutine reports goroutines of the testing package and the runtime's
// signal handling, as goleak's default filters do.
func ignoredGoroutine(stack string) bool {
	lines := strings.Split(stack, "\n")
	if len(lines) < 2 {
		return false
	}
	top := lines[1]
	if i := strings.LastIndex(top, "("); i > 0 {
		top = top[:i]
	}
	switch top {
	case "testing.RunTests", "testing.(*T).Run", "testing.(*T).Parallel", "testing.runFuzzing", "testing.runFuzzTests":
		return strings.Contains(lines[0], "[chan receive")
	case "os/signal.signal_recv", "os/signal.loop":
		return true
	}
	return strings.Contains(stack, "runtime.ensureSigM")
}
