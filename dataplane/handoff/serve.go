package handoff

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Default timeouts of a Config.
const (
	// DefaultReadyTimeout is how long the old process waits, after sending
	// the listeners, for the successor to say it has taken over.
	DefaultReadyTimeout = 30 * time.Second
	// DefaultStepTimeout bounds every other step: the successor's hello,
	// each write, and (on the Take side, when the context has no earlier
	// deadline) each exchange.
	DefaultStepTimeout = 5 * time.Second
)

// ErrInUse is returned (wrapped) by Listen and Serve when a live process
// already answers on the socket path.
var ErrInUse = errors.New("another live process already serves this handoff socket")

// ErrClosed is returned by (*Server).Serve after Close.
var ErrClosed = errors.New("handoff: server closed")

// Listeners maps a listener's name ("proxy", "tls", "admin") to the listener.
// Names are 1 to 64 bytes of letters, digits, '.', '_' and '-'; a handoff
// carries at most MaxListeners of them.
type Listeners map[string]*net.TCPListener

// names returns the sorted names of ls.
func (ls Listeners) names() []string {
	names := make([]string, 0, len(ls))
	for n := range ls {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// validate checks the names and that no listener is nil.
func (ls Listeners) validate() error {
	if len(ls) == 0 || len(ls) > MaxListeners {
		return fmt.Errorf("%d listeners (want 1 to %d)", len(ls), MaxListeners)
	}
	for name, l := range ls {
		if err := validName(name); err != nil {
			return err
		}
		if l == nil {
			return fmt.Errorf("listener %q is nil", name)
		}
	}
	return nil
}

// Config configures a Server. It is not modified after Listen.
type Config struct {
	// Path is the Unix socket path the successor connects to. Required.
	// Put it in a directory only the data plane's user can write to.
	Path string
	// Listeners are offered to every successor. Required. The Server
	// never closes them; the caller keeps serving on them until the
	// handover, and drains and closes them afterwards.
	Listeners Listeners
	// OnHandover is called once, from Serve, after a successor has said
	// ready and the socket path has been freed; Serve returns nil right
	// after it. Typically it starts the graceful drain and exit. Default:
	// nothing.
	OnHandover func()
	// Logger receives the server's log lines. Default: a null logger.
	Logger hclog.Logger
	// ReadyTimeout is how long a successor may take, after receiving the
	// listeners, to say ready; after it the old process drops the
	// successor and keeps serving. Default DefaultReadyTimeout (30s).
	ReadyTimeout time.Duration
	// StepTimeout bounds reading the successor's hello and each write.
	// Default DefaultStepTimeout (5s).
	StepTimeout time.Duration
}

// Server offers the listening sockets of a running process to its successor
// over a Unix socket. Create it with Listen, run Serve once, stop it with
// Close or by cancelling Serve's context.
type Server struct {
	cfg   Config
	log   hclog.Logger
	ln    *net.UnixListener
	bound os.FileInfo // the socket file ln created; only it is ever removed

	// closeOnce closes ln and removes the socket file, once.
	closeOnce sync.Once

	// mu guards cancel and state.
	mu sync.Mutex
	// cancel stops a running Serve; nil before Serve.
	cancel context.CancelFunc
	// state is the lifecycle: stateNew, then stateServing (Serve ran or
	// runs), or stateClosed when Close came first.
	state int
}

// Server lifecycle states.
const (
	stateNew = iota
	stateServing
	stateClosed
)

// Serve is Listen followed by (*Server).Serve with default timeouts: it
// offers ls to successors on the Unix socket at path until one takes over
// (then it calls onHandover and returns nil) or ctx is cancelled (then it
// returns nil). log may be nil; onHandover may be nil.
func Serve(ctx context.Context, path string, ls Listeners, log hclog.Logger, onHandover func()) error {
	s, err := Listen(Config{Path: path, Listeners: ls, Logger: log, OnHandover: onHandover})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Serve(ctx)
}

// Listen validates cfg, fills its defaults and binds the Unix socket at
// cfg.Path (mode 0600). A socket file already at the path is removed only
// when nobody answers on it (a process died without removing it); when a
// live process answers, Listen returns an error wrapping ErrInUse, and it
// never removes a file that is not a socket.
func Listen(cfg Config) (*Server, error) {
	if cfg.Path == "" {
		return nil, errors.New("handoff: Config.Path is required")
	}
	if err := cfg.Listeners.validate(); err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", cfg.Path, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	log := cfg.Logger.Named("handoff").With("path", cfg.Path)
	if err := removeStale(cfg.Path, cfg.StepTimeout, log); err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", cfg.Path, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.Path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", cfg.Path, err)
	}
	// Remove the file ourselves, and only if it is still ours: see
	// closeListener.
	ln.SetUnlinkOnClose(false)
	s := &Server{cfg: cfg, log: log, ln: ln}
	if s.bound, err = os.Lstat(cfg.Path); err == nil {
		err = os.Chmod(cfg.Path, 0o600)
	}
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("handoff: listen %s: %w", cfg.Path, err)
	}
	return s, nil
}

