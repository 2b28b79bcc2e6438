package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/schemas"
)

// DeadLetterer publishes the undecodable records of log message seq on
// origSubject to the DLQ stream, returning once JetStream acknowledged them
// (sink.NATSPublisher).
type DeadLetterer interface {
	DeadLetters(ctx context.Context, origSubject string, seq uint64, letters []schemas.DeadLetter) error
}

// StageConfig configures the ingest stage. Zero values take the defaults.
type StageConfig struct {
	// Partitions is the number of device partitions events are published to
	// (default schemas.DefaultPartitions, at most schemas.MaxPartitions).
	Partitions int
	// FetchBatch is the most log messages one pull fetches (default 256).
	FetchBatch int
	// FetchWait bounds how long a pull waits for messages (default 100ms).
	FetchWait time.Duration
	// MaxPending bounds the batches published and not yet acknowledged by
	// JetStream (default 1024): beyond it the stage waits for their acks
	// before it decodes further.
	MaxPending int
	// PublishTimeout bounds one publish attempt (default 10s); failed
	// publishes are retried until they succeed, the stage stops or the
	// fetch has been held HoldLimit.
	PublishTimeout time.Duration
	// DrainTimeout bounds the publishing and acking of the last fetch when
	// the stage stops (default 30s).
	DrainTimeout time.Duration
	// FetchEnd bounds how long the delivery of one fetch may take (default
	// FetchWait + 5s; the client ends it after FetchWait + 1s without a
	// message): a fetch whose delivery has not ended by then is processed
	// with what it delivered (StageMetrics.FetchStalls), the rest being
	// redelivered after the consumer's ack wait.
	FetchEnd time.Duration
	// HoldLimit bounds the publishing and acking of one fetch (default
	// twice the consumer's AckWait, 60s when unknown): the server redelivers
	// messages unacked after AckWait anyway, so past HoldLimit the stage
	// leaves the ones it has not acked to that redelivery
	// (StageMetrics.Abandoned) and fetches again, rather than retry or wait
	// on one fetch for as long as it runs. (Twice, so that a fetch that is
	// merely slow on a loaded machine is not given up when nearly done.)
	HoldLimit time.Duration
	// NoObs stops the publishing of entity observations (schemas.ObsSubject):
	// scorers then take them from the events, one writer per scorer.
	NoObs bool
}

