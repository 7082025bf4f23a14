package etcdstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lb-project/lb/internal/etcdtest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lb-project/lb/controlplane/store"
	"github.com/lb-project/lb/controlplane/store/etcdstore"
	"github.com/lb-project/lb/internal/poolspec"
)

// These tests mirror boltstore's, against a real etcd started per test.
// Versions are etcd revisions: a fresh etcd is at revision 1, and every
// committed Update is one transaction, so one revision.

// testCtx returns a context that ends with the test or after 20s.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open opens a store on srv under prefix ("" for the default) and closes it
// after the test.
func open(t *testing.T, srv *etcdServer, prefix string) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: []string{srv.Endpoint}, Prefix: prefix})
	if err != nil {
		t.Fatalf("Open(%s): %v", srv.Endpoint, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// openStore starts an etcd and opens a store on it with the default prefix.
func openStore(t *testing.T) (*etcdstore.Store, *etcdServer) {
	t.Helper()
	srv := startEtcd(t)
	return open(t, srv, ""), srv
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

// revision is etcd's current revision, read behind the store's back.
func revision(t *testing.T, ctx context.Context, cli *clientv3.Client) uint64 {
	t.Helper()
	resp, err := cli.Get(ctx, "any-key")
	if err != nil {
		t.Fatalf("etcd Get: %v", err)
	}
	return uint64(resp.Header.Revision)
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

// quiet is how long a watcher is observed to show that no signal comes:
// etcd delivers watch events asynchronously, in well under this on loopback.
const quiet = 500 * time.Millisecond

// noSignal fails if ch delivers a signal (or closes) within quiet.
func noSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatalf("%s: unexpected watch signal", what)
		}
		t.Fatalf("%s: watch channel closed", what)
	case <-time.After(quiet):
	}
}

func TestOpenEmpty(t *testing.T) {
	ctx := testCtx(t)
	s, srv := openStore(t)
	cli := rawClientOf(srv, t)
	// Before the first change there are no pools; the version is the
	// revision the state was read at (etcd starts at 1).
	assertState(t, mustRead(t, ctx, s), store.State{Version: revision(t, ctx, cli)})
	// Opening writes nothing.
	if rev := revision(t, ctx, cli); rev != 1 {
		t.Errorf("etcd revision after Open = %d, want 1 (Open must not write)", rev)
	}
}

func TestOpenNeedsEndpoints(t *testing.T) {
	s, err := etcdstore.Open(testCtx(t), etcdstore.Config{})
	if err == nil {
		s.Close()
		t.Fatal("Open without endpoints succeeded")
	}
	if s != nil {
		t.Errorf("Open returned a non-nil store with its error")
	}
	if want := "etcdstore: no endpoints"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestOpenUnreachableFailsInBoundedTime(t *testing.T) {
	// Loopback ports nobody listens on: connections are refused at once, and
	// the client keeps retrying until the dial timeout or the context ends.
	ports := etcdtest.FreePorts(t, 2)
	one := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	two := fmt.Sprintf("http://127.0.0.1:%d", ports[1])

	tests := []struct {
		name      string
		endpoints []string
		dial      time.Duration
		ctxLimit  time.Duration // 0: no deadline on the context
		within    time.Duration
	}{
		{name: "dial timeout bounds it", endpoints: []string{one}, dial: time.Second, within: 4 * time.Second},
		{name: "context deadline bounds it", endpoints: []string{one}, ctxLimit: time.Second, within: 4 * time.Second},
		{name: "default dial timeout of 5s", endpoints: []string{one}, within: 9 * time.Second},
		{name: "every endpoint named", endpoints: []string{one, two}, dial: time.Second, within: 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.ctxLimit > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxLimit)
				defer cancel()
			}
			start := time.Now()
			s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: tt.endpoints, DialTimeout: tt.dial})
			elapsed := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%v) succeeded with nothing listening", tt.endpoints)
			}
			if s != nil {
				t.Errorf("Open returned a non-nil store with its error")
			}
			for _, e := range tt.endpoints {
				if !strings.Contains(err.Error(), e) {
					t.Errorf("error %q does not name the endpoint %s", err, e)
				}
			}
			if !strings.HasPrefix(err.Error(), "etcdstore: ") {
				t.Errorf("error %q does not start with etcdstore: ", err)
			}
			if elapsed > tt.within {
				t.Errorf("Open took %v to fail, want under %v", elapsed, tt.within)
			}
		})
	}
}

