// Package boltstore is the embedded store.Store: one bbolt file under the
// control plane's data directory, no other server needed.
//
// Layout: bucket "meta" holds key "version" (8 bytes, big-endian); bucket
// "pools" maps each pool name to its JSON encoding. bbolt commits with fsync,
// so a change is durable before Update returns.
package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/internal/poolspec"
)

// FileName is the name of the database file inside the data directory.
const FileName = "pools.db"

var (
	bucketMeta  = []byte("meta")
	bucketPools = []byte("pools")
	keyVersion  = []byte("version")
)

// Store is a store.Store backed by a bbolt file.
type Store struct {
	db *bolt.DB

	// mu guards watchers and closed.
	mu       sync.Mutex
	watchers map[chan struct{}]struct{}
	closed   bool
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store in dir. It fails fast, rather
// than waiting, when another process holds the file.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: file is locked; is another lb-controlplane using this data dir?", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketPools} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialise %s: %w", path, err)
	}
	return &Store{db: db, watchers: make(map[chan struct{}]struct{})}, nil
}

// Read implements store.Store.
func (s *Store) Read(ctx context.Context) (store.State, error) {
	if err := ctx.Err(); err != nil {
		return store.State{}, err
	}
	var st store.State
	err := s.db.View(func(btx *bolt.Tx) error {
		st.Version = readVersion(btx)
		return btx.Bucket(bucketPools).ForEach(func(k, v []byte) error {
			p, err := decodePool(k, v)
			if err != nil {
				return err
			}
			st.Pools = append(st.Pools, p)
			return nil
		})
	})
	if err != nil {
		return store.State{}, s.wrapErr("read", err)
	}
	return st, nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var version uint64
	var fnErr error
	var wrote bool
	err := s.db.Update(func(btx *bolt.Tx) error {
		t := &tx{btx: btx, version: readVersion(btx) + 1}
		if err := fn(t); err != nil {
			fnErr = err
			return err
		}
		if t.err != nil {
			return t.err
		}
		if !t.dirty {
			version = t.version - 1
			return nil
		}
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], t.version)
		if err := btx.Bucket(bucketMeta).Put(keyVersion, buf[:]); err != nil {
			return fmt.Errorf("write version: %w", err)
		}
		version = t.version
		wrote = true
		return nil
	})
	if fnErr != nil {
		return 0, fnErr
	}
	if err != nil {
		return 0, s.wrapErr("commit", err)
	}
	if wrote {
		s.notify()
	}
	return version, nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(ch)
		return ch
	}
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.watchers[ch]; ok {
			delete(s.watchers, ch)
			close(ch)
		}
	})
	return ch
}

// notify wakes every watcher without blocking; a watcher that has not yet
// read the previous signal keeps just one.
func (s *Store) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ch := range s.watchers {
		delete(s.watchers, ch)
		close(ch)
	}
	s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.db.Path(), err)
	}
	return nil
}

func (s *Store) wrapErr(op string, err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("boltstore %s: %w", op, store.ErrClosed)
	}
	return fmt.Errorf("boltstore %s: %w", op, err)
}

func readVersion(btx *bolt.Tx) uint64 {
	v := btx.Bucket(bucketMeta).Get(keyVersion)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func decodePool(k, v []byte) (poolspec.Pool, error) {
	var p poolspec.Pool
	if err := json.Unmarshal(v, &p); err != nil {
		return poolspec.Pool{}, fmt.Errorf("decode pool %q: %w", k, err)
	}
	return p, nil
}

// tx implements store.Tx over a bbolt read-write transaction.
type tx struct {
	btx     *bolt.Tx
	version uint64 // the version this transaction commits as
	dirty   bool   // something was written
	err     error  // first write error; fails the commit
}

func (t *tx) Pool(name string) (poolspec.Pool, bool) {
	v := t.btx.Bucket(bucketPools).Get([]byte(name))
	if v == nil {
		return poolspec.Pool{}, false
	}
	p, err := decodePool([]byte(name), v)
	if err != nil {
		t.setErr(err)
		return poolspec.Pool{}, false
	}
	return p, true
}

func (t *tx) Pools() []poolspec.Pool {
	var ps []poolspec.Pool
	err := t.btx.Bucket(bucketPools).ForEach(func(k, v []byte) error {
		p, err := decodePool(k, v)
		if err != nil {
			return err
		}
		ps = append(ps, p)
		return nil
	})
	t.setErr(err)
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}

func (t *tx) Put(p poolspec.Pool) {
	p.Version = t.version
	v, err := json.Marshal(p)
	if err != nil {
		t.setErr(fmt.Errorf("encode pool %q: %w", p.Name, err))
		return
	}
	t.setErr(t.btx.Bucket(bucketPools).Put([]byte(p.Name), v))
	t.dirty = true
}

func (t *tx) Delete(name string) {
	b := t.btx.Bucket(bucketPools)
	if b.Get([]byte(name)) == nil {
		return
	}
	t.setErr(b.Delete([]byte(name)))
	t.dirty = true
}

func (t *tx) setErr(err error) {
	if err != nil && t.err == nil {
		t.err = err
	}
}
