package selector

// CycleLen returns the number of picks after which r's order repeats.
func CycleLen(r *RoundRobin) int {
	if r.seq == nil {
		return int(r.n)
	}
	return len(r.seq)
}
