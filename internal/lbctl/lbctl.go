package lbctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Version is the version of lbctl, printed by "lbctl version". Release
// builds set it with -ldflags "-X github.com/lb-project/lb/internal/lbctl.Version=...".
var Version = "dev"

// DefaultControlPlane is the control plane address used when neither
// --controlplane nor the environment variable named by EnvControlPlane is set.
const DefaultControlPlane = "127.0.0.1:7400"

// EnvControlPlane is the environment variable that sets the control plane
// address; the --controlplane flag takes precedence over it.
const EnvControlPlane = "LBCTL_CONTROLPLANE"

// EnvToken is the environment variable that sets the bearer token when
// --token is not given.
const EnvToken = "LBCTL_TOKEN"

// EnvTLSCA is the environment variable that sets the control plane's CA
// file when --tls-ca is not given.
const EnvTLSCA = "LBCTL_TLS_CA"

// DefaultTimeout is the default limit on each call to the control plane.
const DefaultTimeout = 10 * time.Second

// Exit codes returned by Main.
const (
	// ExitOK means the command succeeded.
	ExitOK = 0
	// ExitError means the command failed, locally or at the control plane.
	ExitError = 1
	// ExitUsage means the command line was wrong: an unknown command or
	// flag, a wrong number of arguments or a malformed value.
	ExitUsage = 2
)

// Output formats accepted by -o/--output.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// Main runs lbctl with args (without the program name), writing results to
// stdout and errors to stderr, and returns the process exit code (ExitOK,
// ExitError or ExitUsage). The control plane address is read from the
// environment variable named by EnvControlPlane when --controlplane is not
// given. Cancelling ctx aborts a call in progress.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, os.Getenv, stdout, stderr)
}

// run is Main with the environment lookup injected, for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return (&app{stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now}).main(ctx, args)
}

// main runs lbctl with args and returns the exit code.
func (a *app) main(ctx context.Context, args []string) int {
	stdout, stderr := a.stdout, a.stderr
	root := a.newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "lbctl: %s\n", oneLine(a.describe(err)))
	var ue *usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitError
}

// app holds the global options and streams of one lbctl invocation.
type app struct {
	stdout, stderr io.Writer
	// stdin is read by "apply -f -"; os.Stdin when nil.
	stdin  io.Reader
	getenv func(string) string
	// now is the clock, used for ages such as "3m12s ago"; time.Now when
	// nil.
	now func() time.Time

	// Global flags.
	controlPlaneFlag string
	output           string
	timeout          time.Duration

	// controlPlane is the resolved control plane address.
	controlPlane string
	// token is the bearer token (--token or LBCTL_TOKEN); tlsCA the CA file
	// of a TLS control plane (--tls-ca or LBCTL_TLS_CA).
	token, tlsCA string
}

// usageError is an error in the command line. It is reported with a pointer
// to the help of the command it concerns and exit code ExitUsage.
type usageError struct {
	cmdPath string
	err     error
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%v; see '%s --help'", e.err, e.cmdPath)
}

func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError for cmd with a formatted message.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmdPath: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// exactArgs is cobra.ExactArgs with a message that names the arguments and
// points to the command's help.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		if len(names) == 0 {
			return usagef(cmd, "takes no arguments, received %d", len(args))
		}
		noun := "arguments"
		if len(names) == 1 {
			noun = "argument"
		}
		return usagef(cmd, "requires exactly %d %s (%s), received %d",
			len(names), noun, strings.Join(names, " "), len(args))
	}
}

