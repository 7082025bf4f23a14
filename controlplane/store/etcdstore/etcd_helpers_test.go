package etcdstore_test

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lb-project/lb/internal/etcdtest"
)

// etcdServer is a real etcd started for one test.
type etcdServer = etcdtest.Server

// startEtcd starts a real etcd for t (see package etcdtest).
func startEtcd(t *testing.T) *etcdServer { return etcdtest.Start(t) }

// rawClientOf is a plain etcd client on s, closed when the test ends, for
// looking behind the store's back.
func rawClientOf(s *etcdServer, t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
