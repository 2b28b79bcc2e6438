package pipeline

import (
	"context"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/schemas"
)

// ingest fetches, decodes and dispatches until ctx is done.
func (p *Pipeline) ingest(ctx context.Context) {
	var lastErr time.Time
	lastCheckpoint := time.Now()
	for ctx.Err() == nil {
		p.runOps(ctx)
		n := p.admit(ctx) // FetchBatch without a ClassGate
		msgs, err := p.cons.Fetch(n, jetstream.FetchMaxWait(p.cfg.FetchWait))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if time.Since(lastErr) > 5*time.Second {
				p.log.Warn("cannot fetch log messages, retrying", "err", err)
				lastErr = time.Now()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		// Receive the whole fetch first, registering every message to be kept
		// alive: decoding may wait for a slow sink, and messages still sitting
		// in the client's buffer meanwhile would be redelivered by the server
		// after the ack wait and counted twice in the baselines.
		b := &batch{left: len(p.shards) + len(p.entityIn), msgs: make([]jetstream.Msg, 0, n)}
		for msg := range msgs.Messages() {
			p.M.Messages.Add(1)
			p.unacked.addMsg(b, msg)
		}
		fetched := b.msgs
		before := p.dispatchedTo
		kept := make([]jetstream.Msg, 0, len(fetched))
		replayed := 0
		for _, msg := range fetched {
			if len(p.replay) > 0 {
				// A takeover's messages no previous owner judged, in
				// stream order with the fetched ones (replay.go).
				replayed += p.replayBefore(ctx, msgSeq(msg), -1)
			}
			if p.decodeMessage(ctx, msg) {
				kept = append(kept, msg) // a message whose dead letter failed stays unacked
			}
		}
		if len(fetched) == 0 && len(p.replay) > 0 {
			replayed += p.replayBefore(ctx, math.MaxUint64, n)
		}
		p.unacked.setMsgs(b, kept)
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			if time.Since(lastErr) > 5*time.Second {
				p.log.Warn("fetch ended with an error", "err", err)
				lastErr = time.Now()
			}
		}
		if len(b.msgs) == 0 && replayed == 0 {
			p.unacked.remove(b)
			if p.gate != nil && len(fetched) == 0 && p.inflight.Load() == 0 && len(p.replay) == 0 {
				p.learnedIdle(ctx)
			}
			continue
		}
		if p.gate != nil {
			b.upTo = p.dispatchedTo
			p.dispatchedBatch(before, len(b.msgs)+replayed)
			p.inflight.Add(1)
		}
		for _, ch := range p.shards {
			ch <- &item{b: b}
		}
		for _, ch := range p.entityIn {
			ch <- entityItem{ctl: &item{b: b}}
		}
		if p.checkpointing() && p.cfg.CheckpointEvery > 0 && time.Since(lastCheckpoint) >= p.cfg.CheckpointEvery {
			p.periodicCheckpoint()
			lastCheckpoint = time.Now()
		}
	}
}

// decodeMessage decodes a message (a log message, or an Arrow event batch of
// the ingest stage) into items and sends each to its shard (ingest.Decoder,
// the path 'iotwatch ingest' shares); undecodable records go to the DLQ with
// the reason. It
// reports false when a line could not be dead-lettered (shutdown): the message
// must then stay unacked, to be redelivered.
//
// A message at or below doneUpTo (redelivered after a restart: its results
// are durable already, from before the checkpoint or from catchUp) is not
// decoded: it is acked with its fetch, after the results queued before it.
// Judged again, its events would meet records that learned them and later
// events (a transition from a later command, a rate that counts them twice),
// and raise alerts the first judging did not.
//
// A message this run has dispatched already (seenSeqs: redelivered after
// its ack was lost or late, as when a stream leader is killed) is not
// dispatched again either, for the same reason; it is acked the same way.
func (p *Pipeline) decodeMessage(ctx context.Context, msg jetstream.Msg) bool {
	md := &p.md // parsed once, into ingest's own record
	if bus.Metadata(msg, md) != nil {
		md = nil
	}
	if md != nil {
		seq := md.Sequence.Stream
		if seq <= p.doneUpTo || p.seen.has(seq) || p.partitionDone(msg.Subject(), seq) {
			p.M.RedeliveredDone.Add(1)
			return true
		}
		p.seen.add(seq)
	}
	return p.dispatch(ctx, msg, md)
}

