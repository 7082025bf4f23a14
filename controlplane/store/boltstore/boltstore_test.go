package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/controlplane/store/boltstore"
	"github.com/lb-project/lb/internal/poolspec"
)

// testCtx returns a context that ends with the test or after 10s.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a store in a fresh directory and closes it after the test.
func openStore(t *testing.T) (*boltstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, dir
}

func mustRead(t *testing.T, ctx context.Context, s store.Store) store.State {
	t.Helper()
	st, err := s.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return st
}

func mustUpdate(t *testing.T, ctx context.Context, s store.Store, fn func(tx store.Tx) error) uint64 {
	t.Helper()
	v, err := s.Update(ctx, fn)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	return v
}

func put(ps ...poolspec.Pool) func(tx store.Tx) error {
	return func(tx store.Tx) error {
		for _, p := range ps {
			tx.Put(p)
		}
		return nil
	}
}

func pool(name string, version uint64, addrs ...string) poolspec.Pool {
	p := poolspec.Pool{Name: name, Version: version}
	for _, a := range addrs {
		p.Backends = append(p.Backends, poolspec.Backend{Address: a, Weight: 1})
	}
	return p
}

func assertState(t *testing.T, got, want store.State) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("state:\n got  %+v\n want %+v", got, want)
	}
}

func TestOpenCreatesDirAndFile(t *testing.T) {
	ctx := testCtx(t)
	dir := filepath.Join(t.TempDir(), "nested", "data")
	s, err := boltstore.Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()

	di, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("data dir: %v", err)
	}
	if !di.IsDir() || di.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, want a directory with mode 0700", di.Mode())
	}
	fi, err := os.Stat(filepath.Join(dir, boltstore.FileName))
	if err != nil {
		t.Fatalf("database file: %v", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode = %v, want a regular file with mode 0600", fi.Mode())
	}
	if boltstore.FileName != "pools.db" {
		t.Errorf("FileName = %q, want pools.db", boltstore.FileName)
	}
	assertState(t, mustRead(t, ctx, s), store.State{Version: 0})
}

func TestOpenFailsWhenDirCannotBeCreated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "data")
	s, err := boltstore.Open(dir)
	if err == nil {
		s.Close()
		t.Fatalf("Open(%q) under a regular file succeeded", dir)
	}
	if want := "create data dir " + dir + ": "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Open error = %q, want prefix %q", err, want)
	}
}

func TestOpenFailsFastWhenLocked(t *testing.T) {
	_, dir := openStore(t)

	start := time.Now()
	s2, err := boltstore.Open(dir)
	elapsed := time.Since(start)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	if s2 != nil {
		t.Errorf("second Open returned a non-nil store with its error")
	}
	want := fmt.Sprintf("open %s: file is locked; is another lb-controlplane using this data dir?", filepath.Join(dir, boltstore.FileName))
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if elapsed > 3*time.Second {
		t.Errorf("second Open took %v to fail, want about 1s", elapsed)
	}
}

func TestOpenSucceedsAfterHolderCloses(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	s1, err := boltstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, ctx, s1, put(pool("a", 0)))
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := boltstore.Open(dir)
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	defer s2.Close()
	assertState(t, mustRead(t, ctx, s2), store.State{Version: 1, Pools: []poolspec.Pool{pool("a", 1)}})
}

