package pipeline

import (
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// newWorkers replaces the workers and the class table with fresh ones (a
// cold start, score.Stack.Reset); the layout and the block limiter stay.
func (p *Pipeline) newWorkers() error {
	if err := p.stack.Reset(); err != nil {
		return err
	}
	p.workers, p.model, p.owners = p.stack.Workers, p.stack.Model, p.stack.Owners
	return nil
}

// work runs one shard, adding its counters to the metrics every reportEvery
// events, after every sweep and whenever its input is empty. After each scored event it sweeps the shard's silent
// devices when a minute of event time has passed (worker.SweepDue): their
// results go to the collector like events', as items of their own that no
// batch waits for, sent before the event that made the sweep due, so that
// they are flushed no later than that event's batch is acked (a sweep row
// whose flush fails is not redelivered; see worker.Sweep).
//
// When another item waits in its input, it is received before the event in
// hand is processed and its device's record is prefetched
// (worker.Prefetch), so that the misses of that record, one at random among
// many, overlap with the work on the event in hand instead of stalling the
// next Process (BenchmarkScoreSource reads one event ahead the same way).
// Items are handled in their order all the same.
func (p *Pipeline) work(i int, w *worker.Worker, in <-chan *item) {
	var (
		n    int
		last = p.counts(w) // what restore reported
	)
	emit := func(ev *schemas.Event, sc *schemas.Scored, alert *schemas.Alert, dec *schemas.Decision) {
		s := &item{swept: true, sc: *sc, alert: alert, dec: dec}
		s.ev.CopyFrom(ev)
		p.results <- s
	}
	var next *item // received ahead, handled next
	for {
		it := next
		if next = nil; it == nil {
			var ok bool
			if it, ok = <-in; !ok {
				break
			}
		}
		if it.pause != nil {
			it.pause.reached.Done()
			<-it.pause.resume
			continue
		}
		if it.b == nil {
			n++
			if n&(reportEvery-1) == 0 {
				last = p.report(w, last)
			}
			if len(in) > 0 {
				next = <-in // an item is there: this goroutine is in's only receiver
				if next.b == nil && next.pause == nil {
					w.Prefetch(&next.ev)
				}
			}
			it.alert, it.dec = w.Process(&it.ev, &it.sc)
			if now, ok := w.SweepDue(); ok {
				w.Sweep(now, emit)
				last = p.report(w, last) // at least once per minute of event time
			}
		}
		if next == nil && len(in) == 0 { // idle next: the metrics are current on a quiet pipeline too
			last = p.report(w, last)
		}
		p.results <- it
	}
	p.report(w, last)
}

// workerCounts are a worker's counters as last added to the pipeline's metrics.
type workerCounts struct {
	devices                       int64
	evictions, expired, relearned uint64
	silences, unnamed             uint64
	enforced                      worker.Enforced
}

// reportEvery is how many events a worker processes between reports of its
// counters to the metrics when it is busy (a power of two).
const reportEvery = 1024

// counts returns w's counters.
func (p *Pipeline) counts(w *worker.Worker) workerCounts {
	st := w.Stats()
	sw := w.SweepStats()
	return workerCounts{devices: int64(st.Devices), evictions: st.LiveEvictions, expired: st.Expired, relearned: w.Relearned(),
		silences: sw.Silences, unnamed: sw.Unnamed, enforced: w.Enforced()}
}

// report adds what w counted since last to the metrics (workers own their
// counters; the metrics sum them).
func (p *Pipeline) report(w *worker.Worker, last workerCounts) workerCounts {
	now := p.counts(w)
	p.M.Devices.Add(now.devices - last.devices)
	p.M.Evictions.Add(now.evictions - last.evictions)
	p.M.Expired.Add(now.expired - last.expired)
	p.M.Relearned.Add(now.relearned - last.relearned)
	p.M.Silences.Add(now.silences - last.silences)
	p.M.Unnamed.Add(now.unnamed - last.unnamed)
	p.M.EnforcedDenied.Add(now.enforced.Denied - last.enforced.Denied)
	p.M.EnforcedUnavailable.Add(now.enforced.Unavailable - last.enforced.Unavailable)
	p.M.EnforcedActiveBlock.Add(now.enforced.ActiveBlock - last.enforced.ActiveBlock)
	return now
}

// own runs one entity owner: the one writer of its entities' records (see
// package entity). Batch barriers and pauses pass through it as through a
// worker, so a message is acked only once its entities' alerts and
// decisions, sent to the collector before the barrier, are published.
//
// The observations waiting in its input, up to entity.MaxPrefetchBatch and
// up to the next barrier or pause, are judged together (ObserveBatch), in
// their order: their records' cache misses overlap. A busy owner judges
// full batches; an idle one, each observation as it comes.
func (p *Pipeline) own(i int, o *entity.Owner, in <-chan entityItem) {
	var (
		n     int
		last  = p.ownerCounts(o)
		batch = make([]entity.Obs, 0, entity.MaxPrefetchBatch)
	)
	emit := func(a *schemas.Alert, d *schemas.Decision) {
		p.results <- &item{noRow: true, alert: a, dec: d}
	}
	for ei := range in {
		for ei.ctl == nil {
			batch = append(batch, ei.ob)
			if len(batch) == cap(batch) || len(in) == 0 {
				break
			}
			ei = <-in // an item is there: this goroutine is in's only receiver
		}
		if len(batch) > 0 {
			o.ObserveBatch(batch, emit)
			if n += len(batch); n >= reportEvery || len(in) == 0 {
				n, last = 0, p.reportOwner(o, last)
			}
			batch = batch[:0]
		}
		if it := ei.ctl; it != nil {
			if it.pause != nil {
				it.pause.reached.Done()
				<-it.pause.resume
				continue
			}
			p.results <- it
		}
	}
	p.reportOwner(o, last)
}

// ownerCounts are an entity owner's counters as last added to the metrics.
type ownerCounts struct {
	entities  int64
	evictions uint64
	expired   uint64
	relearned uint64
}

func (p *Pipeline) ownerCounts(o *entity.Owner) ownerCounts {
	st := o.Stats()
	return ownerCounts{entities: int64(st.Devices), evictions: st.LiveEvictions, expired: st.Expired, relearned: st.Relearned}
}

// reportOwner adds what o counted since last to the metrics.
func (p *Pipeline) reportOwner(o *entity.Owner, last ownerCounts) ownerCounts {
	now := p.ownerCounts(o)
	p.M.Entities.Add(now.entities - last.entities)
	p.M.EntityEvictions.Add(now.evictions - last.evictions)
	p.M.EntityExpired.Add(now.expired - last.expired)
	p.M.Relearned.Add(now.relearned - last.relearned)
	return now
}
