package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// curlMarker separates the response body from curl's -w output on stdout.
const curlMarker = "\n--curl-write-out--"

// curlResult is the outcome of one curl run.
type curlResult struct {
	args        []string
	body        string
	httpVersion string // "1.1", "2", ... ("0" when no response)
	code        int    // HTTP status, 0 when no response
	stderr      string
	err         error // non-nil when curl exited non-zero
}

func (r curlResult) String() string {
	return "curl " + strings.Join(r.args, " ") + ": http_version=" + r.httpVersion +
		" http_code=" + strconv.Itoa(r.code) + " err=" + curlErrString(r.err) +
		" stderr=" + strconv.Quote(r.stderr) + " body=" + strconv.Quote(r.body)
}

func curlErrString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// curlBin returns the system curl, failing the test when there is none.
func curlBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is not installed (%v); scripts/test.sh installs it (apt-get install curl)", err)
	}
	return p
}

// curlRun runs curl with a 10s limit, -sS, and a -w that reports the HTTP
// version and status after the body.
func curlRun(t *testing.T, args ...string) curlResult {
	t.Helper()
	bin := curlBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{"--max-time", "10", "-sS", "-w", curlMarker + "%{http_version} %{http_code}"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := curlResult{args: args, stderr: strings.TrimSpace(errb.String()), err: err, httpVersion: "0"}
	s := out.String()
	if i := strings.LastIndex(s, curlMarker); i >= 0 {
		res.body = s[:i]
		f := strings.Fields(s[i+len(curlMarker):])
		if len(f) == 2 {
			res.httpVersion = f[0]
			res.code, _ = strconv.Atoi(f[1])
		}
	} else {
		res.body = s
	}
	return res
}

// curlOK runs curl and fails the test unless curl itself succeeded (any HTTP
// status counts as success).
func curlOK(t *testing.T, args ...string) curlResult {
	t.Helper()
	r := curlRun(t, args...)
	if r.err != nil {
		t.Fatalf("%v", r)
	}
	return r
}

// TestCurlSupportsHTTP2 checks that the system curl can run the tests of this
// package: it must exist and support HTTP/2 and TLS.
func TestCurlSupportsHTTP2(t *testing.T) {
	bin := curlBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-V").Output()
	if err != nil {
		t.Fatalf("curl -V: %v", err)
	}
	var features string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Features:") {
			features = line
		}
	}
	for _, f := range []string{"HTTP2", "SSL"} {
		if !strings.Contains(" "+features+" ", " "+f+" ") {
			t.Fatalf("curl lacks the %s feature needed by the TLS and HTTP/2 tests:\n%s", f, out)
		}
	}
}

// tlsAdminClient dials the control plane's admin gRPC API.
func tlsAdminClient(t *testing.T, cpAddr string) lbv1.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(cpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial control plane %s: %v", cpAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return lbv1.NewAdminServiceClient(conn)
}

// tlsCreatePool creates pool through the admin API and waits until dp has
// applied it.
func tlsCreatePool(t *testing.T, admin lbv1.AdminServiceClient, dp *dataPlane, pool *lbv1.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := admin.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: pool})
	if err != nil {
		t.Fatalf("CreatePool %s: %v", pool.GetName(), err)
	}
	dp.waitVersion(t, resp.GetVersion())
}
