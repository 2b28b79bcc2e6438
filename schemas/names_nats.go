package schemas

import "strconv"

// JetStream streams.
const (
	// StreamLogs holds access logs from gateways and brokers.
	StreamLogs = "IOTWATCH_LOGS"
	// StreamDLQ holds log records that could not be decoded, with the reason in
	// headers. Nothing is dropped silently.
	StreamDLQ = "IOTWATCH_DLQ"
	// StreamAlerts holds alerts, one subject per severity.
	StreamAlerts = "IOTWATCH_ALERTS"
	// StreamDecisions holds block/throttle/unblock decisions: the history that
	// enforcement points can replay from any point.
	StreamDecisions = "IOTWATCH_DECISIONS"
	// StreamIncidents holds incidents (groups of alerts), one subject per
	// severity; each update of an incident is a message.
	StreamIncidents = "IOTWATCH_INCIDENTS"
	// StreamEvents holds decoded events as Arrow IPC record batches (see
	// EventArrowSchema), one subject per device partition
	// (iotwatch.events.<partition>, PartitionOf): what the ingest stage
	// publishes and scorers consume.
	StreamEvents = "IOTWATCH_EVENTS"
)

// Subjects. Log subjects are iotwatch.logs.<format>.<source>.
const (
	SubjectLogsPrefix      = "iotwatch.logs"
	SubjectLogsAll         = "iotwatch.logs.>"
	SubjectDLQPrefix       = "iotwatch.dlq"
	SubjectDLQAll          = "iotwatch.dlq.>"
	SubjectAlertsPrefix    = "iotwatch.alerts"
	SubjectAlertsAll       = "iotwatch.alerts.>"
	SubjectDecisionsPrefix = "iotwatch.decisions"
	SubjectDecisionsAll    = "iotwatch.decisions.>"
	SubjectIncidentsPrefix = "iotwatch.incidents"
	SubjectIncidentsAll    = "iotwatch.incidents.>"
	// SubjectEventsPrefix is followed by ".<partition>" (EventsSubject).
	SubjectEventsPrefix = "iotwatch.events"
	SubjectEventsAll    = "iotwatch.events.>"

	// SubjectDecisionsApplied carries ApplyReceipt JSON from enforcement points.
	// It is inside SubjectDecisionsAll, so IOTWATCH_DECISIONS stores receipts
	// next to the decisions; consumers of decisions filter it out by subject.
	SubjectDecisionsApplied = "iotwatch.decisions.applied"
)

// Durable consumers.
const (
	// ConsumerPipeline is the durable pull consumer the pipeline reads IOTWATCH_LOGS with.
	ConsumerPipeline = "iotwatch-pipeline"
	// ConsumerReceipts is the durable pull consumer that reads apply receipts
	// (SubjectDecisionsApplied, on IOTWATCH_DECISIONS) into TableReceipts.
	ConsumerReceipts = "iotwatch-receipts"
	// ConsumerUnblocks is the durable pull consumer that reads unblock
	// decisions (SubjectDecisionsPrefix + "." + ActionUnblock, on
	// IOTWATCH_DECISIONS: analysts' 'iotwatch unblock' and the pipeline's
	// lifts) into TableDecisions, with their issuer and reason.
	ConsumerUnblocks = "iotwatch-unblocks"
	// ConsumerIngest is the durable pull consumer on IOTWATCH_LOGS that every
	// ingest instance ('iotwatch ingest') shares: each log message goes to one
	// of them.
	ConsumerIngest = "iotwatch-ingest"
	// ConsumerScorer is the durable pull consumer on IOTWATCH_EVENTS of
	// every partition (bus.EnsureScorer); 'iotwatch run --source events'
	// reads each partition with its own, ScorerConsumer(p), pinned to one
	// scorer at a time.
	ConsumerScorer = "iotwatch-scorer"
)

// KVScorers is the KV bucket in which each scorer owning partitions ('run
// --source events') keeps a presence key, rewritten every pinned TTL and
// expiring after two: the number of keys is the number of live scorers,
// from which each computes its fair share of partitions (package
// pipeline/partition).
const KVScorers = "iotwatch_scorers"

// KVActiveBlocks is the KV bucket holding the active set of block/throttle
// decisions, keyed by KVKey(scope, value).
const KVActiveBlocks = "iotwatch_blocks"

// KVBudgets is the KV bucket of the cluster-wide caps (package
// pipeline/cluster): one key per cap and event-time minute,
// KVBudgetKey(cap, minute), whose value lists the takes granted in it (8
// bytes each, little-endian token ids). Every instance increments it with
// revision checks, so that a cap such as the blocks per minute holds for
// the cluster, not per process.
const KVBudgets = "iotwatch_budgets"

// BudgetBlocks is the name of the cap on new blocks per minute in KVBudgets.
const BudgetBlocks = "blocks"

// KVBudgetKey is the key of cap's count for event-time minute m (minutes
// since the Unix epoch, rounded down) in KVBudgets: "<cap>.<m>".
func KVBudgetKey(cap string, m int64) string { return cap + "." + strconv.FormatInt(m, 10) }

// KVAllowlist is the KV bucket of the allowlist every instance shares: each
// key is an operator's label (such as "office-vpn"), its value one or more
// entries, one per line (device ids, API key ids, IPs or CIDRs, as
// --allowlist takes them). Every instance watches it and applies a change
// within seconds, merged with its own --allowlist.
const KVAllowlist = "iotwatch_allowlist"

// Headers on dead-letter messages (IOTWATCH_DLQ). Each message holds the
// dead letters of one log message with one reason, in the body described by
// ParseDeadLetters; these say which.
const (
	HeaderDLQReason   = "Iotwatch-Dlq-Reason"        // the reason code of every entry
	HeaderDLQSubject  = "Iotwatch-Original-Subject"  // the log message's subject
	HeaderDLQSequence = "Iotwatch-Original-Sequence" // the message's sequence in its stream: IOTWATCH_LOGS, or IOTWATCH_EVENTS for an Arrow batch (see HeaderDLQSubject)
	HeaderDLQLine     = "Iotwatch-Original-Line"     // the first entry's line in that message
	HeaderDLQCount    = "Iotwatch-Dlq-Count"         // how many entries (records) the body holds

	// HeaderDLQDetailV1 is the detail of a dead-letter message written before
	// bodies of entries (no HeaderDLQCount): one record as the payload, its
	// line in HeaderDLQLine. Read only, while such messages stay in the stream.
	HeaderDLQDetailV1 = "Iotwatch-Dlq-Detail"
)

// HeaderSchemaVersion carries SchemaVersion on published results.
const HeaderSchemaVersion = "Iotwatch-Schema-Version"

// Reply inbox prefixes, one per role of deploy/nats (`--nats-inbox-prefix`).
// JetStream answers API requests, publish acks and pulled messages on the
// client's inbox subjects, so a role that may subscribe to another role's
// inboxes could read its replies (a pipeline's pulled log messages, say).
// Each command connects with its role's prefix, and deploy/nats lets each role
// subscribe to its own prefix only.
const (
	InboxPipeline = "_INBOX.pipeline" // run, demo
	InboxShipper  = "_INBOX.shipper"  // ship, ingest-http
	InboxEnforcer = "_INBOX.enforcer" // enforce
	InboxAnalyst  = "_INBOX.analyst"  // inspect
	InboxSOC      = "_INBOX.soc"      // unblock
	InboxIngest   = "_INBOX.ingest"   // ingest
	InboxScorer   = "_INBOX.scorer"   // run --source events
)
