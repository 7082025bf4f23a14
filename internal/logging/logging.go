// Package logging builds the hclog loggers of the lb binaries from their
// --log-level and --log-format flags, and changes their level at run time:
// through the /log-level admin endpoint (LevelHandler) or a signal
// (ResetOnSignal, which the binaries wire to SIGHUP).
//
// Loggers made from the root logger with Named or With share its level, so
// setting the root's level changes every subsystem's at once.
package logging

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Levels lists the accepted --log-level values.
const Levels = "trace|debug|info|warn|error"

// Formats lists the accepted --log-format values.
const Formats = "text|json"

// New returns the root logger named name, writing to w at the given level
// (one of Levels) in the given format (one of Formats).
func New(name, level, format string, w io.Writer) (hclog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want one of %s", level, Levels)
	}
	var json bool
	switch format {
	case "text":
	case "json":
		json = true
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want one of %s", format, Formats)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           lvl,
		Output:          w,
		JSONFormat:      json,
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z07:00",
	}), nil
}

// ParseLevel returns the level named name, one of Levels in any case and
// with surrounding space ignored.
func ParseLevel(name string) (hclog.Level, error) {
	lvl := hclog.LevelFromString(name)
	if lvl == hclog.NoLevel || lvl == hclog.Off {
		return hclog.NoLevel, fmt.Errorf("invalid log level %q: want one of %s", strings.TrimSpace(name), Levels)
	}
	return lvl, nil
}

// SetLevel sets the level of log, the root logger, to the level named name
// (one of Levels); the loggers made from it with Named or With follow. It
// logs the change at info (see setLevel). An invalid name changes nothing
// and is reported as an error.
func SetLevel(log hclog.Logger, name string) error {
	to, err := ParseLevel(name)
	if err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	setLevel(log, to)
	return nil
}

// setLevel sets log's level to "to" and logs the line "log level changed"
// with from, to and the key/value pairs kv. The line is written while the
// more verbose of the two levels is in force, so it shows whenever either
// level lets info through.
func setLevel(log hclog.Logger, to hclog.Level, kv ...any) {
	from := log.GetLevel()
	args := append([]any{"from", from.String(), "to", to.String()}, kv...)
	if to < from {
		log.SetLevel(to)
		log.Info("log level changed", args...)
		return
	}
	log.Info("log level changed", args...)
	log.SetLevel(to)
}

// maxLevelBody bounds the request body read by LevelHandler.
const maxLevelBody = 1 << 10

// LevelHandler returns the handler of the /log-level admin endpoint for
// log, the root logger:
//
//	GET        200, the current level name ("info\n")
//	PUT, POST  sets the level named by the ?level= query parameter or else
//	           by the request body (plain text, trimmed; "level=NAME" is
//	           accepted too, as curl -d sends it); 200 "log level set to
//	           NAME\n", or 400 naming the value and the accepted ones,
//	           changing nothing
//
// Other methods get 405.
func LevelHandler(log hclog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			fmt.Fprintln(w, log.GetLevel().String())
		case http.MethodPut, http.MethodPost:
			name, err := requestedLevel(r, w)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			to, err := ParseLevel(name)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			setLevel(log, to, "via", "admin API", "remote", r.RemoteAddr)
			fmt.Fprintf(w, "log level set to %s\n", to.String())
		default:
			w.Header().Set("Allow", "GET, HEAD, PUT, POST")
			http.Error(w, "method not allowed: use GET to read the log level, PUT to set it", http.StatusMethodNotAllowed)
		}
	})
}

// requestedLevel returns the level name a PUT or POST asks for: the level
// query parameter if given, else the trimmed body.
func requestedLevel(r *http.Request, w http.ResponseWriter) (string, error) {
	if q := r.URL.Query(); q.Has("level") {
		return q.Get("level"), nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLevelBody))
	if err != nil {
		return "", fmt.Errorf("reading the requested log level: %w", err)
	}
	name := strings.TrimSpace(string(body))
	name = strings.TrimPrefix(name, "level=")
	if name == "" {
		return "", fmt.Errorf("no log level given: send one of %s as the body or as ?level=", Levels)
	}
	return name, nil
}

// ResetOnSignal sets log's level back to level (one of Levels, typically
// the --log-level flag's value) each time sig delivers, until ctx is done
// or sig is closed. The binaries run it on SIGHUP, to undo a change made
// through /log-level. An invalid level is reported at once, before any
// signal is awaited.
func ResetOnSignal(ctx context.Context, sig <-chan os.Signal, log hclog.Logger, level string) error {
	to, err := ParseLevel(level)
	if err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-sig:
			if !ok {
				return nil
			}
			setLevel(log, to, "via", "signal", "signal", s.String())
		}
	}
}
