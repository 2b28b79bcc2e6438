package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/schemas"
)

// The cluster tests run against two private servers on loopback that know
// each other as the two shards of cluster "iotwatch" (sharedCluster): no
// ZooKeeper, so Migrate applies the DDL on each host and the local parts are
// plain ReplacingMergeTree tables. TestClusterReplicated starts its own
// ZooKeeper and two shards of two replicas.

// openClusterWriter opens a writer on the first server of cl for cluster
// cl.Name(), with a database of the test's own (dropped first on every host),
// migrated.
func openClusterWriter(t testing.TB, cl *chserver.Cluster, cfg ClickHouseConfig) *ClickHouse {
	t.Helper()
	cfg.DSN = cl.Servers()[0].DSN()
	cfg.Cluster = cl.Name()
	cfg.Log = quiet
	if cfg.Database == "" {
		cfg.Database = "t_" + strings.ToLower(nonIdent.ReplaceAllString(t.Name(), "_"))
	}
	ctx := context.Background()
	for _, s := range cl.Servers() {
		if err := hostConn(t, s).Exec(ctx, "DROP DATABASE IF EXISTS "+schemas.QuoteIdent(cfg.Database)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := OpenClickHouse(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// quiet discards the writers' logs (one line per migrated host).
var quiet = slog.New(slog.DiscardHandler)

// hostConn is a plain connection to one server of a cluster.
func hostConn(t testing.TB, s *chserver.Server) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{net.JoinHostPort("127.0.0.1", fmt.Sprint(s.TCPPort()))}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// fleetRecord is rows first..first+n-1 of testRecord's sequence, spread over
// devices devices of two tenants.
func fleetRecord(t testing.TB, first, n, devices int) arrow.RecordBatch {
	t.Helper()
	b := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer b.Release()
	var ev schemas.Event
	var s schemas.Scored
	for i := first; i < first+n; i++ {
		fillTestEvent(&ev, &s, i)
		ev.SetDevice([]byte([]string{"acme", "globex"}[i%2]), fmt.Appendf(nil, "dev-%04d", (i/2)%devices))
		b.Append(&ev, &s)
	}
	return b.NewRecord()
}

// uint64Query runs a query of one UInt64 on conn.
func uint64Query(t testing.TB, conn driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// deviceKeys returns the distinct "tenant/device" of table on conn.
func deviceKeys(t testing.TB, conn driver.Conn, db, table string) []string {
	t.Helper()
	q := "SELECT DISTINCT concat(tenant, '/', device) AS k FROM " + schemas.QuoteIdent(db) + "." + schemas.QuoteIdent(table) + " ORDER BY k"
	keys, err := queryStrings(context.Background(), conn, q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return keys
}

// TestClusterWrites writes a fleet's scored events and alerts through the
// Distributed tables of a two-shard cluster: as soon as each write returns,
// every row is stored once (raw count, FINAL count and distinct ids equal
// what was sent), each device's rows (events and alerts) are on exactly one
// shard, and both shards hold some. A batch written again (a retry after a
// lost acknowledgement) collapses: FINAL and distinct counts are unchanged.
func TestClusterWrites(t *testing.T) {
	cl := sharedCluster.Get(t)
	c := openClusterWriter(t, cl, ClickHouseConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang bound
	defer cancel()
	const (
		batches   = 3
		perBatch  = 2000
		devices   = 150 // per tenant, two tenants: 300 device keys
		sent      = batches * perBatch
		deviceKey = 2 * devices
	)
	for b := range batches {
		rec := fleetRecord(t, b*perBatch, perBatch, devices)
		err := c.WriteScored(ctx, rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	db := schemas.QuoteIdent(c.db)
	local := cl.Servers()
	dist := hostConn(t, local[1]) // the other server answers for the whole cluster too
	count := func(conn driver.Conn, table, mod string) uint64 {
		return uint64Query(t, conn, "SELECT count() FROM "+db+"."+schemas.QuoteIdent(table)+mod)
	}
	// Synchronous inserts: the rows are on the shards when WriteScored returns, no wait.
	var onShards uint64
	for _, s := range local {
		onShards += count(hostConn(t, s), schemas.ScoredTable().LocalName(), "")
	}
	if onShards != sent {
		t.Errorf("right after the writes returned, the shards hold %d rows, want %d (inserts must be synchronous)", onShards, sent)
	}
	check := func(when string, wantRaw bool) {
		t.Helper()
		raw := count(dist, schemas.TableScored, "")
		final := count(dist, schemas.TableScored, " FINAL")
		ids := uint64Query(t, dist, "SELECT uniqExact(event_id) FROM "+db+"."+schemas.QuoteIdent(schemas.TableScored))
		if final != sent || ids != sent || (wantRaw && raw != sent) || raw < sent {
			t.Errorf("%s: raw %d, FINAL %d, distinct ids %d; want %d each", when, raw, final, ids, sent)
		}
		keys := map[string]int{}
		var all []string
		for i, s := range local {
			shard := deviceKeys(t, hostConn(t, s), c.db, schemas.ScoredTable().LocalName())
			if len(shard) == 0 {
				t.Errorf("%s: shard %d holds no device: the shard key does not spread the fleet", when, i+1)
			}
			for _, k := range shard {
				if prev, dup := keys[k]; dup {
					t.Errorf("%s: device %s has rows on shards %d and %d", when, k, prev, i+1)
				}
				keys[k] = i + 1
				all = append(all, k)
			}
		}
		if len(keys) != deviceKey {
			t.Errorf("%s: %d devices on the shards, want %d", when, len(keys), deviceKey)
		}
		t.Logf("%s: %d rows, devices per shard: %d of %d", when, raw, len(deviceKeys(t, hostConn(t, local[0]), c.db, schemas.ScoredTable().LocalName())), len(all))
	}
	check("after the writes", true)

	// A retry of the second batch: its rows go to the shards they went to and collapse there.
	rec := fleetRecord(t, perBatch, perBatch, devices)
	err := c.WriteScored(ctx, rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	check("after a batch was written again", false)

	// Alerts of the fleet's devices land on the shard of the device's events.
	var alerts []schemas.Alert
	for i := range deviceKey {
		alerts = append(alerts, schemas.Alert{ID: fmt.Sprintf("al-%d", i), Time: testBase.Add(time.Duration(i) * time.Second),
			Tenant: []string{"acme", "globex"}[i%2], Device: fmt.Sprintf("dev-%04d", i/2), Score: 0.9, Severity: schemas.SeverityHigh,
			Reasons: []schemas.Explanation{}})
	}
	if err := c.WriteAlerts(ctx, alerts); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAlerts(ctx, alerts[:10]); err != nil { // a retry
		t.Fatal(err)
	}
	if n := count(dist, schemas.TableAlerts, " FINAL"); n != uint64(len(alerts)) {
		t.Errorf("alerts FINAL = %d, want %d", n, len(alerts))
	}
	for i, s := range local {
		events := deviceKeys(t, hostConn(t, s), c.db, schemas.ScoredTable().LocalName())
		for _, k := range deviceKeys(t, hostConn(t, s), c.db, schemas.AlertsTable().LocalName()) {
			if !slices.Contains(events, k) {
				t.Errorf("shard %d holds an alert of device %s whose events are on the other shard", i+1, k)
			}
		}
	}

	// Events and alerts share their shard key, so a subquery on alerts may run
	// per shard (distributed_product_mode = 'local') and agree with GLOBAL IN.
	sub := "(tenant, device) %s (SELECT tenant, device FROM " + db + ".alerts WHERE endsWith(id, '7'))"
	global := uint64Query(t, dist, "SELECT count() FROM "+db+".scored_events FINAL WHERE "+fmt.Sprintf(sub, "GLOBAL IN"))
	perShard := uint64Query(t, dist, "SELECT count() FROM "+db+".scored_events FINAL WHERE "+fmt.Sprintf(sub, "IN")+" SETTINGS distributed_product_mode = 'local'")
	if global == 0 || global >= sent || perShard != global {
		t.Errorf("events of alerted devices: GLOBAL IN %d, per shard %d; want equal, above 0 and below %d", global, perShard, sent)
	}

	// Decisions and receipts reach the cluster too.
	if err := c.WriteDecisions(ctx, testCHDecisions()); err != nil {
		t.Fatal(err)
	}
	if n := count(dist, schemas.TableDecisions, " FINAL"); n != uint64(len(testCHDecisions())) {
		t.Errorf("decisions FINAL = %d, want %d", n, len(testCHDecisions()))
	}
	rs := []Receipt{{ApplyReceipt: schemas.ApplyReceipt{DecisionID: "dc-1", EnforcerID: "gw-1", Action: schemas.ActionBlock,
		Scope: schemas.ScopeDevice, Value: "lock-1", AppliedAt: testBase}, Received: testBase, StreamSeq: 7, Verification: schemas.ReceiptUnverified}}
	if err := c.WriteReceipts(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteRejectedReceipts(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if n := count(dist, schemas.TableReceipts, " FINAL") + count(dist, schemas.TableRejectedReceipts, " FINAL"); n != 2 {
		t.Errorf("receipts FINAL = %d, want 2 (one verified, one rejected)", n)
	}
	if err := c.CheckCluster(ctx); err != nil {
		t.Errorf("CheckCluster after Migrate: %v", err)
	}
}

// TestClusterReadmeQueries runs the READMEs' queries against the
// Distributed tables, under the names analysts use on one server.
func TestClusterReadmeQueries(t *testing.T) {
	cl := sharedCluster.Get(t)
	c := openClusterWriter(t, cl, ClickHouseConfig{Database: "iotwatch"})
	readmeQueries(t, c)
}

// TestClusterMigrateAgain: Migrate is idempotent on a cluster, and adds a
// column a later release introduced to the local parts and the Distributed
// tables of every host.
func TestClusterMigrateAgain(t *testing.T) {
	cl := sharedCluster.Get(t)
	c := openClusterWriter(t, cl, ClickHouseConfig{})
	ctx := context.Background()
	tab := schemas.ScoredTable()
	for _, s := range cl.Servers() {
		for _, name := range []string{tab.LocalName(), tab.Name} {
			if err := hostConn(t, s).Exec(ctx, "ALTER TABLE "+schemas.QuoteIdent(c.db)+"."+schemas.QuoteIdent(name)+" DROP COLUMN "+schemas.QuoteIdent(schemas.ColVerdict)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.CheckCluster(ctx); err == nil || !strings.Contains(err.Error(), schemas.ColVerdict) || !strings.Contains(err.Error(), "iotwatch migrate --cluster "+cl.Name()) {
		t.Errorf("CheckCluster with a column missing: %v; want an error naming it and the migrate command", err)
	}
	m, err := c.MigrateCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode != ClusterDDLPerHost || len(m.Hosts) != 2 {
		t.Errorf("migration %+v: want per host, 2 hosts (no ZooKeeper)", m)
	}
	for i, s := range cl.Servers() {
		have, err := columnsOf(ctx, hostConn(t, s), c.db)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{tab.LocalName(), tab.Name} {
			if !have[name][schemas.ColVerdict] {
				t.Errorf("host %d: %s lacks %s after Migrate", i+1, name, schemas.ColVerdict)
			}
		}
	}
	if err := c.CheckCluster(ctx); err != nil {
		t.Errorf("CheckCluster after Migrate: %v", err)
	}
	rec := fleetRecord(t, 0, 100, 10)
	defer rec.Release()
	if err := c.WriteScored(ctx, rec); err != nil {
		t.Errorf("write after the column was added back: %v", err)
	}
}

// TestClusterRefusesSingleServerTables: a database migrated for one server
// (plain tables under the names the Distributed tables need) is not
// migrated to a cluster silently; the error says how to convert it, and
// CheckCluster refuses to write there.
func TestClusterRefusesSingleServerTables(t *testing.T) {
	cl := sharedCluster.Get(t)
	ctx := context.Background()
	const db = "t_single_server"
	plain, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: cl.Servers()[0].DSN(), Database: db})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for _, s := range cl.Servers() {
		if err := hostConn(t, s).Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Fatal(err)
		}
	}
	if err := plain.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: cl.Servers()[0].DSN(), Database: db, Cluster: cl.Name(), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.CheckCluster(ctx); err == nil || !strings.Contains(err.Error(), "not Distributed") {
		t.Errorf("CheckCluster on single-server tables: %v, want an error", err)
	}
	if err := c.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "RENAME TABLE `"+db+"`.`scored_events` TO `"+db+"`.`scored_events_local`") {
		t.Errorf("Migrate on single-server tables: %v, want an error with the RENAME to run", err)
	}
}

// TestClusterUnknown: a cluster the server does not know is refused at open,
// with the clusters it knows.
func TestClusterUnknown(t *testing.T) {
	cl := sharedCluster.Get(t)
	_, err := OpenClickHouse(context.Background(), ClickHouseConfig{DSN: cl.Servers()[0].DSN(), Cluster: "nosuch"})
	if err == nil || !strings.Contains(err.Error(), `"nosuch"`) || !strings.Contains(err.Error(), cl.Name()) {
		t.Errorf("open with an unknown cluster: %v, want an error naming it and %q", err, cl.Name())
	}
}

// TestClusterOnClusterDDLParses sends every ON CLUSTER statement of the
// cluster DDL (plain and Replicated) to a server without distributed DDL:
// each must fail because distributed DDL is not set up there, never as a
// syntax error, which shows that the server's parser accepts the text.
func TestClusterOnClusterDDLParses(t *testing.T) {
	cl := sharedCluster.Get(t)
	ctx := context.Background()
	conn := hostConn(t, cl.Servers()[0])
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	f := schemas.Features(version)
	for _, replicated := range []bool{false, true} {
		opts := schemas.DDLOptions{Cluster: cl.Name(), OnCluster: true, Replicated: replicated}
		stmts := schemas.DDL(version, "t_on_cluster", opts)
		tab := schemas.ScoredTable()
		stmts = append(stmts, tab.AddColumnsTo("t_on_cluster", tab.LocalName(), map[string]bool{}, f, opts)[1])
		for _, stmt := range stmts {
			err := conn.Exec(ctx, stmt)
			var ex *clickhouse.Exception
			if !errors.As(err, &ex) {
				t.Errorf("%v (want a server error: no distributed DDL here)\n%s", err, stmt)
				continue
			}
			if ex.Code == chSyntaxError {
				t.Errorf("the server cannot parse: %v\n%s", err, stmt)
			}
		}
	}
}

// chSyntaxError is ClickHouse's SYNTAX_ERROR code.
const chSyntaxError = 62

// TestClusterReplicated runs a real ZooKeeper and a cluster of two shards
// of two replicas each, with distributed DDL: Migrate picks ON CLUSTER by
// itself and creates ReplicatedReplacingMergeTree local tables on all four
// hosts; a fleet written through the Distributed tables is stored once (raw,
// FINAL, distinct ids), each device on one shard, both replicas of a shard
// end up with the same rows, and a column dropped everywhere is added back by
// a second Migrate (ALTER ... ON CLUSTER).
func TestClusterReplicated(t *testing.T) {
	if _, _, err := chserver.ZooKeeperAvailable(); err != nil {
		t.Fatalf("this test needs ZooKeeper: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang bound
	defer cancel()
	zk, err := chserver.StartZooKeeper(ctx, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer zk.Stop()
	cl, err := chserver.StartCluster(ctx, chserver.ClusterOptions{Name: "replicated", Shards: 2, Replicas: 2, ZooKeeper: zk.Addr(), DistributedDDL: true})
	if err != nil {
		t.Fatalf("these tests need a real ClickHouse cluster: %v", err)
	}
	defer cl.Stop()
	c, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: cl.Servers()[3].DSN(), Database: "t_replicated", Cluster: cl.Name(), Log: quiet,
		DDL: schemas.DDLOptions{Replicated: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.MigrateCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode != ClusterDDLOnCluster || len(m.Hosts) != 4 {
		t.Errorf("migration %+v: want ON CLUSTER (the server has a ZooKeeper) over 4 hosts", m)
	}
	scoredLocal := "t_replicated." + schemas.QuoteIdent(schemas.ScoredTable().LocalName())
	for i, s := range cl.Servers() {
		var engine string
		if err := hostConn(t, s).QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = 't_replicated' AND name = ?", schemas.ScoredTable().LocalName()).Scan(&engine); err != nil || engine != "ReplicatedReplacingMergeTree" {
			t.Errorf("host %d: local scored table engine %q (%v), want ReplicatedReplacingMergeTree", i+1, engine, err)
		}
	}

	const batches, perBatch, devices = 2, 2000, 100
	const sent = batches * perBatch
	for b := range batches {
		rec := fleetRecord(t, b*perBatch, perBatch, devices)
		err := c.WriteScored(ctx, rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	rec := fleetRecord(t, 0, perBatch, devices) // a retry of the first batch
	err = c.WriteScored(ctx, rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	dist := hostConn(t, cl.Servers()[0])
	// One replica of each shard has its rows when the write returns; the other
	// catches up from ZooKeeper's log. A query through the Distributed table
	// reads one replica of each shard, either of them: it is checked once the
	// replicas converged.
	deadline := time.Now().Add(time.Minute) // a hang bound
	for {
		var counts []uint64
		for _, s := range cl.Servers() {
			counts = append(counts, uint64Query(t, hostConn(t, s), "SELECT count() FROM "+scoredLocal))
		}
		if counts[0] == counts[1] && counts[2] == counts[3] {
			// A retried block that Replicated deduplication dropped leaves raw = sent.
			if raw := counts[0] + counts[2]; raw != sent && raw != sent+perBatch {
				t.Errorf("the shards hold %d rows, want %d (or %d before the retried batch collapses)", raw, sent, sent+perBatch)
			}
			t.Logf("rows per replica: %v", counts)
			final := uint64Query(t, dist, "SELECT count() FROM t_replicated.scored_events FINAL")
			ids := uint64Query(t, dist, "SELECT uniqExact(event_id) FROM t_replicated.scored_events")
			if final != sent || ids != sent {
				t.Errorf("FINAL %d, distinct ids %d; want %d", final, ids, sent)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not converge in a minute: rows per replica %v", counts)
		}
		time.Sleep(100 * time.Millisecond) // poll
	}
	keys := map[string]int{}
	for shard := range 2 {
		for _, k := range deviceKeys(t, hostConn(t, cl.Servers()[2*shard]), "t_replicated", schemas.ScoredTable().LocalName()) {
			if prev, dup := keys[k]; dup {
				t.Errorf("device %s has rows on shards %d and %d", k, prev, shard+1)
			}
			keys[k] = shard + 1
		}
	}
	if len(keys) != 2*devices {
		t.Errorf("%d devices on the shards, want %d", len(keys), 2*devices)
	}

	// A column lost everywhere comes back with a second migrate, ON CLUSTER.
	// (ALTER ... ON CLUSTER of the Distributed table is refused with replicas: host by host.)
	if err := dist.Exec(ctx, "ALTER TABLE "+scoredLocal+" ON CLUSTER replicated DROP COLUMN "+schemas.QuoteIdent(schemas.ColVerdict)); err != nil {
		t.Fatal(err)
	}
	for _, s := range cl.Servers() {
		if err := hostConn(t, s).Exec(ctx, "ALTER TABLE t_replicated.scored_events DROP COLUMN "+schemas.QuoteIdent(schemas.ColVerdict)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.MigrateCluster(ctx); err != nil {
		t.Fatal(err)
	}
	for i, s := range cl.Servers() {
		have, err := columnsOf(ctx, hostConn(t, s), "t_replicated")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{schemas.ScoredTable().LocalName(), schemas.TableScored} {
			if !have[name][schemas.ColVerdict] {
				t.Errorf("host %d: %s lacks %s after the second migrate", i+1, name, schemas.ColVerdict)
			}
		}
	}
	if err := c.CheckCluster(ctx); err != nil {
		t.Errorf("CheckCluster: %v", err)
	}
}

// TestClusterZooKeeperWithoutDistributedDDL: a server with a ZooKeeper but no
// distributed_ddl section refuses ON CLUSTER before running anything, and
// Migrate (auto) then goes host by host, creating the Replicated tables.
func TestClusterZooKeeperWithoutDistributedDDL(t *testing.T) {
	if _, _, err := chserver.ZooKeeperAvailable(); err != nil {
		t.Fatalf("this test needs ZooKeeper: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang bound
	defer cancel()
	zk, err := chserver.StartZooKeeper(ctx, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer zk.Stop()
	cl, err := chserver.StartCluster(ctx, chserver.ClusterOptions{Name: "noddl", Shards: 1, ZooKeeper: zk.Addr()})
	if err != nil {
		t.Fatalf("these tests need a real ClickHouse cluster: %v", err)
	}
	defer cl.Stop()
	c, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: cl.Servers()[0].DSN(), Database: "t_noddl", Cluster: cl.Name(), Log: quiet,
		DDL: schemas.DDLOptions{Replicated: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.MigrateCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode != ClusterDDLPerHost {
		t.Errorf("migration %+v: want per host (no distributed DDL)", m)
	}
	var engine string
	if err := c.conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = 't_noddl' AND name = 'alerts_local'").Scan(&engine); err != nil || engine != "ReplicatedReplacingMergeTree" {
		t.Errorf("alerts_local engine %q (%v), want ReplicatedReplacingMergeTree", engine, err)
	}
	if err := c.CheckCluster(ctx); err != nil {
		t.Errorf("CheckCluster: %v", err)
	}
}

// BenchmarkClusterWriteScored inserts batches of 50k scored events of 1,000
// devices (run's default --flush-rows) into one server, and through the
// Distributed table of two shards (insert_distributed_sync). Both shards run
// on the same machine as the one server: the ratio is the cost of the
// synchronous fan-out, not the gain of a second machine.
func BenchmarkClusterWriteScored(b *testing.B) {
	const rows = 50_000
	rec := fleetRecord(b, 0, rows, 500)
	defer rec.Release()
	ctx := context.Background()
	run := func(b *testing.B, c *ClickHouse) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			if err := c.WriteScored(ctx, rec); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rows*b.N)/time.Since(start).Seconds(), "rows/s")
	}
	b.Run("one-server", func(b *testing.B) { run(b, openTestWriter(b, testClickHouse(b), ClickHouseConfig{Log: quiet})) })
	b.Run("two-shards", func(b *testing.B) { run(b, openClusterWriter(b, sharedCluster.Get(b), ClickHouseConfig{})) })
}
