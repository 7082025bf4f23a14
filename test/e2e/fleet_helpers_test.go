package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// fleetEtcd is an etcd process started for one test.
type fleetEtcd struct {
	// endpoint is its client URL, http://127.0.0.1:PORT.
	endpoint string
	log      *syncBuffer
}

// etcdStartServer runs a single-member etcd on two free loopback ports (client
// and peer), with its data in a fresh temporary directory, waits (bounded)
// until a Get succeeds, and kills it when the test ends. A port taken in
// between is retried with new ones.
func etcdStartServer(t *testing.T) *fleetEtcd {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found in PATH (%v); scripts/test.sh installs it (Debian package etcd-server)", err)
	}
	var lastErr error
	for attempt := range 3 {
		e, err := etcdTryStart(t, bin, attempt)
		if err == nil {
			return e
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("start etcd: %v", lastErr)
	return nil
}

func etcdTryStart(t *testing.T, bin string, attempt int) (*fleetEtcd, error) {
	t.Helper()
	// Both listeners are held until both ports are known, so they differ.
	lc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	lp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		lc.Close()
		t.Fatalf("free port: %v", err)
	}
	client := "http://" + lc.Addr().String()
	peer := "http://" + lp.Addr().String()
	lc.Close()
	lp.Close()

	e := &fleetEtcd{endpoint: client, log: &syncBuffer{}}
	cmd := exec.Command(bin,
		"--name", "t",
		"--data-dir", filepath.Join(t.TempDir(), fmt.Sprintf("etcd-%d", attempt)),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer,
	)
	cmd.Stdout, cmd.Stderr = e.log, e.log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	kill := func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	if err := etcdWaitAnswers(client, exited, 30*time.Second); err != nil {
		kill()
		if strings.Contains(e.log.String(), "address already in use") {
			err = fmt.Errorf("%w (address already in use)", err)
		}
		return nil, fmt.Errorf("%w\n--- etcd log ---\n%s", err, e.log.String())
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			lines := strings.Split(strings.TrimRight(e.log.String(), "\n"), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("--- etcd log (last lines) ---\n%s", strings.Join(lines, "\n"))
		}
	})
	return e, nil
}

