package worker

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// The silence sweep. A device that stops sending is a finding while it is
// silent, not only when it comes back: every SweepEvery of event time the
// worker walks its state records and asks each detector that is a
// detectors.Sweeper when the device becomes silent. A device whose silence
// time falls in the sweep's window (previous sweep, now] yields one synthetic
// event: the device's last identity (identities), Time the silence time, no
// command, ID derived from the device and that time; it is scored with the
// Sweeper's finding alone and passes through the decision engine like any
// event (a volume silence scores 0.1-0.15: it never alerts alone).
//
// Event time, never the wall clock: the sweep's clock is the largest event
// time the worker has seen (bar a lone time far ahead, clock.go), so a replay sweeps the same devices at the same
// times, and a pipeline catching up on a backlog reports the silences of the
// backlog's time, not of the time it runs. The consequence: when every device
// of a worker stops (a gateway or the log shipper is down), its clock stops
// too and the sweep reports nothing; a source-level outage is a different
// finding, left out here.
//
// The sweep keeps no state per record: a silence time only moves when the
// device sends, so the windows, which tile event time, report each silence
// once. A new worker (a restart) starts with the window of SweepEvery before
// its first sweep: a silence that began while the pipeline was down or
// between the last sweep before a crash and that window is not reported by
// the sweep (volume still reports it when the device comes back), and one
// reported just before a crash may be reported again, with the same event id.
// A device whose identity the worker has not seen since it started (a record
// restored from a checkpoint, silent since) cannot be named and is counted
// as unnamed instead of reported.

// SweepEvery is the event-time period of the silence sweep: a silence is
// reported within a minute of event time of its start, and a sweep, which
// walks every record of the worker, runs at most once per minute of events.
const SweepEvery = time.Minute

// Emit receives one result of a sweep: the synthetic event, its scores, and
// the alert and decision the decision engine made of it (nil when none). ev
// and sc are reused by the next call: copy what must outlive it.
type Emit func(ev *schemas.Event, sc *schemas.Scored, alert *schemas.Alert, dec *schemas.Decision)

// sweepState is the worker's sweep bookkeeping.
type sweepState struct {
	detectors []detectors.Sweeper // the Sweepers among the worker's detectors
	at        []int               // their indexes in the layout
	started   bool                // a sweep ran: swept is valid
	swept     int64               // end of the last sweep's window (Unix ns)
	next      int64               // the clock at which the next sweep is due
	due       []silence           // the silences of the sweep running, reused
	ev        schemas.Event
	sc        schemas.Scored
	// pruneAt is the identity count that prunes identities between sweeps.
	pruneAt        int
	found, unnamed uint64
}

// silence is a device found silent by a sweep.
type silence struct {
	key, alt uint64
	at       int64
	det      int // layout index of the Sweeper
	f        schemas.Finding
}

// minPruneAt is the smallest identity count that prunes between sweeps.
const minPruneAt = 1024

// initSweep finds the Sweepers among w's detectors.
func (w *Worker) initSweep() {
	w.sweep.next = math.MaxInt64 // never due without a Sweeper
	for i, d := range w.dets {
		if sw, ok := d.(detectors.Sweeper); ok {
			w.sweep.detectors = append(w.sweep.detectors, sw)
			w.sweep.at = append(w.sweep.at, i)
			w.sweep.next = math.MinInt64 // due on the first event
		}
	}
	w.sweep.pruneAt = minPruneAt
}

// rememberIdentity keeps ev's device identity for the sweep, if a Sweeper
// could report the device silent from its state body (a record's detectors'
// part) after ev, and bounds the identities to the devices the table holds.
//
// A device no Sweeper can report (a cold one: volume needs 20 events and 10
// minutes of history) needs no identity: a silence time only comes from the
// state after a device's last event, so when one is reportable, that event
// was remembered. A flood of one-event device ids (issue 13: 3M of them) thus
// costs no identities.
//
// The common case, a device whose stored identity is ev's, returns before
// asking the Sweepers: whatever they answer, see would change nothing, and
// the prune check could not fire (the identity count only grows in see, which
// is followed by the check, and pruneIdentities leaves it at most pruneAt).
func (w *Worker) rememberIdentity(ev *schemas.Event, body []byte) {
	if w.ids.current(ev) {
		return
	}
	reportable := false
	for j, d := range w.sweep.detectors {
		if _, ok := d.SilentAt(w.layout.Detectors.State(body, w.sweep.at[j])); ok {
			reportable = true
			break
		}
	}
	if !reportable {
		return
	}
	w.ids.see(ev)
	if w.ids.len() > w.sweep.pruneAt {
		w.pruneIdentities()
	}
}

// pruneIdentities drops the identities of devices the table no longer holds
// (expired, evicted or deleted records).
func (w *Worker) pruneIdentities() {
	w.ids.prune(func(key, alt uint64) bool {
		_, ok := w.table.Lookup(key, alt)
		return ok
	})
	w.sweep.pruneAt = max(2*w.ids.len(), minPruneAt)
}