// groupRun is the RunE of a command that only groups subcommands: without
// arguments it prints its help, otherwise it reports an unknown command.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return &usageError{cmdPath: cmd.CommandPath(), err: errors.New(msg)}
}

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "lbctl",
		Short: "Operate the load balancer's control plane",
		Long: `lbctl manages the pools and backends of the load balancer through its
control plane (lb-controlplane).

A pool is a named group of backends with the hosts and path prefix that route
to it. Every change is committed by the control plane as a new configuration
version, which lbctl prints, and then pushed to the data planes; "lbctl fleet"
shows which version each data plane has applied, and "lbctl wait" (or --wait
on a change) waits until all have. "lbctl export" writes every pool as a
YAML document, and "lbctl apply" makes the pools match such a document.

The control plane address is taken from --controlplane, else from the
` + EnvControlPlane + ` environment variable, else ` + DefaultControlPlane + `.`,
		Example: `  lbctl pool create web --host www.example.com --backend 10.0.0.5:8080
  lbctl pool create api --algorithm least-request --health-check http:/healthz --health-interval 2s --retries 3 --backend 10.0.0.5:8080 --backend 10.0.0.6:8080
  lbctl pool list
  lbctl add-backend --pool web 10.0.0.6:8080 --weight 2
  lbctl drain-backend --pool api 10.0.0.5:8080 --wait
  lbctl set-weight --pool web 10.0.0.6:8080 5 --if-version 7
  lbctl fleet
  lbctl wait --version 12
  lbctl export -f lb.yaml
  lbctl apply -f lb.yaml --dry-run
  LBCTL_CONTROLPLANE=cp.internal:7400 lbctl pool get web -o json`,
		Args:              cobra.ArbitraryArgs,
		RunE:              groupRun,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: a.resolveGlobals,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmdPath: cmd.CommandPath(), err: err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.controlPlaneFlag, "controlplane", DefaultControlPlane,
		"control plane address HOST:PORT (env "+EnvControlPlane+")")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format: table or json")
	pf.DurationVar(&a.timeout, "timeout", DefaultTimeout, "limit on each call to the control plane")
	pf.StringVar(&a.token, "token", "", "bearer token for a control plane with --tokens-file (env "+EnvToken+")")
	pf.StringVar(&a.tlsCA, "tls-ca", "", "CA file (PEM) to verify a TLS control plane (env "+EnvTLSCA+")")

	root.AddCommand(
		a.newPoolCmd(),
		a.newAddBackendCmd(),
		a.newRemoveBackendCmd(),
		a.newSetWeightCmd(),
		a.newDrainBackendCmd(),
		a.newUndrainBackendCmd(),
		a.newFleetCmd(),
		a.newWaitCmd(),
		a.newExportCmd(),
		a.newApplyCmd(),
		a.newVersionCmd(),
	)
	return root
}

// resolveGlobals validates the global flags and resolves the control plane
// address: the flag wins over the environment, which wins over the default.
func (a *app) resolveGlobals(cmd *cobra.Command, _ []string) error {
	switch a.output {
	case outputTable, outputJSON:
	default:
		return usagef(cmd, "invalid --output %q: must be %q or %q", a.output, outputTable, outputJSON)
	}
	if a.timeout <= 0 {
		return usagef(cmd, "invalid --timeout %s: must be positive", a.timeout)
	}
	a.controlPlane = DefaultControlPlane
	if env := a.getenv(EnvControlPlane); env != "" {
		a.controlPlane = env
	}
	if cmd.Flags().Changed("controlplane") {
		a.controlPlane = a.controlPlaneFlag
	}
	if strings.TrimSpace(a.controlPlane) == "" {
		return usagef(cmd, "the control plane address is empty; set --controlplane or %s", EnvControlPlane)
	}
	if !cmd.Flags().Changed("token") {
		a.token = a.getenv(EnvToken)
	}
	if !cmd.Flags().Changed("tls-ca") {
		a.tlsCA = a.getenv(EnvTLSCA)
	}
	return nil
}

func (a *app) newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of lbctl",
		Long: `Print the version of lbctl itself. It does not contact the control plane.
With -o json it prints {"version": "..."}.`,
		Example: `  lbctl version
  lbctl version -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.output == outputJSON {
				_, err := fmt.Fprintf(a.stdout, "{\n  \"version\": %q\n}\n", Version)
				return err
			}
			_, err := fmt.Fprintf(a.stdout, "lbctl %s\n", Version)
			return err
		},
	}
}

// poolFlag registers the required --pool flag on cmd.
func poolFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "pool", "", "name of the pool (required)")
}

// requirePool reports a usage error when --pool was not given.
func requirePool(cmd *cobra.Command, pool string) error {
	if !cmd.Flags().Changed("pool") || pool == "" {
		return usagef(cmd, "--pool is required")
	}
	return nil
}

// oneLine joins the lines of s with "; " and trims it, so that an error
// always prints on one line.
func oneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	out := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}
