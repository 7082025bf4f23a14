package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// opsAccessKeys are the fields of every access log line.
var opsAccessKeys = []string{"time", "client", "host", "method", "path", "protocol", "status", "bytes_in", "bytes_out",
	"duration_seconds", "pool", "backend", "retries", "upstream_status"}

// opsAccessNumeric are the fields that are numbers (JSON numbers).
var opsAccessNumeric = []string{"status", "bytes_in", "bytes_out", "duration_seconds", "retries", "upstream_status"}

// opsAccessWant is what one request's access log line must say.
type opsAccessWant struct {
	host, method, path, protocol string
	status, upstreamStatus       int
	bytesIn, bytesOut            int
	pool, backend                string
}

// TestAccessLog runs a data plane with --access-log FILE in each format,
// sends requests of different kinds (GETs to pool web over HTTP/1.1, a GET
// no pool matches, a POST with a 10-byte body, a GET over h2c), and checks
// that the file has exactly one parsable line per request with the right
// fields, the backend being the one that answered, both while the data
// plane runs and after it exited on SIGTERM.
func TestAccessLog(t *testing.T) {
	for _, format := range []string{"json", "logfmt"} {
		t.Run(format, func(t *testing.T) { opsAccessLogCase(t, format) })
	}
}

func opsAccessLogCase(t *testing.T, format string) {
	logPath := filepath.Join(t.TempDir(), "access.log")
	e := opsStart(t, "dp-access-"+format, "--access-log", logPath, "--access-log-format", format)
	a, b := startBackend(t, "alpha"), startBackend(t, "bravo-backend")
	addrOf := map[string]string{a.name: a.addr, b.name: b.addr}
	e.apply(t, "pool", "create", "web", "--host", "web.test", "--backend", a.addr, "--backend", b.addr)

	start := time.Now()
	var wants []opsAccessWant
	proxied := func(r opsResult, method, path, host, protocol string, bytesIn int) {
		t.Helper()
		addr, ok := addrOf[r.body]
		if !ok || r.hdr.Get("X-Backend") != r.body {
			t.Fatalf("%s %s answered %q (X-Backend %q); want a backend's name", method, path, r.body, r.hdr.Get("X-Backend"))
		}
		wants = append(wants, opsAccessWant{host: host, method: method, path: path, protocol: protocol,
			status: 200, upstreamStatus: 200, bytesIn: bytesIn, bytesOut: len(r.body), pool: "web", backend: addr})
	}
	c1 := newClient()
	defer c1.CloseIdleConnections()
	for i := 0; i < 4; i++ {
		path := fmt.Sprintf("/get/%d", i)
		proxied(opsMustDo(t, c1, http.MethodGet, e.url+path, "web.test", nil, http.StatusOK), http.MethodGet, path, "web.test", "HTTP/1.1", 0)
	}
	r := opsMustDo(t, c1, http.MethodGet, e.url+"/missing", "nowhere.test", nil, http.StatusNotFound)
	wants = append(wants, opsAccessWant{host: "nowhere.test", method: http.MethodGet, path: "/missing", protocol: "HTTP/1.1",
		status: 404, bytesOut: len(r.body)})
	post := []byte("0123456789")
	proxied(opsMustDo(t, c1, http.MethodPost, e.url+"/post", "web.test", post, http.StatusOK), http.MethodPost, "/post", "web.test", "HTTP/1.1", len(post))
	h2c, h2tr := opsH2CClient()
	defer h2tr.CloseIdleConnections()
	r = opsMustDo(t, h2c, http.MethodGet, e.url+"/h2", "web.test", nil, http.StatusOK)
	if r.proto != "HTTP/2.0" {
		t.Fatalf("h2c request answered over %s, want HTTP/2.0", r.proto)
	}
	proxied(r, http.MethodGet, "/h2", "web.test", "HTTP/2.0", 0)
	end := time.Now()

	// The log is written while the data plane runs (bounded wait)...
	var lines []string
	for i := 0; i < 500; i++ { // at most ~10s
		lines = opsReadLines(t, logPath)
		if len(lines) >= len(wants) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	opsCheckAccessLog(t, format, lines, wants, start, end)

	// ... and after SIGTERM, it holds the same lines, no more, no fewer.
	opsSignal(t, e.dp.proc, syscall.SIGTERM)
	opsAwaitExit(t, e.dp.proc, 15*time.Second)
	after := opsReadLines(t, logPath)
	if !slices.Equal(after, lines) {
		t.Errorf("after the data plane exited the log has %d lines, before %d; want the same lines:\n%s",
			len(after), len(lines), strings.Join(after, "\n"))
	}
}

// opsReadLines returns the lines of the file at path, without empty ones.
func opsReadLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read access log: %v", err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// opsCheckAccessLog checks that lines are exactly one line per wanted
// request (matched by path), each with the wanted fields.
func opsCheckAccessLog(t *testing.T, format string, lines []string, wants []opsAccessWant, start, end time.Time) {
	t.Helper()
	if len(lines) != len(wants) {
		t.Errorf("the access log has %d lines, want %d (one per request):\n%s", len(lines), len(wants), strings.Join(lines, "\n"))
	}
	byPath := map[string][]map[string]string{}
	for i, l := range lines {
		var f map[string]string
		var err error
		if format == "json" {
			f, err = opsParseJSONLine(l)
		} else {
			f, err = opsParseLogfmt(l)
		}
		if err != nil {
			t.Errorf("line %d does not parse as %s: %v\n%s", i+1, format, err, l)
			continue
		}
		var keys []string
		for k := range f {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		wantKeys := slices.Sorted(slices.Values(opsAccessKeys))
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("line %d has the fields %v, want %v\n%s", i+1, keys, wantKeys, l)
		}
		byPath[f["path"]] = append(byPath[f["path"]], f)
	}
	for _, w := range wants {
		got := byPath[w.path]
		if len(got) != 1 {
			t.Errorf("%d lines for %s %s, want 1", len(got), w.method, w.path)
			continue
		}
		f := got[0]
		check := func(key, want string) {
			t.Helper()
			if f[key] != want {
				t.Errorf("%s %s: %s = %q, want %q", w.method, w.path, key, f[key], want)
			}
		}
		check("host", w.host)
		check("method", w.method)
		check("protocol", w.protocol)
		check("status", strconv.Itoa(w.status))
		check("upstream_status", strconv.Itoa(w.upstreamStatus))
		check("bytes_in", strconv.Itoa(w.bytesIn))
		check("bytes_out", strconv.Itoa(w.bytesOut))
		check("pool", w.pool)
		check("backend", w.backend)
		check("retries", "0")
		if !strings.HasPrefix(f["client"], "127.0.0.1:") {
			t.Errorf("%s %s: client = %q, want 127.0.0.1:PORT", w.method, w.path, f["client"])
		}
		if ts, err := time.Parse(time.RFC3339Nano, f["time"]); err != nil || ts.Before(start.Add(-time.Second)) || ts.After(end.Add(time.Second)) {
			t.Errorf("%s %s: time = %q (%v), want an RFC 3339 time between %v and %v", w.method, w.path, f["time"], err, start, end)
		}
		if d, err := strconv.ParseFloat(f["duration_seconds"], 64); err != nil || d < 0 || d > end.Sub(start).Seconds() {
			t.Errorf("%s %s: duration_seconds = %q, want a number of seconds within the test's %v", w.method, w.path, f["duration_seconds"], end.Sub(start))
		}
	}
}

// opsParseJSONLine parses one JSON access log line: string fields must be
// JSON strings and numeric fields JSON numbers. Values are returned as text.
func opsParseJSONLine(line string) (map[string]string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value on the line")
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		numeric := slices.Contains(opsAccessNumeric, k)
		switch v := v.(type) {
		case json.Number:
			if !numeric {
				return nil, fmt.Errorf("field %s is the number %s, want a string", k, v)
			}
			out[k] = v.String()
		case string:
			if numeric {
				return nil, fmt.Errorf("field %s is the string %q, want a number", k, v)
			}
			out[k] = v
		default:
			return nil, fmt.Errorf("field %s is %T", k, v)
		}
	}
	return out, nil
}

// opsParseLogfmt parses key=value pairs separated by spaces; a value is
// bare (up to the next space) or a double-quoted string with backslash
// escapes. A key may appear once.
func opsParseLogfmt(line string) (map[string]string, error) {
	out := map[string]string{}
	s := line
	for i := 0; s != "" && i < 100; i++ {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			return nil, fmt.Errorf("no key=value at %q", s)
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			j := 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' {
					j++
				}
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated quoted value of %s", key)
			}
			v, err := strconv.Unquote(s[:j+1])
			if err != nil {
				return nil, fmt.Errorf("quoted value of %s: %w", key, err)
			}
			val, s = v, s[j+1:]
		} else {
			j := strings.IndexByte(s, ' ')
			if j < 0 {
				j = len(s)
			}
			val, s = s[:j], s[j:]
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("key %s appears twice", key)
		}
		out[key] = val
		if s != "" {
			if s[0] != ' ' {
				return nil, fmt.Errorf("no space after the value of %s", key)
			}
			s = s[1:]
		}
	}
	if s != "" {
		return nil, fmt.Errorf("too many fields")
	}
	return out, nil
}
