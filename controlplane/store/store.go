// Package store defines the control plane's durable, versioned store of pools.
//
// The configuration is a set of pools (poolspec.Pool) and one version number.
// Every committed change bumps the version by at least one and stamps every
// pool it wrote with that version; a version never goes back, across restarts
// too. A change is reported committed only once it is durable.
//
// Implementations: boltstore (an embedded bbolt file, the default). The store
// knows nothing of gRPC or protobuf; the admin and discovery servers see only
// this interface.
package store

import (
	"context"
	"errors"

	"github.com/lb-project/lb/internal/poolspec"
)

// ErrClosed is returned by a store that has been closed.
var ErrClosed = errors.New("store closed")

// State is the whole configuration at one version.
type State struct {
	// Version is the configuration version; 0 before the first change.
	Version uint64
	// Pools ordered by name.
	Pools []poolspec.Pool
}

// Pool returns the named pool of s.
func (s State) Pool(name string) (poolspec.Pool, bool) {
	for _, p := range s.Pools {
		if p.Name == name {
			return p, true
		}
	}
	return poolspec.Pool{}, false
}

// Tx is a read-write view of the configuration inside one Update. Values read
// are copies; writes take effect only if the update commits.
type Tx interface {
	// Pool returns the named pool.
	Pool(name string) (poolspec.Pool, bool)
	// Pools returns every pool, ordered by name.
	Pools() []poolspec.Pool
	// Put creates or replaces a pool.
	Put(p poolspec.Pool)
	// Delete removes a pool; deleting a missing pool is a no-op.
	Delete(name string)
}

// Store is a durable, versioned store of pools. It is safe for concurrent use.
type Store interface {
	// Read returns the current configuration.
	Read(ctx context.Context) (State, error)
	// Update runs fn against the current configuration in one serializable
	// transaction. If fn returns an error, nothing is written and that error is
	// returned as it is. Otherwise the writes fn made are committed durably
	// under a new version, which is returned; an fn that wrote nothing
	// commits nothing and returns the current version.
	Update(ctx context.Context, fn func(tx Tx) error) (uint64, error)
	// Watch returns a channel that receives a value after every commit, with
	// bursts coalesced into one, until ctx is done; then it is closed. The
	// receiver reads the new state with Read.
	Watch(ctx context.Context) <-chan struct{}
	// Close releases the store. It is idempotent.
	Close() error
}