func (c *StageConfig) defaults() {
	if c.Partitions <= 0 {
		c.Partitions = schemas.DefaultPartitions
	}
	if c.FetchBatch <= 0 {
		c.FetchBatch = 256
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 100 * time.Millisecond
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 1024
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.FetchEnd <= 0 {
		c.FetchEnd = c.FetchWait + 5*time.Second
	}
}

// defaultHoldLimit is StageConfig.HoldLimit when the consumer's ack wait is
// not known.
const defaultHoldLimit = 60 * time.Second

// StageMetrics are the stage's counters.
type StageMetrics struct {
	Messages       atomic.Uint64 // log messages fetched
	Acked          atomic.Uint64 // log messages acked (every batch and dead letter of theirs durable)
	Events         atomic.Uint64 // events published
	Batches        atomic.Uint64 // Arrow batches published (acknowledged by JetStream)
	Obs            atomic.Uint64 // entity observations published (acknowledged by JetStream)
	ObsBatches     atomic.Uint64 // observation batches published (acknowledged by JetStream)
	Bytes          atomic.Uint64 // bytes of those batches
	DeadLettered   atomic.Uint64 // records dead-lettered
	Skipped        atomic.Uint64 // records without an event
	PublishRetries atomic.Uint64 // batch publishes retried after a failure
	FetchStalls    atomic.Uint64 // fetches whose delivery did not end within FetchEnd
	Abandoned      atomic.Uint64 // log messages left unacked to redelivery after HoldLimit
}

// Stage is the stateless ingest stage: it consumes IOTWATCH_LOGS with the
// durable consumer every ingest instance shares (schemas.ConsumerIngest),
// decodes each log message with the Decoder 'run' uses (same formats, same
// dead letters), puts each event into the Arrow batch of its partition
// (schemas.PartitionOf) and publishes one batch per partition per log
// message to iotwatch.events.<partition> (stream IOTWATCH_EVENTS) with the
// message id schemas.EventsMsgID(log sequence, partition). A log message is
// acked only after every batch it produced, and its dead letters, are
// acknowledged by JetStream; a crash before that gets it redelivered, and
// its batches republished under the same ids are dropped by the stream's
// duplicate window.
//
// Entity observations (unless StageConfig.NoObs): each event's observations
// (entity.ObsOf, entity.KeyObsOf) go to the batch of their entity partition
// (entity.ObsPartition, with the same partition count), published after
// the message's event batches to iotwatch.obs.<q> (schemas.ObsSubject) with
// the message id schemas.ObsMsgID(log sequence, q), in the layout of
// schemas.ObsBatchVersion; the event batches then carry the header
// schemas.HeaderObs, so that a scorer does not take them again from the
// events. Partition q's owner thus is the one writer of entity partition
// q's records, whichever scorers own the devices an address addresses.
//
// Order: one instance publishes the batches of a partition in the order of
// the log stream, and JetStream keeps the order of one connection's
// publishes, so a device's events reach its partition in log order. Several
// instances interleave their log messages; a scorer then scores a device's
// event that arrives after a later one of the same device but does not learn
// from it (its record has learned past it: see worker.Process).
type Stage struct {
	cfg  StageConfig
	cons jetstream.Consumer
	js   jetstream.JetStream
	dlq  DeadLetterer
	dec  *Decoder
	log  *slog.Logger
	M    StageMetrics

	parts   partitioner
	pending []pendingBatch
	retry   []pendingBatch // the pending batches of a settle round not acknowledged
	msgs    []fetched
}

// fetched is a log message of the fetch being processed.
type fetched struct {
	msg jetstream.Msg
	ok  bool // its dead letters are published (or it had none)
}

// pendingBatch is a batch published and not yet acknowledged.
type pendingBatch struct {
	msg    int // index in Stage.msgs
	events int
	obs    int // observations, in an observation batch
	pub    *nats.Msg
	ack    jetstream.PubAckFuture
	sent   time.Time // when ack's publish was sent
}

// NewStage returns a stage consuming cons (the durable consumer on
// IOTWATCH_LOGS, bus.EnsureIngest) and publishing with js; dec configures
// its Decoder.
func NewStage(cfg StageConfig, dec Options, cons jetstream.Consumer, js jetstream.JetStream, dlq DeadLetterer, log *slog.Logger) (*Stage, error) {
	cfg.defaults()
	if cfg.Partitions > schemas.MaxPartitions {
		return nil, fmt.Errorf("cannot use %d partitions: at most %d", cfg.Partitions, schemas.MaxPartitions)
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.HoldLimit <= 0 {
		cfg.HoldLimit = defaultHoldLimit
		if ci := cons.CachedInfo(); ci != nil && ci.Config.AckWait > 0 {
			cfg.HoldLimit = 2 * ci.Config.AckWait
		}
	}
	s := &Stage{cfg: cfg, cons: cons, js: js, dlq: dlq, dec: NewDecoder(dec), log: log}
	s.parts.init(cfg.Partitions, !cfg.NoObs)
	return s, nil
}

// Partitions returns the partition count in use.
func (s *Stage) Partitions() int { return s.cfg.Partitions }

// Run consumes until ctx is done, then publishes and acks what it fetched
// last (within DrainTimeout) and returns nil.
func (s *Stage) Run(ctx context.Context) error {
	defer s.parts.release()
	var lastErr time.Time
	for ctx.Err() == nil {
		batch, err := s.cons.Fetch(s.cfg.FetchBatch, jetstream.FetchMaxWait(s.cfg.FetchWait))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if time.Since(lastErr) > 5*time.Second {
				s.log.Warn("cannot fetch log messages, retrying", "err", err)
				lastErr = time.Now()
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		s.receive(batch)
		if len(s.msgs) == 0 {
			continue
		}
		// The fetch is published and acked even when ctx ends meanwhile:
		// the drain context outlives it by DrainTimeout. Either way it is
		// held at most HoldLimit.
		dctx, cancel := drainContext(ctx, s.cfg.DrainTimeout)
		hctx, hcancel := context.WithTimeout(dctx, s.cfg.HoldLimit)
		acked := s.M.Acked.Load()
		s.process(hctx)
		held := hctx.Err() != nil && ctx.Err() == nil
		hcancel()
		cancel()
		if left := uint64(len(s.msgs)) - (s.M.Acked.Load() - acked); held && left > 0 {
			s.M.Abandoned.Add(left)
			s.log.Warn("a fetch held past the hold limit: its unacked log messages are left to redelivery",
				"hold_limit", s.cfg.HoldLimit, "messages", len(s.msgs), "unacked", left)
		}
	}
	return nil
}

// receive collects the messages batch delivers into s.msgs, waiting at most
// FetchEnd for its delivery to end: the client ends a fetch after its wait
// and a second without a message, but should the channel stay open (a
// status lost, a client bug), the stage goes on with what it received
// rather than wait on it forever; the messages delivered to it later are
// redelivered after the ack wait.
func (s *Stage) receive(batch jetstream.MessageBatch) {
	s.msgs = s.msgs[:0]
	end := time.NewTimer(s.cfg.FetchEnd)
	defer end.Stop()
	ch := batch.Messages()
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				return
			}
			s.M.Messages.Add(1)
			s.msgs = append(s.msgs, fetched{msg: msg})
		case <-end.C:
			s.M.FetchStalls.Add(1)
			s.log.Warn("a fetch's delivery did not end: going on with what it delivered",
				"after", s.cfg.FetchEnd, "messages", len(s.msgs))
			return
		}
	}
}

