// Package bus is iotwatch's NATS JetStream plumbing: the streams, KV bucket and
// durable consumer the pipeline needs (Ensure), subject naming (LogSubject), a
// connection with sane options (Connect), and a raw consume-rate probe that gives
// the end-to-end benchmark its ceiling. The embedded server of the demo and the
// tests is package internal/natsserver.
//
// Every stream, subject, consumer and bucket name comes from package schemas.
package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// StreamsConfig configures the streams, the KV bucket of active blocks and the
// pipeline's durable consumer that Ensure creates. Start from
// DefaultStreamsConfig; a zero duration means "no limit" as in JetStream.
type StreamsConfig struct {
	// LogsMaxAge bounds how long access logs stay in IOTWATCH_LOGS (0: forever).
	LogsMaxAge time.Duration
	// LogsMaxBytes bounds IOTWATCH_LOGS' size; -1 or 0 means no limit. When the
	// limit is reached new logs are refused (DiscardNew: shippers retry and
	// resume), so the backlog not scored yet is never dropped.
	LogsMaxBytes int64
	// LogsStorage is "file" or "memory". JetStream cannot change it on an
	// existing stream.
	LogsStorage string
	// LogsReplicas is the replica count of every stream and of the KV bucket
	// (1 on a single server; 3 or 5 in a cluster).
	LogsReplicas int
	// Retention is IOTWATCH_LOGS' retention policy: "limits" (keep until
	// LogsMaxAge/LogsMaxBytes, so logs can be replayed), "workqueue" (remove a
	// message once the pipeline acked it) or "interest". JetStream cannot change
	// it to or from "workqueue" on an existing stream.
	Retention string
	// DLQMaxAge bounds how long dead letters stay in IOTWATCH_DLQ (0: forever).
	DLQMaxAge time.Duration
	// AlertsMaxAge bounds how long alerts stay in IOTWATCH_ALERTS, and
	// incidents in IOTWATCH_INCIDENTS (0: forever).
	AlertsMaxAge time.Duration
	// DecisionsMaxAge bounds how long decisions stay in IOTWATCH_DECISIONS (0: forever).
	DecisionsMaxAge time.Duration
	// DuplicateWindow is how long every stream remembers Nats-Msg-Id headers to
	// drop duplicates (republished logs, retried alerts). It must not exceed any
	// non-zero max age.
	DuplicateWindow time.Duration
	// BlocksTTL, when positive, expires entries of the KV bucket of active
	// blocks that were not rewritten for that long (a safety net in case an
	// unblock is lost); 0 keeps them until deleted.
	BlocksTTL time.Duration
	// MaxAckPending bounds the pipeline consumer's delivered-but-unacked
	// messages: the in-flight limit that turns a slow sink into back-pressure.
	MaxAckPending int
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message; -1 means unlimited.
	MaxDeliver int
}

// DefaultStreamsConfig returns the configuration used when nothing is set: logs
// kept 24 h with limits retention (replayable), dead letters 7 days, alerts and
// decisions 30 days, a 2 min duplicate window, at most 200000 unacked messages,
// a 60 s ack wait and unlimited redeliveries.
func DefaultStreamsConfig() StreamsConfig {
	return StreamsConfig{
		LogsMaxAge:      24 * time.Hour,
		LogsMaxBytes:    -1,
		LogsStorage:     "file",
		LogsReplicas:    1,
		Retention:       "limits",
		DLQMaxAge:       7 * 24 * time.Hour,
		AlertsMaxAge:    30 * 24 * time.Hour,
		DecisionsMaxAge: 30 * 24 * time.Hour,
		DuplicateWindow: 2 * time.Minute,
		MaxAckPending:   200000,
		AckWait:         60 * time.Second,
		MaxDeliver:      -1,
	}
}

// Validate checks every field and names the first bad one with its config key,
// such as "cannot use streams config: logs.max_age -1s must be >= 0"; the
// error is a *FieldError.
func (c StreamsConfig) Validate() error {
	return c.validate()
}

