// Package pipeline connects the stages of iotwatch in one process:
//
//	JetStream pull consumer ─▶ ingest (decode, dead-letter) ─▶ shard ─▶ workers (state + detectors + decide)
//	   ─▶ collector (columnar batch, alerts, decisions) ─▶ flusher (ClickHouse, NATS) ─▶ ack
//
// Stages are goroutines joined by bounded channels, so back-pressure flows
// upstream: a slow ClickHouse fills the flusher's queue, the collector blocks,
// workers block, the free list of in-flight events runs dry and fetching stops.
// Nothing is dropped.
//
// Memory is bounded by rows, not by the consumer's MaxAckPending: at most
// MaxInFlight decoded events, plus the collector's batch, one queued batch and
// ConcurrentInserts batches being inserted (FlushRows rows each), plus the
// messages those events came from.
//
// Ack contract: a log message is acked only after every row, alert and decision
// derived from it is durable. Ingest follows each fetched batch of messages with
// a barrier through every worker; when the collector has seen the barrier from
// all workers, every result of the batch is in the collector's buffer, and the
// batch's messages are acked after the next flush succeeds. Redelivery after a
// crash is harmless for storage: rows, alerts and decisions carry ids derived
// from the stream position (ReplacingMergeTree, JetStream duplicate window).
package pipeline

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// RowWriter stores results for analysts (ClickHouse). Each call returns only
// when the rows are durable or ctx is done; retrying is the writer's job.
type RowWriter interface {
	WriteScored(ctx context.Context, rec arrow.RecordBatch) error
	WriteAlerts(ctx context.Context, alerts []schemas.Alert) error
	WriteDecisions(ctx context.Context, ds []schemas.Decision) error
}

// Publisher sends results to enforcement points and dead letters to the DLQ
// stream (NATS JetStream). Each call returns after the server acknowledged.
type Publisher interface {
	PublishAlerts(ctx context.Context, alerts []schemas.Alert) error
	PublishDecisions(ctx context.Context, ds []schemas.Decision) error
	DeadLetter(ctx context.Context, origSubject string, seq uint64, line uint32, reason, detail string, payload []byte) error
}

