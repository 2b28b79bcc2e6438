package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/pipeline/state"
)

// pause stops every worker at the same point of the stream, so that their
// state can be checkpointed: each worker calls reached.Done and waits for resume.
type pause struct {
	reached sync.WaitGroup
	resume  chan struct{}
}

// restore loads the checkpoint, if there is one, into the workers' tables
// (each device into the worker that owns it now, whatever the worker count was)
// and the class table. The tables are first sized for the checkpoint's
// records, so that the restore does not rebuild them, and progress is logged
// every few seconds. A checkpoint that cannot be used is reported and the
// pipeline cold-starts; failing to rebuild the workers, or ctx ending during
// the restore (a SIGTERM at start-up), is an error.
func (p *Pipeline) restore(ctx context.Context) error {
	if p.cfg.CheckpointStore != nil {
		return p.restoreStore(ctx)
	}
	path := p.cfg.Checkpoint
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		p.log.Info("no checkpoint yet: cold start", "checkpoint", path)
		return nil
	}
	start := time.Now()
	lastLog := start
	m, err := checkpoint.Load(ctx, path, checkpoint.MetaOf(p.layout), checkpoint.Target{
		Reserve: func(records uint64) {
			per := reservePerWorker(records, len(p.workers))
			for _, w := range p.workers {
				w.Table().Reserve(per)
			}
		},
		Put: func(key, alt uint64, lastSeen int64, rec []byte) {
			r, _ := p.workers[shard.Of(key, len(p.workers))].Table().Record(key, alt, lastSeen)
			copy(r, rec)
		},
		PutEntity: func(key, alt uint64, lastSeen int64, rec []byte) {
			// Into the owner that its observations go to now; records of
			// another size or layout are a cold start of the entity.
			if len(rec) != entity.RecordSize || binary.LittleEndian.Uint32(rec) != entity.RecordVersion || len(p.owners) == 0 {
				return
			}
			r, _ := p.owners[entity.ShardOf(rec, len(p.owners))].Table().Record(key, alt, lastSeen)
			copy(r, rec)
		},
		Progress: func(done, total uint64) {
			if now := time.Now(); now.Sub(lastLog) >= restoreLogEvery {
				lastLog = now
				p.log.Info("restoring checkpoint", "checkpoint", path, "devices_done", done, "devices", total,
					"seconds", now.Sub(start).Seconds())
			}
		},
	}, p.model)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("cannot restore checkpoint %q: %w", path, err)
	}
	if err != nil {
		p.log.Warn("cannot use checkpoint: cold start", "checkpoint", path, "err", err)
		return p.newWorkers()
	}
	if err := p.restoreEngines(m.Engines); err != nil {
		p.log.Warn("cannot restore the decision engines' state: cool-downs and blocks start empty", "checkpoint", path, "err", err)
		for _, w := range p.workers {
			w.Engine().Reset()
		}
		m.Engines = nil
	}
	if err := p.restoreOwnerEngines(m.EntityEngines); err != nil {
		p.log.Warn("cannot restore the entity owners' decision state: their cool-downs and blocks start empty", "checkpoint", path, "err", err)
		for _, o := range p.owners {
			o.Engine().Reset()
		}
	}
	if m.Calibration != nil {
		if err := p.stack.Calibration.LoadSnapshot(m.Calibration); err != nil {
			p.log.Warn("cannot restore the alert calibration: it warms up again", "checkpoint", path, "err", err)
		}
	}
	p.restoreIncidents(m.Incidents)
	for _, w := range p.workers {
		p.report(w, workerCounts{}) // the workers' first counts: devices restored, evicted by the cap
	}
	for _, o := range p.owners {
		p.reportOwner(o, ownerCounts{})
	}
	p.restored = m
	if m.Engines != nil {
		// Written by a build whose checkpoints wait for the results before
		// them to be durable (periodicCheckpoint, or after a clean drain).
		p.doneUpTo = m.StreamSeq
	}
	p.log.Info("restored checkpoint", "checkpoint", path, "devices", m.Records, "entities", m.Entities, "stream_seq", m.StreamSeq, "created", m.Created,
		"cold_detectors", m.Cold, "decision_engines", len(m.Engines), "seconds", time.Since(start).Seconds())
	return nil
}

