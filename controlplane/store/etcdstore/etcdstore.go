// Package etcdstore is the highly available store.Store: pools live in an
// etcd cluster shared by any number of control-plane replicas.
//
// Layout, under a key prefix (default "/lb/"):
//
//	PREFIX pools/NAME  the pool's JSON encoding
//	PREFIX seq         rewritten by every change; the compare-and-swap guard
//
// Versions are etcd revisions, so every replica reports the same version for
// the same state: the state's version is the revision it was read at, and a
// pool's version is the revision that last wrote it. Every Update reads the
// pools and the guard key, runs the caller's function, and commits its
// writes in one transaction that succeeds only if the guard is unchanged; on
// a conflict with another replica's write it retries with fresh data. A
// change is acknowledged once etcd has committed it (to a quorum). Watch
// follows the pools prefix, so changes made through any replica wake the
// discovery servers of all of them.
package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/internal/poolspec"
)

// Config configures the store.
type Config struct {
	// Endpoints of the etcd cluster. Required.
	Endpoints []string
	// Prefix of every key. Default "/lb/".
	Prefix string
	// DialTimeout bounds connecting to etcd. Default 5s.
	DialTimeout time.Duration
}

// Store is a store.Store in etcd.
type Store struct {
	// mu serialises this replica's updates, so only other replicas'
	// writes can make a transaction retry.
	mu     sync.Mutex
	cli    *clientv3.Client
	pools  string // key prefix of pools
	guard  string // key rewritten by every change
	closed chan struct{}
	once   sync.Once
}

var _ store.Store = (*Store)(nil)

// maxConflicts bounds the retries of an Update that keeps losing races
// with other replicas; retries back off with jitter.
const maxConflicts = 100

// Open connects to etcd and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcdstore: no endpoints")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/lb/"
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	// The client's own logger (zap) is silenced: its errors reach callers
	// as returned errors, logged through hclog by the control plane.
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connect to %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, cfg.Prefix+"seq"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcdstore: reach %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return &Store{cli: cli, pools: cfg.Prefix + "pools/", guard: cfg.Prefix + "seq", closed: make(chan struct{})}, nil
}

// Read implements store.Store.
func (s *Store) Read(ctx context.Context) (store.State, error) {
	select {
	case <-s.closed:
		return store.State{}, fmt.Errorf("etcdstore read: %w", store.ErrClosed)
	default:
	}
	resp, err := s.cli.Get(ctx, s.pools, clientv3.WithPrefix())
	if err != nil {
		return store.State{}, s.wrap("read", err)
	}
	st := store.State{Version: uint64(resp.Header.Revision)}
	for _, kv := range resp.Kvs {
		p, err := decode(kv.Key, kv.Value, kv.ModRevision)
		if err != nil {
			return store.State{}, err
		}
		st.Pools = append(st.Pools, p)
	}
	sort.Slice(st.Pools, func(i, j int) bool { return st.Pools[i].Name < st.Pools[j].Name })
	return st, nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) (uint64, error) {
	select {
	case <-s.closed:
		return 0, fmt.Errorf("etcdstore update: %w", store.ErrClosed)
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; attempt < maxConflicts; attempt++ {
		if attempt > 0 {
			// Another replica won the race: wait a little, then re-read.
			d := time.Duration(rand.Int64N(int64(min(attempt, 10)) * int64(2*time.Millisecond)))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, ctx.Err()
			case <-t.C:
			}
		}
		resp, err := s.cli.Txn(ctx).Then(
			clientv3.OpGet(s.pools, clientv3.WithPrefix()),
			clientv3.OpGet(s.guard),
		).Commit()
		if err != nil {
			return 0, s.wrap("read", err)
		}
		t := &tx{pools: make(map[string]poolspec.Pool)}
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			p, err := decode(kv.Key, kv.Value, kv.ModRevision)
			if err != nil {
				return 0, err
			}
			t.pools[p.Name] = p
		}
		var guardRev int64
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			guardRev = kvs[0].ModRevision
		}
		if err := fn(t); err != nil {
			return 0, err
		}
		if len(t.puts) == 0 && len(t.deletes) == 0 {
			return uint64(resp.Header.Revision), nil
		}
		ops := []clientv3.Op{clientv3.OpPut(s.guard, "")}
		for name := range t.deletes {
			ops = append(ops, clientv3.OpDelete(s.pools+name))
		}
		for name, p := range t.puts {
			p.Version = 0 // the key's revision says it
			v, err := json.Marshal(p)
			if err != nil {
				return 0, fmt.Errorf("etcdstore: encode pool %q: %w", name, err)
			}
			ops = append(ops, clientv3.OpPut(s.pools+name, string(v)))
		}
		commit, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(s.guard), "=", guardRev)).
			Then(ops...).Commit()
		if err != nil {
			return 0, s.wrap("commit", err)
		}
		if commit.Succeeded {
			return uint64(commit.Header.Revision), nil
		}
		// Another replica changed the pools since they were read: again.
	}
	return 0, fmt.Errorf("etcdstore: commit: %d conflicting writes in a row; try again", maxConflicts)
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, s.pools, clientv3.WithPrefix())
	go func() {
		defer close(out)
		defer cancel()
		for {
			select {
			case <-s.closed:
				return
			case resp, ok := <-wch:
				if !ok {
					return
				}
				if resp.Err() != nil && ctx.Err() == nil {
					// A broken watch (compaction, lost leader): let the
					// reader re-read everything, then watch again.
					wch = s.cli.Watch(wctx, s.pools, clientv3.WithPrefix())
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}

// Close implements store.Store.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		err = s.cli.Close()
	})
	return err
}

func (s *Store) wrap(op string, err error) error {
	select {
	case <-s.closed:
		return fmt.Errorf("etcdstore %s: %w", op, store.ErrClosed)
	default:
	}
	return fmt.Errorf("etcdstore %s: %w", op, err)
}

func decode(key, value []byte, rev int64) (poolspec.Pool, error) {
	var p poolspec.Pool
	if err := json.Unmarshal(value, &p); err != nil {
		return poolspec.Pool{}, fmt.Errorf("etcdstore: decode %s: %w", key, err)
	}
	p.Version = uint64(rev)
	return p, nil
}

// tx implements store.Tx over a snapshot of the pools.
type tx struct {
	pools   map[string]poolspec.Pool
	puts    map[string]poolspec.Pool
	deletes map[string]bool
}

func (t *tx) Pool(name string) (poolspec.Pool, bool) {
	p, ok := t.pools[name]
	return p.Clone(), ok
}

func (t *tx) Pools() []poolspec.Pool {
	out := make([]poolspec.Pool, 0, len(t.pools))
	for _, p := range t.pools {
		out = append(out, p.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (t *tx) Put(p poolspec.Pool) {
	if t.puts == nil {
		t.puts = make(map[string]poolspec.Pool)
	}
	t.pools[p.Name] = p
	t.puts[p.Name] = p
	delete(t.deletes, p.Name)
}

func (t *tx) Delete(name string) {
	if _, ok := t.pools[name]; !ok {
		return
	}
	if t.deletes == nil {
		t.deletes = make(map[string]bool)
	}
	delete(t.pools, name)
	delete(t.puts, name)
	t.deletes[name] = true
}