func (c StreamsConfig) validate() error {
	ages := []struct {
		key string
		v   time.Duration
	}{
		{"logs.max_age", c.LogsMaxAge},
		{"dlq.max_age", c.DLQMaxAge},
		{"alerts.max_age", c.AlertsMaxAge},
		{"decisions.max_age", c.DecisionsMaxAge},
	}
	for _, a := range ages {
		if a.v < 0 {
			return badField(a.key, a.v, "must be >= 0")
		}
	}
	if c.LogsMaxBytes < -1 {
		return badField("logs.max_bytes", c.LogsMaxBytes, "must be -1 (no limit) or >= 0")
	}
	if _, err := storageType(c.LogsStorage); err != nil {
		return err
	}
	if c.LogsReplicas < 1 || c.LogsReplicas > 5 {
		return badField("logs.replicas", c.LogsReplicas, "must be between 1 and 5")
	}
	if _, err := retentionPolicy(c.Retention); err != nil {
		return err
	}
	if c.DuplicateWindow < 0 {
		return badField("duplicate_window", c.DuplicateWindow, "must be >= 0")
	}
	for _, a := range ages {
		if a.v > 0 && c.DuplicateWindow > a.v {
			return badPair("duplicate_window", c.DuplicateWindow, "must not exceed", a.key, a.v)
		}
	}
	if c.BlocksTTL < 0 {
		return badField("blocks.ttl", c.BlocksTTL, "must be >= 0")
	}
	if c.MaxAckPending < 1 {
		return badField("consumer.max_ack_pending", c.MaxAckPending, "must be >= 1")
	}
	if c.AckWait <= 0 {
		return badField("consumer.ack_wait", c.AckWait, "must be > 0")
	}
	if c.MaxDeliver != -1 && c.MaxDeliver < 1 {
		return badField("consumer.max_deliver", c.MaxDeliver, "must be -1 (unlimited) or >= 1")
	}
	return nil
}

func storageType(s string) (jetstream.StorageType, error) {
	switch s {
	case "file":
		return jetstream.FileStorage, nil
	case "memory":
		return jetstream.MemoryStorage, nil
	}
	return 0, badField("logs.storage", fmt.Sprintf("%q", s), `must be "file" or "memory"`)
}

func retentionPolicy(s string) (jetstream.RetentionPolicy, error) {
	switch s {
	case "limits":
		return jetstream.LimitsPolicy, nil
	case "workqueue":
		return jetstream.WorkQueuePolicy, nil
	case "interest":
		return jetstream.InterestPolicy, nil
	}
	return 0, badField("logs.retention", fmt.Sprintf("%q", s), `must be "limits", "workqueue" or "interest"`)
}

// Ensure creates or updates the iotwatch streams (IOTWATCH_LOGS,
// IOTWATCH_DLQ, IOTWATCH_ALERTS, IOTWATCH_DECISIONS, IOTWATCH_INCIDENTS, and
// IOTWATCH_EVENTS, the ingest stage's output, kept like the logs), the KV bucket of active
// blocks (history 1; per-key TTL where the server supports it, see
// BlocksMarkerTTL) and the pipeline's durable pull consumer on IOTWATCH_LOGS
// (explicit acks, MaxAckPending, AckWait, MaxDeliver, delivering from the
// first message). It is idempotent, applies changed limits to existing
// objects, and returns the consumer and the bucket. Messages and consumer
// state survive; a change JetStream refuses (storage type, retention to or
// from workqueue) is returned as an error naming the stream.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (jetstream.Consumer, jetstream.KeyValue, error) {
	return ensure(ctx, js, cfg, true)
}

func ensure(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig, withConsumer bool) (jetstream.Consumer, jetstream.KeyValue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if err := ensureStreamsNamed(ctx, js, cfg, nil); err != nil {
		return nil, nil, err
	}

	kv, err := ensureBlocks(ctx, js, cfg)
	if err != nil {
		return nil, nil, err
	}
	for _, kc := range []jetstream.KeyValueConfig{budgetsConfig(cfg), allowlistConfig(cfg)} {
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return nil, nil, fmt.Errorf("cannot create or update KV bucket %q: %w", kc.Bucket, err)
		}
	}
	if !withConsumer {
		return nil, kv, nil
	}

	cons, err := durable(ctx, js, schemas.StreamLogs, pipelineConsumer(cfg))
	if err != nil {
		return nil, nil, err
	}
	return cons, kv, nil
}

