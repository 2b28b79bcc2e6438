package schemas

import (
	"strconv"
	"strings"
)

// ClickHouse DDL.
//
// The tables use the subset of ClickHouse that runs on the server Debian ships
// (18.16) and on current releases: ReplacingMergeTree, PARTITION BY, ORDER BY and
// plain types. Newer features are added only when the server's version has them
// (see Features): TTL from 19.6, LowCardinality from 20.1.
//
// Every table is a ReplacingMergeTree whose sorting key ends with the row's
// stable id (event id, alert id, decision id), so a row written twice (after a
// redelivery or a retried insert) collapses into one when parts merge. Queries
// that must count exactly use FINAL: SELECT count() FROM scored_events FINAL.

// Column is one column of a ClickHouse table.
type Column struct {
	Name string
	// Type is the column's type as ClickHouse 18.16 understands it.
	Type string
	// LowCardinality marks String and Array(String) columns with few distinct
	// values; on servers that support it they are declared LowCardinality(String).
	LowCardinality bool
}

// Table describes one ClickHouse table. Tables returned by this package are
// shared: callers must not modify them.
type Table struct {
	Name    string
	Columns []Column
	// PartitionBy is the partition key expression: the day of TimeColumn
	// (the writer, pipeline/sink, bounds the days one insert carries by it).
	PartitionBy string
	// OrderBy is the sorting key; its last column is the row's stable id (for
	// receipts, the whole key is: decision, enforcer, action).
	OrderBy []string
	// TimeColumn is the DateTime column that retention (TTL) is computed from.
	TimeColumn string
	// Version, when set, is the UInt64 column the ReplacingMergeTree keeps the
	// highest of among rows of one sorting key (a row rewritten as it grows:
	// incidents); empty keeps the last inserted.
	Version string
	// ShardKey are the columns whose cityHash64 shards the table's rows on a
	// ClickHouse cluster (DDLOptions.Cluster). They are a subset of OrderBy,
	// so that every copy of a row (all rows of one sorting key, which
	// ReplacingMergeTree collapses into one) lands on the same shard; for the
	// tables of events and alerts they are the device key (tenant, device),
	// so that one device's rows are on one shard.
	ShardKey []string
}

// findingColumns are the parallel arrays that hold an event's or an alert's findings.
var findingColumns = []Column{
	{ColDetectors, "Array(String)", true},
	{ColReasons, "Array(String)", true},
	{ColScores, "Array(Float32)", false},
	{ColObserved, "Array(Float64)", false},
	{ColExpected, "Array(Float64)", false},
	{ColObservedLabels, "Array(String)", false},
	{ColExpectedLabels, "Array(String)", false},
}

var scoredTable = Table{
	Name: TableScored,
	Columns: append([]Column{
		{ColTime, "DateTime", false},
		{ColTimeMs, "Int64", false},
		{ColEventID, "UInt64", false},
		{ColStreamSeq, "UInt64", false},
		{ColTenant, "String", true},
		{ColDevice, "String", false},
		{ColIDMethod, "String", true},
		{ColAPIKey, "String", false},
		{ColClass, "String", true},
		{ColFirmware, "String", true},
		{ColSourceKind, "String", true},
		{ColSourceID, "String", true},
		{ColClientIP, "String", false},
		{ColCountry, "String", true},
		{ColASN, "UInt32", false},
		{ColProtocol, "String", true},
		{ColCommand, "String", true},
		{ColResource, "UInt64", false},
		{ColResourceIDs, "String", false},
		{ColStatus, "UInt16", false},
		{ColAuth, "String", true},
		{ColVerdict, "String", true}, // added after the first release: empty in rows written before it existed
		{ColBytesIn, "UInt64", false},
		{ColBytesOut, "UInt64", false},
		{ColLatencyUS, "UInt32", false},
		{ColScore, "Float32", false},
	}, append(findingColumns[:len(findingColumns):len(findingColumns)],
		Column{ColScorer, "String", true}, // added after the first release: empty in rows written before it existed
	)...),
	PartitionBy: "toYYYYMMDD(" + QuoteIdent(ColTime) + ")",
	OrderBy:     []string{ColTenant, ColDevice, ColTime, ColEventID},
	TimeColumn:  ColTime,
	ShardKey:    []string{ColTenant, ColDevice},
}

var alertsTable = Table{
	Name: TableAlerts,
	Columns: append(append([]Column{
		{ColID, "String", false},
		{ColTime, "DateTime", false},
		{ColTimeMs, "Int64", false},
		{ColTenant, "String", true},
		{ColDevice, "String", false},
		{ColAPIKey, "String", false},
		{ColClientIP, "String", false},
		{ColClass, "String", true},
		{ColCommand, "String", true},
		{ColCountry, "String", true},
		{ColScore, "Float64", false},
		{ColSeverity, "String", true},
	}, findingColumns...),
		Column{ColFirstEventID, "UInt64", false},
		Column{ColLastEventID, "UInt64", false},
		// Added after the first release (AddColumns): empty in older rows,
		// and for devices' alerts.
		Column{ColEntityKind, "String", true},
		Column{ColEntity, "String", false},
		Column{ColGroup, "String", false},      // added after the first release: empty in rows written before it existed
		Column{ColFalseRate, "Float64", false}, // added after the first release: 0 in rows written before it existed
	),
	PartitionBy: "toYYYYMMDD(" + QuoteIdent(ColTime) + ")",
	OrderBy:     []string{ColTenant, ColDevice, ColTime, ColID},
	TimeColumn:  ColTime,
	ShardKey:    []string{ColTenant, ColDevice},
}

