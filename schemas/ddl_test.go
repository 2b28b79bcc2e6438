package schemas

import (
	"slices"
	"strings"
	"testing"
)

func TestFeatures(t *testing.T) {
	f := func(version string, want ServerFeatures) {
		t.Helper()
		if got := Features(version); got != want {
			t.Errorf("Features(%q) = %+v, want %+v", version, got, want)
		}
	}
	f("18.16.1", ServerFeatures{})
	f("19.5.3.8", ServerFeatures{})
	f("19.6.2.11", ServerFeatures{TTL: true})
	f("19.17.1", ServerFeatures{TTL: true})
	f("20.1.2.4", ServerFeatures{TTL: true, LowCardinality: true})
	f("24.8.4.13", ServerFeatures{TTL: true, LowCardinality: true})
	f(" 25.3.1 \n", ServerFeatures{TTL: true, LowCardinality: true})
	f("", ServerFeatures{})
	f("garbage", ServerFeatures{})
	f("24", ServerFeatures{})
	f("x.y.z", ServerFeatures{})
}

func TestTablesConsistent(t *testing.T) {
	for _, tab := range Tables() {
		types := map[string]string{}
		for _, c := range tab.Columns {
			if _, dup := types[c.Name]; dup {
				t.Errorf("table %q: duplicate column %q", tab.Name, c.Name)
			}
			types[c.Name] = c.Type
			_ = ArrowType(c.Type) // panics on a type without an Arrow mapping
			if c.LowCardinality && c.Type != "String" && c.Type != "Array(String)" {
				t.Errorf("table %q: column %q of type %q cannot be LowCardinality", tab.Name, c.Name, c.Type)
			}
		}
		for _, name := range tab.OrderBy {
			if _, ok := types[name]; !ok {
				t.Errorf("table %q: ORDER BY column %q does not exist", tab.Name, name)
			}
		}
		if types[tab.TimeColumn] != "DateTime" {
			t.Errorf("table %q: time column %q has type %q, want DateTime", tab.Name, tab.TimeColumn, types[tab.TimeColumn])
		}
		if !strings.Contains(tab.PartitionBy, QuoteIdent(tab.TimeColumn)) {
			t.Errorf("table %q: partition key %q does not use the time column %q", tab.Name, tab.PartitionBy, tab.TimeColumn)
		}
	}
	// Each table's ORDER BY ends with its stable id: that is what makes rewrites collapse.
	// (Receipts: the whole key (decision_id, enforcer, action) is the id.)
	ids := map[string]string{TableScored: ColEventID, TableAlerts: ColID, TableDecisions: ColID, TableReceipts: ColAction, TableRejectedReceipts: ColStreamSeq, TableIncidents: ColID}
	for _, tab := range Tables() {
		if last := tab.OrderBy[len(tab.OrderBy)-1]; last != ids[tab.Name] {
			t.Errorf("table %q: ORDER BY ends with %q, want %q", tab.Name, last, ids[tab.Name])
		}
	}
}

func TestDDLOldServer(t *testing.T) {
	stmts := DDL("18.16.1", "iotwatch", DDLOptions{RetentionDays: 30})
	if len(stmts) != 7 {
		t.Fatalf("got %d statements, want 7", len(stmts))
	}
	if stmts[0] != "CREATE DATABASE IF NOT EXISTS `iotwatch`" {
		t.Errorf("statement 0 = %q", stmts[0])
	}
	all := strings.Join(stmts, "\n")
	for _, banned := range []string{"TTL", "LowCardinality", "DateTime64", "Map(", "CODEC"} {
		if strings.Contains(all, banned) {
			t.Errorf("DDL for 18.16 uses %q:\n%s", banned, all)
		}
	}
	want := "CREATE TABLE IF NOT EXISTS `iotwatch`.`scored_events`\n(\n    `time` DateTime,\n    `time_ms` Int64,\n    `event_id` UInt64,\n"
	if !strings.HasPrefix(stmts[1], want) {
		t.Errorf("scored DDL starts with\n%s\nwant\n%s", stmts[1][:len(want)], want)
	}
	wantTail := "    `expected_labels` Array(String),\n    `scorer` String\n)\nENGINE = ReplacingMergeTree()\nPARTITION BY toYYYYMMDD(`time`)\nORDER BY (`tenant`, `device`, `time`, `event_id`)"
	if !strings.HasSuffix(stmts[1], wantTail) {
		t.Errorf("scored DDL ends with\n%s\nwant\n%s", stmts[1][len(stmts[1])-len(wantTail):], wantTail)
	}
	if !strings.Contains(stmts[3], "PARTITION BY toYYYYMMDD(`created_at`)\nORDER BY (`scope`, `value`, `created_at`, `id`)") {
		t.Errorf("decisions DDL:\n%s", stmts[3])
	}
	if !strings.HasSuffix(stmts[4], "PARTITION BY toYYYYMMDD(`applied_at`)\nORDER BY (`decision_id`, `enforcer`, `action`)") {
		t.Errorf("receipts DDL:\n%s", stmts[4])
	}
	if !strings.HasSuffix(stmts[5], "PARTITION BY toYYYYMM(`received_at`)\nORDER BY (`stream_seq`)") {
		t.Errorf("rejected receipts DDL:\n%s", stmts[5])
	}
	// Incidents: rewritten as they grow, the highest version kept.
	if !strings.HasSuffix(stmts[6], "ENGINE = ReplacingMergeTree(`version`)\nPARTITION BY toYYYYMM(`first_seen`)\nORDER BY (`id`)") {
		t.Errorf("incidents DDL:\n%s", stmts[6])
	}
}

