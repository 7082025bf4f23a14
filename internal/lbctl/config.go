package lbctl

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"sigs.k8s.io/yaml"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// This file holds the declarative configuration of "lbctl export" and
// "lbctl apply": a document with one field, pools, a list of lb.v1.Pool
// messages in their proto JSON form with proto field names, written as
// YAML.

// docPools is the only field of a configuration document.
const docPools = "pools"

// updatableFields are the top-level Pool fields UpdatePool replaces, in
// field order: all but name and the output-only version.
var updatableFields = []string{
	"hosts", "path_prefix", "backends", "upstream", "load_balancing",
	"health_check", "outlier_detection", "retry", "timeouts",
}

// exportOptions render a pool for the document: proto field names, unset
// fields left out.
var exportOptions = protojson.MarshalOptions{UseProtoNames: true}

// exportable returns a copy of p without its output-only fields (version,
// upstream.client_key_set) and without a client private key (which the
// admin API never returns anyway).
func exportable(p *lbv1.Pool) *lbv1.Pool {
	p = proto.Clone(p).(*lbv1.Pool)
	p.Version = 0
	if u := p.GetUpstream(); u != nil {
		u.ClientKeySet = false
		u.ClientKeyPem = ""
	}
	return p
}

// sendable returns a copy of p, read from a document, to send to the
// control plane: without its output-only fields, but with its client key.
func sendable(p *lbv1.Pool) *lbv1.Pool {
	p = proto.Clone(p).(*lbv1.Pool)
	p.Version = 0
	if u := p.GetUpstream(); u != nil {
		u.ClientKeySet = false
	}
	return p
}

