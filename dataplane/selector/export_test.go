package selector

// CycleLen returns the number of picks after which r's order repeats.
func CycleLen(r *RoundRobin) int {
	return int(r.cycle())
}

// Table returns m's lookup table.
func Table(m *Maglev) []uint32 {
	return m.table
}

// TableSize returns the Maglev table size for n backends.
var TableSize = tableSize