func TestUpdateVersions(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	b := mustRead(t, ctx, s).Version // the revision before the first change

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
			wantVersion: b + 1,
			wantPools:   []poolspec.Pool{pool("a", b+1, "10.0.0.1:80")},
		},
		{
			name:        "put two pools in one transaction",
			fn:          put(pool("c", 0), pool("b", 0)),
			wantVersion: b + 2,
			wantPools:   []poolspec.Pool{pool("a", b+1, "10.0.0.1:80"), pool("b", b+2), pool("c", b+2)},
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
			wantVersion: b + 2,
			wantPools:   []poolspec.Pool{pool("a", b+1, "10.0.0.1:80"), pool("b", b+2), pool("c", b+2)},
		},
		{
			name:        "delete a missing pool",
			fn:          func(tx store.Tx) error { tx.Delete("nope"); return nil },
			wantVersion: b + 2,
			wantPools:   []poolspec.Pool{pool("a", b+1, "10.0.0.1:80"), pool("b", b+2), pool("c", b+2)},
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
			wantVersion: b + 2,
			wantPools:   []poolspec.Pool{pool("a", b+1, "10.0.0.1:80"), pool("b", b+2), pool("c", b+2)},
		},
		{
			name:        "replace a pool",
			fn:          put(pool("a", 0, "10.0.0.1:80", "10.0.0.2:80")),
			wantVersion: b + 3,
			wantPools:   []poolspec.Pool{pool("a", b+3, "10.0.0.1:80", "10.0.0.2:80"), pool("b", b+2), pool("c", b+2)},
		},
		{
			name:        "delete a pool",
			fn:          func(tx store.Tx) error { tx.Delete("b"); return nil },
			wantVersion: b + 4,
			wantPools:   []poolspec.Pool{pool("a", b+3, "10.0.0.1:80", "10.0.0.2:80"), pool("c", b+2)},
		},
		{
			name: "put and delete in one transaction",
			fn: func(tx store.Tx) error {
				tx.Put(pool("d", 0))
				tx.Delete("c")
				return nil
			},
			wantVersion: b + 5,
			wantPools:   []poolspec.Pool{pool("a", b+3, "10.0.0.1:80", "10.0.0.2:80"), pool("d", b+5)},
		},
		{
			name: "delete every pool",
			fn: func(tx store.Tx) error {
				for _, p := range tx.Pools() {
					tx.Delete(p.Name)
				}
				return nil
			},
			wantVersion: b + 6,
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
	first := mustUpdate(t, ctx, s, put(pool("first", 0)))

	// A caller-supplied version is not stored: the committing revision is
	// the pool's version.
	v := mustUpdate(t, ctx, s, put(pool("a", 999, "10.0.0.1:80")))
	if v != first+1 {
		t.Fatalf("Update returned version %d, want %d", v, first+1)
	}
	got, ok := mustRead(t, ctx, s).Pool("a")
	if !ok || got.Version != v {
		t.Errorf("stored pool a = %+v (found %v), want version %d", got, ok, v)
	}
	if p, _ := mustRead(t, ctx, s).Pool("first"); p.Version != first {
		t.Errorf("untouched pool kept version %d, want %d", p.Version, first)
	}
	// Inside a later transaction the pool carries the revision that wrote it.
	mustUpdate(t, ctx, s, func(tx store.Tx) error {
		if p, _ := tx.Pool("a"); p.Version != v {
			t.Errorf("in a transaction, Pool(a).Version = %d, want %d", p.Version, v)
		}
		return nil
	})
}