var decisionsTable = Table{
	Name: TableDecisions,
	Columns: []Column{
		{ColID, "String", false},
		{ColAction, "String", true},
		{ColScope, "String", true},
		{ColValue, "String", false},
		{ColTenant, "String", true},
		{ColDevice, "String", false},
		{ColCreatedAt, "DateTime", false},
		{ColCreatedMs, "Int64", false},
		{ColExpiresAt, "DateTime", false},
		{ColReason, "String", true},
		{ColScore, "Float64", false},
		{ColAlertID, "String", false},
		{ColIssuer, "String", true},
		{ColDryRun, "UInt8", false},
	},
	PartitionBy: "toYYYYMMDD(" + QuoteIdent(ColCreatedAt) + ")",
	OrderBy:     []string{ColScope, ColValue, ColCreatedAt, ColID},
	TimeColumn:  ColCreatedAt,
	// A block, its renewals and its unblock are on one shard: the active
	// set per (scope, value) is computed there.
	ShardKey: []string{ColScope, ColValue},
}

// ScoredTable is the table of scored events (TableScored), one row per event.
func ScoredTable() *Table { return &scoredTable }

// AlertsTable is the table of alerts (TableAlerts), one row per alert.
func AlertsTable() *Table { return &alertsTable }

// DecisionsTable is the table of decisions (TableDecisions), one row per decision.
func DecisionsTable() *Table { return &decisionsTable }

// Tables returns every table, in creation order.
func Tables() []*Table {
	return []*Table{&scoredTable, &alertsTable, &decisionsTable, &receiptsTable, &rejectedReceiptsTable, &incidentsTable}
}

// ColumnNames returns the names of t's columns in table order.
func (t *Table) ColumnNames() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

// InsertStatement returns "INSERT INTO `db`.`t` (`a`, `b`, ...) VALUES" with every
// column in table order. ClickHouse 18.16 needs the explicit column list.
func (t *Table) InsertStatement(db string) string {
	var sb strings.Builder
	sb.WriteString("INSERT INTO ")
	sb.WriteString(QuoteIdent(db))
	sb.WriteByte('.')
	sb.WriteString(QuoteIdent(t.Name))
	sb.WriteString(" (")
	for i, c := range t.Columns {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(QuoteIdent(c.Name))
	}
	sb.WriteString(") VALUES")
	return sb.String()
}

// ServerFeatures says which optional DDL features a ClickHouse server has.
type ServerFeatures struct {
	TTL            bool // table TTL (19.6+)
	LowCardinality bool // LowCardinality(String) without experimental settings (20.1+ here)
}

// Features returns the features of a server that reports version (the result of
// SELECT version(), such as "18.16.1" or "24.8.4.13"). An empty or unparsable
// version gets no optional feature, which is always safe.
func Features(version string) ServerFeatures {
	major, minor, ok := parseVersion(version)
	if !ok {
		return ServerFeatures{}
	}
	atLeast := func(ma, mi int) bool { return major > ma || (major == ma && minor >= mi) }
	return ServerFeatures{
		TTL:            atLeast(19, 6),
		LowCardinality: atLeast(20, 1),
	}
}

// parseVersion returns the first two numbers of a dotted version string.
func parseVersion(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(strings.TrimSpace(v), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, false
	}
	return major, minor, true
}

// DDLOptions tunes the DDL.
type DDLOptions struct {
	// RetentionDays, when positive, drops rows older than that many days (by each
	// table's TimeColumn). It needs table TTL, so it is ignored on servers without
	// it (18.16): there, drop old partitions instead (ALTER TABLE ... DROP PARTITION).
	RetentionDays int

	// Cluster, when set, is the name of a ClickHouse cluster (the server's
	// remote_servers section): every table then has a local part on each host,
	// named Name+TableLocalSuffix, and a Distributed table over them under its
	// own name, sharded by cityHash64 of its ShardKey (see ClusterDDL).
	Cluster string
	// Replicated makes the local parts ReplicatedReplacingMergeTree tables at
	// ZooKeeperPath with replica name ReplicaName; it needs Cluster and a
	// ZooKeeper in every server's configuration.
	Replicated bool
	// ZooKeeperPath is the template of a Replicated table's ZooKeeper path;
	// default DefaultZooKeeperPath.
	ZooKeeperPath string
	// ReplicaName is a Replicated table's replica name; default DefaultReplicaName.
	ReplicaName string
	// OnCluster adds ON CLUSTER Cluster to every statement: distributed DDL,
	// which the server runs on every host of the cluster (it needs ZooKeeper
	// and the distributed_ddl section). Without it, the statements are to be
	// run on each host.
	OnCluster bool
}

