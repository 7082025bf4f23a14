// Package logging builds the hclog loggers of the lb binaries from their
// --log-level and --log-format flags.
package logging

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Levels lists the accepted --log-level values.
const Levels = "trace|debug|info|warn|error"

// Formats lists the accepted --log-format values.
const Formats = "text|json"

// New returns the root logger named name, writing to w at the given level
// (one of Levels) in the given format (one of Formats).
func New(name, level, format string, w io.Writer) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel || strings.EqualFold(level, "off") {
		return nil, fmt.Errorf("invalid --log-level %q: want one of %s", level, Levels)
	}
	var json bool
	switch format {
	case "text":
	case "json":
		json = true
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want one of %s", format, Formats)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           lvl,
		Output:          w,
		JSONFormat:      json,
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z07:00",
	}), nil
}