// ensureStreamsNamed creates or updates the streams of streamConfigs(cfg)
// whose names are in names (every one when nil).
func ensureStreamsNamed(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig, names []string) error {
	for _, sc := range streamConfigs(cfg) {
		if names != nil && !slices.Contains(names, sc.Name) {
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("cannot create or update stream %q: %w", sc.Name, err)
		}
	}
	return nil
}

// streamConfigs are the streams Ensure creates or updates, for cfg (valid).
func streamConfigs(cfg StreamsConfig) []jetstream.StreamConfig {
	storage, _ := storageType(cfg.LogsStorage)
	retention, _ := retentionPolicy(cfg.Retention)
	maxBytes := cfg.LogsMaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	streams := []jetstream.StreamConfig{
		{
			Name:        schemas.StreamLogs,
			Description: "iotwatch: access logs from gateways and brokers",
			Subjects:    []string{schemas.SubjectLogsAll},
			Retention:   retention,
			MaxAge:      cfg.LogsMaxAge,
			MaxBytes:    maxBytes,
			Storage:     storage,
		},
		{
			Name:        schemas.StreamDLQ,
			Description: "iotwatch: undecodable log records with the reason in headers",
			Subjects:    []string{schemas.SubjectDLQAll},
			MaxAge:      cfg.DLQMaxAge,
			Storage:     jetstream.FileStorage,
		},
		{
			Name:        schemas.StreamAlerts,
			Description: "iotwatch: alerts, one subject per severity",
			Subjects:    []string{schemas.SubjectAlertsAll},
			MaxAge:      cfg.AlertsMaxAge,
			Storage:     jetstream.FileStorage,
		},
		{
			Name:        schemas.StreamDecisions,
			Description: "iotwatch: block, throttle and unblock decisions",
			Subjects:    []string{schemas.SubjectDecisionsAll},
			MaxAge:      cfg.DecisionsMaxAge,
			Storage:     jetstream.FileStorage,
		},
		{
			Name:        schemas.StreamIncidents,
			Description: "iotwatch: incidents (groups of alerts), one subject per severity, a message per update",
			Subjects:    []string{schemas.SubjectIncidentsAll},
			MaxAge:      cfg.AlertsMaxAge, // incidents live as long as the alerts they group
			Storage:     jetstream.FileStorage,
		},
		{
			// The ingest stage's output: kept and bounded like the logs it
			// comes from, and deduplicated by message id (log sequence and
			// partition, schemas.EventsMsgID) over the duplicate window, so
			// that an ingest instance re-running a log message after a
			// crash republishes nothing twice. Entity observations
			// (schemas.SubjectObsAll) share the stream, so that partition
			// q's consumer delivers its devices' events and its entities'
			// observations in one order to one owner.
			Name:        schemas.StreamEvents,
			Description: "iotwatch: decoded events as Arrow IPC batches, one subject per device partition, and entity observations, one subject per entity partition",
			Subjects:    []string{schemas.SubjectEventsAll, schemas.SubjectObsAll},
			MaxAge:      cfg.LogsMaxAge,
			MaxBytes:    maxBytes,
			Storage:     storage,
		},
	}
	for i := range streams {
		sc := &streams[i]
		sc.Replicas = cfg.LogsReplicas
		sc.Duplicates = cfg.DuplicateWindow
		sc.Discard = jetstream.DiscardOld
		if sc.Name == schemas.StreamLogs || sc.Name == schemas.StreamEvents {
			// At logs.max_bytes, refuse new logs (shippers retry and resume)
			// rather than drop the oldest, which are the backlog not scored yet.
			sc.Discard = jetstream.DiscardNew
		}
	}
	return streams
}