// Config of a pipeline. Zero values take the documented defaults.
type Config struct {
	// Workers is the number of shards (default GOMAXPROCS).
	Workers int
	// FetchBatch is the most messages one pull fetches (default 256).
	FetchBatch int
	// FetchWait bounds how long a pull waits for messages (default 100ms).
	FetchWait time.Duration
	// MaxInFlight bounds decoded events not yet flushed (default 16384).
	MaxInFlight int
	// FlushRows flushes when this many scored rows are buffered (default 50000:
	// ClickHouse inserts are much cheaper per row in large batches).
	FlushRows int
	// FlushInterval flushes at least this often when anything is buffered (default 500ms).
	FlushInterval time.Duration
	// FlushMessages flushes when this many fetched messages wait for their ack
	// (default 5000). It must stay well below the consumer's MaxAckPending:
	// messages are acked only after a flush, so the server stops delivering
	// once MaxAckPending are pending, and throughput would otherwise be capped
	// at MaxAckPending per FlushInterval.
	FlushMessages int
	// ConcurrentInserts bounds the scored-row inserts in flight (default 2).
	ConcurrentInserts int
	// AckWait is the consumer's ack wait (default 60s, as bus.DefaultStreamsConfig).
	// Messages still unacked after half of it are reported in progress, so that a
	// slow sink does not get them redelivered and counted twice in baselines.
	AckWait time.Duration
	// DrainTimeout bounds the final flush on shutdown (default 30s).
	DrainTimeout time.Duration
	// Detectors to enable, by name (default: all registered).
	Detectors []string
	Worker    worker.Config
	Decide    decide.Config
	// Checkpoint, when set, is the file the learned state (device records and
	// class table) is restored from at start and saved to after a clean drain,
	// so that a restart neither resets baselines nor counts an event twice.
	//
	// Learning is exactly-once across crashes: each device record holds the
	// stream position it has learned up to, so a redelivered event is scored
	// but not learned again; and with Stream set, a restart re-learns the
	// messages after the checkpoint's position that the consumer had already
	// delivered (acked ones are never redelivered), before consuming.
	Checkpoint string
	// CheckpointEvery also saves the checkpoint periodically (wall time),
	// pausing the workers briefly; 0 saves only after a clean drain.
	CheckpointEvery time.Duration
	// Stream is the log stream the consumer reads; with Checkpoint, it lets a
	// restart catch up the learning a crash lost (see Checkpoint). Without it
	// that learning is lost: baselines are as of the checkpoint.
	Stream jetstream.Stream
	// GeoIP, when set, fills country, ASN and coordinates that a log line
	// lacks, from a MaxMind-format database (cached per IP).
	GeoIP *geoip.Reader
	// SigningKeyID and SigningKey, when set, sign every decision (ed25519, see
	// schemas.SignDecision) before it is published and stored, so enforcement
	// points can reject forged or tampered ones.
	SigningKeyID string
	SigningKey   ed25519.PrivateKey
	// Formats configures the decoders (identity, country and class fields, API
	// key hashing); the format and source come from each message's subject.
	Formats formats.Options
	// MaxLineBytes bounds one record (schemas.DefaultMaxLineBytes if 0).
	MaxLineBytes int
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.FetchBatch <= 0 {
		c.FetchBatch = 256
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 100 * time.Millisecond // a fetch is received whole before decoding: this bounds the added latency
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 16384
	}
	if c.FlushRows <= 0 {
		c.FlushRows = 50000
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 500 * time.Millisecond
	}
	if c.FlushMessages <= 0 {
		c.FlushMessages = 5000
	}
	if c.ConcurrentInserts <= 0 {
		c.ConcurrentInserts = 2
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Worker.IdleTTL <= 0 {
		c.Worker.IdleTTL = 7 * 24 * time.Hour
	}
}

// Metrics are the pipeline's counters, safe to read at any time.
type Metrics struct {
	Messages     atomic.Uint64 // log messages fetched
	Events       atomic.Uint64 // events decoded and scored
	DeadLettered atomic.Uint64 // lines sent to the DLQ
	Skipped      atomic.Uint64 // well-formed records that carry no event (broker keep-alives)
	Alerts       atomic.Uint64
	Decisions    atomic.Uint64
	Rows         atomic.Uint64 // scored rows written to ClickHouse
	Acked        atomic.Uint64 // messages acked
	FlushLatency Histogram     // seconds from a flush's start to its acks (count: flushes)
	SinkErrors   atomic.Uint64 // failed sink attempts (each retried)
	InProgress   atomic.Uint64 // messages reported in progress while waiting for a slow sink
	Devices      atomic.Int64  // devices with state, all workers
	Evictions    atomic.Uint64 // live records evicted because MaxDevices was reached
	Expired      atomic.Uint64 // records reclaimed after IdleTTL
	Relearned    atomic.Uint64 // redelivered events scored again but not learned twice
	CaughtUp     atomic.Uint64 // events re-learned at start, after the checkpoint's position
	Silences     atomic.Uint64 // silent devices the workers' sweeps reported (worker.Sweep)
	Unnamed      atomic.Uint64 // silent devices a sweep could not name
	LastEvent    atomic.Int64  // event time (Unix ns) of the latest scored event
}

// item carries one event through the stages; a nil-event item with b set is a
// batch barrier.
type item struct {
	ev    schemas.Event
	sc    schemas.Scored
	alert *schemas.Alert
	dec   *schemas.Decision
	b     *batch
	pause *pause
	learn bool // learn only (catch-up after a restart): no score, no result
	// swept: a sweep's synthetic event (a silent device), made by the worker
	// and not from the free list, so the collector does not return it there.
	swept bool
}

// pause stops every worker at the same point of the stream, so that their
// state can be checkpointed: each worker calls reached.Done and waits for resume.
type pause struct {
	reached sync.WaitGroup
	resume  chan struct{}
}

// batch is one fetch's messages, acked together after their results are durable.
type batch struct {
	msgs []jetstream.Msg
	left int // workers whose barrier the collector has not seen yet
}

// unacked tracks fetched batches until they are acked, with the last time the
// server heard of them (fetch, or an in-progress notice).
type unacked struct {
	mu      sync.Mutex
	batches map[*batch]time.Time
}

func (u *unacked) remove(b *batch) {
	u.mu.Lock()
	delete(u.batches, b)
	u.mu.Unlock()
}

// addMsg appends a fetched message to b as soon as it is received, registering
// b on its first message, so that it is kept alive while it waits to be
// decoded. Only ingest calls it.
func (u *unacked) addMsg(b *batch, m jetstream.Msg, now time.Time) {
	u.mu.Lock()
	if u.batches == nil {
		u.batches = map[*batch]time.Time{}
	}
	if _, ok := u.batches[b]; !ok {
		u.batches[b] = now
	}
	b.msgs = append(b.msgs, m)
	u.mu.Unlock()
}

// setMsgs replaces b's messages with those to ack (a new slice: stale may be
// copying the old one).
func (u *unacked) setMsgs(b *batch, msgs []jetstream.Msg) {
	u.mu.Lock()
	b.msgs = msgs
	u.mu.Unlock()
}

// stale returns the messages of the batches not heard of for at least age
// (copied: ingest may still be appending), marking those batches heard of now.
func (u *unacked) stale(now time.Time, age time.Duration) []jetstream.Msg {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []jetstream.Msg
	for b, t := range u.batches {
		if now.Sub(t) >= age {
			out = append(out, b.msgs...)
			u.batches[b] = now
		}
	}
	return out
}

// keepAlive tells the server that messages waiting for a slow sink are still
// being worked on, every quarter of the ack wait, until ctx is done.
func (p *Pipeline) keepAlive(ctx context.Context) {
	t := time.NewTicker(p.cfg.AckWait / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, m := range p.unacked.stale(now, p.cfg.AckWait/2) {
				if m.InProgress() == nil { // an already-acked message says so: fine
					p.M.InProgress.Add(1)
				}
			}
		}
	}
}

