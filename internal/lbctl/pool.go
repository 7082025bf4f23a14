package lbctl

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

func (a *app) newPoolCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Create, list, show, update and delete pools",
		Long: `Manage pools. A pool is a named group of backends together with the hosts
and path prefix whose requests are routed to it.

Backends of an existing pool are managed with add-backend, remove-backend,
set-weight, drain-backend and undrain-backend.`,
		Example: `  lbctl pool create web --host www.example.com --backend 10.0.0.5:8080
  lbctl pool create api --algorithm least-request --health-check http:/healthz --health-interval 2s --retries 3 --backend 10.0.0.5:8080 --backend 10.0.0.6:8080
  lbctl pool create origin --upstream-tls --sni one.one.one.one --host-header one.one.one.one --backend 1.1.1.1:443 --backend 1.0.0.1:443
  lbctl pool list
  lbctl pool get web
  lbctl pool update web --path-prefix /app/
  lbctl pool delete web`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	cmd.AddCommand(
		a.newPoolCreateCmd(),
		a.newPoolListCmd(),
		a.newPoolGetCmd(),
		a.newPoolUpdateCmd(),
		a.newPoolDeleteCmd(),
	)
	return cmd
}

func (a *app) newPoolCreateCmd() *cobra.Command {
	var (
		hosts      []string
		pathPrefix string
		backends   []string
		upstream   upstreamFlags
		policy     policyFlags
		change     changeFlags
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a pool",
		Long: `Create the pool NAME, optionally with hosts, a path prefix, backends, the
way the data planes connect to the backends, and how requests are spread
over them, checked, retried and timed out.

NAME is 1 to 63 characters of a-z, 0-9, '-', '_' and '.', starting and ending
with a letter or digit. Without --host the pool matches any host; without
--path-prefix it matches every path ("/"). Each --backend is HOST:PORT with an
optional =WEIGHT (1 to 10000, default 1); IPv6 addresses are written in
brackets.

` + upstreamHelp + `

` + policyHelp + `

` + waitHelp,
		Example: `  lbctl pool create web
  # Create it, then wait until every data plane routes to it:
  lbctl pool create web --host www.example.com --backend 10.0.0.5:8080 --wait --wait-timeout 1m
  lbctl pool create api --algorithm least-request --health-check http:/healthz --health-interval 2s --retries 3 --backend 10.0.0.5:8080 --backend 10.0.0.6:8080
  # Keep each user on one backend, check it over gRPC, and never retry:
  lbctl pool create sessions --algorithm consistent-hash --hash-key header:X-User-Id \
      --health-check grpc --retries 0 --backend 10.0.2.5:9000 --backend 10.0.2.6:9000
  lbctl pool create web --host www.example.com --host example.com --path-prefix /app/ \
      --backend 10.0.0.5:8080 --backend 10.0.0.6:8080=3 --backend '[fd00::7]:8080'
  # Proxy to a public HTTPS origin, verifying its certificate for one.one.one.one:
  lbctl pool create origin --upstream-tls --sni one.one.one.one --host-header one.one.one.one --backend 1.1.1.1:443 --backend 1.0.0.1:443
  # gRPC backends over TLS with a private CA and a client certificate:
  lbctl pool create grpc --upstream-protocol h2 --upstream-tls --ca-file ca.pem \
      --client-cert client.pem --client-key client-key.pem --backend 10.0.1.5:8443`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool := &lbv1.Pool{Name: args[0], Hosts: hosts, PathPrefix: pathPrefix}
			for _, s := range backends {
				b, err := parseBackend(s)
				if err != nil {
					return &usageError{cmdPath: cmd.CommandPath(), err: err}
				}
				pool.Backends = append(pool.Backends, b)
			}
			up, err := upstream.build(cmd)
			if err != nil {
				return err
			}
			if len(up.paths) > 0 {
				pool.Upstream = up.upstream
			}
			pol, err := policy.build(cmd, false)
			if err != nil {
				return err
			}
			pol.apply(pool)
			return mutate(a, cmd, pool.Name, &change,
				func(ctx context.Context, c lbv1.AdminServiceClient) (*lbv1.CreatePoolResponse, error) {
					return c.CreatePool(ctx, &lbv1.CreatePoolRequest{Pool: pool})
				},
				func(w io.Writer, resp *lbv1.CreatePoolResponse) error {
					return mutationLine(w, pool.Name, "created with "+plural(len(resp.GetPool().GetBackends()), "backend"), resp.GetVersion())
				})
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&hosts, "host", nil, "host name the pool serves, exact or *.domain (repeatable)")
	f.StringVar(&pathPrefix, "path-prefix", "", `path prefix the pool serves, starting with "/" (default "/")`)
	f.StringArrayVar(&backends, "backend", nil, "backend HOST:PORT[=WEIGHT] (repeatable)")
	upstream.register(cmd, false)
	policy.register(cmd, false)
	change.register(cmd, false)
	return cmd
}

