// Package schemas defines what flows through iotwatch: the normalized Event, its
// canonical JSON encoding, the scored result, alerts and decisions, and every
// user-facing name (streams, subjects, consumers, KV buckets, ClickHouse tables and
// columns, the pipeline's own reasons); detector and reason names are
// declared in each detector's package.
//
// Names are part of the product: they end up in dashboards, queries and gateway
// configs. Renaming one is a migration; add a new name and version it instead.
package schemas

// SchemaVersion is the version of the canonical event encoding and of the
// ClickHouse tables this build writes. It is bumped on any incompatible change.
const SchemaVersion = 1

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
)

// FormatJSON is the <format> token of subjects carrying canonical JSON lines
// (one or more newline-separated events per message).
const FormatJSON = "json"

// ConsumerPipeline is the durable pull consumer the pipeline reads IOTWATCH_LOGS with.
const ConsumerPipeline = "iotwatch-pipeline"

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

// ClickHouse tables.
const (
	TableScored    = "scored_events"
	TableAlerts    = "alerts"
	TableDecisions = "decisions"
)

// Severities (alert subjects are iotwatch.alerts.<severity>).
const (
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

// Decision actions (decision subjects are iotwatch.decisions.<action>).
// A dry-run decision is published with action DryRunBlock and never enters the KV bucket.
const (
	ActionBlock       = "block"
	ActionThrottle    = "throttle"
	ActionUnblock     = "unblock"
	ActionDryRunBlock = "would_block"
)

// Decision scopes: what an enforcement point matches on.
const (
	ScopeDevice = "device"
	ScopeAPIKey = "api_key"
	ScopeIP     = "ip"
	ScopeTenant = "tenant"
)

// ReasonNone is the reason of a finding with no reason (score 0). Detector
// names and their reasons are declared in each detector's own package
// (volume.Name, volume.ReasonRateSpike, ...) and registered with
// detectors.Register: the registry is their one source of truth.
const ReasonNone = ""

// Metric names (Prometheus text format).
const (
	MetricEventsIngested  = "iotwatch_events_ingested_total"
	MetricMessagesFetched = "iotwatch_messages_fetched_total"
	MetricDeadLettered    = "iotwatch_dead_lettered_total"
	MetricAlerts          = "iotwatch_alerts_total"
	MetricDecisions       = "iotwatch_decisions_total"
	MetricRowsWritten     = "iotwatch_clickhouse_rows_total"
	MetricFlushSeconds    = "iotwatch_flush_seconds_total"
	MetricFlushes         = "iotwatch_flushes_total"
	MetricFlushDuration   = "iotwatch_flush_duration_seconds" // histogram
	MetricMessagesAcked   = "iotwatch_messages_acked_total"
	MetricSinkErrors      = "iotwatch_sink_errors_total"
	MetricBlocksCapped    = "iotwatch_blocks_capped_total"
	MetricInProgress      = "iotwatch_messages_in_progress_total"
	MetricSkipped         = "iotwatch_records_skipped_total"
	MetricConsumerLag     = "iotwatch_consumer_lag_messages"
	MetricStateDevices    = "iotwatch_state_devices"
	MetricStateEvictions  = "iotwatch_state_live_evictions_total"
	MetricStateExpired    = "iotwatch_state_expired_total"
	MetricRedelivered     = "iotwatch_events_redelivered_total" // scored again, not learned twice
	MetricCaughtUp        = "iotwatch_events_caught_up_total"   // re-learned at start after a crash
	MetricFindings        = "iotwatch_findings_total"           // labels detector, reason
)

// Log formats: the <format> token of log subjects, and the --format of ship and
// replay (issue 5, decoders in pipeline/formats). FormatJSON above is the canonical one.
const (
	FormatKong      = "kong"       // Kong http-log plugin JSON, one object or an array of objects per line
	FormatNginx     = "nginx"      // NGINX access log, default "combined" format
	FormatNginxJSON = "nginx-json" // NGINX access log in the iotwatch JSON log_format (deploy/nginx)
	FormatEnvoy     = "envoy"      // Envoy JSON access log (deploy/envoy)
	FormatMosquitto = "mosquitto"  // Mosquitto broker log lines (log_type all)
	FormatEMQX      = "emqx"       // EMQX rule-engine / webhook event JSON
)

// Enforcement (issue 5, enforcement part): receipts, the forward-auth
// endpoint's headers and the enforcement point's metrics.
const (
	// SubjectDecisionsApplied carries ApplyReceipt JSON from enforcement points.
	// It is inside SubjectDecisionsAll, so IOTWATCH_DECISIONS stores receipts
	// next to the decisions; consumers of decisions filter it out by subject.
	SubjectDecisionsApplied = "iotwatch.decisions.applied"

	// Request headers read by `iotwatch enforce http` by default.
	HeaderDeviceID = "X-Device-Id"
	HeaderAPIKey   = "X-Api-Key"
	HeaderTenantID = "X-Tenant-Id"
	// Response headers of a denied (or throttled) check.
	HeaderEnforceAction   = "X-Iotwatch-Action"   // block or throttle
	HeaderEnforceScope    = "X-Iotwatch-Scope"    // device, api_key, ip or tenant
	HeaderEnforceDecision = "X-Iotwatch-Decision" // the decision id

	MetricEnforceChecks   = "iotwatch_enforce_checks_total" // label verdict=allow|block|throttle
	MetricEnforceActive   = "iotwatch_enforce_active_decisions"
	MetricEnforceApplied  = "iotwatch_enforce_applied_total"
	MetricEnforceRemoved  = "iotwatch_enforce_removed_total"
	MetricEnforceRejected = "iotwatch_enforce_rejected_total" // label reason=unsigned|malformed|unknown_key|bad_signature|invalid
	MetricEnforceResyncs  = "iotwatch_enforce_resyncs_total"
	MetricEnforceReceipts = "iotwatch_enforce_receipts_total" // label result=published|error|dropped
)

// Apply receipts in ClickHouse and allowlist lifts (issue 5, safety and
// traceability part: pipeline/receipts, sink/nats_lift.go, decide).
const (
	// ConsumerReceipts is the durable pull consumer that reads apply receipts
	// (SubjectDecisionsApplied, on IOTWATCH_DECISIONS) into TableReceipts.
	ConsumerReceipts = "iotwatch-receipts"
	// TableReceipts holds the enforcement points' apply receipts, one row per
	// (decision, enforcer, action).
	TableReceipts = "receipts"
	// ReasonAllowlisted is the reason of an unblock that lifts an active block
	// because the allowlist now covers its scope and value.
	ReasonAllowlisted = "allowlisted"
	// ReasonBlockCapHit names the fleet alert raised once per minute when the
	// per-minute cap on new blocks refuses its first block, and the extra reason
	// of each alert whose block the cap refused.
	ReasonBlockCapHit = "block_cap_hit"
)
