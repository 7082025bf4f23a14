package certs

import (
	"context"
	"os"
	"time"
)

// DefaultPollInterval is Run's interval when it is given none.
const DefaultPollInterval = 2 * time.Second

// Run watches the certificate files until ctx is done. Every interval
// (DefaultPollInterval if interval <= 0) it re-scans Dir and stats every file,
// and calls Reload when the set of files or any file's modification time,
// size, mode or identity (for example a new file renamed into place) differs
// from what the last Reload, or New, read. A Reload that fails is retried only
// once the files change again, so a broken file is logged once, not on every
// tick.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() == nil {
			s.poll()
		}
	}
}

// poll calls Reload if the files differ from what the last load read, and
// reports whether it did.
func (s *Store) poll() bool {
	snap := s.snapshot()
	s.mu.Lock()
	same := snap.equal(s.seen)
	s.mu.Unlock()
	if same {
		return false
	}
	// Reload logs its outcome.
	_, _ = s.Reload()
	return true
}

// snapshot describes the configured files as they are now.
func (s *Store) snapshot() snapshot {
	pairs, _, err := s.sources()
	return statAll(pairs, err)
}

// snapshot is the state of the certificate files at one moment.
type snapshot struct {
	dirErr string      // non-empty when Dir could not be listed
	files  []fileState // in load order; cert then key of each pair
}

// fileState is one file's os.Stat result.
type fileState struct {
	path string
	info os.FileInfo // nil when Stat failed
	err  string
}

func statAll(pairs []Pair, dirErr error) snapshot {
	var snap snapshot
	if dirErr != nil {
		snap.dirErr = dirErr.Error()
		return snap
	}
	snap.files = make([]fileState, 0, 2*len(pairs))
	stat := func(path string) {
		fi, err := os.Stat(path)
		st := fileState{path: path, info: fi}
		if err != nil {
			st.info, st.err = nil, err.Error()
		}
		snap.files = append(snap.files, st)
	}
	for _, p := range pairs {
		stat(p.CertFile)
		if p.KeyFile != p.CertFile {
			stat(p.KeyFile)
		}
	}
	return snap
}

func (a snapshot) equal(b snapshot) bool {
	if a.dirErr != b.dirErr || len(a.files) != len(b.files) {
		return false
	}
	for i, fa := range a.files {
		if !fa.equal(b.files[i]) {
			return false
		}
	}
	return true
}

func (a fileState) equal(b fileState) bool {
	if a.path != b.path || a.err != b.err || (a.info == nil) != (b.info == nil) {
		return false
	}
	if a.info == nil {
		return true
	}
	return a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime()) &&
		a.info.Mode() == b.info.Mode() && os.SameFile(a.info, b.info)
}
