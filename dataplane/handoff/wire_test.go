package handoff

import (
	"bytes"
	"strings"
	"testing"
)

// TestDecodeNames checks the offer payload parser.
func TestDecodeNames(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    []string
		errText string
	}{
		{"two names", "\x02\x05proxy\x03tls", []string{"proxy", "tls"}, ""},
		{"empty", "", nil, "empty offer"},
		{"zero names", "\x00", nil, "offer of 0 listeners"},
		{"too many", "\x21", nil, "offer of 33 listeners"},
		{"truncated", "\x02\x05proxy\x03tl", nil, "truncated at name 1"},
		{"trailing", "\x01\x03tls!", nil, "1 trailing bytes"},
		{"duplicate", "\x02\x03tls\x03tls", nil, `"tls" offered twice`},
		{"empty name", "\x01\x00", nil, "want 1 to 64 bytes"},
		{"bad character", "\x01\x03t/s", nil, "only letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeNames([]byte(tt.payload))
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("decodeNames: %v, want an error containing %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeNames: %v", err)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("decodeNames = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestDecodeVersions checks that any version's header decodes, so that the
// receiver can name both versions, and that another protocol does not.
func TestDecodeVersions(t *testing.T) {
	tests := []struct {
		name    string
		msg     string
		errText string
	}{
		{"this version", "LBHO\x01\x03", ""},
		{"later version", "LBHO\x07\x02payload", "mismatch: the successor speaks handoff protocol version 7, the old process speaks version 1"},
		{"error of a later version", "LBHO\x07\x05gone", "the successor refused: gone"},
		{"wrong type", "LBHO\x01\x04", "the successor sent a released message, want ready"},
		{"short", "LBH", "not a handoff protocol message"},
		{"other protocol", "SSH-2.0-x", "not a handoff protocol message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decode([]byte(tt.msg))
			if err == nil {
				err = checkMessage(m, msgReady, roleSuccessor)
			}
			if tt.errText == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("got %v, want an error containing %q", err, tt.errText)
			}
		})
	}
}

// FuzzDecodeNames checks that the offer parser never panics and that what
// it accepts encodes back to the same bytes.
func FuzzDecodeNames(f *testing.F) {
	f.Add([]byte("\x02\x05proxy\x03tls"))
	f.Add([]byte("\x01\x00"))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		names, err := decodeNames(b)
		if err != nil {
			return
		}
		if got := encodeNames(names); !bytes.Equal(got, b) {
			t.Fatalf("encodeNames(decodeNames(%q)) = %q", b, got)
		}
	})
}
