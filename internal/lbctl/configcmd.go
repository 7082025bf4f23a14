package lbctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// configExample is the sample document of the help of export and apply.
const configExample = `pools:
  - name: web
    hosts: [www.example.com]
    backends:
      - {address: 10.0.0.5:8080, weight: 2}
      - {address: 10.0.0.6:8080}
    load_balancing: {algorithm: ALGORITHM_LEAST_REQUEST}
    health_check: {type: HEALTH_CHECK_TYPE_HTTP, path: /healthz, interval: 2s}`

func (a *app) newExportCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the configuration of every pool as YAML",
		Long: `Write the configuration of every pool as a YAML document that "lbctl apply"
reads back: a list of pools ordered by name, each with the fields of the
lb.v1.Pool message under their proto names (name, hosts, path_prefix,
backends, upstream, load_balancing, health_check, outlier_detection, retry,
timeouts). Fields that are not set are left out; enums are written by name
and durations as "2s". The first line is a comment naming the configuration
version the pools were read at. For example:

` + configExample + `

Output-only fields (a pool's version, upstream.client_key_set) are left out.
The control plane never returns client private keys, so a pool with a
client certificate is exported without client_key_pem; "lbctl apply" of the
file keeps the key the control plane has stored.

Without -f, or with -f -, the document is written to standard output. With
-o json it is written as JSON (without the comment), which apply reads too.`,
		Example: `  lbctl export
  lbctl export -f lb.yaml
  # Copy the pools of one control plane to another:
  lbctl export --controlplane cp-a:7400 | lbctl apply --controlplane cp-b:7400 -f -`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd.Context(), func(ctx context.Context, c lbv1.AdminServiceClient) error {
				resp, err := c.ListPools(ctx, &lbv1.ListPoolsRequest{})
				if err != nil {
					return callErr("", err)
				}
				doc, err := encodeConfig(resp.GetPools(), resp.GetVersion(), a.output == outputJSON)
				if err != nil {
					return err
				}
				if file == "" || file == "-" {
					_, err := a.stdout.Write(doc)
					return err
				}
				if err := os.WriteFile(file, doc, 0o644); err != nil {
					return fmt.Errorf("write the configuration: %w", err)
				}
				if a.output == outputJSON {
					return nil
				}
				_, err = fmt.Fprintf(a.stdout, "exported %s to %s; configuration version %d\n",
					plural(len(resp.GetPools()), "pool"), file, resp.GetVersion())
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "write the document to FILE instead of standard output")
	return cmd
}

