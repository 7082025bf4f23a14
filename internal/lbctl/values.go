package lbctl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	lbv1 "github.com/lb-project/lb/api/lb/v1"
)

// parseWeight parses a backend weight: a non-negative whole number that fits
// in 32 bits. The range the control plane accepts (1 to 10000) is checked by
// the control plane, which names the field in its error.
func parseWeight(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err == nil {
		return uint32(n), nil
	}
	if strings.HasPrefix(s, "-") {
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return 0, fmt.Errorf("weight %s is negative; it must be a whole number from 1 to 10000", s)
		}
	}
	var ne *strconv.NumError
	if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
		return 0, fmt.Errorf("weight %s is too large; it must be a whole number from 1 to 10000", s)
	}
	return 0, fmt.Errorf("weight %q is not a whole number; it must be a whole number from 1 to 10000", s)
}

// weightValue is a pflag.Value holding a weight, so that a malformed
// --weight is reported clearly while parsing flags.
type weightValue uint32

var _ pflag.Value = (*weightValue)(nil)

func (w *weightValue) String() string { return strconv.FormatUint(uint64(*w), 10) }

func (w *weightValue) Set(s string) error {
	n, err := parseWeight(s)
	if err != nil {
		return err
	}
	*w = weightValue(n)
	return nil
}

func (w *weightValue) Type() string { return "uint32" }

// defaultWeight is the weight of a backend given without one.
const defaultWeight = 1

// parseBackend parses a --backend value, HOST:PORT[=WEIGHT]. The weight
// defaults to defaultWeight. The address itself is checked by the control
// plane.
func parseBackend(s string) (*lbv1.Backend, error) {
	addr, w, hasWeight := strings.Cut(s, "=")
	if addr == "" {
		return nil, fmt.Errorf("invalid --backend %q: missing HOST:PORT (expected HOST:PORT[=WEIGHT])", s)
	}
	b := &lbv1.Backend{Address: addr, Weight: defaultWeight}
	if hasWeight {
		n, err := parseWeight(w)
		if err != nil {
			return nil, fmt.Errorf("invalid --backend %q: %w", s, err)
		}
		b.Weight = n
	}
	return b, nil
}