func TestUpdateVersions(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)

	// Steps run in order against one store; each checks the version Update
	// returns and the whole state Read sees afterwards.
	steps := []struct {
		name        string
		fn          func(tx store.Tx) error
		wantVersion uint64
		wantPools   []poolspec.Pool
	}{
		{
			name:        "put one pool",
			fn:          put(pool("a", 0, "10.0.0.1:80")),
			wantVersion: 1,
			wantPools:   []poolspec.Pool{pool("a", 1, "10.0.0.1:80")},
		},
		{
			name:        "put two pools in one transaction",
			fn:          put(pool("c", 0), pool("b", 0)),
			wantVersion: 2,
			wantPools:   []poolspec.Pool{pool("a", 1, "10.0.0.1:80"), pool("b", 2), pool("c", 2)},
		},
		{
			name: "read only",
			fn: func(tx store.Tx) error {
				if _, ok := tx.Pool("a"); !ok {
					return errors.New("pool a missing")
				}
				if n := len(tx.Pools()); n != 3 {
					return fmt.Errorf("%d pools, want 3", n)
				}
				return nil
			},
			wantVersion: 2,
			wantPools:   []poolspec.Pool{pool("a", 1, "10.0.0.1:80"), pool("b", 2), pool("c", 2)},
		},
		{
			name:        "delete a missing pool",
			fn:          func(tx store.Tx) error { tx.Delete("nope"); return nil },
			wantVersion: 2,
			wantPools:   []poolspec.Pool{pool("a", 1, "10.0.0.1:80"), pool("b", 2), pool("c", 2)},
		},
		{
			name: "change a copy without putting it",
			fn: func(tx store.Tx) error {
				p, _ := tx.Pool("a")
				p.Backends[0].Weight = 99
				p.Name = "zzz"
				ps := tx.Pools()
				ps[1].Hosts = append(ps[1].Hosts, "x.example.com")
				return nil
			},
			wantVersion: 2,
			wantPools:   []poolspec.Pool{pool("a", 1, "10.0.0.1:80"), pool("b", 2), pool("c", 2)},
		},
		{
			name:        "replace a pool",
			fn:          put(pool("a", 0, "10.0.0.1:80", "10.0.0.2:80")),
			wantVersion: 3,
			wantPools:   []poolspec.Pool{pool("a", 3, "10.0.0.1:80", "10.0.0.2:80"), pool("b", 2), pool("c", 2)},
		},
		{
			name:        "delete a pool",
			fn:          func(tx store.Tx) error { tx.Delete("b"); return nil },
			wantVersion: 4,
			wantPools:   []poolspec.Pool{pool("a", 3, "10.0.0.1:80", "10.0.0.2:80"), pool("c", 2)},
		},
		{
			name: "delete every pool",
			fn: func(tx store.Tx) error {
				for _, p := range tx.Pools() {
					tx.Delete(p.Name)
				}
				return nil
			},
			wantVersion: 5,
			wantPools:   nil,
		},
	}
	for _, step := range steps {
		v, err := s.Update(ctx, step.fn)
		if err != nil {
			t.Fatalf("%s: Update: %v", step.name, err)
		}
		if v != step.wantVersion {
			t.Errorf("%s: Update returned version %d, want %d", step.name, v, step.wantVersion)
		}
		got := mustRead(t, ctx, s)
		if want := (store.State{Version: step.wantVersion, Pools: step.wantPools}); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: state:\n got  %+v\n want %+v", step.name, got, want)
		}
	}
}

func TestPutStampsVersion(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	mustUpdate(t, ctx, s, put(pool("first", 0)))

	var inTx poolspec.Pool
	v := mustUpdate(t, ctx, s, func(tx store.Tx) error {
		// A caller-supplied version is overwritten with the committing one.
		tx.Put(pool("a", 999, "10.0.0.1:80"))
		inTx, _ = tx.Pool("a")
		return nil
	})
	if v != 2 {
		t.Fatalf("Update returned version %d, want 2", v)
	}
	if inTx.Version != 2 {
		t.Errorf("inside the transaction, Pool(a).Version = %d, want 2", inTx.Version)
	}
	got, ok := mustRead(t, ctx, s).Pool("a")
	if !ok || got.Version != 2 {
		t.Errorf("stored pool a = %+v (found %v), want version 2", got, ok)
	}
	if first, _ := mustRead(t, ctx, s).Pool("first"); first.Version != 1 {
		t.Errorf("untouched pool kept version %d, want 1", first.Version)
	}
}

// errFn is an error type of its own, to check errors.As on Update's result.
type errFn struct{ msg string }

func (e *errFn) Error() string { return e.msg }

func TestUpdateErrorWritesNothing(t *testing.T) {
	sentinel := errors.New("refused")
	typed := &errFn{msg: "typed refusal"}
	wrapped := fmt.Errorf("checking pool: %w", sentinel)

	tests := []struct {
		name string
		err  error // what fn returns after writing
	}{
		{name: "sentinel after a put", err: sentinel},
		{name: "typed error after a put and a delete", err: typed},
		{name: "wrapped error after a replace", err: wrapped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			s, _ := openStore(t)
			mustUpdate(t, ctx, s, put(pool("a", 0, "10.0.0.1:80"), pool("b", 0)))
			before := mustRead(t, ctx, s)
			watch := s.Watch(ctx)

			_, err := s.Update(ctx, func(tx store.Tx) error {
				tx.Put(pool("new", 0))
				tx.Put(pool("a", 0, "10.9.9.9:80"))
				tx.Delete("b")
				return tt.err
			})
			if err != tt.err {
				t.Errorf("Update error = %#v, want the fn's error %#v itself", err, tt.err)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.err)
			}
			var fe *errFn
			if errors.As(tt.err, &fe) && (!errors.As(err, &fe) || fe != typed) {
				t.Errorf("errors.As(%v, *errFn) lost the typed error", err)
			}
			assertState(t, mustRead(t, ctx, s), before)
			if len(watch) != 0 {
				t.Errorf("a failed update signalled watchers")
			}
			// The failed transaction consumed no version.
			if v := mustUpdate(t, ctx, s, put(pool("c", 0))); v != before.Version+1 {
				t.Errorf("next Update returned version %d, want %d", v, before.Version+1)
			}
		})
	}
}

