package discovery_test

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lb-project/lb/controlplane/store"
)

// A client that half-closes its stream before any message has not sent a
// hello: that is the protocol error StreamConfig reports for a missing hello,
// not an unknown failure.
//
// Regression test: StreamConfig once returned the first Recv's io.EOF as the
// handler's error, which gRPC turns into codes.Unknown "EOF".
func TestStreamClosedBeforeHello(t *testing.T) {
	e := newEnv(t, nil)
	s := e.open(t, nil)
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	checkStatus(t, s.recvErr(t), codes.InvalidArgument, "first message on a StreamConfig stream must be a hello")
}

// Publish promises that a state not newer than the published one is ignored,
// so the newest of several states published at once must win.
//
// Regression test: Publish once checked (latest.Load, compare) and stored
// non-atomically, so two concurrent calls could both pass the check and the
// older state be stored last. Streams then sat on the older version, since
// they never send a version below the one they sent. publishMu now
// serialises Publish.
//
// The race is rare per attempt, so this runs rounds for up to 3s (thousands
// of rounds) and stops at the first lost state.
func TestConcurrentPublishKeepsNewest(t *testing.T) {
	e := newServer(t)
	const publishers = 4
	deadline := time.Now().Add(3 * time.Second)
	var newest uint64
	for round := 0; time.Now().Before(deadline); round++ {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for k := range publishers {
			v := newest + uint64(k) + 1
			wg.Go(func() {
				<-start
				e.disc.Publish(store.State{Version: v})
			})
		}
		close(start)
		wg.Wait()
		newest += publishers

		s := e.connect(t, "probe")
		got := s.recv(t).GetVersion()
		s.cancel()
		if err := s.recvErr(t); status.Code(err) != codes.Canceled {
			t.Fatalf("probe stream ended with %v, want Canceled", err)
		}
		if got != newest {
			t.Fatalf("round %d: after concurrent Publish of versions %d..%d, the published version is %d",
				round, newest-publishers+1, newest, got)
		}
	}
}
