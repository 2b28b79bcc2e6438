package pipeline

import (
	"crypto/ed25519"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// Config of a pipeline. Zero values take the documented defaults.
type Config struct {
	// Workers is the number of shards (default GOMAXPROCS).
	Workers int
	// FetchBatch is the most messages one pull fetches (default 256).
	FetchBatch int
	// FetchWait bounds how long a pull waits for messages (default 100ms).
	FetchWait time.Duration
	// ClassHoldMax bounds one hold of a ClassGate (GateClasses): after it
	// the pipeline judges its next events anyway (default
	// DefaultClassHoldMax).
	ClassHoldMax time.Duration
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
	// MaxWaitingBytes bounds the memory held for ClickHouse (default 256 MiB,
	// DefaultMaxWaitingBytes): scored rows, alerts and decisions not yet
	// durable there, and the log messages whose acks wait for them. Alerts and
	// decisions are published when they are decided, so while ClickHouse is
	// down or slow the pipeline keeps fetching, scoring and deciding until
	// this much waits; then fetching pauses until rows are written (and with
	// it, deciding). A scored event holds about 0.5-1 KB (its row and its
	// share of the message), so the default rides out an outage of some
	// 300,000-500,000 events. The consumer's MaxAckPending bounds the waiting
	// messages too: the server delivers no more beyond it.
	MaxWaitingBytes int64
	// AckWait is the consumer's ack wait (default 60s, as bus.DefaultStreamsConfig).
	// Messages still unacked after half of it are reported in progress, so that a
	// slow sink does not get them redelivered and counted twice in baselines.
	AckWait time.Duration
	// DrainTimeout bounds the final flush on shutdown (default 30s).
	DrainTimeout time.Duration
	// Detectors to enable, by name (default: all registered).
	Detectors []string
	// Worker configures each worker's state table (IdleTTL default
	// score.DefaultIdleTTL). Worker.MaxDevices, the cap per worker, defaults
	// to DefaultMaxDevices shared by the workers; a negative value means no
	// cap.
	Worker worker.Config
	// Decide configures the decision engines (decide.DefaultConfig() if
	// neither threshold is set).
	Decide decide.Config
	// BlockBudget, when set, counts Decide.MaxBlocksPerMinute for the whole
	// cluster (cluster.KVBudget); nil counts in this process.
	BlockBudget decide.Budget
	// Incidents bounds the grouping of alerts into incidents (zero fields:
	// the incident package's defaults).
	Incidents incident.Config
	// Entities configures the entity owners (client IPs and their /24 or
	// /48, package entity): one per worker, fed by ingest, their alerts and
	// decisions published and stored like the devices'.
	Entities entity.Config
	// Checkpoint, when set, is the file the learned state (device records and
	// class table) is restored from at start and saved to after a clean drain,
	// so that a restart neither resets baselines nor counts an event twice.
	//
	// Learning and judging are exactly-once across crashes: each device
	// record holds the stream position it has learned up to, so a
	// redelivered event is scored but not learned again; with Stream set, a
	// restart judges again (same ids) the messages after the checkpoint's
	// position that the consumer had already delivered, before consuming;
	// the decision engines' state is in the checkpoint, and redelivered
	// messages whose results were already durable are acked without being
	// judged again (see Pipeline.catchUp and periodicCheckpoint).
	Checkpoint string
	// CheckpointStore, when set, replaces the Checkpoint file: the state is
	// saved to and restored from this JetStream Object Store bucket
	// (schemas.BucketCheckpoints), one object per device partition, one per
	// entity partition and one for the state that spans them (see
	// Pipeline.SavePartition and the schemas.Checkpoint* names), with the
	// same exactly-once catch-up as the file, partition by partition.
	CheckpointStore jetstream.ObjectStore
	// PartitionOwnership: this instance owns only the device partitions a
	// partition owner hands it (Pipeline.RestorePartition when it acquires
	// one, DropPartition when it loses one), not all of them. New then
	// restores only the global object (class statistics, calibration), and
	// checkpoints save only the owned partitions' objects, plus the global
	// and entity objects when it owns partition 0 (their one writer while
	// class statistics are not merged across instances and entities not
	// partitioned by their own key; see store.go). Needs CheckpointStore.
	PartitionOwnership bool
	// Instance names this instance in the rows it writes (column
	// schemas.ColScorer of scored_events): with several scorers, which one
	// owned a device's partition when it scored an event. Empty: none.
	Instance string
	// Partitions is the device partition count the Object Store checkpoint
	// is split by (schemas.DefaultPartitions if 0): the ingest stage's
	// --partitions, so that an object is what one partition owner restores.
	Partitions int
	// CheckpointEvery also saves the checkpoint periodically (wall time),
	// pausing the workers until the results before it are durable (one
	// flush; at most DrainTimeout, else that checkpoint is skipped); 0 saves
	// only after a clean drain.
	CheckpointEvery time.Duration
	// Stream is the stream the consumer reads (IOTWATCH_LOGS, or
	// IOTWATCH_EVENTS for a scorer of the ingest stage's batches: the
	// checkpoint's position is then that stream's); with Checkpoint, it lets a
	// restart catch up what a crash lost (see Checkpoint). Without it the
	// messages acked after the checkpoint are lost to the baselines, and
	// those not acked are judged when redelivered.
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
	// SkipBlocked takes the requests a device sends while a block this
	// pipeline issued for it is active as refused by the enforcement points,
	// when their log does not carry the enforcement point's verdict: they are
	// then neither scored nor learned (worker.Config.SkipBlocked; never in
	// dry-run). Off by default: where nothing enforces the blocks, skipping
	// would hide the traffic they were meant to stop. The blocks a worker
	// knows travel in checkpoints with its decision engine, so a restarted
	// pipeline skips what the crashed one skipped.
	// A verdict in the log (schemas.Event.Verdict, which the shipped gateway
	// configs log) always decides, crash or not.
	SkipBlocked bool
}

// DefaultMaxWaitingBytes is the default of Config.MaxWaitingBytes.
const DefaultMaxWaitingBytes = 256 << 20

// Device state memory (issue 13). A device's cost is measured by
// bench/devmem as resident memory (RSS, not slab size) at the peak, with
// the default detectors: its record in a worker's state table (a 296-byte
// slot; the table stays at most 3/4 full and doubles, and holds the old and
// the new slab while it does), the identity the silence sweep names it with
// (once it has a baseline), and the Go runtime's headroom above the live heap.
// bench/RESULTS.md has the figures; StateBytesPerDevice rounds the largest up.
const (
	// StateBytesPerDevice is the resident memory one device takes at the
	// peak, as measured (bench/RESULTS.md, "Memory per device").
	StateBytesPerDevice = 1024
	// DefaultStateBudget is the memory the device state may take by default.
	DefaultStateBudget = 2 << 30
	// DefaultMaxDevices is the default cap on the devices the workers hold
	// together: DefaultStateBudget / StateBytesPerDevice = 2 GiB / 1 KiB =
	// 2,097,152 devices. Beyond it, inserting a device evicts an
	// approximately least recently seen one (state.Config.MaxDevices), counted
	// in the evictions metric: its baseline is lost, as after its idle TTL.
	DefaultMaxDevices = DefaultStateBudget / StateBytesPerDevice
)

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	switch {
	case c.Worker.MaxDevices == 0:
		c.Worker.MaxDevices = (DefaultMaxDevices + c.Workers - 1) / c.Workers
	case c.Worker.MaxDevices < 0:
		c.Worker.MaxDevices = 0 // unlimited
	}
	if c.Partitions <= 0 {
		c.Partitions = schemas.DefaultPartitions
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
	if c.ClassHoldMax <= 0 {
		c.ClassHoldMax = DefaultClassHoldMax
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
	if c.MaxWaitingBytes <= 0 {
		c.MaxWaitingBytes = DefaultMaxWaitingBytes
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
}

// ScoreConfig returns the configuration of the scoring stack c describes
// (score.New applies its defaults: an idle TTL of score.DefaultIdleTTL,
// decide.DefaultConfig() when no threshold is set). Replay and evaluation
// build their stacks from it, so that they score as the pipeline does.
func (c *Config) ScoreConfig() score.Config {
	w := c.Worker
	w.MaxDevices = max(w.MaxDevices, 0) // negative: no cap
	return score.Config{Detectors: c.Detectors, Workers: c.Workers, Worker: w, Decide: c.Decide, GeoIP: c.GeoIP,
		Entities: c.Entities}
}
