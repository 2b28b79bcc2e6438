// Package worker runs the enabled detectors over the events of the devices it
// owns. One Worker per shard, driven by one goroutine: it is the only writer of
// its devices' state records (see package shard for the invariant).
//
// Per event: one read of the device's record from the state table (in place),
// every detector's Observe on its slice of the record, learning into the shared
// class model (the class table and each detector's class statistics, which
// count distinct devices per class), and the decision engine. The
// common path allocates nothing.
//
// Silent devices (sweep.go): every SweepEvery of event time, Sweep walks the
// records and reports each device whose silence began in the window since the
// previous sweep, as a synthetic event named with the device's last identity
// (identity.go keeps it, since records hold only hashes). The sweep runs on
// event time, the worker's clock (clock.go: the largest event time it has
// seen, except a time far ahead that no second device corroborates), never
// the wall clock, so that a replay reports the same silences at the same times and a
// backlog is swept at its own time. The consequence: when every device of a
// worker stops, its clock stops too and nothing is swept; a source-level
// outage is a different finding, left out.
package worker

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/schemas"
)

// The record header: the layout version (uint32), then the position in the
// log stream of the last event the record learned from: line (uint32) and
// stream sequence (uint64). The position makes learning exactly-once: a
// redelivered event (JetStream redelivers every message not acked, after a
// slow sink or a crash) is scored again but does not teach the baseline twice.
// Then the expiry (event time, Unix ns; 0: none) of the latest block the
// worker's engine issued on the device's events and that has not lifted yet:
// the device's first event at or after it rearms the detectors
// (detectors.Rearmer). Being in the record, it is checkpointed with it.
//
// Then the device's calibration memory (decide.CalibrationStateSize bytes):
// the hour of event time it last counted and the largest score bins of that
// hour's causes (decide.Calibration.Learn).
const (
	hdrLine    = 4
	hdrSeq     = 8
	hdrBlocked = 16
	hdrCal     = 24
	headerSize = hdrCal + decide.CalibrationStateSize
	// HeaderSize is the size of the record header, before the detectors'
	// slices.
	HeaderSize = headerSize
)

// Layout is the per-device record layout for a set of detectors: a header
// holding the layout version, then each detector's slice in name order. A record
// written under another layout (different detectors, sizes, versions or schema
// version) reads as all zeros: a cold start. Across a restart, a checkpoint
// maps records onto the new layout slice by slice (package checkpoint), so
// that only the detectors that changed cold-start.
type Layout struct {
	Detectors *detectors.Layout // the detectors' part, after the header
	Size      int               // the whole record: header and detectors
	Version   uint32
}

// NewLayout returns the layout for the named detectors (all registered ones if
// names is empty). An unknown name is an error that names it.
func NewLayout(names []string) (*Layout, error) {
	var specs []detectors.Spec
	if len(names) == 0 {
		specs = detectors.All()
	} else {
		seen := map[string]bool{}
		for _, n := range names {
			s, ok := detectors.Lookup(n)
			if !ok {
				return nil, fmt.Errorf("cannot use detector %q: not registered (known: %v)", n, detectors.Names())
			}
			if !seen[n] {
				seen[n] = true
				specs = append(specs, s)
			}
		}
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("cannot build record layout: no detectors registered")
	}
	l := &Layout{Detectors: detectors.NewLayout(specs)}
	l.Size = headerSize + l.Detectors.Size
	v := schemas.HashString(fmt.Sprintf("v%d", schemas.SchemaVersion))
	for _, s := range specs {
		v = v*31 ^ schemas.HashString(fmt.Sprintf("%s:%d:v%d", s.Name, s.StateSize, s.Version))
	}
	l.Version = uint32(v) | 1 // never 0, so a zeroed record never matches
	return l, nil
}

// Config of a worker.
type Config struct {
	// MaxDevices caps the devices this worker keeps (0: unlimited).
	MaxDevices int
	// InitialDevices is preallocated capacity.
	InitialDevices int
	// IdleTTL is how long a silent device's baseline is kept (event time).
	IdleTTL time.Duration
	// SkipBlocked takes the events whose log carries no verdict
	// (schemas.VerdictNone), sent while a block the worker's engine issued for
	// their device is active (decide.Engine.Blocked), as refused by the
	// enforcement points: they are neither scored nor learned. Set it only
	// where enforcement points apply the decisions and logs lack the verdict;
	// leave it off where nothing does (golden scenarios, evaluation on a
	// simulated fleet), or a block would hide the attack it blocked.
	// The engine's blocks travel with the records in checkpoints, so the
	// events skipped stay the same across a crash and a restart.
	SkipBlocked bool
	// ClockStep is how far one device's event alone may move the worker's
	// event-time clock ahead (default DefaultClockStep); farther needs a
	// second device or a run of that device's events (see clock.go).
	ClockStep time.Duration
}