// etcdWaitAnswers polls a Get on endpoint until one succeeds, the process
// exits, or timeout passes.
func etcdWaitAnswers(endpoint string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	// First until it listens, so that the client does not log refused
	// connections while etcd starts.
	hostPort := strings.TrimPrefix(endpoint, "http://")
	for {
		c, err := net.DialTimeout("tcp", hostPort, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return errors.New("etcd exited before listening")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd did not listen on %s within %v: %w", hostPort, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: time.Second})
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", endpoint, err)
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "probe")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("etcd exited before answering")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd at %s did not answer within %v: %w", endpoint, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fleetEtcdFlags are the control plane flags that keep pools in e.
func fleetEtcdFlags(e *fleetEtcd) []string {
	return []string{"--store", "etcd", "--etcd-endpoints", e.endpoint}
}

// fleetStartControlPlane starts lb-controlplane on addr (a free one when
// empty) with debug logging, its admin listener on a free port unless
// extraFlags name one, and extraFlags (the store: --data-dir DIR, or
// fleetEtcdFlags), and waits until it listens. The test fails if the
// control plane reports a data race.
func fleetStartControlPlane(t *testing.T, addr string, extraFlags ...string) *controlPlane {
	t.Helper()
	if addr == "" {
		addr = freeAddr(t)
	}
	args := []string{"--listen", addr, "--log-level", "debug"}
	cp := &controlPlane{addr: addr}
	for i, f := range extraFlags {
		if f == "--data-dir" && i+1 < len(extraFlags) {
			cp.dataDir = extraFlags[i+1]
		}
		if f == "--admin-listen" && i+1 < len(extraFlags) {
			cp.admin = extraFlags[i+1]
		}
	}
	if !slices.Contains(extraFlags, "--admin-listen") {
		cp.admin = freeAddr(t)
		args = append(args, "--admin-listen", cp.admin)
	}
	p := start(t, "lb-controlplane", append(args, extraFlags...)...)
	cp.proc = p
	fleetFailOnRace(t, p)
	waitFor(t, 30*time.Second, "control plane to listen on "+addr, func() bool {
		select {
		case <-p.done:
			t.Fatalf("lb-controlplane exited before listening: %v\n%s", p.err, p.log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cp
}

// fleetStartDataPlane starts lb-dataplane connected to cps (one address or
// a comma-separated list) with extra flags. The test fails if it reports a
// data race.
func fleetStartDataPlane(t *testing.T, cps, nodeID string, extra ...string) *dataPlane {
	t.Helper()
	dp := startDataPlaneWith(t, cps, nodeID, extra...)
	fleetFailOnRace(t, dp.proc)
	return dp
}

// fleetFailOnRace fails the test, at its end, if a process's log has a
// data race report (the binaries are built with -race when the tests are).
func fleetFailOnRace(t *testing.T, p *proc) {
	t.Helper()
	t.Cleanup(func() {
		if n := strings.Count(p.log.String(), "WARNING: DATA RACE"); n > 0 {
			t.Errorf("%s reported %d data race(s); see its log", p.name, n)
		}
	})
}

// fleetConfigView is the data plane's /config with the fields these tests read.
type fleetConfigView struct {
	NodeID    string `json:"node_id"`
	Version   uint64 `json:"version"`
	Connected bool   `json:"connected"`
	FromCache bool   `json:"from_cache"`
	LastError string `json:"last_error"`
	Pools     []struct {
		Name     string   `json:"name"`
		Hosts    []string `json:"hosts"`
		Backends []struct {
			Address string `json:"address"`
			Weight  uint32 `json:"weight"`
		} `json:"backends"`
	} `json:"pools"`
}

// pool returns the named pool's backends as address=weight, and whether it is there.
func (v fleetConfigView) pool(name string) ([]string, bool) {
	for _, p := range v.Pools {
		if p.Name == name {
			var out []string
			for _, b := range p.Backends {
				out = append(out, fmt.Sprintf("%s=%d", b.Address, b.Weight))
			}
			return out, true
		}
	}
	return nil, false
}

func (v fleetConfigView) poolNames() []string {
	var out []string
	for _, p := range v.Pools {
		out = append(out, p.Name)
	}
	return out
}

// fleetTryConfig fetches the data plane's /config.
func fleetTryConfig(dp *dataPlane) (fleetConfigView, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + dp.admin + "/config")
	if err != nil {
		return fleetConfigView{}, err
	}
	defer resp.Body.Close()
	var v fleetConfigView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fleetConfigView{}, fmt.Errorf("decode /config: %w", err)
	}
	return v, nil
}

func fleetConfig(t *testing.T, dp *dataPlane) fleetConfigView {
	t.Helper()
	v, err := fleetTryConfig(dp)
	if err != nil {
		t.Fatalf("GET /config: %v", err)
	}
	return v
}

// fleetWaitConfig polls /config until cond holds, for up to 30s.
func fleetWaitConfig(t *testing.T, dp *dataPlane, what string, cond func(v fleetConfigView) bool) fleetConfigView {
	t.Helper()
	var last fleetConfigView
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for {
		last, lastErr = fleetTryConfig(dp)
		if lastErr == nil && cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for the data plane's /config to show %s; last: %+v (error %v)", what, last, lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fleetReadyz returns the status and body of the data plane's /readyz.
func fleetReadyz(dp *dataPlane) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + dp.admin + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// fleetUint is a uint64 as protojson writes it: a JSON string.
type fleetUint uint64

func (u *fleetUint) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		*u = 0
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	*u = fleetUint(n)
	return err
}

// fleetPools is the output of "lbctl -o json pool list".
type fleetPools struct {
	Version fleetUint `json:"version"`
	Pools   []struct {
		Name     string    `json:"name"`
		Version  fleetUint `json:"version"`
		Backends []struct {
			Address string `json:"address"`
			Weight  uint32 `json:"weight"`
		} `json:"backends"`
	} `json:"pools"`
}

// summary renders the pools as name@version[address=weight ...], for
// comparing two listings.
func (p fleetPools) summary() []string {
	var out []string
	for _, pl := range p.Pools {
		var bs []string
		for _, b := range pl.Backends {
			bs = append(bs, fmt.Sprintf("%s=%d", b.Address, b.Weight))
		}
		out = append(out, fmt.Sprintf("%s@%d%v", pl.Name, pl.Version, bs))
	}
	return out
}

func fleetPoolList(t *testing.T, cp string) fleetPools {
	t.Helper()
	out := mustLbctl(t, cp, "--controlplane", cp, "-o", "json", "pool", "list")
	var v fleetPools
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("decode lbctl pool list output %q: %v", out, err)
	}
	return v
}

// fleetNodes is the output of "lbctl -o json fleet".
type fleetNodes struct {
	Version    fleetUint `json:"version"`
	DataPlanes []struct {
		NodeID        string    `json:"nodeId"`
		Peer          string    `json:"peer"`
		SentVersion   fleetUint `json:"sentVersion"`
		AckedVersion  fleetUint `json:"ackedVersion"`
		NackedVersion fleetUint `json:"nackedVersion"`
	} `json:"dataPlanes"`
}

func fleetList(t *testing.T, cp string) fleetNodes {
	t.Helper()
	out := mustLbctl(t, cp, "--controlplane", cp, "-o", "json", "fleet")
	var v fleetNodes
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("decode lbctl fleet output %q: %v", out, err)
	}
	return v
}

// ackedBy returns the version node acknowledged, and whether it is connected.
func (f fleetNodes) ackedBy(node string) (uint64, bool) {
	for _, dp := range f.DataPlanes {
		if dp.NodeID == node {
			return uint64(dp.AckedVersion), true
		}
	}
	return 0, false
}

// fleetWaitAcked polls "lbctl fleet" on cp until node is listed with at
// least version v acknowledged.
func fleetWaitAcked(t *testing.T, cp, node string, v uint64) fleetNodes {
	t.Helper()
	var last fleetNodes
	deadline := time.Now().Add(30 * time.Second)
	for {
		last = fleetList(t, cp)
		if acked, ok := last.ackedBy(node); ok && acked >= v {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s to list %s with version %d acknowledged; last: %+v", cp, node, v, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fleetLogLine is one hclog text line: its message and key=value pairs.
type fleetLogLine struct {
	raw string
	msg string
	kv  map[string]string
}

// fleetParseLog splits a process log into hclog lines with the message msg
// (after the logger name), e.g. "configuration sent".
func fleetParseLog(log, msg string) []fleetLogLine {
	var out []fleetLogLine
	for _, line := range strings.Split(log, "\n") {
		i := strings.Index(line, ": "+msg+":")
		if i < 0 {
			if strings.HasSuffix(line, ": "+msg) {
				out = append(out, fleetLogLine{raw: line, msg: msg, kv: map[string]string{}})
			}
			continue
		}
		out = append(out, fleetLogLine{raw: line, msg: msg, kv: fleetParseKV(line[i+len(msg)+3:])})
	}
	return out
}

// fleetParseKV parses hclog's ` key=value key="quoted value"` pairs.
func fleetParseKV(s string) map[string]string {
	kv := make(map[string]string)
	for {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return kv
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			if q, err := strconv.QuotedPrefix(s); err == nil {
				val, _ = strconv.Unquote(q)
				s = s[len(q):]
			} else {
				val, s = s, ""
			}
		} else if sp := strings.IndexByte(s, ' '); sp >= 0 {
			val, s = s[:sp], s[sp:]
		} else {
			val, s = s, ""
		}
		kv[key] = val
	}
}

// fleetWaitLog polls p's log for up to 30s for a line with message msg whose
// pairs satisfy match, and returns the first such line.
func fleetWaitLog(t *testing.T, p *proc, msg string, match func(kv map[string]string) bool) fleetLogLine {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, l := range fleetParseLog(p.log.String(), msg) {
			if match(l.kv) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for a %q line in the %s log", msg, p.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fleetPause stops p with SIGSTOP until fleetResume or the end of the test.
func fleetPause(t *testing.T, p *proc) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", p.name, err)
	}
	// Registered after start's cleanup, so it runs first: a stopped process
	// is let go on before it is killed.
	t.Cleanup(func() { _ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT) })
}

// fleetResume continues a process stopped by fleetPause.
func fleetResume(t *testing.T, p *proc) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT %s: %v", p.name, err)
	}
}

// fleetBodies sends n requests to the data plane with Host host and counts
// the answering backends' names.
func fleetBodies(t *testing.T, dp *dataPlane, host string, n int) map[string]int {
	t.Helper()
	c := newClient()
	defer c.CloseIdleConnections()
	seen := make(map[string]int)
	for i := 0; i < n; i++ {
		req, err := http.NewRequest(http.MethodGet, "http://"+dp.addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d through the data plane: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d: read body: %v", i, err)
		}
		if resp.StatusCode != http.StatusOK {
			seen[fmt.Sprintf("status %d", resp.StatusCode)]++
			continue
		}
		seen[string(body)]++
	}
	return seen
}

// fleetStatusOf returns the status of one request through the data plane
// with Host host.
func fleetStatusOf(t *testing.T, dp *dataPlane, host string) (int, string) {
	t.Helper()
	c := newClient()
	defer c.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+dp.addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("request through the data plane: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
