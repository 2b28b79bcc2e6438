package pipeline

import (
	"context"
	"math"
	"time"
)

// ClassGate holds events back until the class view that spans partitions
// covers their event time (pipeline/cluster.ClassSync with watermarks):
// several instances each learn their own partitions live and merge the
// others' learning at intervals, so without a gate an instance judges its
// events against a view of the others' partitions that is behind in event
// time by what they processed since their last publication.
//
// The ingest loop, between fetches, judges the next events at once while
// the latest event time it dispatched is before Limit; else it holds: it
// calls Hold (and runs partition operations, so that a takeover is never
// kept waiting) until Limit moves past it, for at most
// Config.ClassHoldMax, and counts the hold (MetricClassHolds, seconds,
// overruns). Near the limit it fetches fewer messages, by the event time
// the last fetch spanned per message, so that it does not run far past it.
// The collector reports what the workers learned (Learned). Without a gate
// (one machine, 'run' without --source events), nothing of this runs.
type ClassGate interface {
	// Learned reports that every event the pipeline dispatched with an
	// event time up to t (Unix ns) was learned, and idle that nothing else
	// was pending. It must not block.
	Learned(t int64, idle bool)
	// Limit returns the event time up to which events may be judged now,
	// or open for no limit.
	Limit() (limit int64, open bool)
	// Hold is called while the pipeline holds events back: it may publish
	// and merge, and returns when Limit may have moved, or after about
	// wait.
	Hold(ctx context.Context, wait time.Duration)
}

// DefaultClassHoldMax is Config.ClassHoldMax's default: longer than
// cluster.DefaultClassStall, after which a stalled partition no longer
// holds anything back.
const DefaultClassHoldMax = 2 * time.Minute

// classHoldPoll is how often a holding pipeline asks the gate again when a
// merge moved nothing.
const classHoldPoll = 20 * time.Millisecond

// GateClasses makes g the pipeline's ClassGate; call it before Run.
func (p *Pipeline) GateClasses(g ClassGate) { p.gate = g }

// admit holds events back until the gate's limit is past the latest event
// time dispatched (bounded by ClassHoldMax) and returns how many messages
// to fetch next. Only the ingest loop calls it.
func (p *Pipeline) admit(ctx context.Context) int {
	if p.gate == nil {
		return p.cfg.FetchBatch
	}
	var start time.Time
	defer func() {
		if !start.IsZero() {
			p.M.ClassHoldNanos.Add(uint64(time.Since(start)))
		}
	}()
	for ctx.Err() == nil {
		limit, open := p.gate.Limit()
		if open {
			break
		}
		if p.dispatchedTo == math.MinInt64 {
			return 1 // nothing dispatched yet: one message, to see where the events are
		}
		if p.dispatchedTo < limit {
			switch {
			case p.msgSpan < 0: // not known yet
				return 1
			case p.msgSpan == 0:
				return p.cfg.FetchBatch
			default:
				return int(min(int64(p.cfg.FetchBatch), 1+(limit-p.dispatchedTo)/p.msgSpan))
			}
		}
		if start.IsZero() {
			start = time.Now()
			p.M.ClassHolds.Add(1)
		} else if time.Since(start) >= p.cfg.ClassHoldMax {
			p.M.ClassHoldOverruns.Add(1)
			p.log.Warn("judging events beyond what the merged class view covers: held too long",
				"event_time", time.Unix(0, p.dispatchedTo).UTC(), "limit", time.Unix(0, limit).UTC(), "held_s", time.Since(start).Seconds())
			break
		}
		p.runOps(ctx)
		p.gate.Hold(ctx, classHoldPoll)
	}
	return p.cfg.FetchBatch
}

// drainer is a Source that can tell that nothing is pending
// (partition.Consumer).
type drainer interface {
	Drained(ctx context.Context) bool
}

// drainCheckEvery bounds how often an idle ingest loop asks the source
// whether anything is pending.
const drainCheckEvery = 500 * time.Millisecond

// learnedIdle tells the gate that everything dispatched is learned and,
// when the source says so, that nothing is pending: the watermark then
// covers the clock's time (live events; in a replay, the others'
// coverage: cluster.ClassSync). An empty fetch alone does not say it (a stream
// leader's election, a pull between two).
func (p *Pipeline) learnedIdle(ctx context.Context) {
	d, ok := p.cons.(drainer)
	if !ok || time.Since(p.drainChecked) < drainCheckEvery {
		return
	}
	p.drainChecked = time.Now()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if d.Drained(cctx) && p.inflight.Load() == 0 {
		p.gate.Learned(p.dispatchedTo, true)
	}
}

// dispatchedBatch notes the event time a fetch of n messages dispatched up
// to, for admit's estimate of the event time a message spans.
func (p *Pipeline) dispatchedBatch(before int64, n int) {
	if p.gate == nil || n == 0 || before == math.MinInt64 || p.dispatchedTo <= before {
		return
	}
	p.msgSpan = (p.dispatchedTo - before) / int64(n)
}