// sortedPools returns pools ordered by name.
func sortedPools(pools []*lbv1.Pool) []*lbv1.Pool {
	out := slices.Clone(pools)
	slices.SortStableFunc(out, func(a, b *lbv1.Pool) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}

// encodeConfig renders pools, ordered by name, as a configuration document:
// YAML with a header comment naming version, or, with asJSON, indented JSON
// (which has no comments).
func encodeConfig(pools []*lbv1.Pool, version uint64, asJSON bool) ([]byte, error) {
	pools = sortedPools(pools)
	if asJSON {
		raws := make([]json.RawMessage, 0, len(pools))
		for _, p := range pools {
			b, err := exportOptions.Marshal(exportable(p))
			if err != nil {
				return nil, fmt.Errorf("encode pool %q: %w", p.GetName(), err)
			}
			raws = append(raws, b)
		}
		out, err := json.MarshalIndent(map[string][]json.RawMessage{docPools: raws}, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode configuration: %w", err)
		}
		return append(out, '\n'), nil
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# lbctl export, configuration version %d\n", version)
	if len(pools) == 0 {
		buf.WriteString(docPools + ": []\n")
		return buf.Bytes(), nil
	}
	buf.WriteString(docPools + ":\n")
	for _, p := range pools {
		block, err := poolYAML(exportable(p))
		if err != nil {
			return nil, fmt.Errorf("encode pool %q: %w", p.GetName(), err)
		}
		// Indent the pool's mapping as an item of the list. Indenting every
		// line alike keeps block scalars (PEM) and nested lists valid.
		for i, line := range strings.Split(strings.TrimSuffix(string(block), "\n"), "\n") {
			switch {
			case i == 0:
				buf.WriteString("- ")
			case line != "":
				buf.WriteString("  ")
			}
			buf.WriteString(line)
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes(), nil
}

// poolYAML renders one pool as a YAML mapping, its top-level fields in
// field order (name first) rather than the alphabetical order of
// yaml.JSONToYAML: each field is converted on its own and the mappings are
// joined.
func poolYAML(p *lbv1.Pool) ([]byte, error) {
	b, err := exportOptions.Marshal(p)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, err
	}
	var names []string
	fds := p.ProtoReflect().Descriptor().Fields()
	for i := range fds.Len() {
		if name := string(fds.Get(i).Name()); fields[name] != nil {
			names = append(names, name)
		}
	}
	if len(names) != len(fields) {
		return nil, fmt.Errorf("unexpected fields in %s", b)
	}
	var out []byte
	for _, name := range names {
		one, err := json.Marshal(map[string]json.RawMessage{name: fields[name]})
		if err != nil {
			return nil, err
		}
		y, err := yaml.JSONToYAML(one)
		if err != nil {
			return nil, err
		}
		out = append(out, y...)
	}
	return out, nil
}

// decodeConfig parses a configuration document read from the file called
// name: YAML (or JSON) with a pools list. Unknown fields are errors naming
// them; each pool must have a name, and names must be unique. Everything
// else is left to the control plane.
func decodeConfig(name string, data []byte) ([]*lbv1.Pool, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	// Strict: a key given twice is an error, not silently the last one.
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fail("%v", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(j, &doc); err != nil || doc == nil {
		return nil, fail("not a configuration document: expected a mapping with a %q list, as written by 'lbctl export'", docPools)
	}
	for _, k := range sortedKeys(doc) {
		if k != docPools {
			return nil, fail("unknown field %q at the top level%s; the document has only %q", k, suggest(k, []string{docPools}), docPools)
		}
	}
	raw, ok := doc[docPools]
	if !ok || string(raw) == "null" {
		return nil, fail("no %q list; write \"%s: []\" for no pools at all", docPools, docPools)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fail("%q must be a list of pools", docPools)
	}
	pools := make([]*lbv1.Pool, 0, len(items))
	md := (&lbv1.Pool{}).ProtoReflect().Descriptor()
	for i, item := range items {
		at := fmt.Sprintf("%s[%d]", docPools, i)
		var v any
		dec := json.NewDecoder(bytes.NewReader(item))
		dec.UseNumber() // keep integers exact
		if err := dec.Decode(&v); err != nil {
			return nil, fail("%s: %v", at, err)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fail("%s is not a pool (a mapping of its fields)", at)
		}
		where := at
		if s, ok := obj["name"].(string); ok && s != "" {
			where = fmt.Sprintf("%s (pool %q)", at, s)
		}
		if path, known := prepare(obj, md, ""); path != "" {
			return nil, fail("%s: unknown field %q%s", where, path, suggest(path[strings.LastIndex(path, ".")+1:], known))
		}
		item, err := json.Marshal(obj)
		if err != nil {
			return nil, fail("%s: %v", at, err)
		}
		p := &lbv1.Pool{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(item, p); err != nil {
			return nil, fail("%s: %s", where, protoErrText(err))
		}
		pools = append(pools, p)
	}
	seen := make(map[string]int, len(pools))
	for i, p := range pools {
		if p.GetName() == "" {
			return nil, fail("%s[%d]: name is required", docPools, i)
		}
		if j, dup := seen[p.GetName()]; dup {
			return nil, fail("pool %q is listed twice (%s[%d] and %s[%d]); pool names must be unique",
				p.GetName(), docPools, j, docPools, i)
		}
		seen[p.GetName()] = i
	}
	return pools, nil
}

// prepare checks obj, a decoded JSON object of message md, for fields md
// does not have, and rewrites the durations in it that protojson does not
// take but Go does ("1m", "500ms") as seconds ("60s", "0.500s"). It returns
// the path (below path, as "health_check.pth") of the first unknown field,
// with the names of the fields of the message it was looked up in; "" when
// all are known. Values of the wrong type are left to protojson.
func prepare(obj map[string]any, md protoreflect.MessageDescriptor, path string) (string, []string) {
	fds := md.Fields()
	for _, k := range sortedKeys(obj) {
		fd := fds.ByName(protoreflect.Name(k))
		if fd == nil {
			fd = fds.ByJSONName(k)
		}
		if fd == nil {
			known := make([]string, fds.Len())
			for i := range fds.Len() {
				known[i] = string(fds.Get(i).Name())
			}
			return path + k, known
		}
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			continue
		}
		sub := path + string(fd.Name())
		if fd.Message().FullName() == "google.protobuf.Duration" {
			if fd.IsList() {
				if list, ok := obj[k].([]any); ok {
					for i, e := range list {
						list[i] = goDuration(e)
					}
				}
			} else {
				obj[k] = goDuration(obj[k])
			}
			continue
		}
		if strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
			continue // other well-known types have their own JSON forms
		}
		elems := []any{obj[k]}
		if fd.IsList() {
			elems, _ = obj[k].([]any)
		}
		for i, e := range elems {
			eobj, ok := e.(map[string]any)
			if !ok {
				continue
			}
			at := sub
			if fd.IsList() {
				at = fmt.Sprintf("%s[%d]", sub, i)
			}
			if p, known := prepare(eobj, fd.Message(), at+"."); p != "" {
				return p, known
			}
		}
	}
	return "", nil
}

// goDuration returns v, the JSON value of a duration, as seconds when it is
// a Go duration protojson does not take, else unchanged.
func goDuration(v any) any {
	s, ok := v.(string)
	if !ok {
		return v
	}
	if err := protojson.Unmarshal([]byte(strconv.Quote(s)), &durationpb.Duration{}); err == nil {
		return v
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return v
	}
	b, err := protojson.Marshal(durationpb.New(d))
	if err != nil {
		return v
	}
	var out string
	if json.Unmarshal(b, &out) != nil {
		return v
	}
	return out
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// suggest returns ` (did you mean "x"?)` for the known name closest to
// name, when one is close enough to be a likely typo, else "".
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// protoErrPrefix is the start of a protojson error: "proto:" (followed by a
// space that is sometimes a no-break space) and the position in the JSON,
// which is lbctl's conversion of the YAML and means nothing to the user.
var protoErrPrefix = regexp.MustCompile(`^proto:[\s\x{00a0}]*(syntax error[\s\x{00a0}]*)?(\(line \d+:\d+\):[\s\x{00a0}]*)?`)

// protoErrText returns the message of a protojson error without its prefix.
func protoErrText(err error) string {
	return protoErrPrefix.ReplaceAllString(err.Error(), "")
}

// Kinds of change of a plan, as their line prefixes.
const (
	opCreate    = '+'
	opUpdate    = '~'
	opDelete    = '-'
	opUnchanged = '='
)

// poolChange is one step of a plan: the pool, what happens to it and the
// request that does it.
type poolChange struct {
	op   byte
	pool string
	// fields are the top-level fields an update changes.
	fields []string
	create *lbv1.CreatePoolRequest
	update *lbv1.UpdatePoolRequest
	del    *lbv1.DeletePoolRequest
}

// actionName is the name of op in JSON output.
func actionName(op byte) string {
	switch op {
	case opCreate:
		return "create"
	case opUpdate:
		return "update"
	case opDelete:
		return "delete"
	default:
		return "unchanged"
	}
}

// text is the line of the change, without a version.
func (ch poolChange) text() string {
	switch ch.op {
	case opCreate:
		return fmt.Sprintf("+ pool %s (create)", ch.pool)
	case opUpdate:
		return fmt.Sprintf("~ pool %s: %s", ch.pool, strings.Join(ch.fields, ", "))
	case opDelete:
		return fmt.Sprintf("- pool %s (delete)", ch.pool)
	default:
		return fmt.Sprintf("= pool %s (unchanged)", ch.pool)
	}
}

// planChanges compares the pools of a document with the pools the control
// plane has and returns what makes them equal, in the order it is to be
// done: creates, updates, deletes (with prune; without, pools missing from
// the document are left alone), each by pool name, then the unchanged
// pools. Updates and deletes expect the version read in current.
func planChanges(desired, current []*lbv1.Pool, prune bool) []poolChange {
	have := make(map[string]*lbv1.Pool, len(current))
	for _, p := range current {
		have[p.GetName()] = p
	}
	want := make(map[string]bool, len(desired))
	var creates, updates, deletes, same []poolChange
	for _, d := range sortedPools(desired) {
		want[d.GetName()] = true
		send := sendable(d)
		c, ok := have[d.GetName()]
		if !ok {
			creates = append(creates, poolChange{op: opCreate, pool: d.GetName(),
				create: &lbv1.CreatePoolRequest{Pool: send}})
			continue
		}
		// A client certificate without its key keeps the stored key,
		// which the admin API never returns.
		keep := d.GetUpstream().GetClientCertPem() != "" && d.GetUpstream().GetClientKeyPem() == "" &&
			c.GetUpstream().GetClientKeySet()
		nd := normalized(d, d.GetUpstream().GetClientKeyPem() != "" || keep)
		nc := normalized(c, c.GetUpstream().GetClientKeySet())
		if proto.Equal(nd, nc) {
			same = append(same, poolChange{op: opUnchanged, pool: d.GetName()})
			continue
		}
		updates = append(updates, poolChange{op: opUpdate, pool: d.GetName(), fields: changedFields(nd, nc),
			update: &lbv1.UpdatePoolRequest{Pool: send, UpdateMask: &fieldmaskpb.FieldMask{Paths: updateMask(keep)},
				ExpectedVersion: c.GetVersion()}})
	}
	if prune {
		for _, c := range sortedPools(current) {
			if !want[c.GetName()] {
				deletes = append(deletes, poolChange{op: opDelete, pool: c.GetName(),
					del: &lbv1.DeletePoolRequest{Name: c.GetName(), ExpectedVersion: c.GetVersion()}})
			}
		}
	}
	return slices.Concat(creates, updates, deletes, same)
}

// updateMask is the mask of an update that replaces every updatable field;
// with keepKey, upstream is named field by field without client_key_pem, so
// that the stored client key stays.
func updateMask(keepKey bool) []string {
	if !keepKey {
		return slices.Clone(updatableFields)
	}
	var paths []string
	for _, f := range updatableFields {
		if f != "upstream" {
			paths = append(paths, f)
			continue
		}
		fds := (&lbv1.Upstream{}).ProtoReflect().Descriptor().Fields()
		for i := range fds.Len() {
			switch name := fds.Get(i).Name(); name {
			case "client_key_pem", "client_key_set":
			default:
				paths = append(paths, "upstream."+string(name))
			}
		}
	}
	return paths
}

// normalized returns a copy of p in which what the control plane treats as
// the same is written the same: no version; hosts in lower case without a
// trailing dot, sorted; path prefix "/" as unset; backend addresses as
// normalAddress writes them; weight 0 as 1; round robin as the unset
// algorithm; empty messages and zero durations as unset.
// The client key is left out (it is never returned); keySet says whether
// one is, or will be, stored.
func normalized(p *lbv1.Pool, keySet bool) *lbv1.Pool {
	n := proto.Clone(p).(*lbv1.Pool)
	n.Version = 0
	for i, h := range n.Hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
			h = ip.String()
		}
		n.Hosts[i] = h
	}
	slices.Sort(n.Hosts)
	if n.PathPrefix == "/" {
		n.PathPrefix = ""
	}
	for _, b := range n.Backends {
		b.Address = normalAddress(b.GetAddress())
		if b.GetWeight() == 0 {
			b.Weight = defaultWeight
		}
	}
	if u := n.Upstream; u != nil {
		u.ClientKeyPem, u.ClientKeySet = "", false
	}
	if lb := n.LoadBalancing; lb != nil && lb.Algorithm == lbv1.Algorithm_ALGORITHM_ROUND_ROBIN {
		lb.Algorithm = lbv1.Algorithm_ALGORITHM_UNSPECIFIED
	}
	pruneEmpty(n.ProtoReflect())
	if keySet {
		if n.Upstream == nil {
			n.Upstream = &lbv1.Upstream{}
		}
		n.Upstream.ClientKeySet = true
	}
	return n
}

// normalAddress writes a backend address as the control plane stores it:
// the host in lower case without a trailing dot, an IP address in its
// canonical form, the port without leading zeros. An address it cannot
// parse is returned unchanged (the control plane refuses it).
func normalAddress(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return addr
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10))
}

