package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// ErrUnconfirmed is returned (wrapped) by Ready when "ready" was sent but
// the old process's "released" did not arrive. The old process may or may
// not have begun its handover; both processes serving the same sockets is
// harmless, so the caller should usually keep serving. A later Serve on the
// same path tells which it was: it fails with ErrInUse while the old
// process still offers.
var ErrUnconfirmed = errors.New("old process did not confirm the release")

// Takeover is the successor's side of one handoff, from Take until Ready or
// Abort. Its methods are safe for concurrent use.
type Takeover struct {
	path string
	ls   Listeners

	// mu guards conn and state.
	mu sync.Mutex
	// conn is the connection to the old process; nil once Ready or Abort
	// has closed it.
	conn *net.UnixConn
	// state: takeOpen, then takeReleased (Ready succeeded: the listeners
	// are the caller's) or takeEnded (Ready failed) or takeAborted.
	state int
}

// Takeover states.
const (
	takeOpen = iota
	takeReleased
	takeEnded
	takeAborted
)

// Take connects to the old process's handoff socket at path and receives
// its listeners: exactly the names the old process serves, each rebuilt as
// a *net.TCPListener on the same listening socket. From then on both
// processes accept on those sockets; the caller starts serving on them,
// checks that the names and addresses are the ones it needs, and then calls
// Ready (or Abort).
//
// Every step is bounded by ctx and, when ctx has no earlier deadline, by
// DefaultStepTimeout. On error nothing is left open. Errors name the path
// and the step; an old process that speaks another protocol version is
// reported as such.
func Take(ctx context.Context, path string) (*Takeover, error) {
	fail := func(step string, err error) (*Takeover, error) {
		return nil, fmt.Errorf("handoff: take %s: %s: %w", path, step, err)
	}
	d := net.Dialer{Timeout: DefaultStepTimeout}
	nc, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return fail("connecting", err)
	}
	c := nc.(*net.UnixConn)
	ok := false
	defer func() {
		if !ok {
			_ = c.Close()
		}
	}()
	stop := bound(ctx, c)
	defer stop()

	if _, err := checkPeer(c); err != nil {
		return fail("checking the old process", err)
	}
	if err := send(c, msgHello, nil); err != nil {
		return fail("hello", err)
	}
	m, fds, err := receive(c, MaxListeners)
	if err != nil {
		return fail("receiving listeners", closedHint(err))
	}
	ls, err := rebuild(m, fds)
	if err != nil {
		return fail("receiving listeners", err)
	}
	ok = true
	return &Takeover{path: path, ls: ls, conn: c}, nil
}

// rebuild turns an offer and its descriptors into listeners. It closes every
// descriptor, and on error every listener it built.
func rebuild(m message, fds []int) (ls Listeners, err error) {
	defer closeFDs(fds) // what fileListener did not consume
	if err := checkMessage(m, msgOffer, roleOld); err != nil {
		return nil, err
	}
	names, err := decodeNames(m.payload)
	if err != nil {
		return nil, err
	}
	if len(names) != len(fds) {
		return nil, fmt.Errorf("offer names %d listeners but carries %d descriptors", len(names), len(fds))
	}
	ls = make(Listeners, len(names))
	defer func() {
		if err != nil {
			for _, l := range ls {
				_ = l.Close()
			}
		}
	}()
	for i, name := range names {
		if err := checkListening(fds[i]); err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		l, err := fileListener(fds[i], name)
		fds[i] = -1
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		ls[name] = l
	}
	return ls, nil
}

// fileListener returns a *net.TCPListener on the listening socket fd. It
// takes ownership of fd: net.FileListener works on a duplicate, and fd is
// closed before fileListener returns.
func fileListener(fd int, name string) (*net.TCPListener, error) {
	f := os.NewFile(uintptr(fd), "handoff-"+name)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	tl, ok := l.(*net.TCPListener)
	if !ok {
		_ = l.Close()
		return nil, fmt.Errorf("not a TCP listener (%s)", l.Addr().Network())
	}
	return tl, nil
}

// Listeners returns the received listeners by name. The map is a copy; the
// listeners are shared with the Takeover until Ready succeeds (Abort closes
// them) and belong to the caller after.
func (t *Takeover) Listeners() Listeners {
	ls := make(Listeners, len(t.ls))
	for n, l := range t.ls {
		ls[n] = l
	}
	return ls
}

// Ready tells the old process that this process has taken over and serves,
// waits for its "released" (by then the old process has stopped offering and
// freed the socket path, so the caller may Serve on the same path for the
// next upgrade), and closes the connection. The old process then drains and
// exits. The listeners belong to the caller from now on; Abort no longer
// closes them.
//
// If sending "ready" fails, the old process did not take note and keeps
// serving; the caller should Abort. If "ready" was sent but no "released"
// came back, the error wraps ErrUnconfirmed; the listeners stay open until
// the caller closes them or calls Abort. The wait is bounded by ctx and,
// when ctx has no earlier deadline, by DefaultStepTimeout. Ready may be
// called once.
func (t *Takeover) Ready(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != takeOpen {
		return fmt.Errorf("handoff: ready %s: takeover already ended", t.path)
	}
	c := t.conn
	t.conn = nil
	defer c.Close()
	stop := bound(ctx, c)
	defer stop()

	t.state = takeEnded
	if err := send(c, msgReady, nil); err != nil {
		return fmt.Errorf("handoff: ready %s: %w", t.path, err)
	}
	m, _, err := receive(c, 0)
	if err == nil {
		err = checkMessage(m, msgReleased, roleOld)
	}
	if err != nil {
		return fmt.Errorf("handoff: ready %s: waiting for release: %w: %w", t.path, ErrUnconfirmed, closedHint(err))
	}
	t.state = takeReleased
	return nil
}

// Abort ends the takeover without taking over: it closes the connection,
// so the old process keeps serving and offering, and closes every received
// listener (the caller must stop serving on them; the old process's own
// listeners are not affected). After a successful Ready it does nothing.
// It is idempotent.
func (t *Takeover) Abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == takeReleased || t.state == takeAborted {
		return
	}
	t.state = takeAborted
	if t.conn != nil {
		_ = t.conn.Close()
		t.conn = nil
	}
	for _, l := range t.ls {
		_ = l.Close()
	}
}

// bound applies ctx (and DefaultStepTimeout when ctx has no earlier
// deadline) to the I/O on c until the returned stop is called.
func bound(ctx context.Context, c *net.UnixConn) (stop func()) {
	deadline := time.Now().Add(DefaultStepTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	stopAfter := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stopAfter()
		_ = c.SetDeadline(time.Time{})
	}
}

// closedHint explains an exchange cut short by the old process.
func closedHint(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (the old process did not answer in time; is it busy with another successor?)", err)
	}
	return err
}
