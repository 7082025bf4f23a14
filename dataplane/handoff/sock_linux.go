//go:build linux

package handoff

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// peer identifies the process at the other end of a handoff connection.
type peer struct {
	pid int
	uid int
}

// checkPeer returns the credentials of c's peer (SO_PEERCRED) and refuses a
// peer that runs as neither this process's effective user nor root: whoever
// passes the check receives, or hands us, the listening sockets.
func checkPeer(c *net.UnixConn) (peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peer{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return peer{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	if cerr != nil {
		return peer{}, fmt.Errorf("reading peer credentials: %w", cerr)
	}
	p := peer{pid: int(cred.Pid), uid: int(cred.Uid)}
	if me := os.Geteuid(); p.uid != me && p.uid != 0 {
		return p, fmt.Errorf("peer process %d runs as uid %d, not %d or root", p.pid, p.uid, me)
	}
	return p, nil
}

// checkListening reports an error unless fd is a socket in the listening
// state (SO_ACCEPTCONN): net.FileListener alone would also accept a
// connected TCP socket.
func checkListening(fd int) error {
	v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("SO_ACCEPTCONN: %w", err)
	}
	if v != 1 {
		return fmt.Errorf("socket is not listening")
	}
	return nil
}
