package h1guard

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"
)

func FuzzConn(f *testing.F) {
	seeds := []string{
		getA,
		getA + getB + getC,
		"\r\n" + getA,
		"GET / HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" + getA,
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n" + getA,
		chunkHead + "5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n" + getA,
		chunkHead + "A\r\n0123456789\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\t\r\n\r\n",
		h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		wsHead + "\x82\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n" + smuggled,
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
		chunkHead + "zz\r\n",
		chunkHead + "5\r\nhelloXX",
		chunkHead + "0\r\nBad Name: v\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint(i*7))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		if len(data) > 1<<18 {
			return
		}
		k := int(split % uint(len(data)+1))
		out, reason := fuzzRun(t, [][]byte{data[:k], data[k:]}, 0)

		// The output is the input (less empty lines before requests, and
		// less an unchecked tail the stream ended inside), or a prefix of it
		// and the reject request.
		var prefix []byte
		if reason == "" {
			if !droppedOnlyCRLFsAndTail(data, out) {
				t.Fatalf("accepted, but the output is not the input less empty lines and an unchecked tail:\nin  %q\nout %q", data, out)
			}
		} else {
			if !bytes.HasSuffix(out, rejectRequest) {
				t.Fatalf("refused (%s), but the output does not end in the reject request: %q", reason, out)
			}
			prefix = out[:len(out)-len(rejectRequest)]
			if !bytes.HasPrefix(data, prefix) {
				t.Fatalf("refused (%s), but the output before the reject request is not a prefix of the input: %q", reason, out)
			}
		}

		// The outcome does not depend on how the bytes are cut into reads.
		if len(data) <= 4096 {
			out1, reason1 := fuzzRun(t, [][]byte{data}, 1)
			if !bytes.Equal(out1, out) || (reason1 == "") != (reason == "") {
				t.Fatalf("split at %d: %q (reason %q); one byte per read: %q (reason %q)", k, out, reason, out1, reason1)
			}
		}

		// Whatever net/http can parse out of the output was validated by the
		// guard, with the same framing.
		if bytes.HasPrefix(data, []byte(h2Preface)) {
			return
		}
		differential(t, out)
	})
}

// fuzzRun reads everything from a guard over the pieces, failing if that does
// not end within a few seconds.
func fuzzRun(t *testing.T, pieces [][]byte, maxRead int) ([]byte, string) {
	g := New(&memConn{pieces: pieces, maxRead: maxRead})
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := io.ReadAll(g)
		ch <- result{out, err}
	}()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("ReadAll: %v", r.err)
		}
		return r.out, g.Reason()
	case <-timer.C:
		t.Fatalf("the guard did not finish reading %d bytes", len(bytes.Join(pieces, nil)))
	}
	return nil, ""
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// differential parses out with net/http request by request and checks each
// head it accepts against checkHead.
func differential(t *testing.T, out []byte) {
	cr := &countingReader{r: bytes.NewReader(out)}
	br := bufio.NewReaderSize(cr, 1<<20)
	pos := 0
	for pos < len(out) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		end := cr.n - br.Buffered()
		head := out[pos:end]
		if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			t.Fatalf("net/http parsed %s %s from %q, a head the guard did not check (no CRLF CRLF)", req.Method, req.RequestURI, head)
		}
		f, reason := checkHead(head)
		if reason != "" {
			t.Fatalf("net/http parsed %s %s from %q, a head the guard refuses: %s", req.Method, req.RequestURI, head, reason)
		}
		chunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
		if f.chunked != chunked || (!f.chunked && f.length != req.ContentLength) {
			t.Fatalf("framing of %q: guard chunked=%v length=%d; net/http TransferEncoding=%q ContentLength=%d",
				head, f.chunked, f.length, req.TransferEncoding, req.ContentLength)
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		if f.upgrade {
			return // the rest is another protocol
		}
		pos = cr.n - br.Buffered()
	}
}

// droppedOnlyCRLFsAndTail reports whether out is in with some CRLF pairs
// removed and the end cut off.
func droppedOnlyCRLFsAndTail(in, out []byte) bool {
	i := 0
	for j := 0; j < len(out); {
		switch {
		case i < len(in) && in[i] == out[j]:
			i++
			j++
		case i+1 < len(in) && in[i] == '\r' && in[i+1] == '\n':
			i += 2
		default:
			return false
		}
	}
	return true
}
