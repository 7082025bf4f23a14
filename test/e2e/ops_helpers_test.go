package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/http2"
)

// Helpers of the operations tests (metrics_test.go, accesslog_test.go,
// shutdown_test.go). Every identifier starts with "ops" so as not to clash
// with the other files of the package.

// opsStart starts a control plane and a data plane named nodeID with the
// extra flags (e.g. --access-log, --drain-timeout, --tls-listen); the test
// fails at its end if either reported a data race.
func opsStart(t *testing.T, nodeID string, extra ...string) *lbEnv {
	t.Helper()
	cp := startControlPlane(t, "", "")
	dp := startDataPlaneWith(t, cp.addr, nodeID, extra...)
	lbFailOnRace(t, cp.proc, dp.proc)
	return &lbEnv{cp: cp, dp: dp, url: "http://" + dp.addr}
}

// opsMetrics is one scrape of /metrics, by metric family name.
type opsMetrics map[string]*dto.MetricFamily

// opsScrape fetches and parses the Prometheus exposition at
// http://admin/metrics.
func opsScrape(t *testing.T, admin string) opsMetrics {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s %q", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// opsLabel returns the value of label name on m, "" when absent (which
// Prometheus treats the same as empty).
func opsLabel(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// series returns the series of family name whose labels have the given
// values; pairs alternate label name and value ("pool", "web", ...).
func (ms opsMetrics) series(name string, pairs ...string) []*dto.Metric {
	if len(pairs)%2 != 0 {
		panic("opsMetrics.series: odd label pairs")
	}
	var out []*dto.Metric
	for _, m := range ms[name].GetMetric() {
		ok := true
		for i := 0; i < len(pairs) && ok; i += 2 {
			ok = opsLabel(m, pairs[i]) == pairs[i+1]
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// opsValue is the value of a counter, gauge or untyped sample.
func opsValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// sum adds the values of the series of name matching pairs (0 when none).
func (ms opsMetrics) sum(name string, pairs ...string) float64 {
	var s float64
	for _, m := range ms.series(name, pairs...) {
		s += opsValue(m)
	}
	return s
}

// histCount returns the observation count of the histogram series of name
// matching pairs, summed.
func (ms opsMetrics) histCount(name string, pairs ...string) uint64 {
	var n uint64
	for _, m := range ms.series(name, pairs...) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// describe renders the series of name, for failure messages.
func (ms opsMetrics) describe(name string) string {
	var b strings.Builder
	for _, m := range ms[name].GetMetric() {
		var ls []string
		for _, lp := range m.GetLabel() {
			ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		if h := m.GetHistogram(); h != nil {
			fmt.Fprintf(&b, "\n  %s{%s} count=%d sum=%g", name, strings.Join(ls, ","), h.GetSampleCount(), h.GetSampleSum())
			continue
		}
		fmt.Fprintf(&b, "\n  %s{%s} %g", name, strings.Join(ls, ","), opsValue(m))
	}
	if b.Len() == 0 {
		return " (no series)"
	}
	return b.String()
}

// opsH2CClient returns a client speaking HTTP/2 with prior knowledge over
// plain TCP (h2c) to http:// URLs.
func opsH2CClient() (*http.Client, *http2.Transport) {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, tr
}

// opsResult is the outcome of one request.
type opsResult struct {
	code  int
	proto string
	hdr   http.Header
	body  string
	err   error
}

// opsDo sends method url with Host host (the URL's when empty) and body
// (none when nil), bounded by 20s, and reads the whole answer.
func opsDo(c *http.Client, method, url, host string, body []byte) opsResult {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return opsResult{err: err}
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return opsResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return opsResult{code: resp.StatusCode, proto: resp.Proto, hdr: resp.Header, body: string(b), err: err}
}

// opsMustDo is opsDo that fails the test unless the status is want.
func opsMustDo(t *testing.T, c *http.Client, method, url, host string, body []byte, want int) opsResult {
	t.Helper()
	r := opsDo(c, method, url, host, body)
	if r.err != nil || r.code != want {
		t.Fatalf("%s %s (Host %s): %d %q %v; want %d", method, url, host, r.code, r.body, r.err, want)
	}
	return r
}

// opsSignal sends sig to the process.
func opsSignal(t *testing.T, p *proc, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

// opsAwaitExit waits up to within for the process to exit and fails the
// test unless it exited with status 0. It returns how long it waited.
func opsAwaitExit(t *testing.T, p *proc, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	timer := time.NewTimer(max(within, 0))
	defer timer.Stop()
	select {
	case <-p.done:
	default:
		select {
		case <-p.done:
		case <-timer.C:
			t.Fatalf("%s did not exit within %v", p.name, within)
		}
	}
	if p.err != nil {
		t.Errorf("%s exited with %v, want status 0", p.name, p.err)
	}
	return time.Since(start)
}

// opsRefused reports whether a TCP connect to addr is refused; a connect
// that succeeds is closed at once.
func opsRefused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
