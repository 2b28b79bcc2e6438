package pipeline

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// RowWriter stores results for analysts (ClickHouse). Each call returns only
// when the rows are durable or ctx is done; retrying is the writer's job.
type RowWriter interface {
	WriteScored(ctx context.Context, rec arrow.RecordBatch) error
	WriteAlerts(ctx context.Context, alerts []schemas.Alert) error
	WriteDecisions(ctx context.Context, ds []schemas.Decision) error
	// WriteIncidents stores incident updates (every version is a row; the
	// table keeps the highest).
	WriteIncidents(ctx context.Context, incs []schemas.Incident) error
}

// Publisher sends results to enforcement points and dead letters to the DLQ
// stream (NATS JetStream). Each call returns after the server acknowledged.
type Publisher interface {
	PublishAlerts(ctx context.Context, alerts []schemas.Alert) error
	PublishDecisions(ctx context.Context, ds []schemas.Decision) error
	// PublishIncidents publishes incident updates (iotwatch.incidents.<severity>).
	PublishIncidents(ctx context.Context, incs []schemas.Incident) error
	// DeadLetters publishes the undecodable records of log message seq on
	// origSubject; it may reorder and modify letters, and keeps none of them.
	DeadLetters(ctx context.Context, origSubject string, seq uint64, letters []schemas.DeadLetter) error
}

// revisingPublisher is a Publisher that gives decisions their per-key
// revision and signs them itself (sink.NATSPublisher).
type revisingPublisher interface {
	SetSigner(keyID string, priv ed25519.PrivateKey) error
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
	// durable, on a marker the checkpoint sends after pausing the workers (no
	// event), receives nil once every result before it is published and
	// stored, or the flusher's error (see Pipeline.durable).
	durable chan error
	// incidents, on such a marker, is the incident grouper's state as of
	// the results before it (incident.Grouper.AppendState), set by the
	// collector before it flushes them.
	incidents []byte
	// swept: a sweep's synthetic event (a silent device), made by the worker
	// and not from the free list, so the collector does not return it there.
	swept bool
	// noRow: an entity owner's alert or decision, with no event row (not
	// from the free list either).
	noRow bool
	// written: a caught-up event whose row a partition's previous owner
	// stored already (written.go): judged, its row not written again.
	written bool
}

// entityItem carries an event's entity observation to its owner by value
// (no allocation), or, with ctl set, a batch barrier or a pause.
type entityItem struct {
	ob  entity.Obs
	ctl *item
}

// Source is what the pipeline fetches messages from: a durable pull
// consumer (jetstream.Consumer: the logs, or every event partition), or a
// *partition.Consumer, the event partitions this instance owns. Info gives
// the lag and the delivered position a catch-up after a checkpoint reads
// up to.
type Source interface {
	Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error)
	Info(ctx context.Context) (*jetstream.ConsumerInfo, error)
}

