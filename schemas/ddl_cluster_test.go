package schemas

import (
	"slices"
	"strings"
	"testing"
)

// TestShardKeyInSortingKey: every table's shard key is a non-empty subset of
// its sorting key, so that the copies of a row, which ReplacingMergeTree
// collapses by sorting key, are always sent to one shard; the tables of
// events and alerts are sharded by the device key.
func TestShardKeyInSortingKey(t *testing.T) {
	for _, tab := range Tables() {
		if len(tab.ShardKey) == 0 {
			t.Errorf("table %q has no ShardKey: a cluster could not shard it", tab.Name)
		}
		for _, c := range tab.ShardKey {
			if !slices.Contains(tab.OrderBy, c) {
				t.Errorf("table %q: shard key column %q is not in ORDER BY %q: copies of a row could land on two shards and never collapse", tab.Name, c, tab.OrderBy)
			}
		}
	}
	for _, tab := range []*Table{ScoredTable(), AlertsTable()} {
		if !slices.Equal(tab.ShardKey, []string{ColTenant, ColDevice}) {
			t.Errorf("table %q is sharded by %q, want the device key (tenant, device)", tab.Name, tab.ShardKey)
		}
	}
}

func TestClusterDDL(t *testing.T) {
	stmts := DDL("18.16.1", "iotwatch", DDLOptions{Cluster: "c1"})
	if want := 1 + 2*len(Tables()); len(stmts) != want {
		t.Fatalf("got %d statements, want %d", len(stmts), want)
	}
	if stmts[0] != "CREATE DATABASE IF NOT EXISTS `iotwatch`" {
		t.Errorf("statement 0 = %q", stmts[0])
	}
	local, dist := stmts[1], stmts[2]
	if !strings.HasPrefix(local, "CREATE TABLE IF NOT EXISTS `iotwatch`.`scored_events_local`\n(\n    `time` DateTime,") ||
		!strings.Contains(local, ")\nENGINE = ReplacingMergeTree()\nPARTITION BY toYYYYMMDD(`time`)\nORDER BY (`tenant`, `device`, `time`, `event_id`)") {
		t.Errorf("local scored table:\n%s", local)
	}
	if !strings.HasPrefix(dist, "CREATE TABLE IF NOT EXISTS `iotwatch`.`scored_events`\n(\n    `time` DateTime,") ||
		!strings.HasSuffix(dist, ")\nENGINE = Distributed('c1', 'iotwatch', 'scored_events_local', cityHash64(`tenant`, `device`))") {
		t.Errorf("distributed scored table:\n%s", dist)
	}
	if !strings.HasSuffix(stmts[6], "ENGINE = Distributed('c1', 'iotwatch', 'decisions_local', cityHash64(`scope`, `value`))") {
		t.Errorf("distributed decisions table:\n%s", stmts[6])
	}
	for _, s := range stmts {
		if strings.Contains(s, "ON CLUSTER") || strings.Contains(s, "Replicated") {
			t.Errorf("per-host DDL with ON CLUSTER or Replicated:\n%s", s)
		}
	}

	rep := DDL("18.16.1", "iotwatch", DDLOptions{Cluster: "c1", Replicated: true, OnCluster: true})
	if rep[0] != "CREATE DATABASE IF NOT EXISTS `iotwatch` ON CLUSTER `c1`" {
		t.Errorf("statement 0 = %q", rep[0])
	}
	if want := "CREATE TABLE IF NOT EXISTS `iotwatch`.`alerts_local` ON CLUSTER `c1`\n(\n"; !strings.HasPrefix(rep[3], want) {
		t.Errorf("replicated alerts table does not start with %q:\n%s", want, rep[3])
	}
	if want := ")\nENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/iotwatch/alerts_local', '{replica}')\nPARTITION BY "; !strings.Contains(rep[3], want) {
		t.Errorf("replicated alerts table does not contain %q:\n%s", want, rep[3])
	}
	if want := "CREATE TABLE IF NOT EXISTS `iotwatch`.`alerts` ON CLUSTER `c1`\n(\n"; !strings.HasPrefix(rep[4], want) {
		t.Errorf("distributed alerts table does not start with %q:\n%s", want, rep[4])
	}

	custom := DDL("18.16.1", "db", DDLOptions{Cluster: "c1", Replicated: true, ZooKeeperPath: "/ch/{shard}/{table}", ReplicaName: "r'1"})
	if want := "ReplicatedReplacingMergeTree('/ch/{shard}/receipts_local', 'r\\'1')"; !strings.Contains(custom[7], want) {
		t.Errorf("custom path: want %q in\n%s", want, custom[7])
	}
}

func TestAddColumnsOnCluster(t *testing.T) {
	tab := ScoredTable()
	have := map[string]bool{}
	for _, n := range tab.ColumnNames() {
		have[n] = n != ColVerdict
	}
	got := tab.AddColumnsTo("iotwatch", tab.LocalName(), have, Features("18.16.1"), DDLOptions{Cluster: "c1", OnCluster: true})
	want := []string{"ALTER TABLE `iotwatch`.`scored_events_local` ON CLUSTER `c1` ADD COLUMN `verdict` String AFTER `auth`"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestQuoteString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := QuoteString(in); got != want {
			t.Errorf("QuoteString(%q) = %q, want %q", in, got, want)
		}
	}
	f("iotwatch", "'iotwatch'")
	f("a'b", `'a\'b'`)
	f(`a\b`, `'a\\b'`)
}