type flushJob struct {
	rec       arrow.RecordBatch
	alerts    []schemas.Alert
	decisions []schemas.Decision
	acks      []*batch
}

// Pipeline is one running instance. Create with New, start with Run.
type Pipeline struct {
	cfg     Config
	cons    jetstream.Consumer
	rows    RowWriter
	pub     Publisher
	log     *slog.Logger
	layout  *worker.Layout
	workers []*worker.Worker
	model   *detectors.ClassModel
	limiter *decide.Limiter
	M       Metrics

	started  atomic.Bool
	findings findingCounts
	unacked  unacked
	lastSeq  atomic.Uint64             // highest stream sequence fetched
	decoders map[string]subjectDecoder // by subject; ingest only
	records  [][]byte                  // ingest's scratch
	restored checkpoint.Meta
	free     chan *item
	shards   []chan *item
	results  chan *item
	jobs     chan flushJob
}

// New checks cfg and builds the workers. cons is the durable pull consumer on
// IOTWATCH_LOGS; rows and pub are the sinks.
func New(cfg Config, cons jetstream.Consumer, rows RowWriter, pub Publisher, log *slog.Logger) (*Pipeline, error) {
	cfg.defaults()
	if cfg.Decide.AlertThreshold == 0 && cfg.Decide.BlockThreshold == 0 {
		cfg.Decide = decide.DefaultConfig()
	}
	if log == nil {
		log = slog.Default()
	}
	layout, err := worker.NewLayout(cfg.Detectors)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, cons: cons, rows: rows, pub: pub, log: log, layout: layout,
		limiter: decide.NewLimiter(cfg.Decide.MaxBlocksPerMinute)}
	if err := p.newWorkers(); err != nil {
		return nil, err
	}
	if cfg.Checkpoint != "" {
		if err := p.restore(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// newWorkers builds fresh workers and class table: a cold start.
func (p *Pipeline) newWorkers() error {
	p.model = detectors.NewClassModel(p.layout.Detectors, detectors.NewClassTable(1<<18, 1<<12))
	p.workers = p.workers[:0]
	for range p.cfg.Workers {
		eng, err := decide.NewEngine(p.cfg.Decide, p.limiter)
		if err != nil {
			return err
		}
		w, err := worker.New(p.layout, p.cfg.Worker, p.model, eng)
		if err != nil {
			return err
		}
		p.workers = append(p.workers, w)
	}
	return nil
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
	p.M.Devices.Store(int64(m.Records))
	p.restored = m
	p.log.Info("restored checkpoint", "checkpoint", path, "devices", m.Records, "stream_seq", m.StreamSeq, "created", m.Created,
		"cold_detectors", m.Cold)
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
	start := time.Now()
	if err := checkpoint.Write(p.cfg.Checkpoint, meta, tables, p.model); err != nil {
		return err
	}
	p.log.Info("wrote checkpoint", "checkpoint", p.cfg.Checkpoint, "stream_seq", seq, "seconds", time.Since(start).Seconds())
	return nil
}

// Layout returns the per-device record layout in use.
func (p *Pipeline) Layout() *worker.Layout { return p.layout }

// Run consumes until ctx is done, then drains: it stops fetching, scores what
// was fetched, flushes and acks within DrainTimeout of ctx's end (results not
// durable by then stay unacked, for redelivery). It returns nil after a clean
// drain. Run may be called once.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("cannot run a pipeline twice: create a new one")
	}
	cfg := p.cfg
	p.free = make(chan *item, cfg.MaxInFlight)
	for range cfg.MaxInFlight {
		p.free <- new(item)
	}
	p.results = make(chan *item, 4096)
	p.jobs = make(chan flushJob, 1)
	var wg sync.WaitGroup
	for i, w := range p.workers {
		ch := make(chan *item, 1024)
		p.shards = append(p.shards, ch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.work(i, w, ch)
		}()
	}
	// The drain deadline starts when ctx ends, not when ingest returns: ingest
	// may itself be waiting for a stuck sink to free in-flight slots.
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	var drainTimer atomic.Pointer[time.Timer]
	stopAfter := context.AfterFunc(ctx, func() { drainTimer.Store(time.AfterFunc(cfg.DrainTimeout, cancelDrain)) })
	defer func() {
		stopAfter()
		if t := drainTimer.Load(); t != nil {
			t.Stop()
		}
	}()
	flushed := make(chan error, 1)
	go func() { flushed <- p.flusher(drainCtx) }()
	aliveCtx, stopAlive := context.WithCancel(drainCtx)
	defer stopAlive()
	go p.keepAlive(aliveCtx)
	collected := make(chan struct{})
	go func() {
		p.collect()
		close(collected)
	}()

	p.decoders = map[string]subjectDecoder{} // ingest's (and catchUp's, which runs first)
	if err := p.catchUp(ctx); err != nil {
		// Not fatal: baselines are then as of the checkpoint, as without Stream.
		p.log.Warn("cannot catch up learning after the checkpoint: baselines are as of the checkpoint", "err", err)
	}
	p.ingest(ctx)

	// Drain: workers finish their queues, the collector flushes the rest.
	for _, ch := range p.shards {
		close(ch)
	}
	wg.Wait()
	close(p.results)
	<-collected
	err := <-flushed
	if err != nil {
		// Some events are in the baselines but their messages stay unacked and
		// will be redelivered: saving now would count them twice.
		return fmt.Errorf("cannot drain pipeline: %w", err)
	}
	if cfg.Checkpoint != "" {
		if err := p.saveCheckpoint(); err != nil {
			return fmt.Errorf("cannot save checkpoint after draining: %w", err)
		}
	}
	return nil
}

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
		b := &batch{left: len(p.shards)}
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
		if p.cfg.Checkpoint != "" && p.cfg.CheckpointEvery > 0 && time.Since(lastCheckpoint) >= p.cfg.CheckpointEvery {
			p.periodicCheckpoint()
			lastCheckpoint = time.Now()
		}
	}
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

