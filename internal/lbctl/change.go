package lbctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// DefaultWaitTimeout is how long "lbctl wait" and --wait wait for the data
// planes by default.
const DefaultWaitTimeout = 30 * time.Second

// waitGrace is added to the wait timeout to make the deadline of a
// WaitForVersion call, so that the control plane answers (naming the data
// planes that lag) before the call itself times out.
const waitGrace = 5 * time.Second

// waitHelp is the part of the help of a mutating command about --wait.
const waitHelp = `With --wait, lbctl then waits until every connected data plane has applied
the configuration version that contains the change, for up to --wait-timeout
(default 30s), and prints "all N data planes have applied version V". It fails
(exit 1) when a data plane refuses that version or when some still lag when
the time is up, naming them; the change itself stays committed either way.`

// ifVersionHelp is the part of the help of a command that changes an
// existing pool about --if-version.
const ifVersionHelp = `With --if-version V, the change is made only if the pool is still at version
V (the Version shown by "lbctl pool get", the configuration version in which
the pool last changed), so that a change someone else made in between is not
silently overwritten. Otherwise nothing changes and lbctl fails (exit 1).`

// changeFlags are the flags shared by the mutating commands: --wait,
// --wait-timeout and, on commands that change an existing pool,
// --if-version.
type changeFlags struct {
	wait        bool
	waitTimeout time.Duration
	ifVersion   versionValue
}

// register adds the flags to cmd; --if-version only with ifVersion.
func (ch *changeFlags) register(cmd *cobra.Command, ifVersion bool) {
	f := cmd.Flags()
	f.BoolVar(&ch.wait, "wait", false, "then wait until every connected data plane has applied the change")
	f.DurationVar(&ch.waitTimeout, "wait-timeout", DefaultWaitTimeout, "how long --wait waits for the data planes")
	if ifVersion {
		f.Var(&ch.ifVersion, "if-version", "change the pool only if it is still at this version (see 'lbctl pool get')")
	}
}

// check validates the flags before anything is sent.
func (ch *changeFlags) check(cmd *cobra.Command) error {
	if cmd.Flags().Changed("wait-timeout") {
		if !ch.wait {
			return usagef(cmd, "--wait-timeout needs --wait")
		}
		if ch.waitTimeout <= 0 {
			return usagef(cmd, "invalid --wait-timeout %s: must be positive", ch.waitTimeout)
		}
	}
	return nil
}

// expected is the expected_version to send: 0 (no check) without
// --if-version.
func (ch *changeFlags) expected() uint64 { return uint64(ch.ifVersion) }

// versioned is the response of a mutation: it carries the configuration
// version that contains the change.
type versioned interface {
	proto.Message
	GetVersion() uint64
}

// mutate sends a change concerning pool with call, limited by --timeout,
// and prints its response: as JSON, or with line. With --wait it then waits
// for the data planes to apply the response's version, printing the result
// after line (nothing more in JSON mode).
func mutate[T versioned](a *app, cmd *cobra.Command, pool string, ch *changeFlags,
	call func(ctx context.Context, c lbv1.AdminServiceClient) (T, error),
	line func(w io.Writer, resp T) error,
) error {
	if err := ch.check(cmd); err != nil {
		return err
	}
	ctx := cmd.Context()
	return a.withConn(ctx, func(c lbv1.AdminServiceClient) error {
		cctx, cancel := context.WithTimeout(ctx, a.timeout)
		resp, err := call(cctx, c)
		cancel()
		if err != nil {
			return callErr(pool, err)
		}
		if err := a.emit(resp, func(w io.Writer) error { return line(w, resp) }); err != nil {
			return err
		}
		if !ch.wait {
			return nil
		}
		wr, err := a.waitFor(ctx, c, resp.GetVersion(), ch.waitTimeout)
		if err != nil {
			return err
		}
		if a.output == outputJSON {
			return nil
		}
		return waitLine(a.stdout, len(wr.GetDataPlanes()), resp.GetVersion())
	})
}

// waitFor calls WaitForVersion for version with timeout, under a call
// deadline of timeout plus waitGrace.
func (a *app) waitFor(ctx context.Context, c lbv1.AdminServiceClient, version uint64, timeout time.Duration) (*lbv1.WaitForVersionResponse, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout+waitGrace)
	defer cancel()
	resp, err := c.WaitForVersion(wctx, &lbv1.WaitForVersionRequest{Version: version, Timeout: durationpb.New(timeout)})
	if err == nil {
		return resp, nil
	}
	// Our own deadline passed: the control plane did not answer (one that
	// answers does so at the wait timeout, long before this deadline).
	if ctx.Err() == nil && ranOutOfTime(wctx, err) {
		return nil, errors.New(a.unreachable(fmt.Sprintf("no answer within %s while waiting for version %d",
			durText(timeout+waitGrace), version)))
	}
	return nil, &rpcError{err: err, waitVersion: version}
}

// waitLine writes the result of a successful wait.
func waitLine(w io.Writer, n int, version uint64) error {
	dp := "data planes have"
	if n == 1 {
		dp = "data plane has"
	}
	_, err := fmt.Fprintf(w, "all %d %s applied version %d\n", n, dp, version)
	return err
}

// versionValue is a pflag.Value holding a configuration version, a whole
// number of at least 1, so that a malformed one is reported clearly while
// parsing flags.
type versionValue uint64

var _ pflag.Value = (*versionValue)(nil)

func (v *versionValue) String() string {
	if *v == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(*v), 10)
}

func (v *versionValue) Set(s string) error {
	n, err := parseVersion(s)
	if err != nil {
		return err
	}
	*v = versionValue(n)
	return nil
}

func (v *versionValue) Type() string { return "version" }

// parseVersion parses a configuration version: a whole number from 1.
func parseVersion(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	switch {
	case err == nil && n == 0:
		return 0, errors.New("version 0 is not a version; versions start at 1")
	case err == nil:
		return n, nil
	case strings.HasPrefix(s, "-"):
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return 0, fmt.Errorf("version %s is negative; it must be a whole number from 1", s)
		}
	}
	var ne *strconv.NumError
	if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
		return 0, fmt.Errorf("version %s is too large", s)
	}
	return 0, fmt.Errorf("version %q is not a whole number; it must be a whole number from 1", s)
}
