package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/schemas"
)

// ingest fetches, decodes and dispatches until ctx is done.
func (p *Pipeline) ingest(ctx context.Context) {
	var lastErr time.Time
	lastCheckpoint := time.Now()
	for ctx.Err() == nil {
		msgs, err := p.cons.Fetch(p.cfg.FetchBatch, jetstream.FetchMaxWait(p.cfg.FetchWait))
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
		b := &batch{left: len(p.shards) + len(p.entityIn)}
		for msg := range msgs.Messages() {
			p.M.Messages.Add(1)
			p.unacked.addMsg(b, msg, time.Now())
		}
		fetched := b.msgs
		kept := make([]jetstream.Msg, 0, len(fetched))
		for _, msg := range fetched {
			if p.decodeMessage(ctx, msg) {
				kept = append(kept, msg) // a message whose dead letter failed stays unacked
			}
		}
		p.unacked.setMsgs(b, kept)
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			if time.Since(lastErr) > 5*time.Second {
				p.log.Warn("fetch ended with an error", "err", err)
				lastErr = time.Now()
			}
		}
		if len(b.msgs) == 0 {
			p.unacked.remove(b)
			continue
		}
		for _, ch := range p.shards {
			ch <- &item{b: b}
		}
		for _, ch := range p.entityIn {
			ch <- entityItem{ctl: &item{b: b}}
		}
		if p.cfg.Checkpoint != "" && p.cfg.CheckpointEvery > 0 && time.Since(lastCheckpoint) >= p.cfg.CheckpointEvery {
			p.periodicCheckpoint()
			lastCheckpoint = time.Now()
		}
	}
}

// decodeMessage splits a message into lines, decodes each into an item and
// sends it to its shard; undecodable lines go to the DLQ with the reason. It
// reports false when a line could not be dead-lettered (shutdown): the message
// must then stay unacked, to be redelivered.
//
// A message at or below doneUpTo (redelivered after a restart: its results
// are durable already, from before the checkpoint or from catchUp) is not
// decoded: it is acked with its fetch, after the results queued before it.
// Judged again, its events would meet records that learned them and later
// events (a transition from a later command, a rate that counts them twice),
// and raise alerts the first judging did not.
func (p *Pipeline) decodeMessage(ctx context.Context, msg jetstream.Msg) bool {
	if md, err := msg.Metadata(); err == nil && md.Sequence.Stream <= p.doneUpTo {
		p.M.RedeliveredDone.Add(1)
		return true
	}
	return p.dispatch(ctx, msg)
}

// dispatch is decodeMessage without the doneUpTo test (catchUp calls it).
func (p *Pipeline) dispatch(ctx context.Context, msg jetstream.Msg) bool {
	var seq uint64
	// The arrival time bounds event times (formats.Options.MaxClockSkew): the
	// stream's timestamp of the message, not this moment, so that a backlog
	// read late, a redelivery and a catch-up after a crash judge a record
	// alike.
	arrival := time.Now().UnixNano()
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
		if seq > p.lastSeq.Load() {
			p.lastSeq.Store(seq) // only ingest writes it
		}
		if !md.Timestamp.IsZero() {
			arrival = md.Timestamp.UnixNano()
		}
	}
	subject, data := msg.Subject(), msg.Data()
	// The message's dead letters are collected and published together once
	// it is decoded (one DLQ message per reason), before the message can be
	// acked: its records stay valid until then.
	p.letters = p.letters[:0]
	format, dec, err := p.decoderFor(subject)
	if err != nil {
		p.addDeadLetter(0, &schemas.DecodeError{Reason: schemas.DeadLetterUnknownFormat, Detail: err.Error()}, data)
		return p.deadLetters(ctx, subject, seq)
	}
	p.records = formats.Records(format, p.records[:0], data)
	bad := 0
	for i, rec := range p.records {
		if bad == MaxBadLinesPerMessage || i >= schemas.MaxLinesPerMessage {
			// A message of garbage must not cost one dead letter per line: its
			// rest goes to the DLQ whole (cut to sink.MaxDeadLetterRecord),
			// from this record on.
			reason, detail := schemas.DeadLetterTooManyBadLines, fmt.Sprintf("%d undecodable records; the rest of the message from this one on is kept here whole", bad)
			if bad < MaxBadLinesPerMessage {
				reason, detail = schemas.DeadLetterTooManyLines, fmt.Sprintf("a message may carry at most %d records", schemas.MaxLinesPerMessage)
			}
			p.addDeadLetter(uint32(i), &schemas.DecodeError{Reason: reason, Detail: detail}, rest(data, rec))
			break
		}
		it := <-p.free
		if err := dec.Decode(rec, seq, uint32(i), arrival, &it.ev); err != nil {
			p.free <- it
			if err == formats.ErrSkip {
				p.M.Skipped.Add(1)
				continue
			}
			p.addDeadLetter(uint32(i), err, rec)
			bad++
			continue
		}
		p.stack.Enrich(&it.ev)
		p.dispatched++
		// The entity observation is taken before the worker owns the event.
		ob, hasEntity := entity.ObsOf(&it.ev)
		kob, hasKey := entity.KeyObsOf(&it.ev)
		p.shards[shard.Of(it.ev.DeviceKey, len(p.shards))] <- it
		if hasEntity && len(p.entityIn) > 0 {
			p.entityIn[entity.Shard(&ob, len(p.entityIn))] <- entityItem{ob: ob}
		}
		if hasKey && len(p.entityIn) > 0 {
			p.entityIn[entity.Shard(&kob, len(p.entityIn))] <- entityItem{ob: kob}
		}
	}
	return p.deadLetters(ctx, subject, seq)
}

