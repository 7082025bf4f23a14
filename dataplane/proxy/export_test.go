package proxy

import "time"

// SetWatchAfter changes how long a request waits before H1Server checks
// whether its client is still there; it returns a function restoring it.
func SetWatchAfter(d time.Duration) (restore func()) {
	prev := watchAfter
	watchAfter = d
	return func() { watchAfter = prev }
}
