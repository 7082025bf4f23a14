package admin_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running (a
// connection, stream or handler nobody stopped).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
