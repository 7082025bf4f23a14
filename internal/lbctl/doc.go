// Package lbctl implements lbctl, the operator command line for the load
// balancer's control plane.
//
// lbctl talks to the control plane's lb.v1.AdminService over gRPC. It can
// create, list, show, update and delete pools (with their load balancing,
// health check, outlier detection, retry and timeout settings), and add,
// remove, reweigh, drain and undrain the backends of a pool. It lists the
// connected data planes with the configuration version each has applied
// (fleet) and waits until all have applied a version (wait, or --wait on a
// change); --if-version makes a change only if the pool has not changed
// since. export writes every pool as a YAML document and apply makes the
// pools match one (creating, updating and deleting pools, each change
// guarded by the version it was planned against). Every command prints a
// table for people by default, or the response message as JSON (-o json)
// for automation.
//
// The command line is built with github.com/spf13/cobra. Its whole behaviour
// is reachable through [Main], which takes the arguments, the output streams
// and a context and returns the process exit code, so the command can be run
// and tested in-process:
//
//	os.Exit(lbctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
//
// Exit codes are [ExitOK] on success, [ExitError] when a command failed
// (including errors reported by the control plane) and [ExitUsage] when the
// command line itself is wrong (unknown command or flag, wrong number of
// arguments, a malformed value). Errors are written to stderr as one line
// prefixed with "lbctl: ".
package lbctl