// Pipeline is one running instance. Create with New, start with Run.
type Pipeline struct {
	cfg  Config
	cons Source
	// ackPerConsumer: cons merges several consumers (partitions), so a
	// flush's acks are confirmed consumer by consumer.
	ackPerConsumer bool
	rows           RowWriter
	pub            Publisher
	// pubSigns: pub signs decisions (revisingPublisher); publish does not.
	pubSigns bool
	log      *slog.Logger
	M        Metrics

	// The scoring stack (score.New): layout, workers, class table and
	// limiter are its fields, kept here as they were before a cold start
	// (newWorkers) replaced the stack's workers and class table.
	stack   *score.Stack
	layout  *worker.Layout
	workers []*worker.Worker
	owners  []*entity.Owner
	model   *detectors.ClassModel
	limiter *decide.Limiter

	started  atomic.Bool
	findings findingCounts
	unacked  unacked
	lastSeq  atomic.Uint64         // highest stream sequence fetched
	dec      *ingest.Decoder       // ingest's (and catchUp's): log messages and Arrow batches to events
	out      shardEvents           // where dec hands them (to the shards)
	md       jetstream.MsgMetadata // ingest's: the metadata of the message in hand (bus.Metadata: not allocated per message)
	restored checkpoint.Meta

	// obsErrLogged is when an unreadable observation batch was last logged
	// (observe: ingest's goroutine only).
	obsErrLogged time.Time

	// doneUpTo is the stream sequence up to which every message's results
	// are durable (published and stored) as of this start: the restored
	// checkpoint's, and the messages catchUp judged again. A redelivered
	// message at or below it is acked without being judged a second time
	// against records that learned it already. Set before ingest starts.
	doneUpTo uint64
	// seen: the stream sequences this run has dispatched (only ingest
	// uses it): their redeliveries are acked, not judged again.
	seen seenSeqs
	// skip, during a catch-up, is each restored partition's position (the
	// Object Store's partitions need not all be at one); nil otherwise.
	skip *catchSkip
	// ops are the partition hooks' operations for the ingest loop; stopped
	// is closed when it has ended.
	ops     chan partOp
	stopped chan struct{}
	// owned are the device partitions whose objects this instance saves:
	// all of them, or with Config.PartitionOwnership those it acquired.
	// Only the ingest loop (and New) touches it.
	owned []bool
	// partSeq is each device partition's restored position: a save before
	// anything newer is fetched keeps it rather than going back. With
	// Config.PartitionOwnership it is the partition's last message in the
	// state (its restore's, then its last message dispatched): a bound on
	// the position its object is saved at (savePosition).
	partSeq []uint64
	// partFloor, with Config.PartitionOwnership, is the position at or
	// below which every message of the partition is in this instance's
	// state through its restore and catch-up (RestorePartition): a
	// redelivery of one of them is acked without being judged
	// (partitionDone). Messages after it that this instance judged are
	// recognised by seen: the partition's messages do not all come in
	// stream order, so the last one dispatched (partSeq) is no such floor.
	partFloor []uint64
	// replay holds a takeover's messages that no previous owner judged,
	// in stream order, for the ingest loop to dispatch (replay.go);
	// replayTo[part] is where partition part's replay ends (0: none),
	// replayLeft[part] how many of its messages it still holds. Only the
	// ingest loop touches them.
	replay     []replayed
	replayTo   []uint64
	replayLeft []int
	dispatched uint64 // events sent to the workers (ingest's and catchUp's)
	// gate holds events back until the merged class view covers them
	// (classgate.go; nil: never). dispatchedTo is the latest event time
	// dispatched from fetches (a catch-up's events do not count) and msgSpan the event time the last fetch advanced by per
	// message (-1: not known), both the ingest loop's; inflight counts the
	// batches dispatched and not yet through every worker.
	gate         ClassGate
	dispatchedTo int64
	msgSpan      int64
	inflight     atomic.Int64
	drainChecked time.Time // the last time learnedIdle asked the source
	free         chan *item
	shards       []chan *item
	entityIn     []chan entityItem // by entity owner (entity.Shard)
	results      chan *item
	pubs         chan pubJob // collector → publisher
	// published counts the publish jobs the publisher has published; waiting
	// holds the flush jobs not yet durable (collector → flusher).
	published pubProgress
	pubSent   atomic.Uint64              // publish jobs the collector sent (for Health)
	ackErr    atomic.Pointer[ackFailure] // the last flush whose acks were not confirmed; nil once one is
	pubStall  pubStall                   // publish rounds failing (full store, refused publishes)
	waiting   *waiting
	// grouper groups alerts into incidents: its one writer is the collector
	// (restore loads it before the collector starts). incidentState is its
	// state as of the last durability marker (Pipeline.durable), or as the
	// collector left it when it ended: what a checkpoint saves.
	grouper       *incident.Grouper
	incidentState []byte
	// written holds the results a partition's previous owner stored of
	// the events a takeover's catch-up judges again (written.go).
	written writtenResults
}

// New checks cfg and builds the workers. cons is the durable pull consumer on
// IOTWATCH_LOGS (or a Source of event batches); rows and pub are the sinks.
// New is NewContext with a context that never ends.
func New(cfg Config, cons Source, rows RowWriter, pub Publisher, log *slog.Logger) (*Pipeline, error) {
	return NewContext(context.Background(), cfg, cons, rows, pub, log)
}

