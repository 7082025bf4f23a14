package lbctl

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rpcError is an error returned by a call to the control plane, together
// with the pool the call concerned, used to suggest a next command.
type rpcError struct {
	pool string
	err  error
	// waitVersion is the version waited for when the call was
	// WaitForVersion, else 0.
	waitVersion uint64
	// retry, when set, is what to do after a change refused because the
	// pool changed since it was read, instead of reading the pool again.
	retry string
}

func (e *rpcError) Error() string { return e.err.Error() }

func (e *rpcError) Unwrap() error { return e.err }

// GRPCStatus lets status.FromError see through the wrapper.
func (e *rpcError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// callErr wraps a non-nil error of a call concerning pool.
func callErr(pool string, err error) error {
	if err == nil {
		return nil
	}
	return &rpcError{pool: pool, err: err}
}

// describe turns err into the message lbctl prints, without the "lbctl: "
// prefix. Errors from the control plane are explained by their status code
// and details; other errors are printed as they are.
func (a *app) describe(err error) string {
	var re *rpcError
	if !errors.As(err, &re) {
		return err.Error()
	}
	st, ok := status.FromError(re.err)
	if !ok {
		return re.err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		if ri := resourceInfo(st); ri != nil {
			switch ri.GetResourceType() {
			case "pool":
				name := ri.GetResourceName()
				return fmt.Sprintf("pool %q does not exist; create it with: lbctl pool create %s", name, name)
			case "backend":
				pool := orUnknown(re.pool)
				return fmt.Sprintf("backend %s is not in pool %q; see its backends with: lbctl pool get %s",
					ri.GetResourceName(), pool, pool)
			}
		}
		return "not found: " + msg
	case codes.AlreadyExists:
		if ri := resourceInfo(st); ri != nil {
			switch ri.GetResourceType() {
			case "pool":
				name := ri.GetResourceName()
				return fmt.Sprintf("pool %q already exists; see it with: lbctl pool get %s, or change it with: lbctl pool update %s",
					name, name, name)
			case "backend":
				pool := orUnknown(re.pool)
				return fmt.Sprintf("backend %s is already in pool %q; change its weight with: lbctl set-weight --pool %s %s WEIGHT",
					ri.GetResourceName(), pool, pool, ri.GetResourceName())
			}
		}
		return "already exists: " + msg
	case codes.InvalidArgument:
		if msg != "" {
			return msg
		}
		if br := badRequest(st); br != nil {
			var parts []string
			for _, v := range br.GetFieldViolations() {
				parts = append(parts, v.GetField()+": "+v.GetDescription())
			}
			if len(parts) > 0 {
				return strings.Join(parts, "; ")
			}
		}
		return "the control plane refused the request as invalid"
	case codes.Unavailable:
		return a.unreachable(msg)
	case codes.DeadlineExceeded:
		if re.waitVersion != 0 {
			// The control plane's own answer, naming the laggards.
			if msg != "" {
				return msg
			}
			return fmt.Sprintf("not every data plane applied version %d in time", re.waitVersion)
		}
		return a.unreachable(fmt.Sprintf("no answer within %s (raise --timeout if it is only slow)", a.timeout))
	case codes.FailedPrecondition:
		if s := staleText(st, re.pool, re.retry); s != "" {
			return s
		}
		if msg != "" {
			return msg
		}
		return "the control plane refused the request: " + st.Code().String()
	case codes.Canceled:
		return "interrupted: " + msg
	case codes.Unimplemented:
		return fmt.Sprintf("the control plane at %s does not support this command (%s); is it older than lbctl?", a.controlPlane, msg)
	default:
		return fmt.Sprintf("the control plane failed the request: %s (%s)", msg, st.Code())
	}
}

// unreachable is the message for a control plane that cannot be reached.
func (a *app) unreachable(reason string) string {
	return fmt.Sprintf("cannot reach the control plane at %s: %s; is lb-controlplane running? (set --controlplane or %s)",
		a.controlPlane, reason, EnvControlPlane)
}

func orUnknown(pool string) string {
	if pool == "" {
		return "?"
	}
	return pool
}

// resourceInfo returns the first google.rpc.ResourceInfo detail of st.
func resourceInfo(st *status.Status) *errdetails.ResourceInfo {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.ResourceInfo); ok {
			return ri
		}
	}
	return nil
}

// staleMessage matches the control plane's message for a change refused
// because the pool changed since the expected version.
var staleMessage = regexp.MustCompile(`^pool "([^"]+)" changed since version ([0-9]+) \(it is now at version ([0-9]+)\)`)

// staleText explains a FAILED_PRECONDITION refusing a change made with
// --if-version to a pool that changed since, from its
// google.rpc.PreconditionFailure detail or else its message; pool is the
// pool the call concerned, retry what to do next when not "run 'lbctl pool
// get NAME' and retry". It returns "" when st is not such an error.
func staleText(st *status.Status, pool, retry string) string {
	text := func(name string, expected, current uint64) string {
		next := retry
		if next == "" {
			next = fmt.Sprintf("run 'lbctl pool get %s' and retry", name)
		}
		return fmt.Sprintf("pool %q changed since version %d (it is now at version %d); %s",
			name, expected, current, next)
	}
	for _, d := range st.Details() {
		pf, ok := d.(*errdetails.PreconditionFailure)
		if !ok {
			continue
		}
		for _, v := range pf.GetViolations() {
			if v.GetType() != "VERSION" {
				continue
			}
			name, ok := strings.CutPrefix(v.GetSubject(), "pool/")
			if !ok || name == "" {
				name = pool
			}
			var expected, current uint64
			if n, _ := fmt.Sscanf(v.GetDescription(), "expected version %d, found %d", &expected, &current); n == 2 && name != "" {
				return text(name, expected, current)
			}
		}
	}
	if m := staleMessage.FindStringSubmatch(st.Message()); m != nil {
		expected, err1 := strconv.ParseUint(m[2], 10, 64)
		current, err2 := strconv.ParseUint(m[3], 10, 64)
		if err1 == nil && err2 == nil {
			return text(m[1], expected, current)
		}
	}
	return ""
}

// badRequest returns the first google.rpc.BadRequest detail of st.
func badRequest(st *status.Status) *errdetails.BadRequest {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			return br
		}
	}
	return nil
}
