package schemas

// ClickHouse tables (their columns are in columns.go, their DDL in ddl.go).
const (
	TableScored    = "scored_events"
	TableAlerts    = "alerts"
	TableDecisions = "decisions"
	// TableReceipts holds the enforcement points' apply receipts, one row per
	// (decision, enforcer, action).
	TableReceipts = "receipts"
)