// restoreEngines loads the decision engines' snapshots of a checkpoint into
// the workers' engines: snapshot i into engine i when the worker count is the
// one that saved them, otherwise every snapshot into every engine, each
// keeping the devices its worker owns now (shard.Of), so that a device's
// cool-downs, blocks and strikes are where its events go.
func (p *Pipeline) restoreEngines(snaps [][]byte) error {
	n := len(p.workers)
	for j, snap := range snaps {
		for i, w := range p.workers {
			var owns func(uint64) bool
			if len(snaps) != n {
				owns = func(device uint64) bool { return shard.Of(device, n) == i }
			} else if i != j {
				continue
			}
			if err := w.Engine().LoadState(snap, owns); err != nil {
				return fmt.Errorf("cannot restore decision engine %d of %d: %w", j, len(snaps), err)
			}
		}
	}
	return nil
}

// restoreOwnerEngines loads the entity owners' decision engines' snapshots:
// snapshot i into owner i when the owner count is the one that saved them,
// otherwise every snapshot into every owner (an engine's entries are keyed by
// entity key, which does not say its owner: an owner then holds cool-downs
// and strikes of entities it does not own, which cost memory until pruned).
func (p *Pipeline) restoreOwnerEngines(snaps [][]byte) error {
	for j, snap := range snaps {
		for i, o := range p.owners {
			if len(snaps) == len(p.owners) && i != j {
				continue
			}
			if err := o.Engine().LoadState(snap, nil); err != nil {
				return fmt.Errorf("cannot restore entity decision engine %d of %d: %w", j, len(snaps), err)
			}
		}
	}
	return nil
}

// restoreIncidents loads the incident grouper's state of a checkpoint (nil:
// none, the grouper starts with no open incident), before the collector
// starts: the alerts after the restart join the incidents they would have
// joined without it, and the alerts the catch-up raises again that the
// grouper holds already are redeliveries to it. A state that cannot be
// loaded is logged and the grouper starts empty.
func (p *Pipeline) restoreIncidents(state []byte) {
	if state == nil {
		return
	}
	if err := p.grouper.LoadState(state); err != nil {
		p.log.Warn("cannot restore the open incidents: alerts after the restart open new ones", "err", err)
		return
	}
	p.incidentState = state
	p.log.Info("restored open incidents", "open", p.grouper.Stats().Open)
}

// restoreLogEvery is the interval between progress logs of a long restore.
const restoreLogEvery = 5 * time.Second

// reservePerWorker is the room each of workers tables needs for records
// spread by shard.Of: an even share, plus a margin for the spread (a share's
// standard deviation is under sqrt(records/workers): 1/16 of the share, and
// 1024, cover more than 4 of them), so that no table rebuilds during a restore.
func reservePerWorker(records uint64, workers int) int {
	share := records / uint64(max(workers, 1))
	return int(min(share+share/16+1024, math.MaxInt32))
}

// Restored returns the checkpoint New restored (zero if none).
func (p *Pipeline) Restored() checkpoint.Meta { return p.restored }

// saveCheckpoint writes the checkpoint (the file, or every object of the
// Object Store, within timeout); the workers must be stopped or paused.
func (p *Pipeline) saveCheckpoint(timeout time.Duration) error {
	if p.cfg.CheckpointStore != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return p.saveStore(ctx)
	}
	tables := make([]*state.Table, len(p.workers))
	for i, w := range p.workers {
		tables[i] = w.Table()
	}
	seq := max(p.lastSeq.Load(), p.restored.StreamSeq)
	meta := checkpoint.MetaOf(p.layout)
	meta.StreamSeq = seq
	for _, w := range p.workers {
		meta.Engines = append(meta.Engines, w.Engine().AppendState(nil))
	}
	meta.EntityRecordSize = entity.RecordSize
	for _, o := range p.owners {
		meta.EntityTables = append(meta.EntityTables, o.Table())
		meta.EntityEngines = append(meta.EntityEngines, o.Engine().AppendState(nil))
	}
	if c := p.stack.Calibration; c != nil {
		meta.Calibration = c.AppendSnapshot(nil)
	}
	meta.Incidents = p.incidentState
	start := time.Now()
	if err := checkpoint.Write(p.cfg.Checkpoint, meta, tables, p.model); err != nil {
		return err
	}
	p.log.Info("wrote checkpoint", "checkpoint", p.cfg.Checkpoint, "stream_seq", seq, "seconds", time.Since(start).Seconds())
	return nil
}

