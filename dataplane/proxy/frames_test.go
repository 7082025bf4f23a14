package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// wsFrame builds one WebSocket frame with a payload of n bytes.
func wsFrame(opcode byte, n int, masked bool) []byte {
	f := []byte{0x80 | opcode}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch {
	case n < 126:
		f = append(f, mask|byte(n))
	case n <= 0xffff:
		f = append(f, mask|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mask|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if masked {
		f = append(f, 1, 2, 3, 4)
	}
	return append(f, bytes.Repeat([]byte{'x'}, n)...)
}

func TestFrameTrackerBoundaries(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 70000}
	for _, masked := range []bool{false, true} {
		var stream []byte
		var ends []int // offsets where a frame ends
		for _, n := range sizes {
			stream = append(stream, wsFrame(0x2, n, masked)...)
			ends = append(ends, len(stream))
		}
		for _, chunk := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
			var f frameTracker
			var got []int
			off := 0
			for off < len(stream) {
				end := min(off+chunk, len(stream))
				p := stream[off:end]
				// Consume chunk by chunk, stopping at every boundary.
				for len(p) > 0 {
					n := f.advance(p, true)
					off += n
					p = p[n:]
					if f.atBoundary() {
						got = append(got, off)
					}
				}
			}
			if !equalInts(got, ends) {
				t.Errorf("masked=%v chunk=%d: boundaries %v, want %v", masked, chunk, got, ends)
			}
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRelayGoingAwayWaitsForFrameEnd checks that after goAway a direction
// finishes the frame in progress, then sends the close frame and nothing
// more.
func TestRelayGoingAwayWaitsForFrameEnd(t *testing.T) {
	frame := wsFrame(0x1, 10, false)
	next := wsFrame(0x1, 3, false)
	var out bytes.Buffer
	tc := &tunnelConn{}
	if err := tc.relay(&tc.toClientMu, &tc.toClient, &out, frame[:5], false); err != nil {
		t.Fatal(err)
	}
	tc.goingAway.Store(true)
	rest := append(append([]byte{}, frame[5:]...), next...)
	if err := tc.relay(&tc.toClientMu, &tc.toClient, &out, rest, false); err != errGoneAway {
		t.Fatalf("relay after goAway: %v, want errGoneAway", err)
	}
	want := append(append([]byte{}, frame...), closeFrame(false)...)
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("relayed %q, want the whole frame then the close frame %q", out.Bytes(), want)
	}
	if err := tc.relay(&tc.toClientMu, &tc.toClient, &out, next, false); err != errGoneAway {
		t.Errorf("relay after close: %v, want errGoneAway", err)
	}
}

func TestCloseFrame(t *testing.T) {
	f := closeFrame(false)
	if f[0] != 0x88 || int(f[1]) != len(f)-2 || binary.BigEndian.Uint16(f[2:]) != 1001 || string(f[4:]) != goingAwayReason {
		t.Errorf("unmasked close frame %x", f)
	}
	m := closeFrame(true)
	if m[0] != 0x88 || m[1]&0x80 == 0 || int(m[1]&0x7f) != len(m)-6 {
		t.Fatalf("masked close frame header %x", m[:6])
	}
	key := m[2:6]
	payload := make([]byte, len(m)-6)
	for i := range payload {
		payload[i] = m[6+i] ^ key[i%4]
	}
	if binary.BigEndian.Uint16(payload) != 1001 || string(payload[2:]) != goingAwayReason {
		t.Errorf("masked close payload %q", payload)
	}
}
