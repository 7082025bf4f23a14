package lbctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// jsonOptions renders responses for -o json: every field is present, with
// its proto JSON name, so automation can rely on them.
var jsonOptions = protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}

// printJSON writes m as JSON followed by a newline.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode response as JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// emit writes resp as JSON in JSON mode, or calls table otherwise.
func (a *app) emit(resp proto.Message, table func(w io.Writer) error) error {
	if a.output == outputJSON {
		return printJSON(a.stdout, resp)
	}
	return table(a.stdout)
}

// hostsText renders the hosts of a pool: comma-joined, "*" when any host.
func hostsText(hosts []string) string {
	if len(hosts) == 0 {
		return "*"
	}
	return strings.Join(hosts, ",")
}

// pathText renders a path prefix: "/" when empty.
func pathText(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// writePoolList writes the table of "pool list".
func writePoolList(w io.Writer, pools []*lbv1.Pool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHOSTS\tPATH\tBACKENDS\tVERSION")
	for _, p := range pools {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n",
			p.GetName(), hostsText(p.GetHosts()), pathText(p.GetPathPrefix()), len(p.GetBackends()), p.GetVersion())
	}
	return tw.Flush()
}

// writePool writes the output of "pool get": a header block, then the
// backends.
func writePool(w io.Writer, p *lbv1.Pool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", p.GetName())
	fmt.Fprintf(tw, "Hosts:\t%s\n", hostsText(p.GetHosts()))
	fmt.Fprintf(tw, "Path prefix:\t%s\n", pathText(p.GetPathPrefix()))
	fmt.Fprintf(tw, "Version:\t%d\n", p.GetVersion())
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(p.GetBackends()) == 0 {
		_, err := fmt.Fprintf(w, "No backends; add one with: lbctl add-backend --pool %s HOST:PORT\n", p.GetName())
		return err
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tWEIGHT")
	for _, b := range p.GetBackends() {
		fmt.Fprintf(tw, "%s\t%d\n", b.GetAddress(), b.GetWeight())
	}
	return tw.Flush()
}

// mutationLine writes the one-line summary of a change to pool.
func mutationLine(w io.Writer, pool, what string, version uint64) error {
	_, err := fmt.Fprintf(w, "pool %q: %s; configuration version %d\n", pool, what, version)
	return err
}

// plural returns "1 backend", "2 backends".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
