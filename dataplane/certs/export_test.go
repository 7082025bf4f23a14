package certs

// Poll is one tick of Run: it calls Reload if the files changed since the last
// load, and reports whether it did.
func (s *Store) Poll() bool { return s.poll() }