// removeStale removes the socket file at path if nobody answers on it.
func removeStale(path string, timeout time.Duration, log hclog.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking for a stale socket: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket (mode %v); not removing it", path, fi.Mode())
	}
	c, err := net.DialTimeout("unixpacket", path, timeout)
	switch {
	case err == nil:
		_ = c.Close()
		return ErrInUse
	case errors.Is(err, syscall.EPROTOTYPE):
		return fmt.Errorf("%w (a socket of another type answers there)", ErrInUse)
	case errors.Is(err, syscall.ECONNREFUSED):
		log.Info("removing stale handoff socket")
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing stale socket: %w", err)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return nil // removed meanwhile
	default:
		return fmt.Errorf("probing existing socket: %w", err)
	}
}

// Close stops Serve (which returns shortly after, dropping any successor in
// the middle of an exchange), closes the Unix listener and removes the
// socket file, unless another process has replaced it. It does not touch
// the offered listeners. It is idempotent and may be called before, during
// or after Serve, also from OnHandover.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.state == stateNew {
		s.state = stateClosed
	}
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return s.closeListener()
}

// closeListener closes the Unix listener and removes the socket file if it
// is still the one this server bound: a successor may already have bound a
// new one at the same path.
func (s *Server) closeListener() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.ln.Close()
		if fi, serr := os.Lstat(s.cfg.Path); serr == nil && os.SameFile(fi, s.bound) {
			if rerr := os.Remove(s.cfg.Path); rerr != nil && err == nil {
				err = rerr
			}
		}
		if err != nil {
			err = fmt.Errorf("handoff: closing %s: %w", s.cfg.Path, err)
		}
	})
	return err
}

// Serve offers the listeners to one successor at a time until one takes
// over or ctx is cancelled (or Close is called); further successors wait in
// the socket's backlog meanwhile. A successor that fails, disconnects or
// does not say ready within ReadyTimeout is dropped, and the next one is
// offered the same listeners; the listeners are never affected.
//
// When a successor says ready, Serve closes the Unix listener and removes
// the socket file, answers "released", calls OnHandover and returns nil. It
// also returns nil when ctx is cancelled or Close is called, and ErrClosed
// if Close came before Serve. It may be called once.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case stateClosed:
		s.mu.Unlock()
		return ErrClosed
	case stateServing:
		s.mu.Unlock()
		return errors.New("handoff: Serve called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	s.cancel, s.state = cancel, stateServing
	s.mu.Unlock()
	defer cancel()
	defer s.closeListener()
	stop := context.AfterFunc(ctx, func() { _ = s.closeListener() })
	defer stop()

	s.log.Info("offering listeners to a successor", "listeners", s.cfg.Listeners.names())
	var backoff time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Running out of descriptors or memory: wait and retry,
			// like net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "error", err, "delay", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		if s.session(ctx, c) {
			if s.cfg.OnHandover != nil {
				s.cfg.OnHandover()
			}
			return nil
		}
	}
}