// NewContext is New with a context for the restore of the checkpoint, which
// takes seconds for millions of devices: when ctx ends during it, NewContext
// returns an error that wraps ctx's and builds nothing.
func NewContext(ctx context.Context, cfg Config, cons Source, rows RowWriter, pub Publisher, log *slog.Logger) (*Pipeline, error) {
	cfg.defaults()
	if log == nil {
		log = slog.Default()
	}
	sc := cfg.ScoreConfig()
	sc.BlockBudget = cfg.BlockBudget
	sc.Worker.SkipBlocked = cfg.SkipBlocked && !cfg.Decide.DryRun
	if sc.Decide.Now == nil {
		// Live: a block lasts its TTL from when it is decided, however late
		// its event is processed (replay keeps event time).
		sc.Decide.Now = time.Now
	}
	st, err := score.New(sc)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{cfg: cfg, cons: cons, rows: rows, pub: pub, log: log, stack: st,
		layout: st.Layout, workers: st.Workers, owners: st.Owners, model: st.Model, limiter: st.Limiter,
		waiting: newWaiting(cfg.MaxWaitingBytes), ops: make(chan partOp), stopped: make(chan struct{}),
		grouper: incident.New(cfg.Incidents), dispatchedTo: math.MinInt64, msgSpan: -1}
	_, p.ackPerConsumer = cons.(*partition.Consumer)
	p.published.init()
	if cfg.Partitions > schemas.MaxPartitions {
		return nil, fmt.Errorf("cannot split the state into %d partitions: at most %d", cfg.Partitions, schemas.MaxPartitions)
	}
	if cfg.PartitionOwnership && cfg.CheckpointStore == nil {
		return nil, errors.New("cannot own partitions without a checkpoint store (Config.CheckpointStore)")
	}
	p.owned, p.partSeq, p.partFloor = make([]bool, cfg.Partitions), make([]uint64, cfg.Partitions), make([]uint64, cfg.Partitions)
	p.replayTo, p.replayLeft = make([]uint64, cfg.Partitions), make([]int, cfg.Partitions)
	for i := range p.owned {
		p.owned[i] = !cfg.PartitionOwnership
	}
	if s, ok := pub.(revisingPublisher); ok && cfg.SigningKey != nil {
		// The publisher gives each decision its per-key revision before it
		// signs it (schemas.Decision.Revision): it signs them all.
		if err := s.SetSigner(cfg.SigningKeyID, cfg.SigningKey); err != nil {
			return nil, err
		}
		p.pubSigns = true
	}
	if p.checkpointing() {
		if err := p.restore(ctx); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Layout returns the per-device record layout in use.
func (p *Pipeline) Layout() *worker.Layout { return p.layout }

// Instance returns Config.Instance: the name stored with the rows it scores.
func (p *Pipeline) Instance() string { return p.cfg.Instance }

// Allowlist returns the allowlist every engine reads; Store another one
// (cluster.Allowlist) to change it while the pipeline runs.
func (p *Pipeline) Allowlist() *decide.AllowlistRef { return p.stack.Allowlist }

// ClassModel returns the class model the workers learn and read (restored
// from the checkpoint when it held one); cluster.ClassSync merges the other
// instances' class statistics into it.
func (p *Pipeline) ClassModel() *detectors.ClassModel { return p.model }

// Calibration returns the alert calibration the workers' engines share
// (restored from the checkpoint when it held one).
func (p *Pipeline) Calibration() *decide.Calibration { return p.stack.Calibration }

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
	p.pubs = make(chan pubJob, 1024)
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
	for i, o := range p.owners {
		ch := make(chan entityItem, 1024)
		p.entityIn = append(p.entityIn, ch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.own(i, o, ch)
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
	publishing := make(chan struct{})
	go func() {
		p.publisher(drainCtx)
		close(publishing)
	}()
	aliveCtx, stopAlive := context.WithCancel(drainCtx)
	defer stopAlive()
	go p.keepAlive(aliveCtx)
	collected := make(chan struct{})
	go func() {
		p.collect()
		close(collected)
	}()

	// ingest's decoder (and catchUp's, which runs first)
	p.dec = ingest.NewDecoder(ingest.Options{Formats: cfg.Formats, MaxLineBytes: cfg.MaxLineBytes, Enrich: p.stack.Enrich})
	if err := p.catchUp(ctx); err != nil {
		// Not fatal: baselines are then as of the checkpoint, as without Stream.
		p.log.Warn("cannot catch up learning after the checkpoint: baselines are as of the checkpoint", "err", err)
	}
	p.ingest(ctx)
	close(p.stopped)

	// Drain: workers finish their queues, the collector flushes the rest.
	for _, ch := range p.shards {
		close(ch)
	}
	for _, ch := range p.entityIn {
		close(ch)
	}
	wg.Wait()
	close(p.results)
	<-collected
	<-publishing
	err := <-flushed
	if err != nil {
		// Some events are in the baselines but their messages stay unacked and
		// will be redelivered: saving now would count them twice.
		return fmt.Errorf("cannot drain pipeline: %w", err)
	}
	if p.checkpointing() {
		if err := p.saveCheckpoint(storeTimeout); err != nil {
			return fmt.Errorf("cannot save checkpoint after draining: %w", err)
		}
	}
	return nil
}