func (a *app) newPoolListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List pools",
		Long: `List every pool, ordered by name, with its hosts ("*" for any host), path
prefix, number of backends, load balancing algorithm, upstream protocol and
the configuration version in which it last changed.

UPSTREAM is the protocol to the backends (auto, http1, h2 or h2c), followed by
"+tls" when they are reached over TLS.`,
		Example: `  lbctl pool list
  lbctl pool list -o json`,
		Aliases: []string{"ls"},
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd.Context(), func(ctx context.Context, c lbv1.AdminServiceClient) error {
				resp, err := c.ListPools(ctx, &lbv1.ListPoolsRequest{})
				if err != nil {
					return callErr("", err)
				}
				return a.emit(resp, func(w io.Writer) error { return writePoolList(w, resp.GetPools()) })
			})
		},
	}
}

func (a *app) newPoolGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show a pool and its backends",
		Long: `Show the pool NAME: its hosts, path prefix and the configuration version in
which it last changed, how the data planes connect to its backends when that
was configured (protocol, TLS, SNI, CA, certificate verification, client
certificate and Host header), its load balancing algorithm, health check,
outlier detection, retries and timeouts (with the defaults for what is not
set), then its backends.

For each backend it shows its weight, its STATE (active, or draining: it gets
no new requests), HEALTHY, how many of the connected data planes that report
on it see it healthy and not ejected ("2/3 data planes"; "-" when none
reports), and IN-FLIGHT, its requests in flight summed over the data planes.
With -o json the response includes each data plane's view (node id, healthy,
ejected, in flight).

The client private key is never shown; the control plane does not return it.`,
		Example: `  lbctl pool get web
  lbctl pool get web -o json`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return a.withClient(cmd.Context(), func(ctx context.Context, c lbv1.AdminServiceClient) error {
				resp, err := c.GetPool(ctx, &lbv1.GetPoolRequest{Name: name})
				if err != nil {
					return callErr(name, err)
				}
				return a.emit(resp, func(w io.Writer) error { return writePool(w, resp.GetPool(), resp.GetBackendStatus()) })
			})
		},
	}
}