// drainContext returns a context that ends DrainTimeout after ctx does.
func drainContext(ctx context.Context, drain time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(drain, cancel) })
	return dctx, func() { stop(); cancel() }
}

// process decodes, publishes and acks the fetched messages s.msgs.
func (s *Stage) process(ctx context.Context) {
	first := 0 // the first message whose batches are not all acknowledged
	for i := range s.msgs {
		f := &s.msgs[i]
		seq, arrival := position(f.msg)
		c := s.dec.Logs(f.msg.Subject(), f.msg.Data(), seq, arrival, &s.parts)
		s.M.Skipped.Add(uint64(c.Skipped))
		f.ok = s.deadLetters(ctx, f.msg.Subject(), seq)
		for p, b := range s.parts.batches {
			if b.Len() == 0 {
				continue
			}
			n := b.Len()
			data, err := b.AppendIPC(nil)
			if err != nil { // BUG: encoding what the builders hold cannot fail
				s.log.Error("cannot encode an Arrow event batch", "err", err, "log_seq", seq, "partition", p)
				f.ok = false
				continue
			}
			m := &nats.Msg{Subject: schemas.EventsSubject(p), Data: data, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, schemas.EventsMsgID(seq, p))
			if s.parts.obs != nil {
				m.Header.Set(schemas.HeaderObs, schemas.HeaderObsPublished)
			}
			s.pending = append(s.pending, pendingBatch{msg: i, events: n, pub: m, ack: s.publishAsync(m), sent: time.Now()})
		}
		for q, ob := range s.parts.obs {
			if len(ob) == schemas.ObsHeaderSize {
				continue
			}
			// The batch's bytes are the message's: a fresh header begins
			// the next one (the pending message keeps these until acked).
			s.parts.obs[q] = entity.AppendObsHeader(make([]byte, 0, len(ob)))
			m := &nats.Msg{Subject: schemas.ObsSubject(q), Data: ob, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, schemas.ObsMsgID(seq, q))
			n := (len(ob) - schemas.ObsHeaderSize) / schemas.ObsRecordSize
			s.pending = append(s.pending, pendingBatch{msg: i, obs: n, pub: m, ack: s.publishAsync(m), sent: time.Now()})
		}
		if len(s.pending) >= s.cfg.MaxPending {
			s.settle(ctx, first, i+1)
			first = i + 1
		}
	}
	s.settle(ctx, first, len(s.msgs))
}

// settle waits for the pending batches and acks messages [from, to) whose
// batches and dead letters are all durable. It waits in rounds: the
// batches a round did not get acknowledged (an error, or no answer within
// PublishTimeout: the async future of a publish whose PubAck died with a
// killed stream leader resolves neither way, as the JetStream context sets
// no async timeout) are all published again at once (same message ids) for
// the next round, until every one is acknowledged or ctx is done. (One
// synchronous republish after another, as before, took a round trip each:
// at load 20, 524 batches whose PubAcks were late took 50 s, and a full
// window of 1,024 would hold a fetch for minutes; tests/scaleout
// TestClusterKills once saw 94 log messages held, none fetched, for 5
// minutes.)
func (s *Stage) settle(ctx context.Context, from, to int) {
	wait := s.pending
	for round, backoff := 0, 100*time.Millisecond; len(wait) > 0; round, backoff = round+1, min(2*backoff, 5*time.Second) {
		if round > 0 {
			s.log.Warn("Arrow event batches not acknowledged, publishing them again",
				"batches", len(wait), "round", round, "timeout", s.cfg.PublishTimeout, "subject", wait[0].pub.Subject)
			if round > 1 { // the first round waited PublishTimeout already
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
			}
			if ctx.Err() != nil {
				break
			}
			for i := range wait {
				s.M.PublishRetries.Add(1)
				wait[i].ack, wait[i].sent = s.publishAsync(wait[i].pub), time.Now()
			}
		}
		again := s.retry[:0]
		for _, pb := range wait {
			if !s.confirm(ctx, pb) {
				again = append(again, pb)
				continue
			}
			if pb.obs > 0 {
				s.M.ObsBatches.Add(1)
				s.M.Obs.Add(uint64(pb.obs))
			} else {
				s.M.Batches.Add(1)
				s.M.Events.Add(uint64(pb.events))
			}
			s.M.Bytes.Add(uint64(len(pb.pub.Data)))
		}
		// wait and again swap buffers: s.retry becomes the next round's
		// spare.
		s.retry = wait[:0]
		wait = again
		if ctx.Err() != nil {
			break
		}
	}
	for _, pb := range wait {
		s.msgs[pb.msg].ok = false
	}
	// wait and s.retry are the two buffers, whichever round ended.
	clear(wait[:cap(wait)])
	clear(s.retry[:cap(s.retry)])
	s.pending, s.retry = wait[:0], s.retry[:0]
	for i := from; i < to; i++ {
		f := &s.msgs[i]
		if !f.ok {
			continue // redelivered after the ack wait; republished under the same ids
		}
		if err := f.msg.Ack(); err != nil {
			s.log.Warn("cannot ack a log message: it will be redelivered and republished (idempotently)", "err", err)
			continue
		}
		s.M.Acked.Add(1)
	}
}