// SweepDue reports whether a sweep is due, and up to when: the worker's clock
// (its largest event time) has reached a multiple of SweepEvery after the
// last sweep; now is the last such multiple. It costs a comparison, so a
// caller may ask after every event.
func (w *Worker) SweepDue() (now int64, due bool) {
	if w.clk.now < w.sweep.next {
		return 0, false
	}
	return floorTo(w.clk.now, int64(SweepEvery)), true
}

// floorTo rounds t down to a multiple of step.
func floorTo(t, step int64) int64 {
	r := t % step
	if r < 0 {
		r += step
	}
	return t - r
}

// Sweep reports, through emit, every device whose silence time falls in
// (previous sweep, now], in the order of those times (then of device keys),
// and returns how many it reported. now is event time (Unix ns); beyond the
// worker's clock it is taken as the clock, since the sweep never runs ahead
// of the events. See SweepEvery and SweepDue for the cadence. Like Process,
// Sweep must be called from the worker's goroutine; it does not allocate
// beyond what the decision engine and emit do.
func (w *Worker) Sweep(now int64, emit Emit) int {
	sw := &w.sweep
	if len(sw.detectors) == 0 {
		return 0
	}
	now = min(now, w.clk.now)
	from := sw.swept
	if !sw.started {
		from = now - int64(SweepEvery)
	}
	if now <= from {
		return 0
	}
	sw.started, sw.swept = true, now
	sw.next = floorTo(now, int64(SweepEvery)) + int64(SweepEvery)
	due, live := sw.due[:0], 0
	w.table.Range(func(key, alt uint64, _ int64, rec []byte) bool {
		live++
		if binary.LittleEndian.Uint32(rec) != w.layout.Version {
			return true // a foreign record: no history
		}
		body := rec[headerSize:]
		for j, d := range sw.detectors {
			state := w.layout.Detectors.State(body, sw.at[j])
			if at, ok := d.SilentAt(state); ok && at > from && at <= now {
				due = append(due, silence{key: key, alt: alt, at: at, det: sw.at[j], f: d.Silence(state, at)})
			}
		}
		return true
	})
	slices.SortFunc(due, func(a, b silence) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.key, b.key), cmp.Compare(a.alt, b.alt), cmp.Compare(a.det, b.det))
	})
	sw.due = due[:0]
	if w.ids.len() > live { // identities of dropped records: every identity has had a record
		w.pruneIdentities()
	}
	n := 0
	for i := range due {
		s := &due[i]
		if s.f.Reason == schemas.ReasonNone {
			continue // a Sweeper whose Silence disagrees with its SilentAt: nothing to say
		}
		if !w.ids.load([2]uint64{s.key, s.alt}, &sw.ev) {
			sw.unnamed++
			continue
		}
		sw.ev.Time, sw.ev.ID = s.at, silenceID(s.key, s.alt, s.at, s.det)
		sw.sc.N, sw.sc.Score = 0, 0
		f := s.f
		f.Detector = w.layout.Detectors.Specs[s.det].Name
		sw.sc.Add(f)
		alert, dec := w.engine.Decide(&sw.ev, &sw.sc)
		if rec, ok := w.table.Lookup(s.key, s.alt); ok && binary.LittleEndian.Uint32(rec) == w.layout.Version {
			w.engine.Calibration().Learn(&sw.ev, &sw.sc, rec[hdrCal:headerSize])
		}
		emit(&sw.ev, &sw.sc, alert, dec)
		n++
	}
	sw.found += uint64(n)
	return n
}

// silenceID is the event id of a sweep's synthetic event: stable for the
// device, the silence time and the detector, so that a silence reported
// twice (after a restart) is one row.
func silenceID(key, alt uint64, at int64, det int) uint64 {
	var b [25]byte
	binary.LittleEndian.PutUint64(b[0:], key)
	binary.LittleEndian.PutUint64(b[8:], alt)
	binary.LittleEndian.PutUint64(b[16:], uint64(at))
	b[24] = byte(det)
	return schemas.Hash(b[:])
}

// SweepStats counts what the worker's sweeps found, and the identities they
// keep to name silent devices.
type SweepStats struct {
	Silences uint64 // silences reported
	Unnamed  uint64 // silences not reported: the device's identity was unknown
	// Identities is the number of device identities kept, IdentityBytes
	// the memory they take (arena capacity and index).
	Identities, IdentityBytes int
}

// SweepStats returns the sweep's counters.
func (w *Worker) SweepStats() SweepStats {
	return SweepStats{Silences: w.sweep.found, Unnamed: w.sweep.unnamed,
		Identities: w.ids.len(), IdentityBytes: w.ids.memory()}
}
