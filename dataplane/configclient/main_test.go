package configclient_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: a Run
// not stopped, a gRPC server or client connection not closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