func TestUpdateAndReadHonourContext(t *testing.T) {
	s, _ := openStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	called := false
	if _, err := s.Update(ctx, func(store.Tx) error { called = true; return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Update with a cancelled context: error %v, want context.Canceled", err)
	}
	if called {
		t.Errorf("Update ran fn with a cancelled context")
	}
	if _, err := s.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context: error %v, want context.Canceled", err)
	}
	if st := mustRead(t, testCtx(t), s); st.Version != 0 {
		t.Errorf("version = %d after a refused update, want 0", st.Version)
	}
}

func TestReadSortsByName(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	names := []string{"web", "api", "a-b", "z", "a.b", "a1", "a", "0"}
	// One pool per transaction, and two in the last, in no particular order.
	for _, n := range names[:len(names)-2] {
		mustUpdate(t, ctx, s, put(pool(n, 0)))
	}
	mustUpdate(t, ctx, s, put(pool(names[len(names)-1], 0), pool(names[len(names)-2], 0)))

	want := append([]string(nil), names...)
	sort.Strings(want)
	var got []string
	for _, p := range mustRead(t, ctx, s).Pools {
		got = append(got, p.Name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Read order = %q, want %q", got, want)
	}
	var inTx []string
	mustUpdate(t, ctx, s, func(tx store.Tx) error {
		for _, p := range tx.Pools() {
			inTx = append(inTx, p.Name)
		}
		return nil
	})
	if !reflect.DeepEqual(inTx, want) {
		t.Errorf("Tx.Pools order = %q, want %q", inTx, want)
	}
}

func TestStateSurvivesReopen(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	full := poolspec.Pool{
		Name:       "web",
		Hosts:      []string{"a.example.com", "b.example.com"},
		PathPrefix: "/api/",
		Backends:   []poolspec.Backend{{Address: "10.0.0.1:80", Weight: 3}, {Address: "[2001:db8::1]:8080", Weight: 10000}},
	}
	mustUpdate(t, ctx, s, put(full, pool("gone", 0)))
	mustUpdate(t, ctx, s, put(pool("other", 0, "host.example.com:443")))
	mustUpdate(t, ctx, s, func(tx store.Tx) error { tx.Delete("gone"); return nil })
	before := mustRead(t, ctx, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = boltstore.Open(dir)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	full.Version = 1
	want := store.State{Version: 3, Pools: []poolspec.Pool{pool("other", 2, "host.example.com:443"), full}}
	assertState(t, before, want)
	assertState(t, mustRead(t, ctx, s), want)

	// The version goes on from where it was, never back.
	if v := mustUpdate(t, ctx, s, func(tx store.Tx) error { tx.Delete("other"); tx.Delete("web"); return nil }); v != 4 {
		t.Fatalf("first update after reopen returned version %d, want 4", v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = boltstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	assertState(t, mustRead(t, ctx, s), store.State{Version: 4})
}

func TestConcurrentUpdates(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	const writers, each = 8, 10

	versions := make(map[string]uint64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("p-%d-%d", w, i)
				v, err := s.Update(ctx, put(pool(name, 0)))
				if err != nil {
					t.Errorf("Update %s: %v", name, err)
					return
				}
				mu.Lock()
				versions[name] = v
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	seen := make(map[uint64]bool)
	for name, v := range versions {
		if v < 1 || v > writers*each || seen[v] {
			t.Errorf("pool %s committed as version %d: out of 1..%d or given twice", name, v, writers*each)
		}
		seen[v] = true
	}
	st := mustRead(t, ctx, s)
	if st.Version != writers*each || len(st.Pools) != writers*each {
		t.Fatalf("state has version %d and %d pools, want %d and %d", st.Version, len(st.Pools), writers*each, writers*each)
	}
	for _, p := range st.Pools {
		if p.Version != versions[p.Name] {
			t.Errorf("pool %s stored with version %d, Update returned %d", p.Name, p.Version, versions[p.Name])
		}
	}
}

// waitClosed drains ch until it is closed, failing if that takes over 5s.
func waitClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout.C:
			t.Fatal("watch channel not closed within 5s")
		}
	}
}

// receive waits for a signal on ch, failing if none comes within 5s or ch is closed.
func receive(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want a signal")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no watch signal within 5s")
	}
}