func TestStoredLayout(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	s := open(t, srv, "/custom") // normalised to "/custom/"
	cli := rawClientOf(srv, t)
	full := poolspec.Pool{
		Name:       "web",
		Hosts:      []string{"a.example.com", "b.example.com"},
		PathPrefix: "/api/",
		Backends:   []poolspec.Backend{{Address: "10.0.0.1:80", Weight: 3}, {Address: "[2001:db8::1]:8080", Weight: 10000}},
	}
	v := mustUpdate(t, ctx, s, put(full))

	resp, err := cli.Get(ctx, "/custom/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int64{}
	for _, kv := range resp.Kvs {
		keys[string(kv.Key)] = kv.ModRevision
	}
	want := map[string]int64{"/custom/pools/web": int64(v), "/custom/seq": int64(v)}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys (with their mod revisions) = %v, want %v", keys, want)
	}
	var stored poolspec.Pool
	for _, kv := range resp.Kvs {
		if string(kv.Key) == "/custom/pools/web" {
			if err := json.Unmarshal(kv.Value, &stored); err != nil {
				t.Fatalf("pool value %q is not JSON: %v", kv.Value, err)
			}
		}
	}
	if !reflect.DeepEqual(stored, full) {
		t.Errorf("stored JSON decodes to %+v, want %+v", stored, full)
	}
	// Round trip through the store, every field kept.
	full.Version = v
	assertState(t, mustRead(t, ctx, s), store.State{Version: v, Pools: []poolspec.Pool{full}})
}

// errFn is an error type of its own, to check errors.As on Update's result.
type errFn struct{ msg string }

func (e *errFn) Error() string { return e.msg }

func TestUpdateErrorWritesNothing(t *testing.T) {
	sentinel := errors.New("refused")
	typed := &errFn{msg: "typed refusal"}
	wrapped := fmt.Errorf("checking pool: %w", sentinel)

	srv := startEtcd(t)
	cli := rawClientOf(srv, t)
	tests := []struct {
		name string
		err  error // what fn returns after writing
	}{
		{name: "sentinel after a put", err: sentinel},
		{name: "typed error after a put and a delete", err: typed},
		{name: "wrapped error after a replace", err: wrapped},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := open(t, srv, fmt.Sprintf("/t%d/", i))
			mustUpdate(t, ctx, s, put(pool("a", 0, "10.0.0.1:80"), pool("b", 0)))
			before := mustRead(t, ctx, s)
			watch := s.Watch(ctx)

			calls := 0
			_, err := s.Update(ctx, func(tx store.Tx) error {
				calls++
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
			if calls != 1 {
				t.Errorf("fn ran %d times, want once", calls)
			}
			assertState(t, mustRead(t, ctx, s), before)
			if rev := revision(t, ctx, cli); rev != before.Version {
				t.Errorf("etcd revision moved from %d to %d: a failed update wrote", before.Version, rev)
			}
			noSignal(t, watch, "after a failed update")
			// The failed transaction consumed no version.
			if v := mustUpdate(t, ctx, s, put(pool("c", 0))); v != before.Version+1 {
				t.Errorf("next Update returned version %d, want %d", v, before.Version+1)
			}
		})
	}
}