// EnsureIngest is Ensure for the ingest stage ('iotwatch ingest'): the
// streams it reads and writes (IOTWATCH_LOGS, IOTWATCH_DLQ, IOTWATCH_EVENTS;
// not the others, nor the buckets, which its role in deploy/nats may not
// touch), and the durable pull consumer on IOTWATCH_LOGS that every ingest
// instance shares (schemas.ConsumerIngest, configured as the pipeline's).
func EnsureIngest(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (jetstream.Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ensureStreamsNamed(ctx, js, cfg, []string{schemas.StreamLogs, schemas.StreamDLQ, schemas.StreamEvents}); err != nil {
		return nil, err
	}
	return durable(ctx, js, schemas.StreamLogs, ingestConsumer(cfg))
}

// EnsureScorer is Ensure for a scorer of the ingest stage's events ('iotwatch
// run --source events'): the streams and the bucket, and the durable pull
// consumer on IOTWATCH_EVENTS (schemas.ConsumerScorer) filtered to the
// subjects of partitions (every partition when nil).
func EnsureScorer(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig, partitions []int) (jetstream.Consumer, jetstream.KeyValue, error) {
	_, kv, err := ensureStreams(ctx, js, cfg)
	if err != nil {
		return nil, nil, err
	}
	cons, err := durable(ctx, js, schemas.StreamEvents, scorerConsumer(cfg, partitions))
	if err != nil {
		return nil, nil, err
	}
	return cons, kv, nil
}

// DefaultPinnedTTL is the PinnedTTL of the partition consumers
// (EnsurePartitions): how long the server keeps a partition pinned to a
// scorer that sent no pull request for it, so the bound, with one pull
// expiry, on how long a dead scorer's partitions stay unscored.
const DefaultPinnedTTL = 5 * time.Second

// EnsurePartitions is Ensure for scorers that own partitions ('iotwatch run
// --source events'): the streams and the bucket, and one durable pull
// consumer per partition (schemas.ScorerConsumer(p), filtered to
// schemas.PartitionSubjects(p): its devices' events and its entities'
// observations; several filter subjects need nats-server 2.10) with the pinned-client priority policy in group
// schemas.ScorerGroup and pinnedTTL (DefaultPinnedTTL when 0). It needs
// nats-server 2.11 or later. It returns the consumers by partition and the
// bucket of active blocks.
//
// Why one consumer per partition: the server pins a consumer (per group) to
// one client, so the pin is the unit of ownership; a consumer per partition
// makes it one partition, each delivered in stream order to its one owner.
// One consumer over every partition would pin the whole fleet to one
// instance.
//
// It also creates or updates the bucket of scorers' presence keys
// (schemas.KVScorers, entries expiring after two pinnedTTLs), which it
// returns as presence.
func EnsurePartitions(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig, partitions int, pinnedTTL time.Duration) (cons []jetstream.Consumer, presence, blocks jetstream.KeyValue, err error) {
	if partitions < 1 || partitions > schemas.MaxPartitions {
		return nil, nil, nil, fmt.Errorf("cannot create partition consumers: %d partitions, want 1 to %d", partitions, schemas.MaxPartitions)
	}
	if pinnedTTL <= 0 {
		pinnedTTL = DefaultPinnedTTL
	}
	if _, blocks, err = ensureStreams(ctx, js, cfg); err != nil {
		return nil, nil, nil, err
	}
	presence, err = js.CreateOrUpdateKeyValue(ctx, scorersConfig(cfg, pinnedTTL))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("cannot create or update KV bucket %q: %w", schemas.KVScorers, err)
	}
	cons = make([]jetstream.Consumer, partitions)
	for p := range cons {
		name := schemas.ScorerConsumer(p)
		cons[p], err = js.CreateOrUpdateConsumer(ctx, schemas.StreamEvents, partitionConsumer(cfg, p, pinnedTTL))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cannot create or update consumer %q on stream %q (pinned clients need nats-server 2.11+): %w", name, schemas.StreamEvents, err)
		}
	}
	return cons, presence, blocks, nil
}

// scorersConfig is the bucket of scorers' presence keys (EnsurePartitions):
// one key per live scorer, expiring after two pinnedTTLs.
func scorersConfig(cfg StreamsConfig, pinnedTTL time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      schemas.KVScorers,
		Description: "iotwatch: one key per live scorer owning partitions",
		History:     1,
		TTL:         2 * pinnedTTL,
		Storage:     jetstream.MemoryStorage,
		Replicas:    cfg.LogsReplicas,
	}
}