// partitionDone reports whether a message of a partition this instance
// acquired (its events or its entities' observations) is at or below the
// position its restore covers (its object's, then the catch-up's:
// partFloor): its results are durable already (the previous owner's, or
// the catch-up's), and a redelivery is acked without being judged again,
// as at or below doneUpTo. Not the last message of the partition
// dispatched: one below it may come for the first time (a redelivery after
// the ack wait of a message never judged), and must be judged.
func (p *Pipeline) partitionDone(subject string, seq uint64) bool {
	if !p.cfg.PartitionOwnership {
		return false
	}
	part, ok := schemas.SubjectPartition(subject)
	return ok && part < len(p.partFloor) && seq <= max(p.partFloor[part], p.replayTo[part])
}

// dispatch is decodeMessage without the doneUpTo test (catchUp calls it);
// md is msg's metadata, nil when it has none.
func (p *Pipeline) dispatch(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) bool {
	var seq uint64
	// The arrival time bounds event times (formats.Options.MaxClockSkew): the
	// stream's timestamp of the message, not this moment, so that a backlog
	// read late, a redelivery and a catch-up after a crash judge a record
	// alike.
	var arrival int64
	stamped := false // this moment only for a message without the stream's (time.Now is ~0.1 µs here)
	if md != nil {
		seq = md.Sequence.Stream
		if seq > p.lastSeq.Load() {
			p.lastSeq.Store(seq) // only ingest writes it
		}
		if p.cfg.PartitionOwnership {
			// A partition's object is saved at its own position: the other
			// partitions' may run ahead of its messages not fetched yet.
			if part, ok := schemas.SubjectPartition(msg.Subject()); ok && part < len(p.partSeq) {
				p.partSeq[part] = max(p.partSeq[part], seq)
			}
		}
		if !md.Timestamp.IsZero() {
			arrival, stamped = md.Timestamp.UnixNano(), true
		}
	}
	if !stamped {
		arrival = time.Now().UnixNano()
	}
	subject, data := msg.Subject(), msg.Data()
	if strings.HasPrefix(subject, schemas.SubjectObsPrefix+".") {
		p.observe(data, seq)
		return true
	}
	// The message's dead letters are collected and published together once
	// it is decoded (one DLQ message per reason), before the message can be
	// acked: its records stay valid until then.
	out := &p.out
	out.p, out.seq = p, seq
	// An event batch whose observations the ingest stage published to
	// their entity partitions (observe takes them there): not taken again
	// from its events.
	out.obsPublished = msg.Headers().Get(schemas.HeaderObs) == schemas.HeaderObsPublished
	var c ingest.Counts
	if strings.HasPrefix(subject, schemas.SubjectEventsPrefix+".") {
		// An Arrow event batch of the ingest stage ('run --source events'):
		// decoded, bounded and enriched there already; ids and stream
		// positions are the log stream's, carried in the batch.
		c = p.dec.Arrow(data, out)
	} else {
		c = p.dec.Logs(subject, data, seq, arrival, out)
	}
	p.M.Skipped.Add(uint64(c.Skipped))
	return p.deadLetters(ctx, subject, seq)
}

// shardEvents hands decoded events to their workers: each is decoded into
// an item of the free list and sent to its device's shard.
type shardEvents struct {
	p   *Pipeline
	it  *item
	seq uint64 // the stream sequence of the message the events are of
	// obsPublished: the events' entity observations come in messages of
	// their own (schemas.HeaderObs), not from the events.
	obsPublished bool
}