// decodeMessage splits a message into lines, decodes each into an item and
// sends it to its shard; undecodable lines go to the DLQ with the reason. It
// reports false when a line could not be dead-lettered (shutdown): the message
// must then stay unacked, to be redelivered.
func (p *Pipeline) decodeMessage(ctx context.Context, msg jetstream.Msg) bool {
	return p.dispatch(ctx, msg, false)
}

// dispatch is decodeMessage; with learn, its events are only learned and
// undecodable records are skipped (see reject).
func (p *Pipeline) dispatch(ctx context.Context, msg jetstream.Msg, learn bool) bool {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
		if seq > p.lastSeq.Load() {
			p.lastSeq.Store(seq) // only ingest writes it
		}
	}
	subject, data := msg.Subject(), msg.Data()
	format, dec, err := p.decoderFor(subject)
	if err != nil {
		return p.reject(ctx, learn, subject, seq, 0, &schemas.DecodeError{Reason: ReasonUnknownFormat, Detail: err.Error()}, data)
	}
	p.records = formats.Records(format, p.records[:0], data)
	now := time.Now().UnixNano()
	ok, bad := true, 0
	for i, rec := range p.records {
		if bad == MaxBadLinesPerMessage || i >= schemas.MaxLinesPerMessage {
			// A message of garbage must not stall ingest with one dead letter
			// per line: its rest goes to the DLQ whole, from this record on.
			reason, detail := ReasonTooManyBadLines, fmt.Sprintf("%d undecodable records; the rest of the message from this one on is kept here whole", bad)
			if bad < MaxBadLinesPerMessage {
				reason, detail = ReasonTooManyLines, fmt.Sprintf("a message may carry at most %d records", schemas.MaxLinesPerMessage)
			}
			return p.reject(ctx, learn, subject, seq, uint32(i), &schemas.DecodeError{Reason: reason, Detail: detail}, rest(data, rec)) && ok
		}
		it := <-p.free
		if err := dec.Decode(rec, seq, uint32(i), now, &it.ev); err != nil {
			p.free <- it
			if err == formats.ErrSkip {
				p.M.Skipped.Add(1)
				continue
			}
			ok = p.reject(ctx, learn, subject, seq, uint32(i), err, rec) && ok
			bad++
			continue
		}
		if p.cfg.GeoIP != nil {
			p.cfg.GeoIP.Enrich(&it.ev)
		}
		it.learn = learn
		p.shards[shard.Of(it.ev.DeviceKey, len(p.shards))] <- it
	}
	return ok
}

