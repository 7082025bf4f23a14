package h2server_test

import (
	"net/http"
	"testing"

	"golang.org/x/net/http2"

	"github.com/lb-project/lb/dataplane/h2server"
)

// BenchmarkRequest measures one request on an open h2c connection: the
// client writes a HEADERS frame, the handler answers 64 bytes, the client
// reads HEADERS and DATA to the end of the stream. Allocations include the
// hand-driven client's (a few per response).
func BenchmarkRequest(b *testing.B) {
	body := make([]byte, 64)
	ts := startServer(b, &h2server.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Header()["Content-Length"] = []string{"64"}
		w.Write(body)
	})})
	rc := dialRaw(b, ts.addr)
	rc.fr.SetReuseFrames()
	rc.fr.WriteWindowUpdate(0, 1<<31-1-65535) // the connection's window for all the responses
	id := uint32(1)
	roundTrip := func() {
		rc.request(id, "/small", true)
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream) {
				if _, ok := f.(*http2.DataFrame); ok {
					break
				}
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
				rc.fr.WriteSettingsAck()
			}
		}
		id += 2
	}
	roundTrip() // settings exchanged, connection warm
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
}
