package logging_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/lb-project/lb/internal/logging"
)

// TestMain fails the package when a test leaves a goroutine running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a log sink that tests may read while a logger writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newRoot returns a root logger at level, writing to a buffer.
func newRoot(t *testing.T, level string) (hclog.Logger, *syncBuffer) {
	t.Helper()
	var out syncBuffer
	log, err := logging.New("test", level, "text", &out)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return log, &out
}

func TestNew(t *testing.T) {
	tests := []struct {
		name, level, format string
		wantErr             string
		want                hclog.Level
	}{
		{name: "info text", level: "info", format: "text", want: hclog.Info},
		{name: "debug json", level: "debug", format: "json", want: hclog.Debug},
		{name: "upper case", level: "WARN", format: "text", want: hclog.Warn},
		{name: "off refused", level: "off", format: "text", wantErr: `invalid --log-level "off"`},
		{name: "unknown level", level: "loud", format: "text", wantErr: `invalid --log-level "loud": want one of ` + logging.Levels},
		{name: "unknown format", level: "info", format: "xml", wantErr: `invalid --log-format "xml": want one of ` + logging.Formats},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, err := logging.New("test", tc.level, tc.format, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New(%q, %q) error = %v, want it to contain %q", tc.level, tc.format, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%q, %q): %v", tc.level, tc.format, err)
			}
			if got := log.GetLevel(); got != tc.want {
				t.Errorf("level = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    hclog.Level
		wantErr bool
	}{
		{in: "trace", want: hclog.Trace},
		{in: "debug", want: hclog.Debug},
		{in: "info", want: hclog.Info},
		{in: "warn", want: hclog.Warn},
		{in: "error", want: hclog.Error},
		{in: " Debug\n", want: hclog.Debug},
		{in: "off", wantErr: true},
		{in: "", wantErr: true},
		{in: "warning", wantErr: true},
		{in: "none", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := logging.ParseLevel(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseLevel(%q) = %v, want an error", tc.in, got)
				}
				if !strings.Contains(err.Error(), logging.Levels) {
					t.Errorf("error %q does not list the accepted levels", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseLevel(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestLevelHandler(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		target   string
		body     string
		start    string // the root logger's level before the request
		wantCode int
		wantBody string // the whole body for 200s, a substring otherwise
		want     hclog.Level
		wantLog  string // a substring of the log; "" means nothing logged
	}{
		{name: "get", method: "GET", target: "/log-level", start: "info",
			wantCode: 200, wantBody: "info\n", want: hclog.Info},
		// The recorder keeps what a HEAD handler writes; net/http's server
		// would drop it.
		{name: "head", method: "HEAD", target: "/log-level", start: "warn",
			wantCode: 200, wantBody: "warn\n", want: hclog.Warn},
		{name: "put body", method: "PUT", target: "/log-level", body: "debug", start: "info",
			wantCode: 200, wantBody: "log level set to debug\n", want: hclog.Debug,
			wantLog: "[INFO]  test: log level changed: from=info to=debug via=\"admin API\""},
		{name: "post body trimmed any case", method: "POST", target: "/log-level", body: "  TRACE\r\n", start: "info",
			wantCode: 200, wantBody: "log level set to trace\n", want: hclog.Trace, wantLog: "from=info to=trace"},
		{name: "put query", method: "PUT", target: "/log-level?level=debug", start: "error",
			wantCode: 200, wantBody: "log level set to debug\n", want: hclog.Debug, wantLog: "from=error to=debug"},
		{name: "query wins over body", method: "PUT", target: "/log-level?level=debug", body: "trace", start: "info",
			wantCode: 200, wantBody: "log level set to debug\n", want: hclog.Debug, wantLog: "to=debug"},
		{name: "curl -d form", method: "POST", target: "/log-level", body: "level=warn", start: "info",
			wantCode: 200, wantBody: "log level set to warn\n", want: hclog.Warn,
			// Logged before the level goes up to warn, so it shows.
			wantLog: "from=info to=warn"},
		{name: "same level", method: "PUT", target: "/log-level", body: "info", start: "info",
			wantCode: 200, wantBody: "log level set to info\n", want: hclog.Info, wantLog: "from=info to=info"},
		{name: "invalid level", method: "PUT", target: "/log-level", body: "verbose", start: "info",
			wantCode: 400, wantBody: `invalid log level "verbose": want one of trace|debug|info|warn|error`, want: hclog.Info},
		{name: "off refused", method: "PUT", target: "/log-level", body: "off", start: "debug",
			wantCode: 400, wantBody: `invalid log level "off"`, want: hclog.Debug},
		{name: "invalid query", method: "POST", target: "/log-level?level=loud", body: "debug", start: "info",
			wantCode: 400, wantBody: `invalid log level "loud"`, want: hclog.Info},
		{name: "empty body", method: "PUT", target: "/log-level", body: " \n", start: "info",
			wantCode: 400, wantBody: "no log level given", want: hclog.Info},
		{name: "body too large", method: "PUT", target: "/log-level", body: strings.Repeat("d", 4096), start: "info",
			wantCode: 400, wantBody: "reading the requested log level", want: hclog.Info},
		{name: "delete", method: "DELETE", target: "/log-level", start: "info",
			wantCode: 405, wantBody: "method not allowed", want: hclog.Info},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, out := newRoot(t, tc.start)
			sub := log.Named("sub").With("k", "v")
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			logging.LevelHandler(log).ServeHTTP(rec, req)

			if rec.Code != tc.wantCode {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tc.wantCode, rec.Body.String())
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
			if tc.wantCode == 200 {
				if rec.Body.String() != tc.wantBody {
					t.Errorf("body = %q, want %q", rec.Body.String(), tc.wantBody)
				}
			} else if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("body = %q, want it to contain %q", rec.Body.String(), tc.wantBody)
			}
			if got := log.GetLevel(); got != tc.want {
				t.Errorf("root level = %v, want %v", got, tc.want)
			}
			// Sub-loggers share the root's level.
			if got := sub.GetLevel(); got != tc.want {
				t.Errorf("sub-logger level = %v, want %v", got, tc.want)
			}
			logged := out.String()
			if tc.wantLog == "" {
				if logged != "" {
					t.Errorf("logged %q, want nothing", logged)
				}
			} else {
				if !strings.Contains(logged, tc.wantLog) {
					t.Errorf("log = %q, want it to contain %q", logged, tc.wantLog)
				}
				if n := strings.Count(logged, "log level changed"); n != 1 {
					t.Errorf("log has %d \"log level changed\" lines, want 1:\n%s", n, logged)
				}
			}
		})
	}
}

// TestLevelSharedBySubLoggers checks that a level set on the root reaches
// the loggers made from it, in both directions of change, and that their
// lines appear or not accordingly.
func TestLevelSharedBySubLoggers(t *testing.T) {
	log, out := newRoot(t, "info")
	named := log.Named("discovery")
	with := named.With("node", "n1")
	h := logging.LevelHandler(log)

	put := func(level string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/log-level", strings.NewReader(level)))
		if rec.Code != http.StatusOK {
			t.Fatalf("PUT %s: status %d: %s", level, rec.Code, rec.Body.String())
		}
	}
	tests := []struct {
		level     string
		wantDebug bool
	}{
		{level: "debug", wantDebug: true},
		{level: "error", wantDebug: false},
		{level: "trace", wantDebug: true},
		{level: "info", wantDebug: false},
	}
	for i, tc := range tests {
		put(tc.level)
		marker := "debug line " + tc.level
		named.Debug(marker)
		with.Debug(marker + " with")
		for _, l := range []hclog.Logger{log, named, with} {
			if l.IsDebug() != tc.wantDebug {
				t.Errorf("step %d (%s): %s IsDebug = %v, want %v", i, tc.level, l.Name(), l.IsDebug(), tc.wantDebug)
			}
		}
		logged := out.String()
		if got := strings.Contains(logged, marker+"\n") && strings.Contains(logged, marker+" with: node=n1"); got != tc.wantDebug {
			t.Errorf("step %d (%s): debug lines logged = %v, want %v:\n%s", i, tc.level, got, tc.wantDebug, logged)
		}
	}
}

func TestSetLevel(t *testing.T) {
	tests := []struct {
		name, start, to string
		wantErr         bool
		want            hclog.Level
		wantLog         bool
	}{
		{name: "more verbose", start: "info", to: "debug", want: hclog.Debug, wantLog: true},
		{name: "less verbose, logged before", start: "info", to: "error", want: hclog.Error, wantLog: true},
		{name: "both above info, not shown", start: "warn", to: "error", want: hclog.Error, wantLog: false},
		{name: "invalid", start: "info", to: "chatty", wantErr: true, want: hclog.Info},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, out := newRoot(t, tc.start)
			err := logging.SetLevel(log, tc.to)
			if (err != nil) != tc.wantErr {
				t.Fatalf("SetLevel(%q) error = %v, want error %v", tc.to, err, tc.wantErr)
			}
			if got := log.GetLevel(); got != tc.want {
				t.Errorf("level = %v, want %v", got, tc.want)
			}
			if got := strings.Contains(out.String(), "log level changed"); got != tc.wantLog {
				t.Errorf("logged the change = %v, want %v: %q", got, tc.wantLog, out.String())
			}
		})
	}
}

func TestResetOnSignal(t *testing.T) {
	log, out := newRoot(t, "info")
	if err := logging.SetLevel(log, "trace"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sig := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- logging.ResetOnSignal(ctx, sig, log, "info") }()

	sig <- syscall.SIGHUP
	for log.GetLevel() != hclog.Info {
		if ctx.Err() != nil {
			t.Fatalf("level still %v after SIGHUP", log.GetLevel())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ResetOnSignal: %v", err)
	}
	if want := "from=trace to=info via=signal signal=hangup"; !strings.Contains(out.String(), want) {
		t.Errorf("log = %q, want it to contain %q", out.String(), want)
	}

	if err := logging.ResetOnSignal(context.Background(), sig, log, "loud"); err == nil {
		t.Error("ResetOnSignal with an invalid level returned nil, want an error")
	}
	close(sig)
	if err := logging.ResetOnSignal(context.Background(), sig, log, "info"); err != nil {
		t.Errorf("ResetOnSignal on a closed channel: %v", err)
	}
}