// reject dead-letters an undecodable record, except when learning only
// (catch-up): it was dead-lettered when first seen, or will be when its
// message is redelivered.
func (p *Pipeline) reject(ctx context.Context, learn bool, subject string, seq uint64, line uint32, err error, payload []byte) bool {
	if learn {
		return true
	}
	return p.deadLetter(ctx, subject, seq, line, err, payload)
}

// rest returns data from rec on; rec is a subslice of data (formats.Records).
func rest(data, rec []byte) []byte {
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(rec))) - uintptr(unsafe.Pointer(unsafe.SliceData(data))))
	if off < 0 || off > len(data) {
		return data // not a subslice: keep the whole message
	}
	return data[off:]
}

// ReasonUnknownFormat dead-letters a message whose subject names no known format.
const ReasonUnknownFormat = "unknown_format"

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
// line; the rest of such a message is dead-lettered whole (ReasonTooManyBadLines).
const MaxBadLinesPerMessage = 100

// ReasonTooManyBadLines dead-letters the rest of a message with too many bad lines.
const ReasonTooManyBadLines = "too_many_bad_lines"

// ReasonTooManyLines dead-letters lines beyond schemas.MaxLinesPerMessage.
const ReasonTooManyLines = "too_many_lines"

func (p *Pipeline) deadLetter(ctx context.Context, subject string, seq uint64, line uint32, err error, payload []byte) bool {
	reason, detail := "undecodable", err.Error()
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		reason, detail = de.Reason, de.Detail
	}
	// The DLQ must hold the line before its message is acked: retry until it does.
	for attempt := 0; ; attempt++ {
		perr := p.pub.DeadLetter(ctx, subject, seq, line, reason, detail, payload)
		if perr == nil {
			p.M.DeadLettered.Add(1)
			return true
		}
		p.M.SinkErrors.Add(1)
		if attempt%10 == 0 {
			p.log.Warn("cannot dead-letter a record, retrying", "subject", subject, "seq", seq, "line", line, "err", perr)
		}
		if ctx.Err() != nil {
			// Shutting down: the message stays unacked and will be redelivered.
			return false
		}
		time.Sleep(backoff(attempt))
	}
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 8)
	return min(d, 5*time.Second)
}