// partitionConsumer is partition p's consumer of IOTWATCH_EVENTS
// (EnsurePartitions): filtered to the partition's subjects (events and
// entity observations, schemas.PartitionSubjects), pinned to one
// client of group schemas.ScorerGroup at a time, unpinned after pinnedTTL
// without a pull.
func partitionConsumer(cfg StreamsConfig, p int, pinnedTTL time.Duration) jetstream.ConsumerConfig {
	cc := durableConfig(cfg, schemas.ScorerConsumer(p), fmt.Sprintf("iotwatch: partition %d's events and entity observations, pinned to one scorer at a time", p),
		schemas.PartitionSubjects(p))
	cc.PriorityPolicy = jetstream.PriorityPolicyPinned
	cc.PriorityGroups = []string{schemas.ScorerGroup}
	cc.PinnedTTL = pinnedTTL
	return cc
}

// ensureStreams is Ensure without the consumer.
func ensureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (jetstream.Consumer, jetstream.KeyValue, error) {
	return ensure(ctx, js, cfg, false)
}

// durable creates or updates the durable pull consumer cc on stream.
func durable(ctx context.Context, js jetstream.JetStream, stream string, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		return nil, fmt.Errorf("cannot create or update consumer %q on stream %q: %w", cc.Durable, stream, err)
	}
	return cons, nil
}

// durableConfig is the configuration of iotwatch's durable pull consumers:
// explicit acks, cfg's AckWait, MaxDeliver and MaxAckPending, delivering
// from the first message, filtered to filters (nil: every subject).
func durableConfig(cfg StreamsConfig, name, desc string, filters []string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        name,
		Description:    desc,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     cfg.MaxDeliver,
		MaxAckPending:  cfg.MaxAckPending,
		ReplayPolicy:   jetstream.ReplayInstantPolicy,
		FilterSubjects: filters,
	}
}

// pipelineConsumer is the pipeline's consumer of IOTWATCH_LOGS (Ensure).
func pipelineConsumer(cfg StreamsConfig) jetstream.ConsumerConfig {
	return durableConfig(cfg, schemas.ConsumerPipeline, "iotwatch: the pipeline's durable pull consumer", nil)
}

// ingestConsumer is the ingest stage's consumer of IOTWATCH_LOGS (EnsureIngest).
func ingestConsumer(cfg StreamsConfig) jetstream.ConsumerConfig {
	return durableConfig(cfg, schemas.ConsumerIngest, "iotwatch: the ingest stage's durable pull consumer, shared by every ingest instance", nil)
}

// scorerConsumer is a scorer's consumer of IOTWATCH_EVENTS, filtered to the
// subjects of partitions (every partition when nil; EnsureScorer).
func scorerConsumer(cfg StreamsConfig, partitions []int) jetstream.ConsumerConfig {
	var filters []string
	for _, p := range partitions {
		filters = append(filters, schemas.PartitionSubjects(p)...)
	}
	return durableConfig(cfg, schemas.ConsumerScorer, "iotwatch: the scorer's durable pull consumer of event partitions", filters)
}

// The durable consumers of IOTWATCH_DECISIONS that 'run' stores apply
// receipts and unblocks with (package receipts): explicit acks, unlimited
// deliveries, StoreAckWait, and at most 4 batches of StoreBatch unacked.
const (
	StoreAckWait = 2 * time.Minute
	StoreBatch   = 1000
)