func TestNoOpUpdateReturnsCurrentVersion(t *testing.T) {
	ctx := testCtx(t)
	s, srv := openStore(t)
	cli := rawClientOf(srv, t)
	v := mustUpdate(t, ctx, s, put(pool("a", 0)))
	watch := s.Watch(ctx)

	// Another writer (another replica) moves the revision on; a no-op
	// returns the current version, not the one this store last wrote.
	other := open(t, srv, "")
	v2 := mustUpdate(t, ctx, other, put(pool("b", 0)))
	receive(t, watch)

	for _, fn := range []func(tx store.Tx) error{
		func(store.Tx) error { return nil },
		func(tx store.Tx) error { _ = tx.Pools(); tx.Delete("missing"); return nil },
	} {
		got, err := s.Update(ctx, fn)
		if err != nil {
			t.Fatalf("no-op Update: %v", err)
		}
		if got != v2 || v2 != v+1 {
			t.Errorf("no-op Update returned %d, want the current version %d", got, v2)
		}
	}
	if rev := revision(t, ctx, cli); rev != v2 {
		t.Errorf("etcd revision = %d after no-op updates, want %d (nothing written)", rev, v2)
	}
	noSignal(t, watch, "after no-op updates")
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
	if st := mustRead(t, testCtx(t), s); st.Version != 1 || len(st.Pools) != 0 {
		t.Errorf("state = %+v after a refused update, want version 1 and no pools", st)
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

func TestPrefixesAreSeparate(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	lb := open(t, srv, "")      // "/lb/"
	same := open(t, srv, "/lb") // normalised to "/lb/": the same store
	other := open(t, srv, "/lb2/")
	watch := lb.Watch(ctx)

	v := mustUpdate(t, ctx, other, put(pool("elsewhere", 0)))
	noSignal(t, watch, "a commit under another prefix")
	if st := mustRead(t, ctx, lb); len(st.Pools) != 0 {
		t.Errorf("store /lb/ sees pools of /lb2/: %+v", st.Pools)
	}

	w := mustUpdate(t, ctx, same, put(pool("here", 0)))
	receive(t, watch)
	if w != v+1 {
		t.Errorf("version %d, want %d", w, v+1)
	}
	assertState(t, mustRead(t, ctx, lb), store.State{Version: w, Pools: []poolspec.Pool{pool("here", w)}})
	assertState(t, mustRead(t, ctx, other), store.State{Version: w, Pools: []poolspec.Pool{pool("elsewhere", v)}})
}

func TestStateSurvivesReopen(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: []string{srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	v1 := mustUpdate(t, ctx, s, put(pool("web", 0, "10.0.0.1:80"), pool("gone", 0)))
	v2 := mustUpdate(t, ctx, s, put(pool("other", 0, "host.example.com:443")))
	v3 := mustUpdate(t, ctx, s, func(tx store.Tx) error { tx.Delete("gone"); return nil })
	before := mustRead(t, ctx, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, srv, "")
	want := store.State{Version: v3, Pools: []poolspec.Pool{pool("other", v2, "host.example.com:443"), pool("web", v1, "10.0.0.1:80")}}
	assertState(t, before, want)
	assertState(t, mustRead(t, ctx, s), want)
	// The version goes on from where it was, never back.
	if v := mustUpdate(t, ctx, s, func(tx store.Tx) error { tx.Delete("other"); return nil }); v != v3+1 {
		t.Fatalf("first update after reopen returned version %d, want %d", v, v3+1)
	}
}

func TestVersionsAgreeAcrossStores(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	a, b := open(t, srv, ""), open(t, srv, "")

	va := mustUpdate(t, ctx, a, put(pool("x", 0, "10.0.0.1:80")))
	vb := mustUpdate(t, ctx, b, put(pool("y", 0, "10.0.0.2:80")))
	if vb != va+1 {
		t.Errorf("second replica's commit got version %d, want %d", vb, va+1)
	}
	want := store.State{Version: vb, Pools: []poolspec.Pool{pool("x", va, "10.0.0.1:80"), pool("y", vb, "10.0.0.2:80")}}
	assertState(t, mustRead(t, ctx, a), want)
	assertState(t, mustRead(t, ctx, b), want)
}

func TestUpdateRetriesAfterAnotherReplicaCommits(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	a, b := open(t, srv, ""), open(t, srv, "")
	mustUpdate(t, ctx, a, put(pool("web", 0, "10.0.0.1:80")))

	// a reads web, then b commits a change to web before a commits: a's
	// commit must fail its guard and fn run again on the fresh state.
	var seen [][]string
	var bVersion uint64
	v := mustUpdate(t, ctx, a, func(tx store.Tx) error {
		p, _ := tx.Pool("web")
		var addrs []string
		for _, be := range p.Backends {
			addrs = append(addrs, be.Address)
		}
		seen = append(seen, addrs)
		if len(seen) == 1 {
			bVersion = mustUpdate(t, ctx, b, func(tx store.Tx) error {
				q, _ := tx.Pool("web")
				q.Backends = append(q.Backends, poolspec.Backend{Address: "10.0.0.2:80", Weight: 1})
				tx.Put(q)
				return nil
			})
		}
		p.Backends = append(p.Backends, poolspec.Backend{Address: "10.0.0.3:80", Weight: 1})
		tx.Put(p)
		return nil
	})
	wantSeen := [][]string{{"10.0.0.1:80"}, {"10.0.0.1:80", "10.0.0.2:80"}}
	if !reflect.DeepEqual(seen, wantSeen) {
		t.Errorf("fn saw backends %q, want %q (a second run on the other replica's state)", seen, wantSeen)
	}
	if v != bVersion+1 {
		t.Errorf("retried commit got version %d, want %d", v, bVersion+1)
	}
	assertState(t, mustRead(t, ctx, b), store.State{Version: v, Pools: []poolspec.Pool{pool("web", v, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")}})
}

func TestConcurrentUpdates(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	base := mustRead(t, ctx, s).Version
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
		if v <= base || v > base+writers*each || seen[v] {
			t.Errorf("pool %s committed as version %d: out of %d..%d or given twice", name, v, base+1, base+writers*each)
		}
		seen[v] = true
	}
	st := mustRead(t, ctx, s)
	if st.Version != base+writers*each || len(st.Pools) != writers*each {
		t.Fatalf("state has version %d and %d pools, want %d and %d", st.Version, len(st.Pools), base+writers*each, writers*each)
	}
	for _, p := range st.Pools {
		if p.Version != versions[p.Name] {
			t.Errorf("pool %s stored with version %d, Update returned %d", p.Name, p.Version, versions[p.Name])
		}
	}
}

// TestConcurrentReadModifyWriteAcrossStores is the HA property: two
// replicas (two Stores on one etcd), 20 goroutines each, every one adding
// its own backend to the same pool by reading the pool and writing it back.
// Without the guard, a write based on a stale read would drop another's
// backend; with it, every backend is kept. Every Update must also succeed:
// a conflict is retried, not handed to the caller. The burst is repeated on
// a few pools, as whether an Update loses too many races in a row varies
// from run to run.
func TestConcurrentReadModifyWriteAcrossStores(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	stores := []*etcdstore.Store{open(t, srv, ""), open(t, srv, "")}
	const perStore, rounds = 20, 10

	var failed []string
	for round := range rounds {
		name := fmt.Sprintf("shared-%d", round)
		base := mustUpdate(t, ctx, stores[0], put(pool(name, 0)))
		var mu sync.Mutex
		versions := make(map[uint64]string)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for si, s := range stores {
			for g := range perStore {
				addr := fmt.Sprintf("10.%d.%d.%d:80", round, si, g+1)
				wg.Go(func() {
					<-start
					v, err := s.Update(ctx, func(tx store.Tx) error {
						p, ok := tx.Pool(name)
						if !ok {
							return fmt.Errorf("pool %s missing", name)
						}
						p.Backends = append(p.Backends, poolspec.Backend{Address: addr, Weight: 1})
						tx.Put(p)
						return nil
					})
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failed = append(failed, fmt.Sprintf("%s (store %d, pool %s): %v", addr, si, name, err))
						return
					}
					if other, dup := versions[v]; dup {
						t.Errorf("version %d returned for both %s and %s", v, other, addr)
					}
					versions[v] = addr
				})
			}
		}
		close(start)
		wg.Wait()

		st := mustRead(t, ctx, stores[1])
		p, ok := st.Pool(name)
		if !ok {
			t.Fatalf("pool %s missing", name)
		}
		got := make(map[string]bool)
		for _, b := range p.Backends {
			if got[b.Address] {
				t.Errorf("pool %s: backend %s stored twice", name, b.Address)
			}
			got[b.Address] = true
		}
		// Every update that reported success is in the pool: none was lost.
		for v, addr := range versions {
			if !got[addr] {
				t.Errorf("pool %s: backend %s committed as version %d is missing: a lost update", name, addr, v)
			}
		}
		if len(p.Backends) != len(versions) {
			t.Errorf("pool %s has %d backends, %d updates reported success", name, len(p.Backends), len(versions))
		}
		if want := base + uint64(len(versions)); st.Version != want || p.Version != want {
			t.Errorf("pool %s: state version %d, pool version %d; want both %d (one revision per successful update)", name, st.Version, p.Version, want)
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		t.Errorf("%d of %d concurrent read-modify-write updates failed instead of being retried until they commit (so those pools lack those backends):\n%s",
			len(failed), rounds*len(stores)*perStore, strings.Join(failed, "\n"))
	}
}

func TestWatchSignalsCommits(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	a, b := s.Watch(ctx), s.Watch(ctx)
	if cap(a) != 1 {
		t.Errorf("watch channel capacity = %d, want 1", cap(a))
	}
	noSignal(t, a, "a new watch")

	mustUpdate(t, ctx, s, put(pool("a", 0)))
	receive(t, a)
	receive(t, b)

	// A burst of commits leaves exactly one pending signal per watcher.
	var last uint64
	for i := range 5 {
		last = mustUpdate(t, ctx, s, put(pool(fmt.Sprintf("p%d", i), 0)))
	}
	time.Sleep(quiet) // let every event of the burst arrive
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("after a burst of 5 commits, watchers hold %d and %d signals, want 1 each", len(a), len(b))
	}
	receive(t, a)
	noSignal(t, a, "after draining the burst's signal")
	// The reader then sees the newest state.
	if v := mustRead(t, ctx, s).Version; v != last {
		t.Errorf("version after the burst = %d, want %d", v, last)
	}
	// A delete is a commit too.
	receive(t, b)
	mustUpdate(t, ctx, s, func(tx store.Tx) error { tx.Delete("p0"); return nil })
	receive(t, b)
}

func TestWatchSeesCommitsOfAnotherStore(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	a, b := open(t, srv, ""), open(t, srv, "")
	watch := a.Watch(ctx)

	v := mustUpdate(t, ctx, b, put(pool("from-b", 0, "10.0.0.1:80")))
	receive(t, watch)
	assertState(t, mustRead(t, ctx, a), store.State{Version: v, Pools: []poolspec.Pool{pool("from-b", v, "10.0.0.1:80")}})

	w := mustUpdate(t, ctx, b, func(tx store.Tx) error { tx.Delete("from-b"); return nil })
	receive(t, watch)
	assertState(t, mustRead(t, ctx, a), store.State{Version: w})
}

func TestWatchClosesWhenContextEnds(t *testing.T) {
	ctx := testCtx(t)
	s, _ := openStore(t)
	wctx, cancel := context.WithCancel(ctx)
	ch := s.Watch(wctx)
	other := s.Watch(ctx)

	mustUpdate(t, ctx, s, put(pool("a", 0)))
	receive(t, other) // the commit reached the watchers
	cancel()
	waitClosed(t, ch)

	// Commits after that neither panic nor reach the cancelled watcher, and
	// the other watcher still works.
	mustUpdate(t, ctx, s, put(pool("b", 0)))
	receive(t, other)
}

func TestWatchClosesOnClose(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: []string{srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch)
	// Cancelling the watch's context afterwards must not close it again.
	cancel()

	// Watching a closed store gives a channel that is closed.
	waitClosed(t, s.Watch(ctx))
}

func TestClosedStore(t *testing.T) {
	ctx := testCtx(t)
	srv := startEtcd(t)
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: []string{srv.Endpoint}})
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
	// Nothing was written.
	other := open(t, srv, "")
	if st := mustRead(t, ctx, other); len(st.Pools) != 1 {
		t.Errorf("pools after Close = %+v, want only a", st.Pools)
	}
}

func TestConcurrentCloseIsSafe(t *testing.T) {
	srv := startEtcd(t)
	s, err := etcdstore.Open(testCtx(t), etcdstore.Config{Endpoints: []string{srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _ = s.Close() })
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Errorf("Close after concurrent Closes: %v", err)
	}
}

func TestCorruptPoolIsReported(t *testing.T) {
	ctx := testCtx(t)
	s, srv := openStore(t)
	cli := rawClientOf(srv, t)
	mustUpdate(t, ctx, s, put(pool("good", 0)))
	// Damage one record behind the store's back.
	if _, err := cli.Put(ctx, "/lb/pools/bad", "{not json"); err != nil {
		t.Fatal(err)
	}
	before := revision(t, ctx, cli)

	if _, err := s.Read(ctx); err == nil || !strings.HasPrefix(err.Error(), "etcdstore: decode /lb/pools/bad: ") {
		t.Errorf("Read of a corrupt record: error %v, want etcdstore: decode /lb/pools/bad: ...", err)
	}
	// A transaction that meets the damaged record commits nothing.
	_, err := s.Update(ctx, func(tx store.Tx) error {
		_ = tx.Pools()
		tx.Put(pool("new", 0))
		return nil
	})
	if err == nil || !strings.HasPrefix(err.Error(), "etcdstore: decode /lb/pools/bad: ") {
		t.Errorf("Update over a corrupt record: error %v, want etcdstore: decode /lb/pools/bad: ...", err)
	}
	if rev := revision(t, ctx, cli); rev != before {
		t.Errorf("etcd revision moved from %d to %d: an update over a corrupt record wrote", before, rev)
	}
}