// work runs one shard. After each scored event it sweeps the shard's silent
// devices when a minute of event time has passed (worker.SweepDue): their
// results go to the collector like events', as items of their own that no
// batch waits for, sent before the event that made the sweep due, so that
// they are flushed no later than that event's batch is acked (a sweep row
// whose flush fails is not redelivered; see worker.Sweep).
func (p *Pipeline) work(i int, w *worker.Worker, in <-chan *item) {
	var (
		n    int
		last workerCounts
	)
	emit := func(ev *schemas.Event, sc *schemas.Scored, alert *schemas.Alert, dec *schemas.Decision) {
		s := &item{swept: true, sc: *sc, alert: alert, dec: dec}
		s.ev.CopyFrom(ev)
		p.results <- s
	}
	for it := range in {
		if it.pause != nil {
			it.pause.reached.Done()
			<-it.pause.resume
			continue
		}
		if it.b == nil {
			n++
			if n&4095 == 0 {
				last = p.report(w, last)
			}
			if it.learn {
				w.Learn(&it.ev)
				it.learn = false
				p.M.CaughtUp.Add(1)
				p.free <- it
				continue
			}
			it.alert, it.dec = w.Process(&it.ev, &it.sc)
			if now, ok := w.SweepDue(); ok {
				w.Sweep(now, emit)
			}
		}
		p.results <- it
	}
	p.report(w, last)
}

// findingCounts counts findings per detector and reason (the collector adds,
// metrics read).
type findingCounts struct {
	mu sync.Mutex
	n  map[[2]string]uint64
}

func (c *findingCounts) add(sc *schemas.Scored) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[[2]string]uint64{}
	}
	for _, f := range sc.Findings[:sc.N] {
		c.n[[2]string{f.Detector, f.Reason}]++
	}
	c.mu.Unlock()
}