// addDeadLetter adds record line of the message being dispatched to its dead
// letters, with the reason err gives (a *schemas.DecodeError) or
// DeadLetterUndecodable.
func (p *Pipeline) addDeadLetter(line uint32, err error, record []byte) {
	reason, detail := schemas.DeadLetterUndecodable, err.Error()
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		reason, detail = de.Reason, de.Detail
	}
	p.letters = append(p.letters, schemas.DeadLetter{Line: line, Reason: reason, Detail: detail, Size: len(record), Record: record})
}

// rest returns data from rec on; rec is a subslice of data (formats.Records).
func rest(data, rec []byte) []byte {
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(rec))) - uintptr(unsafe.Pointer(unsafe.SliceData(data))))
	if off < 0 || off > len(data) {
		return data // not a subslice: keep the whole message
	}
	return data[off:]
}

// maxDecoders bounds the per-(format, source) decoders kept; beyond it they
// are rebuilt (a Mosquitto decoder then forgets its client addresses).
const maxDecoders = 4096

// decoderFor returns the format named by a subject iotwatch.logs.<format>.<source>
// and that stream's decoder (one per source: some formats keep per-stream state).
func (p *Pipeline) decoderFor(subject string) (string, formats.Decoder, error) {
	if d, ok := p.decoders[subject]; ok {
		return d.format, d.dec, nil
	}
	rest, ok := strings.CutPrefix(subject, schemas.SubjectLogsPrefix+".")
	if !ok {
		return "", nil, fmt.Errorf("subject %q is not under %s", subject, schemas.SubjectLogsAll)
	}
	format, source, _ := strings.Cut(rest, ".")
	o := p.cfg.Formats
	o.Source = source
	if o.MaxLineBytes == 0 {
		o.MaxLineBytes = p.cfg.MaxLineBytes
	}
	dec, err := formats.New(format, o)
	if err != nil {
		return "", nil, err
	}
	if len(p.decoders) >= maxDecoders {
		clear(p.decoders)
	}
	p.decoders[subject] = subjectDecoder{format: format, dec: dec}
	return format, dec, nil
}

type subjectDecoder struct {
	format string
	dec    formats.Decoder
}

// MaxBadLinesPerMessage bounds the dead letters one message produces line by
// line; the rest of such a message is dead-lettered whole (schemas.DeadLetterTooManyBadLines).
const MaxBadLinesPerMessage = 100

// deadLetters publishes the dead letters of the message dispatched (p.letters)
// and reports whether the DLQ holds them: the message must not be acked
// before. It retries until it does or ctx is done (shutting down: the message
// then stays unacked, to be redelivered).
func (p *Pipeline) deadLetters(ctx context.Context, subject string, seq uint64) bool {
	if len(p.letters) == 0 {
		return true
	}
	n := len(p.letters)
	err := p.retryPublish(ctx, "dead-letter records", func(ctx context.Context) error {
		return p.pub.DeadLetters(ctx, subject, seq, p.letters)
	})
	clear(p.letters) // drop the references to the message's data
	if err != nil {
		return false
	}
	p.M.DeadLettered.Add(uint64(n))
	return true
}
