package schemas

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
)

// KVActiveBlocks is the KV bucket holding the active set of block/throttle
// decisions, keyed by KVKey(scope, value).
const KVActiveBlocks = "iotwatch_blocks"

// Headers on dead-lettered messages.
const (
	HeaderDLQReason     = "Iotwatch-Dlq-Reason"
	HeaderDLQSubject    = "Iotwatch-Original-Subject"
	HeaderDLQSequence   = "Iotwatch-Original-Sequence"
	HeaderDLQLine       = "Iotwatch-Original-Line"
	HeaderDLQDetail     = "Iotwatch-Dlq-Detail"    // human-readable detail, one line, at most 1 KiB
	HeaderDLQTruncated  = "Iotwatch-Dlq-Truncated" // "true" when the payload was cut to fit; the original is at the sequence
	HeaderSchemaVersion = "Iotwatch-Schema-Version"
)
