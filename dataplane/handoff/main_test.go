package handoff_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running (a
// Serve loop, an exchange or a connection nobody stopped).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