// pruneEmpty clears the singular message fields of m, at any depth, that
// are empty.
func pruneEmpty(m protoreflect.Message) {
	var empty []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() != protoreflect.MessageKind || fd.IsMap():
		case fd.IsList():
			for i := range v.List().Len() {
				pruneEmpty(v.List().Get(i).Message())
			}
		default:
			pruneEmpty(v.Message())
			if proto.Size(v.Message().Interface()) == 0 {
				empty = append(empty, fd)
			}
		}
		return true
	})
	for _, fd := range empty {
		m.Clear(fd)
	}
}

// changedFields returns the updatable top-level fields in which a and b
// differ.
func changedFields(a, b *lbv1.Pool) []string {
	var out []string
	fds := a.ProtoReflect().Descriptor().Fields()
	for _, name := range updatableFields {
		fd := fds.ByName(protoreflect.Name(name))
		if !proto.Equal(onlyField(a, fd), onlyField(b, fd)) {
			out = append(out, name)
		}
	}
	return out
}

// onlyField returns a copy of p with every field but fd cleared.
func onlyField(p *lbv1.Pool, fd protoreflect.FieldDescriptor) *lbv1.Pool {
	c := proto.Clone(p).(*lbv1.Pool)
	m := c.ProtoReflect()
	var other []protoreflect.FieldDescriptor
	m.Range(func(f protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if f != fd {
			other = append(other, f)
		}
		return true
	})
	for _, f := range other {
		m.Clear(f)
	}
	return c
}
