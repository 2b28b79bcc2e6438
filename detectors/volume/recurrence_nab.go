package volume

// recurrence remembers, for each time of day (slots of recurrenceSlot), the
// last recurrenceDays days on which the series was surprising then: Series'
// check that a surprise recurs daily (a job's burst at 03:00 every night)
// before it calls it an anomaly. Fixed size.
type recurrence struct {
	days [recurrenceSlots][recurrenceDays]uint32 // day numbers + 1, latest first (0: never)
}

const (
	recurrenceSlot  = int64(300e9) // 5 minutes
	recurrenceSlots = int(dayNs / recurrenceSlot)
	recurrenceDays  = 4
)

// recurrenceAt returns t's day number + 1 and time-of-day slot.
func recurrenceAt(t int64) (day uint32, slot int) {
	d := t / dayNs
	if t < 0 && t%dayNs != 0 {
		d--
	}
	return uint32(d + 1), int((t - d*dayNs) / recurrenceSlot)
}

// mark records that the series was surprising at t.
func (r *recurrence) mark(t int64) {
	day, slot := recurrenceAt(t)
	d := &r.days[slot]
	if d[0] != day {
		copy(d[1:], d[:recurrenceDays-1])
		d[0] = day
	}
}

// seen reports whether the series was surprising within w slots of t's time
// of day on at least two of the three days before t's.
func (r *recurrence) seen(t int64, w int) bool {
	day, slot := recurrenceAt(t)
	if day < 4 {
		return false
	}
	var hit [3]bool // 1, 2 and 3 days before
	for k := slot - w; k <= slot+w; k++ {
		i := ((k % recurrenceSlots) + recurrenceSlots) % recurrenceSlots
		base := day // the calendar day slot k of "today" falls on
		switch {
		case k < 0:
			base--
		case k >= recurrenceSlots:
			base++
		}
		for _, m := range r.days[i] {
			if m != 0 && m < base && base-m <= 3 {
				hit[base-m-1] = true
			}
		}
	}
	n := 0
	for _, h := range hit {
		if h {
			n++
		}
	}
	return n >= 2
}
