package coalesce

import "time"

// SetCloseLinger changes how long Close waits for unread bytes, for tests
// whose peer never reads; it returns a function restoring the previous value.
func SetCloseLinger(d time.Duration) (restore func()) {
	prev := closeLinger
	closeLinger = d
	return func() { closeLinger = prev }
}
