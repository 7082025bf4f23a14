package lbctl

import (
	"context"
	"fmt"
	"io"
	"regexp"

	"github.com/spf13/cobra"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

func (a *app) newAddBackendCmd() *cobra.Command {
	var (
		pool   string
		weight = weightValue(defaultWeight)
		change changeFlags
	)
	cmd := &cobra.Command{
		Use:   "add-backend --pool NAME HOST:PORT",
		Short: "Add a backend to a pool",
		Long: `Add the backend HOST:PORT to the pool given by --pool, with weight --weight
(its relative share of requests, 1 to 10000, default 1).

HOST is an IP address or a DNS name; IPv6 addresses are written in brackets.

` + ifVersionHelp + `

` + waitHelp,
		Example: `  lbctl add-backend --pool web 10.0.0.5:8080
  lbctl add-backend --pool web backend-3.internal:8080 --weight 5
  lbctl add-backend --pool web '[fd00::7]:8080'
  # Only if the pool is still at version 7, then wait until every data plane uses it:
  lbctl add-backend --pool web 10.0.0.8:8080 --if-version 7 --wait --wait-timeout 1m`,
		Args: exactArgs("HOST:PORT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePool(cmd, pool); err != nil {
				return err
			}
			w := uint32(weight)
			req := &lbv1.AddBackendRequest{Pool: pool, Address: args[0], Weight: &w, ExpectedVersion: change.expected()}
			return mutate(a, cmd, pool, &change,
				func(ctx context.Context, c lbv1.AdminServiceClient) (*lbv1.AddBackendResponse, error) {
					return c.AddBackend(ctx, req)
				},
				func(out io.Writer, resp *lbv1.AddBackendResponse) error {
					got := w
					if b := findBackend(resp.GetPool(), req.Address); b != nil {
						got = b.GetWeight()
					}
					return mutationLine(out, pool, fmt.Sprintf("added backend %s (weight %d)", req.Address, got), resp.GetVersion())
				})
		},
	}
	poolFlag(cmd, &pool)
	cmd.Flags().Var(&weight, "weight", "weight of the backend, 1 to 10000")
	change.register(cmd, true)
	return cmd
}

func (a *app) newRemoveBackendCmd() *cobra.Command {
	var (
		pool   string
		change changeFlags
	)
	cmd := &cobra.Command{
		Use:   "remove-backend --pool NAME HOST:PORT",
		Short: "Remove a backend from a pool",
		Long: `Remove the backend HOST:PORT from the pool given by --pool. The address must
be written as it was added; "lbctl pool get NAME" lists them.

` + ifVersionHelp + `

` + waitHelp,
		Example: `  lbctl remove-backend --pool web 10.0.0.5:8080
  # Wait until no data plane sends it new requests before stopping it:
  lbctl remove-backend --pool web 10.0.0.5:8080 --if-version 9 --wait`,
		Args: exactArgs("HOST:PORT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePool(cmd, pool); err != nil {
				return err
			}
			addr := args[0]
			req := &lbv1.RemoveBackendRequest{Pool: pool, Address: addr, ExpectedVersion: change.expected()}
			return mutate(a, cmd, pool, &change,
				func(ctx context.Context, c lbv1.AdminServiceClient) (*lbv1.RemoveBackendResponse, error) {
					return c.RemoveBackend(ctx, req)
				},
				func(w io.Writer, resp *lbv1.RemoveBackendResponse) error {
					return mutationLine(w, pool, "removed backend "+addr, resp.GetVersion())
				})
		},
	}
	poolFlag(cmd, &pool)
	change.register(cmd, true)
	return cmd
}

// negativeShorthand matches pflag's error for a negative number taken as a
// shorthand flag, such as "-5" in "set-weight ... -5".
var negativeShorthand = regexp.MustCompile(`^unknown shorthand flag: '.' in (-[0-9][0-9.]*)$`)

