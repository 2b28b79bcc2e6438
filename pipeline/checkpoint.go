package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
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
// and the class table. The tables are first sized for the checkpoint's
// records, so that the restore does not rebuild them, and progress is logged
// every few seconds. A checkpoint that cannot be used is reported and the
// pipeline cold-starts; failing to rebuild the workers, or ctx ending during
// the restore (a SIGTERM at start-up), is an error.
func (p *Pipeline) restore(ctx context.Context) error {
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
	for _, w := range p.workers {
		p.report(w, workerCounts{}) // the workers' first counts: devices restored, evicted by the cap
	}
	p.restored = m
	p.log.Info("restored checkpoint", "checkpoint", path, "devices", m.Records, "stream_seq", m.StreamSeq, "created", m.Created,
		"cold_detectors", m.Cold, "seconds", time.Since(start).Seconds())
	return nil
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

// saveCheckpoint writes the checkpoint; the workers must be stopped.
func (p *Pipeline) saveCheckpoint() error {
	tables := make([]*state.Table, len(p.workers))
	for i, w := range p.workers {
		tables[i] = w.Table()
	}
	seq := max(p.lastSeq.Load(), p.restored.StreamSeq)
	meta := checkpoint.MetaOf(p.layout)
	meta.StreamSeq = seq
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
