package upstream_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: a
// backend not closed, or an upstream connection whose transport was not told
// to close its idle connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