// Worker scores events of the devices of one shard. Not safe for concurrent use.
type Worker struct {
	layout *Layout
	dets   []detectors.Detector
	table  *state.Table
	model  *detectors.ClassModel
	fleets []detectors.Fleet // by detector: the view its Observe gets (model.Fleet)
	// rearm lists the detectors that are detectors.Rearmer, by layout index.
	rearm  []rearmer
	engine *decide.Engine
	// before is the detectors' part of the record as it was before they
	// observed the event, for the class model to learn from.
	before      []byte
	scratch     []byte         // a record copy, to score a redelivered event without learning
	discard     schemas.Scored // findings of Learn, thrown away
	relearned   uint64         // redelivered events scored without learning or deciding
	notJudged   Enforced       // events that were the enforcement point's doing
	skipBlocked bool           // Config.SkipBlocked

	// The silence sweep (sweep.go): the devices' last identities (kept only
	// when a detector is a Sweeper), the worker's event-time clock (clock.go)
	// and the sweep's state.
	ids   *identities
	clk   eventClock
	sweep sweepState
}

// New returns a worker for layout, sharing model (the class table and the
// detectors' class statistics, built for layout.Detectors) and the decision
// limiter with the other workers.
func New(layout *Layout, cfg Config, model *detectors.ClassModel, engine *decide.Engine) (*Worker, error) {
	if model.Layout != layout.Detectors {
		return nil, fmt.Errorf("cannot build worker: its class model was built for another layout")
	}
	// Huge pages: a record read at random per event (a2, e4 in bench/RESULTS.md).
	t, err := state.NewTable(state.Config{RecordSize: layout.Size, InitialDevices: cfg.InitialDevices,
		MaxDevices: cfg.MaxDevices, IdleTTL: cfg.IdleTTL, HugePages: true})
	if err != nil {
		return nil, err
	}
	w := &Worker{layout: layout, table: t, model: model, engine: engine, scratch: make([]byte, layout.Size),
		before: make([]byte, layout.Detectors.Size), ids: newIdentities(), clk: newEventClock(cfg.ClockStep), skipBlocked: cfg.SkipBlocked}
	for i, s := range layout.Detectors.Specs {
		w.dets = append(w.dets, s.New())
		w.fleets = append(w.fleets, model.Fleet(i))
		if r, ok := w.dets[i].(detectors.Rearmer); ok {
			w.rearm = append(w.rearm, rearmer{r, i})
		}
	}
	w.initSweep()
	return w, nil
}

// Process scores ev into out (which it resets) and returns the alert and
// decision it warrants, if any. It does not retain ev or out.
//
// An event that is the enforcement point's doing rather than the device's is
// neither scored nor learned (out is empty, no alert, no decision): one the
// enforcement point denied because of an iotwatch decision or could not check
// because the enforcer was unavailable (ev.Verdict.Enforced), and, when the
// log does not carry the verdict, one sent while a block this worker's engine
// issued for the device is active (decide.Engine.Blocked; only with
// Config.SkipBlocked). Otherwise the
// enforcer's own 403s would read as the device's auth failures and its
// outages as the device's errors, and a block would renew itself on the
// first request after it expires. Such events are still stored as rows, with
// their verdict.
//
// An event at or before the stream position the device's record has learned
// up to (ev.Seq, ev.Line; a redelivery, or an event that arrives after a later
// one of its device) is scored against a copy of the record, for its row, but
// it is not learned twice, and it gets no alert and no decision: judged
// against later state, it would get ones its first judging did not (the
// pipeline does not hand a message it has judged to the workers again, see
// pipeline.seenSeqs; this is the guard for what reaches them anyway).
// Events with Seq 0 (not from a stream) are always learned.
func (w *Worker) Process(ev *schemas.Event, out *schemas.Scored) (*schemas.Alert, *schemas.Decision) {
	if w.enforced(ev) {
		out.N, out.Score = 0, 0
		return nil, nil
	}
	rec, redelivered := w.observe(ev, out)
	if redelivered {
		// Judged against a record that has moved on (a transition from a
		// later command back to this one, a rate that counts it twice): its
		// findings are not the ones its first judging had, so it raises no
		// alert and no decision (ARCHITECTURE.md, Redelivery).
		return nil, nil
	}
	alert, dec := w.engine.Decide(ev, out)
	if rec != nil {
		// After the decision: an event is judged against the calibration of
		// the traffic before it.
		w.engine.Calibration().Learn(ev, out, rec[hdrCal:headerSize])
	}
	if dec != nil && dec.Action == schemas.ActionBlock && rec != nil {
		// The block stops the offence; when it lifts, the device's first
		// event rearms its detectors (see observe). Its expiry in event
		// time, as the events that reach it are judged (a decision's
		// ExpiresAt may count from the wall clock).
		until := w.engine.BlockedUntil(ev.DeviceKey)
		binary.LittleEndian.PutUint64(rec[hdrBlocked:], uint64(max(until, int64(binary.LittleEndian.Uint64(rec[hdrBlocked:])))))
	}
	return alert, dec
}

