package schemas

// ClickHouse columns of the incidents table (TableIncidents). The table also
// uses ColID, ColVersion, ColTenant and ColSeverity with their usual meaning
// and ColScore (Float64: the highest alert score).
const (
	ColVersion       = "version"        // UInt64: the ReplacingMergeTree version (incidents: alerts folded in)
	ColFirstSeen     = "first_seen"     // DateTime: the first alert's time; the partition, never changes
	ColFirstSeenMs   = "first_seen_ms"  // Int64: the same time, Unix milliseconds
	ColLastSeen      = "last_seen"      // DateTime: the latest alert's time
	ColLastSeenMs    = "last_seen_ms"   // Int64: the same time, Unix milliseconds
	ColAlertCount    = "alerts"         // UInt32: alerts grouped
	ColDeviceCount   = "devices"        // UInt32: distinct devices (exact up to a bound)
	ColDeviceSample  = "device_sample"  // Array(String): a sample of the distinct devices (the smallest)
	ColEntities      = "entities"       // Array(String): a sample of the distinct entities, kind:value (addresses first)
	ColEntityCount   = "entity_count"   // UInt32: distinct entities (exact up to a bound)
	ColFindingKinds  = "finding_kinds"  // Array(String): distinct detector/reason of the alerts' findings
	ColDecisionIDs   = "decision_ids"   // Array(String): a sample of the decisions taken on the alerts (the smallest ids)
	ColDecisionCount = "decision_count" // UInt32: decisions taken on the alerts
	ColFirstAlertID  = "first_alert_id" // String: the earliest alert (event time, then id); the id derives from it
	ColLastAlertID   = "last_alert_id"  // String: the latest alert grouped
	ColMergedInto    = "merged_into"    // String: the incident that holds this one's alerts now ('' for a live one)
)

// incidentsTable holds incidents. An incident's row is rewritten as it grows:
// the same id with a higher version, which the ReplacingMergeTree keeps when
// parts merge (query with FINAL for the latest of each). The sorting key is
// the id alone and the partition the month of first_seen, which never changes
// for an incident, so every version of one lands in one partition and collapses.
var incidentsTable = Table{
	Name: TableIncidents,
	Columns: []Column{
		{ColID, "String", false},
		{ColVersion, "UInt64", false},
		{ColTenant, "String", true},
		{ColFirstSeen, "DateTime", false},
		{ColFirstSeenMs, "Int64", false},
		{ColLastSeen, "DateTime", false},
		{ColLastSeenMs, "Int64", false},
		{ColSeverity, "String", true},
		{ColScore, "Float64", false},
		{ColAlertCount, "UInt32", false},
		{ColDeviceCount, "UInt32", false},
		{ColDeviceSample, "Array(String)", false},
		{ColEntities, "Array(String)", false},
		{ColEntityCount, "UInt32", false},
		{ColFindingKinds, "Array(String)", true},
		{ColDecisionIDs, "Array(String)", false},
		{ColDecisionCount, "UInt32", false},
		{ColFirstAlertID, "String", false},
		{ColLastAlertID, "String", false},
		{ColMergedInto, "String", false}, // added after the first release: empty in rows written before it existed
	},
	PartitionBy: "toYYYYMM(" + QuoteIdent(ColFirstSeen) + ")",
	OrderBy:     []string{ColID},
	TimeColumn:  ColFirstSeen,
	Version:     ColVersion,
	ShardKey:    []string{ColID},
}

// IncidentsTable is the table of incidents (TableIncidents), one row per
// incident and version, collapsed to the highest version.
func IncidentsTable() *Table { return &incidentsTable }