// StoreConsumer is the configuration of the durable consumer name of
// IOTWATCH_DECISIONS that stores what (receipts, unblocks) published on
// subject, acked once batches of batch are stored, redelivered after
// ackWait.
func StoreConsumer(name, subject, what string, ackWait time.Duration, batch int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "iotwatch: " + what + " into ClickHouse",
		FilterSubject: subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 4 * batch,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// storeConsumers are the receipts' and unblocks' consumers with their defaults.
func storeConsumers() []ConsumerDefinition {
	return []ConsumerDefinition{
		{Stream: schemas.StreamDecisions, Config: StoreConsumer(schemas.ConsumerReceipts, schemas.SubjectDecisionsApplied, "apply receipts", StoreAckWait, StoreBatch)},
		{Stream: schemas.StreamDecisions, Config: StoreConsumer(schemas.ConsumerUnblocks, schemas.SubjectDecisionsPrefix+"."+schemas.ActionUnblock, "unblocks", StoreAckWait, StoreBatch)},
	}
}

// BlocksMarkerTTL is how long the bucket of active blocks keeps the marker the
// server leaves when a key's TTL ends. Ensure asks for markers, which turns on
// per-key TTLs (JetStream AllowMsgTTL, nats-server 2.11 and later): the
// publisher then writes each decision with its remaining TTL and expired
// blocks leave the bucket by themselves. Watchers that reconnect within this
// time see the marker; later ones find the key missing, which enforcement
// points treat the same way (the decision's expires_at has passed).
const BlocksMarkerTTL = 15 * time.Minute

// ensureBlocks creates or updates the bucket of active blocks with per-key
// TTLs, and without them when the server cannot (nats-server before 2.11, or
// an update it refuses): a bucket keeps working in the mode it can have.
//
// Upgrade path: a bucket created without per-key TTLs (by an older iotwatch or
// on an older server) is updated in place the first time Ensure runs against
// a server that supports them; its entries stay. JetStream cannot turn
// per-message TTLs off again, so a bucket with them keeps them (a downgraded
// server refuses to load it: recreate the bucket, and the pipeline re-issues
// active blocks as they recur).
func ensureBlocks(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (jetstream.KeyValue, error) {
	kc := blocksConfig(cfg)
	kv, err := js.CreateOrUpdateKeyValue(ctx, kc)
	if err == nil {
		return kv, nil
	}
	kc.LimitMarkerTTL = 0
	kv, err2 := js.CreateOrUpdateKeyValue(ctx, kc)
	if err2 != nil {
		if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
			err = err2
		}
		return nil, fmt.Errorf("cannot create or update KV bucket %q: %w", schemas.KVActiveBlocks, err)
	}
	return kv, nil
}

// blocksConfig is the bucket of active blocks (ensureBlocks; without
// LimitMarkerTTL on a server that has no per-key TTLs).
func blocksConfig(cfg StreamsConfig) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         schemas.KVActiveBlocks,
		Description:    "iotwatch: active block and throttle decisions by scope and value",
		History:        1,
		TTL:            cfg.BlocksTTL,
		Storage:        jetstream.FileStorage,
		Replicas:       cfg.LogsReplicas,
		LimitMarkerTTL: BlocksMarkerTTL,
	}
}

// BudgetsTTL is how long the bucket of cluster-wide caps keeps a minute's
// count after its last take: long enough for a redelivery (the consumers'
// AckWait, a minute by default) to find the take it was granted, short
// enough that the bucket holds about an hour of minutes per cap.
const BudgetsTTL = time.Hour

// budgetsConfig is the bucket of cluster-wide caps (schemas.KVBudgets).
func budgetsConfig(cfg StreamsConfig) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      schemas.KVBudgets,
		Description: "iotwatch: cluster-wide caps, one key per cap and event-time minute",
		History:     1,
		TTL:         BudgetsTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.LogsReplicas,
	}
}

// allowlistConfig is the bucket of the shared allowlist (schemas.KVAllowlist).
func allowlistConfig(cfg StreamsConfig) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      schemas.KVAllowlist,
		Description: "iotwatch: the allowlist every instance shares, one label per key, entries one per line",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.LogsReplicas,
	}
}

// KVSubject is the subject that JetStream stores key of KV bucket under
// ($KV.<bucket>.<key>): publishing there is what KeyValue.Put does, and lets a
// writer add publish options Put does not take (a per-message TTL).
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// KVStream is the name of the stream that holds KV bucket's entries.
func KVStream(bucket string) string { return "KV_" + bucket }

// KeyTTL reports whether kv, the bucket of active blocks, accepts per-key
// TTLs (it was created or updated by Ensure on nats-server 2.11 or later).
func KeyTTL(ctx context.Context, kv jetstream.KeyValue) (bool, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return false, fmt.Errorf("cannot read the status of KV bucket %q: %w", kv.Bucket(), err)
	}
	return st.LimitMarkerTTL() > 0, nil
}