func (a *app) newApplyCmd() *cobra.Command {
	var (
		file   string
		dryRun bool
		prune  bool
		change changeFlags
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the pools match a YAML file",
		Long: `Make the control plane's pools match FILE, a YAML document as written by
"lbctl export": a list of pools, each with the fields of the lb.v1.Pool
message under their proto names. Enums are written by name and durations as
"2s" (Go durations such as "1m30s" or "500ms" are read too); a field left
out is unset, as when the pool is created without it. For example:

` + configExample + `

lbctl reads every pool and compares it with FILE, ignoring differences that
change nothing (the order of hosts, an unset weight against weight 1, an
empty setting against an unset one). It then creates the pools FILE has and
the control plane does not, updates those that differ, replacing all their
fields with FILE's, and deletes the pools FILE does not list (unless
--prune=false), in that order, printing one line per pool:

  + pool api (create)
  ~ pool web: backends, health_check        (the fields that change)
  - pool old (delete)
  = pool same (unchanged)

followed by "N to create, M to update, K to delete". Each line of a change
made ends with the configuration version that contains it. With --dry-run
lbctl only prints this plan and changes nothing. Applying the output of
"lbctl export" changes nothing.

Every update and delete is made only if the pool is still at the version
lbctl read, so that a change someone made in between is not overwritten:
apply then stops with an error and can simply be run again. Pools are
changed one at a time; when a change fails, the ones before it stay.

The control plane never returns client private keys: a pool whose upstream
has a client_cert_pem but no client_key_pem in FILE keeps the key it has
stored. A client_key_pem in FILE is sent when the pool is created or its
upstream otherwise changes (as with a new client_cert_pem).

lbctl checks only that FILE is well formed, without unknown fields, and
that every pool has a name used once; the control plane checks the rest,
naming the field. FILE - reads standard input.

` + waitHelp + `
The version waited for is that of the last change made, or, when nothing
changed, the version read.`,
		Example: `  lbctl export -f lb.yaml
  lbctl apply -f lb.yaml --dry-run
  lbctl apply -f lb.yaml --wait
  # Create and update only, leaving pools that are not in the file:
  lbctl apply -f lb.yaml --prune=false
  cat lb.yaml | lbctl apply -f -`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef(cmd, "-f FILE is required (- reads standard input)")
			}
			if err := change.check(cmd); err != nil {
				return err
			}
			if dryRun && change.wait {
				return usagef(cmd, "--wait cannot be used with --dry-run, which changes nothing")
			}
			name, data, err := a.readInput(file)
			if err != nil {
				return err
			}
			desired, err := decodeConfig(name, data)
			if err != nil {
				return err
			}
			return a.withConn(cmd.Context(), func(c lbv1.AdminServiceClient) error {
				return a.apply(cmd.Context(), c, file, desired, prune, dryRun, &change)
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "YAML document to apply (- for standard input)")
	f.BoolVar(&dryRun, "dry-run", false, "print what would change, and change nothing")
	f.BoolVar(&prune, "prune", true, "delete the pools that are not in the file")
	change.register(cmd, false)
	return cmd
}

// readInput reads the file named by -f: standard input for "-". It returns
// the name to use in messages with the contents.
func (a *app) readInput(file string) (string, []byte, error) {
	if file == "-" {
		in := a.stdin
		if in == nil {
			in = os.Stdin
		}
		data, err := io.ReadAll(in)
		if err != nil {
			return "", nil, fmt.Errorf("read standard input: %w", err)
		}
		return "standard input", data, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", nil, fmt.Errorf("read the configuration: %w", err)
	}
	return file, data, nil
}

// applyReport is the JSON output of apply.
type applyReport struct {
	DryRun  bool            `json:"dry_run"`
	Changes []appliedChange `json:"changes"`
	Create  int             `json:"create"`
	Update  int             `json:"update"`
	Delete  int             `json:"delete"`
	// Version is the configuration version of the last change made, or the
	// version read when none was.
	Version uint64 `json:"version,string"`
}

// appliedChange is one pool of an applyReport.
type appliedChange struct {
	Pool   string   `json:"pool"`
	Action string   `json:"action"`
	Fields []string `json:"fields,omitempty"`
	// Version is the configuration version that contains the change, when
	// made.
	Version uint64 `json:"version,omitempty,string"`
}

// apply plans the changes that make the control plane's pools desired and,
// unless dryRun, makes them, printing a line for each.
func (a *app) apply(ctx context.Context, c lbv1.AdminServiceClient, file string, desired []*lbv1.Pool,
	prune, dryRun bool, ch *changeFlags,
) error {
	lctx, cancel := context.WithTimeout(ctx, a.timeout)
	list, err := c.ListPools(lctx, &lbv1.ListPoolsRequest{})
	cancel()
	if err != nil {
		return callErr("", err)
	}
	plan := planChanges(desired, list.GetPools(), prune)
	report := applyReport{DryRun: dryRun, Changes: []appliedChange{}, Version: list.GetVersion()}
	again := "nothing was changed to it; run 'lbctl apply -f " + file + "' again"
	for _, pc := range plan {
		switch pc.op {
		case opCreate:
			report.Create++
		case opUpdate:
			report.Update++
		case opDelete:
			report.Delete++
		}
		var version uint64
		if !dryRun && pc.op != opUnchanged {
			cctx, cancel := context.WithTimeout(ctx, a.timeout)
			var resp versioned
			switch pc.op {
			case opCreate:
				resp, err = c.CreatePool(cctx, pc.create)
			case opUpdate:
				resp, err = c.UpdatePool(cctx, pc.update)
			case opDelete:
				resp, err = c.DeletePool(cctx, pc.del)
			}
			cancel()
			if err != nil {
				return &rpcError{pool: pc.pool, err: err, retry: again}
			}
			version = resp.GetVersion()
			report.Version = version
		}
		report.Changes = append(report.Changes, appliedChange{Pool: pc.pool, Action: actionName(pc.op),
			Fields: pc.fields, Version: version})
		if a.output == outputJSON {
			continue
		}
		line := pc.text()
		if version != 0 {
			line += fmt.Sprintf("; configuration version %d", version)
		}
		if _, err := fmt.Fprintln(a.stdout, line); err != nil {
			return err
		}
	}
	if a.output == outputJSON {
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		if _, err := a.stdout.Write(append(b, '\n')); err != nil {
			return err
		}
	} else {
		summary := fmt.Sprintf("%d to create, %d to update, %d to delete", report.Create, report.Update, report.Delete)
		if !dryRun && report.Create+report.Update+report.Delete > 0 {
			summary += fmt.Sprintf("; configuration version %d", report.Version)
		}
		if _, err := fmt.Fprintln(a.stdout, summary); err != nil {
			return err
		}
	}
	if !ch.wait {
		return nil
	}
	wr, err := a.waitFor(ctx, c, report.Version, ch.waitTimeout)
	if err != nil {
		return err
	}
	if a.output == outputJSON {
		return nil
	}
	return waitLine(a.stdout, len(wr.GetDataPlanes()), report.Version)
}