// publishAsync publishes m, returning nil when it could not even be sent
// (the next settle round publishes it again).
func (s *Stage) publishAsync(m *nats.Msg) jetstream.PubAckFuture {
	f, err := s.js.PublishMsgAsync(m, jetstream.WithExpectStream(schemas.StreamEvents))
	if err != nil {
		return nil
	}
	return f
}

// confirm waits for pb's acknowledgement, at most PublishTimeout after it
// was sent, reporting whether it came.
func (s *Stage) confirm(ctx context.Context, pb pendingBatch) bool {
	if pb.ack == nil {
		return false
	}
	lost := time.NewTimer(s.cfg.PublishTimeout - time.Since(pb.sent))
	defer lost.Stop()
	select {
	case <-pb.ack.Ok():
		return true
	case <-pb.ack.Err():
		return false
	case <-lost.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// deadLetters publishes the dead letters of the message decoded last,
// retrying until they are durable or ctx is done (then the message stays
// unacked, to be redelivered).
func (s *Stage) deadLetters(ctx context.Context, subject string, seq uint64) bool {
	letters := s.dec.Letters()
	if len(letters) == 0 {
		return true
	}
	defer s.dec.ClearLetters()
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		actx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
		err := s.dlq.DeadLetters(actx, subject, seq, letters)
		cancel()
		if err == nil {
			s.M.DeadLettered.Add(uint64(len(letters)))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.log.Warn("cannot dead-letter records, retrying", "err", err, "log_seq", seq)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
	}
}

// position returns a log message's stream sequence and arrival time (the
// stream's timestamp; now when the metadata is missing).
func position(msg jetstream.Msg) (seq uint64, arrival int64) {
	arrival = time.Now().UnixNano()
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
		if !md.Timestamp.IsZero() {
			arrival = md.Timestamp.UnixNano()
		}
	}
	return seq, arrival
}

// partitioner receives decoded events (Events) into the Arrow batch of
// their partition, and their entity observations into the observation
// batch of their entity partition.
type partitioner struct {
	ev      schemas.Event
	batches []*schemas.EventBatch
	obs     [][]byte // by entity partition, each begun with its header; nil: none kept
}

func (p *partitioner) init(n int, obs bool) {
	p.batches = make([]*schemas.EventBatch, n)
	for i := range p.batches {
		p.batches[i] = schemas.NewEventBatch(nil)
	}
	if obs {
		p.obs = make([][]byte, n)
		for q := range p.obs {
			p.obs[q] = entity.AppendObsHeader(nil)
		}
	}
}

func (p *partitioner) release() {
	for _, b := range p.batches {
		b.Release()
	}
}

// Next implements Events.
func (p *partitioner) Next() *schemas.Event { return &p.ev }

// Done implements Events.
func (p *partitioner) Done(ok bool) {
	if !ok {
		return
	}
	p.batches[schemas.PartitionOf(p.ev.DeviceAlt, len(p.batches))].Append(&p.ev)
	if p.obs == nil {
		return
	}
	if ob, has := entity.ObsOf(&p.ev); has {
		q := entity.ObsPartition(&ob, len(p.obs))
		p.obs[q] = entity.AppendObs(p.obs[q], &ob)
	}
	if ob, has := entity.KeyObsOf(&p.ev); has {
		q := entity.ObsPartition(&ob, len(p.obs))
		p.obs[q] = entity.AppendObs(p.obs[q], &ob)
	}
}