func (a *app) newPoolUpdateCmd() *cobra.Command {
	var (
		hosts      []string
		clearHosts bool
		pathPrefix string
		upstream   upstreamFlags
		policy     policyFlags
		change     changeFlags
	)
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change the hosts, path prefix, upstream or policy settings of a pool",
		Long: `Change the hosts, the path prefix, the way the data planes connect to the
backends of the pool NAME, or how requests are spread over them, checked,
retried and timed out, in one atomic change.

Only the fields given are changed: --host replaces all the hosts with the ones
given, --clear-hosts removes them all (the pool then matches any host), and
--path-prefix replaces the path prefix (an empty value means "/"). Backends
are changed with add-backend, remove-backend, set-weight, drain-backend and
undrain-backend.

Each upstream flag changes only its own setting and leaves the others as they
are; --upstream-tls=false and --insecure-skip-verify=false turn those off,
and --clear-sni, --clear-ca, --clear-client-cert (certificate and key) and
--clear-host-header remove those settings.

Likewise each load balancing, health check, outlier detection, retry and
timeout flag changes only its own setting; a duration of 0 restores the
default. --health-check changes the kind of check (and its path or gRPC
service); switching to tcp or grpc also removes --health-host and
--health-status, which only apply to HTTP checks. --no-health-check removes
the health check with all its settings, and --no-outlier-detection=false turns
outlier detection on again. --hash-key is only accepted by the control plane
when the algorithm is, or is set to, consistent-hash; --algorithm with another
algorithm removes the hash key, and --algorithm consistent-hash the slow
start, which does not apply to it (unless given too).

` + ifVersionHelp + `

` + waitHelp + `

` + upstreamHelp + `

` + policyHelp,
		Example: `  lbctl pool update web --host www.example.com --host example.com
  # Only if nobody changed the pool since "lbctl pool get web" showed version 7,
  # then wait until every data plane has the change:
  lbctl pool update web --path-prefix /v2/ --if-version 7 --wait
  lbctl pool update web --clear-hosts
  lbctl pool update web --path-prefix /api/
  # Switch a pool to a public HTTPS origin:
  lbctl pool update origin --upstream-tls --sni one.one.one.one --host-header one.one.one.one
  # Rotate the client certificate, or stop using a private CA:
  lbctl pool update grpc --client-cert client.pem --client-key client-key.pem
  lbctl pool update grpc --clear-ca
  # Choose the protocol per request again:
  lbctl pool update grpc --upstream-protocol auto
  # Check more often, with a stricter status range:
  lbctl pool update api --health-interval 2s --health-timeout 500ms --health-status 200-299
  lbctl pool update api --algorithm consistent-hash --hash-key cookie:session
  lbctl pool update api --retries 0 --response-timeout 5m
  lbctl pool update api --no-health-check --no-outlier-detection`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			changed := cmd.Flags().Changed
			if changed("host") && changed("clear-hosts") {
				return usagef(cmd, "--host and --clear-hosts cannot be used together")
			}
			pool := &lbv1.Pool{Name: name}
			var paths, what []string
			switch {
			case changed("host"):
				pool.Hosts = hosts
				paths, what = append(paths, "hosts"), append(what, "hosts set to "+hostsText(hosts))
			case changed("clear-hosts") && clearHosts:
				paths, what = append(paths, "hosts"), append(what, "hosts cleared")
			}
			if changed("path-prefix") {
				pool.PathPrefix = pathPrefix
				paths, what = append(paths, "path_prefix"), append(what, "path prefix set to "+pathText(pathPrefix))
			}
			up, err := upstream.build(cmd)
			if err != nil {
				return err
			}
			if len(up.paths) > 0 {
				pool.Upstream = up.upstream
				paths, what = append(paths, up.paths...), append(what, up.what...)
			}
			pol, err := policy.build(cmd, true)
			if err != nil {
				return err
			}
			pol.apply(pool)
			paths, what = append(paths, pol.paths...), append(what, pol.what...)
			if len(paths) == 0 {
				return usagef(cmd, "nothing to update; give a flag that changes the pool, such as --host, "+
					"--path-prefix, --upstream-tls, --algorithm, --health-check, --retries or --connect-timeout")
			}
			req := &lbv1.UpdatePoolRequest{Pool: pool, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, ExpectedVersion: change.expected()}
			return mutate(a, cmd, name, &change,
				func(ctx context.Context, c lbv1.AdminServiceClient) (*lbv1.UpdatePoolResponse, error) {
					return c.UpdatePool(ctx, req)
				},
				func(w io.Writer, resp *lbv1.UpdatePoolResponse) error {
					return mutationLine(w, name, strings.Join(what, ", "), resp.GetVersion())
				})
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&hosts, "host", nil, "host name the pool serves, exact or *.domain (repeatable; replaces all hosts)")
	f.BoolVar(&clearHosts, "clear-hosts", false, "remove all hosts, so the pool matches any host")
	f.StringVar(&pathPrefix, "path-prefix", "", `new path prefix, starting with "/" (empty means "/")`)
	upstream.register(cmd, true)
	policy.register(cmd, true)
	change.register(cmd, true)
	return cmd
}

func (a *app) newPoolDeleteCmd() *cobra.Command {
	var change changeFlags
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a pool and its backends",
		Long: `Delete the pool NAME together with its backends. Requests it served are
then routed to the next most specific pool, if any.

` + ifVersionHelp + `

` + waitHelp,
		Example: `  lbctl pool delete web
  # Only if it is still as last seen, and wait until no data plane routes to it:
  lbctl pool delete web --if-version 7 --wait`,
		Aliases: []string{"rm"},
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			req := &lbv1.DeletePoolRequest{Name: name, ExpectedVersion: change.expected()}
			return mutate(a, cmd, name, &change,
				func(ctx context.Context, c lbv1.AdminServiceClient) (*lbv1.DeletePoolResponse, error) {
					return c.DeletePool(ctx, req)
				},
				func(w io.Writer, resp *lbv1.DeletePoolResponse) error {
					return mutationLine(w, name, "deleted", resp.GetVersion())
				})
		},
	}
	change.register(cmd, true)
	return cmd
}