// catchUp judges again the messages after the restored checkpoint's stream
// position up to the last one the consumer had delivered before this start,
// exactly as the crashed run judged them first: in stream order, against
// the records and decision engines as of the checkpoint. Their scored rows,
// alerts and decisions are published and stored again under the same ids
// (idempotent: the crashed run may have published or stored some of them),
// and dead letters under the same message ids. It reads them with an ordered
// consumer of its own, and acks nothing; their redeliveries on the durable
// consumer (the ones the crashed run had not acked) are acked without being
// judged again (doneUpTo). A crash thus loses neither what the messages
// taught the baselines nor the alerts they raised, and raises none twice.
func (p *Pipeline) catchUp(ctx context.Context) error {
	from := p.restored.StreamSeq + 1
	defer func() { p.skip = nil }() // the restored partitions' positions serve this catch-up only
	if p.cfg.Stream == nil || p.restored.StreamSeq == 0 {
		return nil
	}
	info, err := p.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("cannot read the consumer's delivered position: %w", err)
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	return p.catchUpRange(ctx, filters, from, info.Delivered.Stream, true)
}

// catchUpRange judges again the messages of Config.Stream on filters from
// sequence from to upTo, in stream order (catchUp's way), without the events
// p.skip says are in the restored state already. With markDone, the
// messages it judged are done (doneUpTo): their redeliveries on the durable
// consumer are acked without being judged again.
func (p *Pipeline) catchUpRange(ctx context.Context, filters []string, from, upTo uint64, markDone bool) error {
	if upTo < from {
		return nil
	}
	start := time.Now()
	// The class gate's event time stays that of the fetches: a catch-up's
	// events are judged whatever the gate's limit, and no fetch batch
	// reports them learned, so counted, they held the ingest loop with its
	// watermark unpublished, and two scorers that had each taken over a
	// partition waited for each other (90 s, bench/RESULTS.md w4). They
	// are learned before the next fetch's barrier, which reports what it
	// covers.
	defer func(to int64) { p.dispatchedTo = to }(p.dispatchedTo)
	p.log.Info("catching up after the checkpoint", "from_seq", from, "to_seq", upTo, "subjects", filters)
	seq, err := p.eachMessage(ctx, filters, from, upTo, 0, func(msg jetstream.Msg, md *jetstream.MsgMetadata) error {
		before := p.dispatched
		if !p.dispatch(ctx, msg, md) {
			return fmt.Errorf("cannot dead-letter a record of sequence %d: %w", md.Sequence.Stream, ctx.Err())
		}
		p.M.CaughtUp.Add(p.dispatched - before)
		if markDone {
			p.doneUpTo = max(p.doneUpTo, md.Sequence.Stream)
		}
		return nil
	})
	p.log.Info("caught up after the checkpoint", "messages_to_seq", seq, "seconds", time.Since(start).Seconds())
	return err
}

// periodicCheckpoint pauses every worker after the events dispatched so far,
// waits until every result before the pause is published and stored, saves
// the checkpoint, and resumes them. The collector and the flusher go on. A
// checkpoint is thus never ahead of the durable results: the messages at or
// below its position that a crash leaves unacked are acked after the restart
// without being judged again (doneUpTo), and nothing they raised is lost.
// When the results are not durable within DrainTimeout (ClickHouse or NATS
// down), the checkpoint is skipped and the previous one stays.
func (p *Pipeline) periodicCheckpoint() {
	defer p.pauseWorkers()()
	if err := p.durable(p.cfg.DrainTimeout); err != nil {
		p.log.Warn("cannot save periodic checkpoint: results before it are not durable; the previous one stays", "err", err)
		return
	}
	if err := p.saveCheckpoint(periodicSaveTimeout); err != nil {
		p.log.Warn("cannot save periodic checkpoint; the previous one stays", "err", err)
	}
}

// periodicSaveTimeout bounds a periodic save to the Object Store, during
// which every worker is paused and the partition hooks wait: the put of an
// object whose stream lost its leader (a NATS node killed) waited for its
// whole timeout (storeTimeout, 5 min) in the 3-node cluster test, the
// scorer scoring nothing meanwhile. A periodic save that fails keeps the
// previous one; a clean stop's save keeps storeTimeout.
const periodicSaveTimeout = time.Minute

// durable waits until every result the workers sent so far is published and
// stored, for at most timeout: a marker follows them through the collector,
// which flushes at once, and the flusher answers it once that flush is done.
func (p *Pipeline) durable(timeout time.Duration) error {
	marker := &item{durable: make(chan error, 1)} // the flusher's answer never blocks it
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case p.results <- marker:
	case <-t.C:
		return fmt.Errorf("the collector took no marker within %s", timeout)
	}
	select {
	case err := <-marker.durable:
		if err == nil {
			p.incidentState = marker.incidents
		}
		return err
	case <-t.C:
		return fmt.Errorf("results not durable within %s", timeout)
	}
}
