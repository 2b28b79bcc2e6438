package schemas

// ClickHouse column names. They are shared by the DDL (ddl.go), the Arrow schema
// of scored events (arrow.go) and the writer's INSERT column lists; analysts'
// queries and dashboards use them, so renaming one is a migration.
//
// Several tables share a name (time, tenant, device, ...) and then the column
// has the same meaning and type in each.
const (
	// Time columns. ClickHouse 18.16 has no DateTime64, so every DateTime
	// column (seconds) has an Int64 companion with Unix milliseconds.
	ColTime      = "time"       // DateTime: event time (alerts: time of the last event)
	ColTimeMs    = "time_ms"    // Int64: the same time, Unix milliseconds
	ColCreatedAt = "created_at" // DateTime
	ColCreatedMs = "created_ms" // Int64: Unix milliseconds
	ColExpiresAt = "expires_at" // DateTime; 1970-01-01 when the decision never expires

	// Scored events.
	ColEventID    = "event_id"   // UInt64: stable across redelivery; the deduplication key
	ColStreamSeq  = "stream_seq" // UInt64: JetStream sequence of the message that carried the event
	ColTenant     = "tenant"
	ColDevice     = "device"
	ColIDMethod   = "id_method" // IDMethod.String()
	ColAPIKey     = "api_key"
	ColClass      = "class"
	ColFirmware   = "firmware"
	ColSourceKind = "source_kind" // SourceKind.String()
	ColSourceID   = "source_id"
	ColClientIP   = "client_ip" // text form; empty when unknown
	ColCountry    = "country"   // ISO 3166-1 alpha-2; empty when unknown
	ColASN        = "asn"       // UInt32
	ColProtocol   = "protocol"  // Protocol.String()
	ColCommand    = "command"   // normalized command
	ColResource   = "resource"  // UInt64: hash of the identifiers the normalizer replaced
	// ColResourceIDs is the text of those identifiers, '/'-joined, at most
	// MaxResourceText bytes (Event.ResourceText); added by migration to
	// tables created before it.
	ColResourceIDs = "resource_ids"
	ColStatus      = "status"  // UInt16
	ColAuth        = "auth"    // AuthOutcome.String()
	ColVerdict     = "verdict" // Verdict.String(): the enforcement point's own verdict
	ColBytesIn     = "bytes_in"
	ColBytesOut    = "bytes_out"
	ColLatencyUS   = "latency_us" // UInt32, microseconds
	ColScore       = "score"      // scored events: Float32; alerts and decisions: Float64
	// ColScorer is the instance that scored the event (run's --instance):
	// with several scorers sharing partitions, which one owned the device's
	// partition when the row was written. Empty in rows written before it
	// existed.
	ColScorer = "scorer"

	// Findings, as parallel arrays: element i of each array belongs to finding i.
	ColDetectors      = "detectors"       // Array(String): registered detector names (detectors.Names)
	ColReasons        = "reasons"         // Array(String): reasons the detectors declared
	ColScores         = "scores"          // Array(Float32)
	ColObserved       = "observed"        // Array(Float64)
	ColExpected       = "expected"        // Array(Float64)
	ColObservedLabels = "observed_labels" // Array(String)
	ColExpectedLabels = "expected_labels" // Array(String)

	// Alerts.
	ColID = "id" // alerts and decisions: the deterministic id
	// ColEntityKind and ColEntity name the entity of an entity alert
	// (Alert.EntityKind, Alert.Entity): empty for a device's alert. Added
	// by migration to alerts tables created before them.
	ColEntityKind   = "entity_kind"
	ColEntity       = "entity"
	ColSeverity     = "severity"
	ColFirstEventID = "first_event_id"
	ColLastEventID  = "last_event_id"
	// ColGroup is an alert's group (Alert.Group): the ID of the alert that
	// opened it.
	ColGroup = "group_id"
	// ColFalseRate is an alert's estimated false-alarm rate (Float64): false
	// alerts per 1,000 device-hours of its class at its score for its
	// cause (Alert.FalseRate).
	ColFalseRate = "false_alerts_per_1000h"

	// Decisions.
	ColAction  = "action"
	ColScope   = "scope"
	ColValue   = "value"
	ColReason  = "reason"
	ColAlertID = "alert_id"
	ColIssuer  = "issuer"
	ColDryRun  = "dry_run" // UInt8: 1 for a dry-run decision
)