func (a *app) newSetWeightCmd() *cobra.Command {
	var (
		pool   string
		change changeFlags
	)
	cmd := &cobra.Command{
		Use:   "set-weight --pool NAME HOST:PORT WEIGHT",
		Short: "Change the weight of a backend",
		Long: `Set the weight of the backend HOST:PORT of the pool given by --pool to
WEIGHT, a whole number from 1 to 10000: the backend's relative share of
requests.

` + ifVersionHelp + `

` + waitHelp,
		Example: `  lbctl set-weight --pool web 10.0.0.5:8080 5
  lbctl set-weight --pool web 10.0.0.5:8080 5 --if-version 7 --wait`,
		Args: exactArgs("HOST:PORT", "WEIGHT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePool(cmd, pool); err != nil {
				return err
			}
			addr := args[0]
			weight, err := parseWeight(args[1])
			if err != nil {
				return &usageError{cmdPath: cmd.CommandPath(), err: err}
			}
			req := &lbv1.UpdateBackendRequest{Pool: pool, Address: addr, Weight: &weight, ExpectedVersion: change.expected()}
			return mutate(a, cmd, pool, &change,
				func(ctx context.Context, c lbv1.AdminServiceClient) (*lbv1.UpdateBackendResponse, error) {
					return c.UpdateBackend(ctx, req)
				},
				func(w io.Writer, resp *lbv1.UpdateBackendResponse) error {
					return mutationLine(w, pool, fmt.Sprintf("backend %s weight set to %d", addr, weight), resp.GetVersion())
				})
		},
	}
	poolFlag(cmd, &pool)
	change.register(cmd, true)
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if m := negativeShorthand.FindStringSubmatch(err.Error()); m != nil {
			if _, werr := parseWeight(m[1]); werr != nil {
				err = werr
			}
		}
		return &usageError{cmdPath: cmd.CommandPath(), err: err}
	})
	return cmd
}

func (a *app) newDrainBackendCmd() *cobra.Command {
	return a.drainCmd(true)
}

func (a *app) newUndrainBackendCmd() *cobra.Command {
	return a.drainCmd(false)
}

// drainCmd builds drain-backend (drain true) or undrain-backend.
func (a *app) drainCmd(drain bool) *cobra.Command {
	var (
		pool   string
		change changeFlags
	)
	cmd := &cobra.Command{
		Use:   "drain-backend --pool NAME HOST:PORT",
		Short: "Stop sending new requests to a backend",
		Long: `Drain the backend HOST:PORT of the pool given by --pool: the data planes send
it no new requests, while requests and WebSocket sessions already on it
finish. The backend stays in the pool with its weight; "lbctl pool get NAME"
shows it as draining, with its requests still in flight, so it can be removed
or restarted once they reach 0. undrain-backend puts it back in service.

` + ifVersionHelp + `

` + waitHelp,
		Example: `  lbctl drain-backend --pool api 10.0.0.5:8080
  # Only if the pool is still at version 7, and wait until every data plane
  # has stopped sending it new requests:
  lbctl drain-backend --pool api 10.0.0.5:8080 --if-version 7 --wait
  # Wait for IN-FLIGHT to reach 0, then:
  lbctl pool get api
  lbctl remove-backend --pool api 10.0.0.5:8080`,
		Args: exactArgs("HOST:PORT"),
	}
	what := "draining (gets no new requests; in-flight requests finish)"
	if !drain {
		cmd.Use = "undrain-backend --pool NAME HOST:PORT"
		cmd.Short = "Send new requests to a drained backend again"
		cmd.Long = `Undrain the backend HOST:PORT of the pool given by --pool, drained with
drain-backend: the data planes send it new requests again, by its weight.

` + ifVersionHelp + `

` + waitHelp
		cmd.Example = `  lbctl undrain-backend --pool api 10.0.0.5:8080
  lbctl undrain-backend --pool api 10.0.0.5:8080 --if-version 8 --wait --wait-timeout 1m`
		what = "active again (gets new requests)"
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := requirePool(cmd, pool); err != nil {
			return err
		}
		addr := args[0]
		req := &lbv1.UpdateBackendRequest{Pool: pool, Address: addr, Draining: &drain, ExpectedVersion: change.expected()}
		return mutate(a, cmd, pool, &change,
			func(ctx context.Context, c lbv1.AdminServiceClient) (*lbv1.UpdateBackendResponse, error) {
				return c.UpdateBackend(ctx, req)
			},
			func(w io.Writer, resp *lbv1.UpdateBackendResponse) error {
				return mutationLine(w, pool, "backend "+addr+" "+what, resp.GetVersion())
			})
	}
	poolFlag(cmd, &pool)
	change.register(cmd, true)
	return cmd
}

// findBackend returns the backend of p with address addr, or nil.
func findBackend(p *lbv1.Pool, addr string) *lbv1.Backend {
	for _, b := range p.GetBackends() {
		if b.GetAddress() == addr {
			return b
		}
	}
	return nil
}