func (s *shardEvents) Next() *schemas.Event {
	s.it = <-s.p.free
	return &s.it.ev
}

func (s *shardEvents) Done(ok bool) {
	it := s.it
	s.it = nil
	if !ok {
		s.p.free <- it
		return
	}
	// The entity observations are taken before the worker owns the event.
	var ob, kob entity.Obs
	hasEntity, hasKey := false, false
	if !s.obsPublished {
		ob, hasEntity = entity.ObsOf(&it.ev)
		kob, hasKey = entity.KeyObsOf(&it.ev)
	}
	it.written = false
	if sk := s.p.skip; sk != nil {
		// A catch-up after a restore of partitions at different positions:
		// what a partition's state holds already is not judged again.
		hasEntity = hasEntity && sk.entity(&ob, s.seq)
		hasKey = hasKey && sk.entity(&kob, s.seq)
		if !sk.device(it.ev.DeviceAlt, s.seq) {
			s.p.free <- it
			it = nil
		} else {
			// Stored by the partition's previous owner: judged to learn
			// from it, not written again.
			it.written = s.p.written.event(it.ev.ID)
		}
	}
	if it != nil {
		s.p.dispatched++
		s.p.dispatchedTo = max(s.p.dispatchedTo, it.ev.Time)
		s.p.shards[shard.Of(it.ev.DeviceKey, len(s.p.shards))] <- it
	}
	if in := s.p.entityIn; len(in) > 0 {
		if hasEntity {
			in[entity.Shard(&ob, len(in))] <- entityItem{ob: ob}
		}
		if hasKey {
			in[entity.Shard(&kob, len(in))] <- entityItem{ob: kob}
		}
	}
}

// observe hands the entity observations of batch (a message of stream
// sequence seq on schemas.ObsSubject: the ingest stage's, in the layout of
// schemas.ObsBatchVersion) to their owners, as shardEvents.Done does for
// the observations it takes from events; during a catch-up, those whose
// entity partition's restored state covers seq are not judged again. A
// batch that cannot be read is counted (Metrics.ObsRejected) and logged:
// its observations are not judged, and it is acked with its fetch.
func (p *Pipeline) observe(batch []byte, seq uint64) {
	n, err := entity.ObsCount(batch)
	if err != nil {
		p.M.ObsRejected.Add(1)
		if time.Since(p.obsErrLogged) > 5*time.Second {
			p.log.Error("cannot read an entity observation batch: its observations are not judged", "stream_seq", seq, "err", err)
			p.obsErrLogged = time.Now()
		}
		return
	}
	in := p.entityIn
	if len(in) == 0 {
		return
	}
	var ob entity.Obs
	for i := range n {
		entity.ReadObs(batch, i, &ob)
		if sk := p.skip; sk != nil && !sk.entity(&ob, seq) {
			continue
		}
		in[entity.Shard(&ob, len(in))] <- entityItem{ob: ob}
	}
}

// MaxBadLinesPerMessage bounds the dead letters one message produces line by
// line; the rest of such a message is dead-lettered whole (schemas.DeadLetterTooManyBadLines).
const MaxBadLinesPerMessage = ingest.MaxBadLinesPerMessage

// deadLetters publishes the dead letters of the message dispatched (p.dec.Letters)
// and reports whether the DLQ holds them: the message must not be acked
// before. It retries until it does or ctx is done (shutting down: the message
// then stays unacked, to be redelivered).
func (p *Pipeline) deadLetters(ctx context.Context, subject string, seq uint64) bool {
	letters := p.dec.Letters()
	if len(letters) == 0 {
		return true
	}
	n := len(letters)
	err := p.retryPublish(ctx, "dead-letter records", func(ctx context.Context) error {
		return p.pub.DeadLetters(ctx, subject, seq, letters)
	})
	p.dec.ClearLetters() // drop the references to the message's data
	if err != nil {
		return false
	}
	p.M.DeadLettered.Add(uint64(n))
	return true
}
