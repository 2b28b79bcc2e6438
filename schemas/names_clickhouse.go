package schemas

// ClickHouse tables (their columns are in columns.go, their DDL in ddl.go).
const (
	TableScored    = "scored_events"
	TableAlerts    = "alerts"
	TableDecisions = "decisions"
	// TableReceipts holds the enforcement points' apply receipts, one row per
	// (decision, enforcer, action).
	TableReceipts = "receipts"
	// TableRejectedReceipts holds the receipts that failed verification
	// (forged, tampered, unsigned or signed by an unknown key), one row per
	// message on the stream: visible as rejected, never as applied.
	TableRejectedReceipts = "receipts_rejected"
	// TableIncidents holds incidents, one row per incident after merges
	// (ReplacingMergeTree by id, keeping the highest version).
	TableIncidents = "incidents"
)