func TestWatchSignalsCommits(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	a, b := s.Watch(ctx), s.Watch(ctx)
	if cap(a) != 1 {
		t.Errorf("watch channel capacity = %d, want 1", cap(a))
	}
	if len(a) != 0 || len(b) != 0 {
		t.Fatal("a new watch already holds a signal")
	}

	mustUpdate(t, ctx, s, put(pool("a", 0)))
	receive(t, a)
	receive(t, b)

	// A burst of commits leaves exactly one pending signal per watcher:
	// Update signals before it returns, and the channel holds one.
	for i := range 5 {
		mustUpdate(t, ctx, s, put(pool(fmt.Sprintf("p%d", i), 0)))
	}
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("after a burst of 5 commits, watchers hold %d and %d signals, want 1 each", len(a), len(b))
	}
	receive(t, a)
	select {
	case <-a:
		t.Fatal("a burst of commits delivered more than one signal")
	default:
	}
	// The reader then sees the newest state.
	if v := mustRead(t, ctx, s).Version; v != 6 {
		t.Errorf("version after the burst = %d, want 6", v)
	}
}

func TestWatchClosesWhenContextEnds(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	wctx, cancel := context.WithCancel(ctx)
	ch := s.Watch(wctx)
	other := s.Watch(ctx)

	mustUpdate(t, ctx, s, put(pool("a", 0))) // leaves a pending signal
	cancel()
	waitClosed(t, ch)

	// Commits after that neither panic nor reach the cancelled watcher, and
	// the other watcher still works.
	receive(t, other)
	mustUpdate(t, ctx, s, put(pool("b", 0)))
	receive(t, other)
}

func TestWatchClosesOnClose(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	ch := s.Watch(wctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close closes watchers before it returns.
	if _, ok := <-ch; ok {
		t.Fatal("watch channel got a signal, want it closed by Close")
	}
	// Cancelling the watch's context afterwards must not close it again.
	cancel()

	// Watching a closed store gives a closed channel.
	if _, ok := <-s.Watch(ctx); ok {
		t.Fatal("Watch after Close gave an open channel")
	}
}

func TestClosedStore(t *testing.T) {
	ctx := testCtx(t)
	s, err := boltstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, ctx, s, put(pool("a", 0)))
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v, want nil (Close is idempotent)", err)
	}

	if _, err := s.Read(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Read after Close: error %v, want one wrapping store.ErrClosed", err)
	}
	called := false
	if _, err := s.Update(ctx, func(tx store.Tx) error { called = true; tx.Put(pool("b", 0)); return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after Close: error %v, want one wrapping store.ErrClosed", err)
	}
	if called {
		t.Errorf("Update after Close ran fn")
	}
}

func TestCorruptPoolIsReported(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, ctx, s, put(pool("good", 0)))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Damage one record behind the store's back.
	db, err := bolt.Open(filepath.Join(dir, boltstore.FileName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("pools")).Put([]byte("bad"), []byte("{not json")) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	s, err = boltstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Read(ctx); err == nil || !strings.HasPrefix(err.Error(), `boltstore read: decode pool "bad": `) {
		t.Errorf("Read of a corrupt record: error %v, want boltstore read: decode pool \"bad\": ...", err)
	}
	// A transaction that meets the damaged record commits nothing.
	_, err = s.Update(ctx, func(tx store.Tx) error {
		_ = tx.Pools()
		tx.Put(pool("new", 0))
		return nil
	})
	if err == nil || !strings.HasPrefix(err.Error(), `boltstore commit: decode pool "bad": `) {
		t.Errorf("Update that read a corrupt record: error %v, want boltstore commit: decode pool \"bad\": ...", err)
	}
	v, err := s.Update(ctx, func(tx store.Tx) error { tx.Delete("bad"); return nil })
	if err != nil || v != 2 {
		t.Fatalf("deleting the corrupt record: version %d, error %v; want version 2", v, err)
	}
	assertState(t, mustRead(t, ctx, s), store.State{Version: 2, Pools: []poolspec.Pool{pool("good", 1)}})
}