// session runs the exchange with one successor and reports whether it took
// over. It closes c.
func (s *Server) session(ctx context.Context, c *net.UnixConn) bool {
	defer c.Close()
	cc := watch(ctx, c)
	defer cc.stop()

	p, err := checkPeer(c)
	log := s.log.With("successor_pid", p.pid)
	if err != nil {
		log.Warn("refusing successor", "error", err)
		s.sendError(cc, err)
		return false
	}

	cc.timeout(s.cfg.StepTimeout)
	m, _, err := receive(c, 0)
	if err != nil && !errors.Is(err, errNotProtocol) {
		// Listen's probe for a live instance connects and closes.
		log.Debug("connection closed before hello", "error", err)
		return false
	}
	if err == nil {
		err = checkMessage(m, msgHello, roleSuccessor)
	}
	if err != nil {
		log.Warn("refusing successor", "error", err)
		s.sendError(cc, err)
		return false
	}

	names := s.cfg.Listeners.names()
	if err := s.offer(cc, names); err != nil {
		log.Warn("offering listeners failed; still serving", "error", err)
		s.sendError(cc, err)
		return false
	}
	log.Info("offered listeners; waiting for the successor to take over",
		"listeners", names, "timeout", s.cfg.ReadyTimeout)

	cc.timeout(s.cfg.ReadyTimeout)
	m, _, err = receive(c, 0)
	if err == nil {
		err = checkMessage(m, msgReady, roleSuccessor)
	}
	if err != nil {
		log.Warn("successor did not take over; still serving and offering", "error", err)
		s.sendError(cc, err)
		return false
	}

	// Commit: "ready" is the point of no return. Free the path before
	// answering, so the successor can bind it as soon as it reads
	// "released".
	if err := s.closeListener(); err != nil {
		log.Warn("closing handoff socket", "error", err)
	}
	cc.timeout(s.cfg.StepTimeout)
	if err := send(c, msgReleased, nil); err != nil {
		log.Warn("successor took over but did not get our release", "error", err)
	}
	log.Info("successor took over; handing over")
	return true
}

// offer sends the listener names with duplicates of their descriptors.
func (s *Server) offer(cc *watchedConn, names []string) error {
	files := make([]*os.File, 0, len(names))
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	for _, n := range names {
		f, err := s.cfg.Listeners[n].File()
		if err != nil {
			return fmt.Errorf("duplicating listener %q: %w", n, err)
		}
		files = append(files, f)
	}
	cc.timeout(s.cfg.StepTimeout)
	return sendFiles(cc.c, msgOffer, encodeNames(names), files)
}

// sendError tells the peer why the exchange ends; it is best effort.
func (s *Server) sendError(cc *watchedConn, err error) {
	cc.timeout(s.cfg.StepTimeout)
	_ = send(cc.c, msgError, errorPayload(err))
}

// watchedConn sets deadlines on a connection that a cancelled context
// overrides: a deadline set after the cancellation must not revive it.
type watchedConn struct {
	c *net.UnixConn
	// stop ends the watch of the context.
	stop func() bool
	// mu guards cancelled and orders the SetDeadline calls.
	mu        sync.Mutex
	cancelled bool
}

// watch makes cancelling ctx interrupt any read or write on c until stop.
func watch(ctx context.Context, c *net.UnixConn) *watchedConn {
	w := &watchedConn{c: c}
	w.stop = context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.cancelled = true
		_ = c.SetDeadline(time.Unix(1, 0))
	})
	return w
}

// timeout sets the deadline of the next reads and writes to d from now,
// unless the context was cancelled.
func (w *watchedConn) timeout(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.cancelled {
		_ = w.c.SetDeadline(time.Now().Add(d))
	}
}

// Roles, as named in protocol errors: "this process" would be ambiguous in
// a message read by the other side.
const (
	roleOld       = "the old process"
	roleSuccessor = "the successor"
)

// checkMessage checks that m, received from the peer in role from (roleOld
// or roleSuccessor), has this package's Version and type want, and turns a
// msgError into an error carrying the peer's reason.
func checkMessage(m message, want msgType, from string) error {
	if m.typ == msgError {
		return fmt.Errorf("%s refused: %s", from, m.payload)
	}
	if m.version != Version {
		me := roleOld
		if from == roleOld {
			me = roleSuccessor
		}
		return fmt.Errorf("protocol version mismatch: %s speaks handoff protocol version %d, %s speaks version %d",
			from, m.version, me, Version)
	}
	if m.typ != want {
		return fmt.Errorf("%s sent a %s message, want %s", from, m.typ, want)
	}
	return nil
}
