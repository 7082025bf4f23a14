package etcdstore_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: every
// etcd client goroutine (the store's and its watches') must be gone once the
// store is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
