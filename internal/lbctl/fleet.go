package lbctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

func (a *app) newFleetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fleet",
		Short: "List the connected data planes and the version each has applied",
		Long: `List the data planes connected to the control plane, ordered by node id,
after a line with the current configuration version and how many there are.

For each data plane it shows its node id, the address it connects from, when
its stream opened, the newest version it acknowledged (ACKED) and the newest
version it was sent (SENT), and its STATUS: "in sync" when it has applied the
current version, "behind" when it has not yet, or "refused vN: REASON" when it
refused version N (it keeps serving the last version it acknowledged).

With -o json it prints the response as is, with the connection times in RFC
3339.`,
		Example: `  lbctl fleet
  lbctl fleet -o json
  # After a change, wait until every data plane has it:
  lbctl wait --version 12`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd.Context(), func(ctx context.Context, c lbv1.AdminServiceClient) error {
				resp, err := c.ListDataPlanes(ctx, &lbv1.ListDataPlanesRequest{})
				if err != nil {
					return callErr("", err)
				}
				return a.emit(resp, func(w io.Writer) error { return writeFleet(w, resp, a.clock()) })
			})
		},
	}
}

func (a *app) newWaitCmd() *cobra.Command {
	var (
		version versionValue
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait --version V",
		Short: "Wait until every data plane has applied a configuration version",
		Long: `Wait until every data plane connected to the control plane has applied
(acknowledged) the configuration version V or a later one, for up to
--timeout (default 30s), then print how many have. Every change prints the
version that contains it; the mutating commands also take --wait to do this
right after the change.

It fails (exit 1) when the time is up first, naming the data planes that lag
and the version they are at, or as soon as a data plane refuses version V,
with its reason. Data planes that connect meanwhile are waited for too.

Here --timeout is how long to wait, not the limit on each call.`,
		Example: `  lbctl wait --version 12
  lbctl wait --version 12 --timeout 2m
  # Scripts: change, then wait before the next step:
  v=$(lbctl add-backend --pool web 10.0.0.8:8080 -o json | jq -r .version)
  lbctl wait --version "$v" --timeout 1m`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("version") {
				return usagef(cmd, "--version is required")
			}
			if timeout <= 0 {
				return usagef(cmd, "invalid --timeout %s: must be positive", timeout)
			}
			v := uint64(version)
			return a.withConn(cmd.Context(), func(c lbv1.AdminServiceClient) error {
				resp, err := a.waitFor(cmd.Context(), c, v, timeout)
				if err != nil {
					return err
				}
				return a.emit(resp, func(w io.Writer) error { return waitLine(w, len(resp.GetDataPlanes()), v) })
			})
		},
	}
	f := cmd.Flags()
	f.Var(&version, "version", "configuration version to wait for, from 1 (required)")
	f.DurationVar(&timeout, "timeout", DefaultWaitTimeout, "how long to wait for the data planes")
	return cmd
}

// clock returns the current time, from a.now when set.
func (a *app) clock() time.Time {
	if a.now != nil {
		return a.now()
	}
	return time.Now()
}

// writeFleet writes the output of "fleet": the version line, then a row per
// data plane, with connection ages relative to now.
func writeFleet(w io.Writer, resp *lbv1.ListDataPlanesResponse, now time.Time) error {
	dps := resp.GetDataPlanes()
	if _, err := fmt.Fprintf(w, "configuration version %d, %s\n", resp.GetVersion(), plural(len(dps), "data plane")); err != nil {
		return err
	}
	if len(dps) == 0 {
		_, err := fmt.Fprintln(w, "No data plane is connected.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPEER\tCONNECTED\tACKED\tSENT\tSTATUS")
	for _, dp := range dps {
		connected := "-"
		if ts := dp.GetConnectedAt(); ts != nil && ts.IsValid() {
			connected = ageText(now.Sub(ts.AsTime()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", cell(dp.GetNodeId()), cell(dp.GetPeer()), connected,
			dp.GetAckedVersion(), dp.GetSentVersion(), fleetStatus(dp, resp.GetVersion()))
	}
	return tw.Flush()
}

// fleetStatus is the STATUS of a data plane, given the current version.
func fleetStatus(dp *lbv1.DataPlane, version uint64) string {
	switch {
	case dp.GetNackedVersion() > dp.GetAckedVersion():
		reason := cell(dp.GetNackReason())
		if dp.GetNackReason() == "" {
			reason = "no reason given"
		}
		return fmt.Sprintf("refused v%d: %s", dp.GetNackedVersion(), reason)
	case dp.GetAckedVersion() >= version:
		return "in sync"
	default:
		return "behind"
	}
}

// cell makes s fit in a table cell: on one line, without tabs, "-" when
// empty.
func cell(s string) string {
	s = strings.ReplaceAll(oneLine(s), "\t", " ")
	if s == "" {
		return "-"
	}
	return s
}

// ageText renders how long ago something happened, to the second under an
// hour and coarser beyond: "42s ago", "3m12s ago", "2h5m ago", "3d4h ago".
func ageText(d time.Duration) string {
	const day = 24 * time.Hour
	d = max(d, 0).Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds ago", d/time.Minute, d%time.Minute/time.Second)
	case d < day:
		return fmt.Sprintf("%dh%dm ago", d/time.Hour, d%time.Hour/time.Minute)
	default:
		return fmt.Sprintf("%dd%dh ago", d/day, d%day/time.Hour)
	}
}