// Prefetch starts bringing the record of ev's device into the CPU's caches
// (state.Table.PrefetchRecord) without waiting for it: a caller that holds
// the events to come calls it for them before it processes the current
// one, so that their records' cache misses overlap with its work instead of
// stalling the next Process. It reads only: calling it or not changes no
// result. Like every method, it is for the worker's one goroutine.
func (w *Worker) Prefetch(ev *schemas.Event) { w.table.PrefetchRecord(ev.DeviceKey, ev.DeviceAlt) }

// rearmer is a detector that is a detectors.Rearmer, and its layout index.
type rearmer struct {
	detectors.Rearmer
	at int
}

// Learn updates the device's record and the class table with ev, as Process
// would, without deciding anything: how a restart catches up with the events
// that were processed after its checkpoint and before the crash. It skips
// the events Process would not judge.
func (w *Worker) Learn(ev *schemas.Event) {
	if w.enforced(ev) {
		return
	}
	if rec, _ := w.observe(ev, &w.discard); rec != nil {
		w.discard.Score = decide.Combine(&w.discard)
		w.engine.Calibration().Learn(ev, &w.discard, rec[hdrCal:headerSize])
	}
}

// Enforced counts the events not judged as their device's behaviour, by cause.
type Enforced struct {
	Denied      uint64 // the enforcement point denied them because of an iotwatch decision
	Unavailable uint64 // the enforcer was unavailable: the gateway answered an error of its own
	ActiveBlock uint64 // no verdict in the log, but a block of the device was active
}

// Enforced returns the events Process and Learn did not judge, by cause.
func (w *Worker) Enforced() Enforced { return w.notJudged }

// enforced reports whether ev is the enforcement point's doing (see Process),
// counting it; the worker's event-time clock still advances.
func (w *Worker) enforced(ev *schemas.Event) bool {
	switch {
	case ev.Verdict == schemas.VerdictDenied:
		w.notJudged.Denied++
	case ev.Verdict == schemas.VerdictUnavailable:
		w.notJudged.Unavailable++
	case ev.Verdict == schemas.VerdictNone && w.skipBlocked && w.engine.Blocked(ev):
		w.notJudged.ActiveBlock++
	default:
		return false
	}
	w.advanceClock(ev)
	return true
}

// Relearned returns how many events at or before their record's position
// (redelivered) were scored without being learned again, and without an
// alert or a decision.
func (w *Worker) Relearned() uint64 { return w.relearned }

// observe runs the detectors on ev into out and returns the device's table
// record, or nil and redelivered true for an event at or before the record's
// position (scored against a scratch copy, which learns nothing).
func (w *Worker) observe(ev *schemas.Event, out *schemas.Scored) (live []byte, redelivered bool) {
	out.N, out.Score = 0, 0 // findings past N are never read: no need to clear 700 bytes
	rec, _ := w.table.Record(ev.DeviceKey, ev.DeviceAlt, ev.Time)
	w.advanceClock(ev)
	if binary.LittleEndian.Uint32(rec) != w.layout.Version {
		clear(rec)
		binary.LittleEndian.PutUint32(rec, w.layout.Version)
	}
	live = rec // nil for a redelivery, which learns nothing
	learn := true
	if ev.Seq != 0 {
		seq, line := binary.LittleEndian.Uint64(rec[hdrSeq:]), binary.LittleEndian.Uint32(rec[hdrLine:])
		if ev.Seq < seq || ev.Seq == seq && ev.Line <= line {
			learn, redelivered = false, true
			w.relearned++
			live = nil
			copy(w.scratch, rec)
			rec = w.scratch
		} else {
			binary.LittleEndian.PutUint64(rec[hdrSeq:], ev.Seq)
			binary.LittleEndian.PutUint32(rec[hdrLine:], ev.Line)
		}
	}
	body := rec[headerSize:]
	if until := int64(binary.LittleEndian.Uint64(rec[hdrBlocked:])); until != 0 && ev.Time >= until {
		// A block issued on the device's events has lifted: what its
		// detectors held of the offence was dealt with (detectors.Rearmer).
		binary.LittleEndian.PutUint64(rec[hdrBlocked:], 0)
		for _, r := range w.rearm {
			r.Rearm(w.layout.Detectors.State(body, r.at))
		}
	}
	if learn && w.model.NeedsBefore() {
		copy(w.before, body) // what the class statistics learn from (a device's previous command)
	}
	for i, d := range w.dets {
		f := d.Observe(ev, w.layout.Detectors.State(body, i), w.fleets[i])
		if f.Reason != schemas.ReasonNone {
			f.Detector = w.layout.Detectors.Specs[i].Name
			out.Add(f)
		}
	}
	if learn {
		if len(w.sweep.detectors) > 0 {
			w.rememberIdentity(ev, body)
		}
		// Every event teaches the class model, which counts distinct devices: an
		// attack from one device cannot make its commands look normal for the class.
		w.model.Learn(ev, w.before)
	}
	return live, redelivered
}

// Stats returns the state table's statistics.
func (w *Worker) Stats() state.Stats { return w.table.Stats() }

// Table exposes the state table (for checkpoints and tests).
func (w *Worker) Table() *state.Table { return w.table }

// Engine exposes the decision engine (for checkpoints and tests).
func (w *Worker) Engine() *decide.Engine { return w.engine }
