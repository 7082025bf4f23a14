package upstream

import "time"

// SetQuietCheckAfter changes how long a connection idles before Get checks
// it, for tests that close idle connections at once; it returns a function
// restoring the previous value.
func SetQuietCheckAfter(d time.Duration) (restore func()) {
	prev := quietCheckAfter
	quietCheckAfter = d
	return func() { quietCheckAfter = prev }
}

// SetClientCheckAfter changes how long an exchange waits before it watches
// the client, for tests that cancel soon; it returns a function restoring
// the previous value.
func SetClientCheckAfter(d time.Duration) (restore func()) {
	prev := clientCheckAfter
	clientCheckAfter = d
	return func() { clientCheckAfter = prev }
}
