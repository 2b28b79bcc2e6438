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

// TableLocalSuffix ends the name of a table's local part on each host of a
// ClickHouse cluster (iotwatch migrate --cluster): scored_events_local holds
// a shard's rows, and scored_events is the Distributed table over every
// shard's, so that queries keep the table names above.
const TableLocalSuffix = "_local"

// DefaultZooKeeperPath is where a Replicated local table keeps its replication
// log in ZooKeeper: {shard} (and the replica name, {replica}) are the
// server's macros; {database} and {table} are replaced by iotwatch with the
// database and the local table's name (ClickHouse 18.16 has no such macros).
const DefaultZooKeeperPath = "/clickhouse/tables/{shard}/{database}/{table}"

// DefaultReplicaName is a Replicated local table's replica name: the server's
// {replica} macro.
const DefaultReplicaName = "{replica}"