// each calls fn for every detector and reason counted, in name order.
func (c *findingCounts) each(fn func(detector, reason string, n uint64)) {
	c.mu.Lock()
	keys := slices.SortedFunc(maps.Keys(c.n), func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	counts := make([]uint64, len(keys))
	for i, k := range keys {
		counts[i] = c.n[k]
	}
	c.mu.Unlock()
	for i, k := range keys {
		fn(k[0], k[1], counts[i])
	}
}

// workerCounts are a worker's counters as last added to the pipeline's metrics.
type workerCounts struct {
	devices                       int64
	evictions, expired, relearned uint64
	silences, unnamed             uint64
}

// report adds what w counted since last to the metrics (workers own their
// counters; the metrics sum them).
func (p *Pipeline) report(w *worker.Worker, last workerCounts) workerCounts {
	st := w.Stats()
	sw := w.SweepStats()
	now := workerCounts{devices: int64(st.Devices), evictions: st.LiveEvictions, expired: st.Expired, relearned: w.Relearned(),
		silences: sw.Silences, unnamed: sw.Unnamed}
	p.M.Devices.Add(now.devices - last.devices)
	p.M.Evictions.Add(now.evictions - last.evictions)
	p.M.Expired.Add(now.expired - last.expired)
	p.M.Relearned.Add(now.relearned - last.relearned)
	p.M.Silences.Add(now.silences - last.silences)
	p.M.Unnamed.Add(now.unnamed - last.unnamed)
	return now
}

// collect builds columnar batches and hands them to the flusher.
func (p *Pipeline) collect() {
	rows := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer rows.Release()
	var (
		alerts    []schemas.Alert
		decisions []schemas.Decision
		completed []*batch
		waiting   int // messages of completed batches
	)
	flush := func() {
		alerts = p.limiter.AppendAlerts(alerts) // fleet "block cap hit" alerts
		if rows.Len() == 0 && len(alerts) == 0 && len(decisions) == 0 && len(completed) == 0 {
			return
		}
		p.jobs <- flushJob{rec: rows.NewRecord(), alerts: alerts, decisions: decisions, acks: completed}
		alerts, decisions, completed, waiting = nil, nil, nil, 0
	}
	ticker := time.NewTicker(p.cfg.FlushInterval)
	defer ticker.Stop()
	for {
		select {
		case it, ok := <-p.results:
			if !ok {
				flush()
				close(p.jobs)
				return
			}
			if it.b != nil {
				if it.b.left--; it.b.left == 0 {
					completed = append(completed, it.b)
					if waiting += len(it.b.msgs); waiting >= p.cfg.FlushMessages {
						flush()
					}
				}
				continue
			}
			rows.Append(&it.ev, &it.sc)
			if !it.swept {
				p.M.Events.Add(1)
			}
			if it.sc.N > 0 {
				p.findings.add(&it.sc)
			}
			if it.ev.Time > p.M.LastEvent.Load() {
				p.M.LastEvent.Store(it.ev.Time)
			}
			if it.alert != nil {
				alerts = append(alerts, *it.alert)
			}
			if it.dec != nil {
				decisions = append(decisions, *it.dec)
			}
			it.alert, it.dec = nil, nil
			if !it.swept {
				p.free <- it
			}
			if rows.Len() >= p.cfg.FlushRows {
				flush()
			}
		case <-ticker.C:
			flush()
		}
	}
}

// flusher makes each job durable, then acks its messages, in job order. Up to
// Config.ConcurrentInserts scored-row inserts run at once (ClickHouse spends
// most of an insert on its side, so two overlap well); decisions, alerts and
// acks follow in order, one job at a time, so enforcement points see decisions
// in the order they were made. It returns an error only if ctx ends before a
// job is durable (its messages stay unacked and JetStream redelivers them).
func (p *Pipeline) flusher(ctx context.Context) error {
	type inflight struct {
		job   flushJob
		rows  chan error
		start time.Time
	}
	queue := make(chan *inflight, p.cfg.ConcurrentInserts-1)
	go func() {
		defer close(queue)
		for job := range p.jobs {
			f := &inflight{job: job, rows: make(chan error, 1), start: time.Now()}
			queue <- f // first: the queue's bound is the bound on inserts in flight
			go func() { f.rows <- p.writeRows(ctx, job.rec) }()
		}
	}()
	var failed error
	for f := range queue {
		err := <-f.rows
		f.job.rec.Release()
		if failed != nil {
			continue // keep draining so the collector never blocks
		}
		if err == nil {
			err = p.publish(ctx, f.job)
		}
		if err != nil {
			failed = err
			p.log.Error("cannot flush results; their messages stay unacked for redelivery", "err", err)
			continue
		}
		acked := 0
		for _, b := range f.job.acks {
			for _, m := range b.msgs {
				if err := m.Ack(); err != nil {
					p.log.Warn("cannot ack message; it will be redelivered", "err", err)
					continue
				}
				acked++
			}
			p.unacked.remove(b)
		}
		p.M.Acked.Add(uint64(acked))
		p.M.FlushLatency.Observe(time.Since(f.start).Seconds())
	}
	return failed
}

func (p *Pipeline) writeRows(ctx context.Context, rec arrow.RecordBatch) error {
	n := rec.NumRows()
	if n == 0 {
		return nil
	}
	if err := p.rows.WriteScored(ctx, rec); err != nil {
		return fmt.Errorf("cannot write %d scored rows: %w", n, err)
	}
	p.M.Rows.Add(uint64(n))
	return nil
}

// publish makes a job's decisions and alerts durable: NATS, then ClickHouse.
func (p *Pipeline) publish(ctx context.Context, job flushJob) error {
	// Decisions first: enforcement points are waiting for them.
	if len(job.decisions) > 0 {
		if p.cfg.SigningKey != nil {
			for i := range job.decisions {
				if err := schemas.SignDecision(&job.decisions[i], p.cfg.SigningKeyID, p.cfg.SigningKey); err != nil {
					return fmt.Errorf("cannot sign decision %q: %w", job.decisions[i].ID, err)
				}
			}
		}
		if err := p.retry(ctx, "publish decisions", func() error { return p.pub.PublishDecisions(ctx, job.decisions) }); err != nil {
			return err
		}
		if err := p.rows.WriteDecisions(ctx, job.decisions); err != nil {
			return fmt.Errorf("cannot write %d decisions: %w", len(job.decisions), err)
		}
		p.M.Decisions.Add(uint64(len(job.decisions)))
	}
	if len(job.alerts) > 0 {
		if err := p.retry(ctx, "publish alerts", func() error { return p.pub.PublishAlerts(ctx, job.alerts) }); err != nil {
			return err
		}
		if err := p.rows.WriteAlerts(ctx, job.alerts); err != nil {
			return fmt.Errorf("cannot write %d alerts: %w", len(job.alerts), err)
		}
		p.M.Alerts.Add(uint64(len(job.alerts)))
	}
	return nil
}

// retry calls f until it succeeds or ctx is done.
func (p *Pipeline) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		p.M.SinkErrors.Add(1)
		if attempt%10 == 0 {
			p.log.Warn("sink call failed, retrying", "what", what, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot %s: %w", what, errors.Join(err, ctx.Err()))
		case <-time.After(backoff(attempt)):
		}
	}
}
