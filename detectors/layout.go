package detectors

// Layout places several detectors' state in one per-device record: detector i
// owns record[Offsets[i] : Offsets[i]+Specs[i].StateSize]. The order is the
// order of Specs, so a record is only meaningful to a Layout built from the same
// specs in the same order (the worker versions its records for that reason).
type Layout struct {
	Specs   []Spec
	Offsets []int
	// Size is the record size: the sum of the state sizes.
	Size int
}

// NewLayout lays out specs one after another, in the given order.
func NewLayout(specs []Spec) *Layout {
	l := &Layout{Specs: specs, Offsets: make([]int, len(specs))}
	for i, s := range specs {
		l.Offsets[i] = l.Size
		l.Size += s.StateSize
	}
	return l
}

// State returns detector i's slice of record, capped so that appending to it
// cannot overwrite the next detector's state. record must be Size bytes long.
func (l *Layout) State(record []byte, i int) []byte {
	off, end := l.Offsets[i], l.Offsets[i]+l.Specs[i].StateSize
	return record[off:end:end]
}