// DDL returns the statements that create database db and every table in it, for a
// server that reports serverVersion; with opts.Cluster, each table's local part
// followed by its Distributed table. The statements are idempotent (IF NOT EXISTS):
// they never alter an existing table, so changing RetentionDays later needs an
// ALTER TABLE ... MODIFY TTL by hand. Columns added to a table after its first
// release reach existing tables through AddColumns.
func DDL(serverVersion, db string, opts DDLOptions) []string {
	f := Features(serverVersion)
	stmts := []string{"CREATE DATABASE IF NOT EXISTS " + QuoteIdent(db) + opts.onCluster()}
	for _, t := range Tables() {
		stmts = append(stmts, t.CreateStatement(db, f, opts))
		if opts.Cluster != "" {
			stmts = append(stmts, t.CreateDistributedStatement(db, f, opts))
		}
	}
	return stmts
}

// AddColumns returns the ALTER TABLE statements that add to table t in db the
// columns it lacks, given the columns it has (the names in system.columns),
// each after its predecessor in t, on a server with features f. Columns are
// only ever added (never dropped, renamed or retyped), so the statements are
// the whole migration from any earlier release; with none missing, none are
// returned. Asking system.columns first, rather than ADD COLUMN IF NOT EXISTS,
// works on every server from 18.16 on.
func (t *Table) AddColumns(db string, have map[string]bool, f ServerFeatures) []string {
	return t.AddColumnsTo(db, t.Name, have, f, DDLOptions{})
}

// AddColumnsTo is AddColumns for table name, which holds t's columns (t's
// local part or its Distributed table on a cluster), with ON CLUSTER when
// opts.OnCluster.
func (t *Table) AddColumnsTo(db, name string, have map[string]bool, f ServerFeatures, opts DDLOptions) []string {
	var stmts []string
	for i, c := range t.Columns {
		if have[c.Name] {
			continue
		}
		stmt := "ALTER TABLE " + QuoteIdent(db) + "." + QuoteIdent(name) + opts.onCluster() + " ADD COLUMN " + QuoteIdent(c.Name) + " " + c.typeFor(f)
		if i > 0 {
			stmt += " AFTER " + QuoteIdent(t.Columns[i-1].Name)
		}
		stmts = append(stmts, stmt)
	}
	return stmts
}

// CreateStatement returns the CREATE TABLE IF NOT EXISTS statement of t in db for
// a server with features f; with opts.Cluster, of t's local part (LocalName),
// ReplicatedReplacingMergeTree when opts.Replicated.
func (t *Table) CreateStatement(db string, f ServerFeatures, opts DDLOptions) string {
	var sb strings.Builder
	// ReplacingMergeTree keeps the row of the highest Version, or the last
	// inserted without one.
	version := ""
	if t.Version != "" {
		version = QuoteIdent(t.Version)
	}
	name, engine := t.Name, "ReplacingMergeTree("+version+")"
	if opts.Cluster != "" {
		name = t.LocalName()
		if opts.Replicated {
			args := QuoteString(opts.zooKeeperPath(db, name)) + ", " + QuoteString(opts.replicaName())
			if version != "" {
				args += ", " + version
			}
			engine = "ReplicatedReplacingMergeTree(" + args + ")"
		}
	}
	t.writeCreateColumns(&sb, db, name, f, opts)
	sb.WriteString("ENGINE = ")
	sb.WriteString(engine)
	sb.WriteString("\nPARTITION BY ")
	sb.WriteString(t.PartitionBy)
	sb.WriteString("\nORDER BY (")
	for i, name := range t.OrderBy {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(QuoteIdent(name))
	}
	sb.WriteByte(')')
	if f.TTL && opts.RetentionDays > 0 {
		sb.WriteString("\nTTL ")
		sb.WriteString(QuoteIdent(t.TimeColumn))
		sb.WriteString(" + INTERVAL ")
		sb.WriteString(strconv.Itoa(opts.RetentionDays))
		sb.WriteString(" DAY")
	}
	return sb.String()
}

// typeFor returns c's type on a server with features f.
func (c Column) typeFor(f ServerFeatures) string {
	if !c.LowCardinality || !f.LowCardinality {
		return c.Type
	}
	switch c.Type {
	case "String":
		return "LowCardinality(String)"
	case "Array(String)":
		return "Array(LowCardinality(String))"
	}
	return c.Type
}

// QuoteIdent quotes a ClickHouse identifier with backticks.
func QuoteIdent(name string) string {
	if !strings.ContainsAny(name, "`\\") {
		return "`" + name + "`"
	}
	var sb strings.Builder
	sb.WriteByte('`')
	for i := 0; i < len(name); i++ {
		if name[i] == '`' || name[i] == '\\' {
			sb.WriteByte('\\')
		}
		sb.WriteByte(name[i])
	}
	sb.WriteByte('`')
	return sb.String()
}
