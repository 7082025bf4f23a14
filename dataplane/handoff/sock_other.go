//go:build !linux

package handoff

import (
	"errors"
	"fmt"
	"net"
)

// peer identifies the process at the other end of a handoff connection.
type peer struct {
	pid int
	uid int
}

// errUnsupported explains why handoff refuses every peer off Linux.
var errUnsupported = fmt.Errorf("handoff: peer credential checks are only implemented on Linux: %w", errors.ErrUnsupported)

// checkPeer refuses every peer: without SO_PEERCRED this package cannot
// tell who would receive the listening sockets.
func checkPeer(*net.UnixConn) (peer, error) { return peer{}, errUnsupported }

// checkListening is never reached off Linux (checkPeer refuses first).
func checkListening(int) error { return errUnsupported }
