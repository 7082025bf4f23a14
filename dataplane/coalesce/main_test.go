package coalesce_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a writer goroutine running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
