package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Version is the handoff protocol version this package speaks. Both sides
// put it in every message; a process that receives another version refuses
// the exchange with an error naming both versions, so binaries built from
// incompatible releases fail clearly instead of misreading each other.
const Version = 1

// MaxListeners is the largest number of listeners one handoff carries.
const MaxListeners = 32

// maxNameLen is the longest listener name, in bytes.
const maxNameLen = 64

// maxErrorLen is the longest error text carried by a msgError, in bytes.
const maxErrorLen = 1024

// maxMsgLen is the size of the receive buffer; every message fits in it.
const maxMsgLen = 4096

// magic starts every message, so that a socket speaking another protocol is
// recognised as such.
const magic = "LBHO"

// headerLen is the length of the fixed header: magic, version, type.
const headerLen = len(magic) + 2

// msgType is the kind of a protocol message. The header layout and the
// value and payload of msgError never change between versions, so that any
// two versions can tell each other that they disagree.
type msgType byte

const (
	// msgHello (successor → old) opens the exchange; no payload.
	msgHello msgType = 1
	// msgOffer (old → successor) carries the listener names, with their
	// file descriptors attached as SCM_RIGHTS in the same order.
	msgOffer msgType = 2
	// msgReady (successor → old): the successor has taken over and
	// serves; no payload.
	msgReady msgType = 3
	// msgReleased (old → successor): the old process has stopped offering
	// and freed the socket path; no payload.
	msgReleased msgType = 4
	// msgError (either way) carries a human-readable reason; the sender
	// closes the connection after it.
	msgError msgType = 5
)

// String returns the message type's protocol name.
func (t msgType) String() string {
	switch t {
	case msgHello:
		return "hello"
	case msgOffer:
		return "offer"
	case msgReady:
		return "ready"
	case msgReleased:
		return "released"
	case msgError:
		return "error"
	default:
		return fmt.Sprintf("type %d", byte(t))
	}
}

// message is one decoded protocol message.
type message struct {
	version byte
	typ     msgType
	payload []byte
}

// encode returns the wire form of a message of this package's Version.
func encode(t msgType, payload []byte) []byte {
	b := make([]byte, 0, headerLen+len(payload))
	b = append(b, magic...)
	b = append(b, Version, byte(t))
	return append(b, payload...)
}

// errNotProtocol is returned (wrapped) for a message that is not in this
// protocol: the peer is another program.
var errNotProtocol = errors.New("not a handoff protocol message")

// decode parses the header of b. It does not check the version: callers
// report a mismatch themselves, naming both versions.
func decode(b []byte) (message, error) {
	if len(b) < headerLen || string(b[:len(magic)]) != magic {
		return message{}, errNotProtocol
	}
	return message{version: b[len(magic)], typ: msgType(b[len(magic)+1]), payload: b[headerLen:]}, nil
}

// encodeNames returns an offer payload: a count byte, then each name as a
// length byte and its bytes. names must already be valid.
func encodeNames(names []string) []byte {
	b := []byte{byte(len(names))}
	for _, n := range names {
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	return b
}

// decodeNames parses an offer payload and validates every name.
func decodeNames(b []byte) ([]string, error) {
	if len(b) < 1 {
		return nil, errors.New("empty offer")
	}
	count := int(b[0])
	if count == 0 || count > MaxListeners {
		return nil, fmt.Errorf("offer of %d listeners (want 1 to %d)", count, MaxListeners)
	}
	b = b[1:]
	names := make([]string, 0, count)
	seen := make(map[string]bool, count)
	for i := range count {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return nil, fmt.Errorf("offer truncated at name %d", i)
		}
		n := string(b[1 : 1+int(b[0])])
		b = b[1+int(b[0]):]
		if err := validName(n); err != nil {
			return nil, err
		}
		if seen[n] {
			return nil, fmt.Errorf("listener %q offered twice", n)
		}
		seen[n] = true
		names = append(names, n)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes after offer", len(b))
	}
	return names, nil
}

// validName reports whether n can name a listener: 1 to 64 bytes of
// letters, digits, '.', '_' and '-'.
func validName(n string) error {
	if n == "" || len(n) > maxNameLen {
		return fmt.Errorf("listener name %q: want 1 to %d bytes", n, maxNameLen)
	}
	for _, c := range []byte(n) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("listener name %q: only letters, digits, '.', '_' and '-' are allowed", n)
		}
	}
	return nil
}

// errorPayload returns the msgError payload for err, cut to maxErrorLen.
func errorPayload(err error) []byte {
	s := err.Error()
	if len(s) > maxErrorLen {
		s = s[:maxErrorLen]
	}
	return []byte(s)
}

// send writes one message on c.
func send(c *net.UnixConn, t msgType, payload []byte) error {
	if _, err := c.Write(encode(t, payload)); err != nil {
		return fmt.Errorf("sending %s: %w", t, err)
	}
	return nil
}

// sendFiles writes one message on c with the descriptors of files attached
// (SCM_RIGHTS). It reads the descriptors through SyscallConn, which, unlike
// (*os.File).Fd, leaves them in non-blocking mode; the mode is shared with
// the listeners they were duplicated from.
func sendFiles(c *net.UnixConn, t msgType, payload []byte, files []*os.File) error {
	fds := make([]int, 0, len(files))
	for _, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			return fmt.Errorf("sending %s: descriptor of %s: %w", t, f.Name(), err)
		}
		if err := rc.Control(func(fd uintptr) { fds = append(fds, int(fd)) }); err != nil {
			return fmt.Errorf("sending %s: descriptor of %s: %w", t, f.Name(), err)
		}
	}
	msg := encode(t, payload)
	n, _, err := c.WriteMsgUnix(msg, syscall.UnixRights(fds...), nil)
	if err != nil {
		return fmt.Errorf("sending %s: %w", t, err)
	}
	if n != len(msg) {
		return fmt.Errorf("sending %s: short write (%d of %d bytes)", t, n, len(msg))
	}
	return nil
}

// receive reads one message from c, with any descriptors attached to it.
// The caller owns the returned descriptors (close-on-exec is set) and must
// close them, also when it returns an error of its own; on error receive
// closes them itself.
func receive(c *net.UnixConn, maxFDs int) (message, []int, error) {
	buf := make([]byte, maxMsgLen)
	var oob []byte
	if maxFDs > 0 {
		oob = make([]byte, syscall.CmsgSpace(maxFDs*4))
	}
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	fds, ferr := parseRights(oob[:oobn])
	if err == nil {
		err = ferr
	}
	if err == nil && n == 0 {
		err = errors.New("connection closed by peer")
	}
	if err == nil && flags&syscall.MSG_TRUNC != 0 {
		err = fmt.Errorf("message longer than %d bytes", maxMsgLen)
	}
	if err == nil && flags&syscall.MSG_CTRUNC != 0 {
		err = fmt.Errorf("more than %d file descriptors attached", maxFDs)
	}
	var m message
	if err == nil {
		m, err = decode(buf[:n])
	}
	if err != nil {
		closeFDs(fds)
		return message{}, nil, err
	}
	return m, fds, nil
}

// parseRights returns the descriptors carried by SCM_RIGHTS control
// messages in oob.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	scms, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parsing control message: %w", err)
	}
	var fds []int
	for i := range scms {
		if scms[i].Header.Level != syscall.SOL_SOCKET || scms[i].Header.Type != syscall.SCM_RIGHTS {
			continue
		}
		got, err := syscall.ParseUnixRights(&scms[i])
		if err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("parsing SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// closeFDs closes raw descriptors the caller owns; it skips negative ones.
func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			_ = syscall.Close(fd)
		}
	}
}