// TestAddColumn checks the statements that bring a table created before a
// column was added up to date.
func TestAddColumn(t *testing.T) {
	tab := ScoredTable()
	have := map[string]bool{}
	for _, n := range tab.ColumnNames() {
		have[n] = n != ColVerdict
	}
	if got, want := tab.AddColumns("iotwatch", have, Features("18.16.1")), []string{"ALTER TABLE `iotwatch`.`scored_events` ADD COLUMN `verdict` String AFTER `auth`"}; !slices.Equal(got, want) {
		t.Errorf("old server: got %q, want %q", got, want)
	}
	if got := tab.AddColumns("db", have, Features("24.8")); len(got) != 1 || !strings.HasSuffix(got[0], "`verdict` LowCardinality(String) AFTER `auth`") {
		t.Errorf("new server: %q", got)
	}
	have[ColVerdict] = true
	if got := tab.AddColumns("db", have, Features("24.8")); len(got) != 0 {
		t.Errorf("current table: %q, want none", got)
	}
}

// TestAddReceiptVerification: a receipts table from before receipts were
// signed gains the verification status and the receipt's key id.
func TestAddReceiptVerification(t *testing.T) {
	tab := ReceiptsTable()
	have := map[string]bool{}
	for _, n := range tab.ColumnNames() {
		have[n] = n != ColVerification && n != ColReceiptKeyID
	}
	want := []string{
		"ALTER TABLE `iotwatch`.`receipts` ADD COLUMN `verification` String AFTER `stream_seq`",
		"ALTER TABLE `iotwatch`.`receipts` ADD COLUMN `receipt_key_id` String AFTER `verification`",
	}
	if got := tab.AddColumns("iotwatch", have, Features("18.16.1")); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDDLNewServer(t *testing.T) {
	stmts := DDL("24.8.4.13", "db1", DDLOptions{RetentionDays: 30})
	for i, tab := range Tables() {
		s := stmts[i+1]
		wantTTL := "\nTTL " + QuoteIdent(tab.TimeColumn) + " + INTERVAL 30 DAY"
		if !strings.HasSuffix(s, wantTTL) {
			t.Errorf("table %q: DDL does not end with %q:\n%s", tab.Name, wantTTL, s)
		}
		if tab.Name == TableRejectedReceipts {
			continue // no tenant or device column
		}
		if tab.Name == TableIncidents {
			if !strings.Contains(s, "`tenant` LowCardinality(String),") || !strings.Contains(s, "`device_sample` Array(String),") {
				t.Errorf("table %q: tenant must be LowCardinality, device_sample Array(String):\n%s", tab.Name, s)
			}
			continue // devices are a sample, not a column
		}
		if tab.Name == TableReceipts {
			if !strings.Contains(s, "`enforcer` LowCardinality(String),") || !strings.Contains(s, "`decision_id` String,") {
				t.Errorf("table %q: enforcer must be LowCardinality, decision_id String:\n%s", tab.Name, s)
			}
			continue // no tenant or device column
		}
		if !strings.Contains(s, "`tenant` LowCardinality(String),") {
			t.Errorf("table %q: tenant is not LowCardinality:\n%s", tab.Name, s)
		}
		if !strings.Contains(s, "`device` String,") {
			t.Errorf("table %q: device must stay String:\n%s", tab.Name, s)
		}
	}
	if !strings.Contains(stmts[1], "`detectors` Array(LowCardinality(String)),") {
		t.Errorf("detectors is not Array(LowCardinality(String)):\n%s", stmts[1])
	}
	if !strings.Contains(stmts[1], "`observed_labels` Array(String),") {
		t.Errorf("observed_labels must stay Array(String):\n%s", stmts[1])
	}

	// No retention: no TTL even where the server has it.
	for _, s := range DDL("24.8.4.13", "db1", DDLOptions{})[1:] {
		if strings.Contains(s, "TTL") {
			t.Errorf("TTL without retention:\n%s", s)
		}
	}
}

func TestInsertStatement(t *testing.T) {
	got := DecisionsTable().InsertStatement("iotwatch")
	want := "INSERT INTO `iotwatch`.`decisions` (`id`, `action`, `scope`, `value`, `tenant`, `device`, `created_at`, " +
		"`created_ms`, `expires_at`, `reason`, `score`, `alert_id`, `issuer`, `dry_run`) VALUES"
	if got != want {
		t.Errorf("InsertStatement:\n got %s\nwant %s", got, want)
	}
}

func TestQuoteIdent(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := QuoteIdent(in); got != want {
			t.Errorf("QuoteIdent(%q) = %q, want %q", in, got, want)
		}
	}
	f("iotwatch", "`iotwatch`")
	f("a`b", "`a\\`b`")
	f(`a\b`, "`a\\\\b`")
}

// TestAddColumns: the columns a table lacks are added after their
// predecessors; a complete table needs nothing.
func TestAddColumns(t *testing.T) {
	tbl := ScoredTable()
	have := map[string]bool{}
	for _, c := range tbl.Columns {
		have[c.Name] = true
	}
	if got := tbl.AddColumns("iotwatch", have, ServerFeatures{}); len(got) != 0 {
		t.Errorf("complete table: %q, want nothing", got)
	}
	delete(have, ColResourceIDs)
	got := tbl.AddColumns("iotwatch", have, ServerFeatures{})
	want := "ALTER TABLE `iotwatch`.`scored_events` ADD COLUMN `resource_ids` String AFTER `resource`"
	if len(got) != 1 || got[0] != want {
		t.Errorf("without %s: %q, want [%q]", ColResourceIDs, got, want)
	}
}
