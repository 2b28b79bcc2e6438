package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
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
// and the class table. A checkpoint that cannot be used is reported and the
// pipeline cold-starts; only failing to rebuild the workers is an error.
func (p *Pipeline) restore() error {
	path := p.cfg.Checkpoint
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		p.log.Info("no checkpoint yet: cold start", "checkpoint", path)
		return nil
	}
	m, err := checkpoint.Read(path, checkpoint.MetaOf(p.layout), func(key, alt uint64, lastSeen int64, rec []byte) {
		r, _ := p.workers[shard.Of(key, len(p.workers))].Table().Record(key, alt, lastSeen)
		copy(r, rec)
	}, p.model)
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
	p.M.Devices.Store(int64(m.Records))
	p.restored = m
	p.log.Info("restored checkpoint", "checkpoint", path, "devices", m.Records, "stream_seq", m.StreamSeq, "created", m.Created,
		"cold_detectors", m.Cold, "decision_engines", len(m.Engines))
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

// Restored returns the checkpoint New restored (zero if none).
func (p *Pipeline) Restored() checkpoint.Meta { return p.restored }

// saveCheckpoint writes the checkpoint; the workers must be stopped.
func (p *Pipeline) saveCheckpoint() error {
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
	start := time.Now()
	if err := checkpoint.Write(p.cfg.Checkpoint, meta, tables, p.model); err != nil {
		return err
	}
	p.log.Info("wrote checkpoint", "checkpoint", p.cfg.Checkpoint, "stream_seq", seq, "seconds", time.Since(start).Seconds())
	return nil
}

// catchUp re-learns, without scoring, the messages after the restored
// checkpoint's stream position up to the last one the consumer had delivered
// before this start: a crash lost what they taught (acked ones will not come
// again; unacked ones come again, to be scored, and the records' positions
// keep them from being learned twice). It reads them with an ordered
// consumer of its own; the durable consumer is not touched.
func (p *Pipeline) catchUp(ctx context.Context) error {
	from := p.restored.StreamSeq + 1
	if p.cfg.Stream == nil || p.restored.StreamSeq == 0 {
		return nil
	}
	info, err := p.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("cannot read the consumer's delivered position: %w", err)
	}
	upTo := info.Delivered.Stream
	if upTo < from {
		return nil
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	oc, err := p.cfg.Stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: filters,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return fmt.Errorf("cannot read the log stream from sequence %d: %w", from, err)
	}
	start := time.Now()
	p.log.Info("catching up learning after the checkpoint", "from_seq", from, "to_seq", upTo)
	var seq uint64
	for seq < upTo && ctx.Err() == nil {
		msgs, err := oc.Fetch(p.cfg.FetchBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("cannot read the log stream after sequence %d: %w", seq, err)
		}
		n := 0
		for msg := range msgs.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			if seq = md.Sequence.Stream; seq > upTo {
				break
			}
			p.dispatch(ctx, msg, true)
		}
		if n == 0 {
			break // the stream holds nothing more (messages removed by its limits)
		}
	}
	// The events are queued to the workers ahead of everything ingest fetches.
	p.log.Info("caught up learning after the checkpoint", "messages_to_seq", min(seq, upTo),
		"seconds", time.Since(start).Seconds())
	return nil
}

// periodicCheckpoint pauses every worker after the events dispatched so far,
// saves the checkpoint, and resumes them. The collector and the flusher go on.
func (p *Pipeline) periodicCheckpoint() {
	ps := &pause{resume: make(chan struct{})}
	ps.reached.Add(len(p.shards))
	for _, ch := range p.shards {
		ch <- &item{pause: ps}
	}
	ps.reached.Wait()
	if err := p.saveCheckpoint(); err != nil {
		p.log.Warn("cannot save periodic checkpoint; the previous one stays", "err", err)
	}
	close(ps.resume)
}
