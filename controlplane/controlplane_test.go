package controlplane

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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

func TestAdminHandler(t *testing.T) {
	tests := []struct {
		name     string
		state    int32
		method   string
		path     string
		wantCode int
		wantBody string
	}{
		{name: "healthz starting", state: stateStarting, method: "GET", path: "/healthz", wantCode: 200, wantBody: "ok\n"},
		{name: "healthz stopping", state: stateStopping, method: "GET", path: "/healthz", wantCode: 200, wantBody: "ok\n"},
		{name: "readyz starting", state: stateStarting, method: "GET", path: "/readyz", wantCode: 503, wantBody: "not ready: starting\n"},
		{name: "readyz serving", state: stateServing, method: "GET", path: "/readyz", wantCode: 200, wantBody: "ready\n"},
		{name: "readyz stopping", state: stateStopping, method: "GET", path: "/readyz", wantCode: 503, wantBody: "not ready: stopping\n"},
		{name: "metrics", state: stateServing, method: "GET", path: "/metrics", wantCode: 200, wantBody: "metrics\n"},
		{name: "metrics is read-only", state: stateServing, method: "POST", path: "/metrics", wantCode: 405},
		{name: "log level", state: stateServing, method: "PUT", path: "/log-level", wantCode: 200, wantBody: "level\n"},
		{name: "unknown path", state: stateServing, method: "GET", path: "/config", wantCode: 404},
	}
	stub := func(body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) })
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var state atomic.Int32
			state.Store(tc.state)
			h := adminHandler(stub("metrics\n"), stub("level\n"), &state)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.wantCode {
				t.Errorf("status = %d, want %d", rec.Code, tc.wantCode)
			}
			if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
				t.Errorf("body = %q, want %q", rec.Body.String(), tc.wantBody)
			}
		})
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// httpGet returns the status and body of GET url, or an error.
func httpGet(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestRunAdminListener runs a whole control plane with an admin listener
// and checks its endpoints while it serves, and that they are gone once it
// stopped.
func TestRunAdminListener(t *testing.T) {
	admin := freeAddr(t)
	log, err := logging.New("test", "info", "text", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Config{Listen: freeAddr(t), AdminListen: admin, DataDir: t.TempDir(), Logger: log})
	}()
	// stopRun stops Run and returns its error; it is idempotent.
	var runErr error
	stopped := false
	stopRun := func() error {
		if !stopped {
			stop()
			runErr, stopped = <-done, true
		}
		return runErr
	}
	defer stopRun()

	base := "http://" + admin
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		code, _, err := httpGet(ctx, base+"/readyz")
		if err == nil && code == http.StatusOK {
			break
		}
		select {
		case err := <-done:
			stopped, runErr = true, err
			t.Fatalf("Run returned before it was ready: %v", err)
		case <-ctx.Done():
			t.Fatal("control plane not ready within 30s")
		case <-tick.C:
		}
	}
	tests := []struct {
		path     string
		wantBody string
	}{
		{"/healthz", "ok\n"},
		{"/readyz", "ready\n"},
		{"/log-level", "info\n"},
		{"/metrics", "lb_controlplane_config_version 0\n"},
		{"/metrics", `lb_controlplane_store_operation_duration_seconds_count{operation="read"} `},
		{"/metrics", `lb_controlplane_grpc_requests_total{code="OK",method="/lb.v1.AdminService/AddBackend"} 0`},
		{"/metrics", "go_goroutines "},
	}
	for _, tc := range tests {
		code, body, err := httpGet(ctx, base+tc.path)
		if err != nil || code != http.StatusOK || !strings.Contains(body, tc.wantBody) {
			t.Errorf("GET %s = %d, %v, body %q; want 200 containing %q", tc.path, code, err, body, tc.wantBody)
		}
	}
	if err := stopRun(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, _, err := httpGet(ctx, base+"/healthz"); err == nil {
		t.Error("the admin listener still answers after Run returned")
	}
}

// TestRunAdminListenInUse checks that an admin address that cannot be
// bound fails Run at once, naming it.
func TestRunAdminListenInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = Run(ctx, Config{Listen: freeAddr(t), AdminListen: l.Addr().String(), DataDir: t.TempDir(), Logger: hclog.NewNullLogger()})
	if err == nil || !strings.Contains(err.Error(), "admin listen on "+l.Addr().String()) {
		t.Fatalf("Run = %v, want an admin listen error", err)
	}
}

// TestRunStoreFailureClosesAdmin checks that when the store cannot be
// opened, Run returns and leaves no admin listener behind.
func TestRunStoreFailureClosesAdmin(t *testing.T) {
	admin := freeAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := Run(ctx, Config{Listen: freeAddr(t), AdminListen: admin, Store: "nosuch", Logger: hclog.NewNullLogger()})
	if err == nil || !strings.Contains(err.Error(), `unknown store "nosuch"`) {
		t.Fatalf("Run = %v, want an unknown store error", err)
	}
	l, err := net.Listen("tcp", admin)
	if err != nil {
		t.Fatalf("admin address still bound after Run returned: %v", err)
	}
	l.Close()
}
