package sink

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
	"github.com/iotwatch/iotwatch/schemas"
)

// The tests of this package share one private clickhouse-server, started by the
// first test that needs it and stopped by TestMain. Each test uses its own database.
var sharedCH chtest.Shared

// sharedCluster is a cluster of two shards for the cluster tests, started by
// the first that needs it.
var sharedCluster chtest.SharedCluster

func TestMain(m *testing.M) {
	code := sharedCH.Main(m)
	if err := sharedCluster.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot stop the test ClickHouse cluster:", err)
		code = 1
	}
	os.Exit(code)
}

// testClickHouse returns the shared server, starting it on first use.
func testClickHouse(t testing.TB) *chserver.Server { return sharedCH.Get(t) }

var nonIdent = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// openTestWriter opens a writer on srv with a database of the test's own, migrated.
func openTestWriter(t testing.TB, srv *chserver.Server, cfg ClickHouseConfig) *ClickHouse {
	t.Helper()
	cfg.DSN = srv.DSN()
	if cfg.Database == "" {
		cfg.Database = "t_" + strings.ToLower(nonIdent.ReplaceAllString(t.Name(), "_"))
	}
	ctx := context.Background()
	c, err := OpenClickHouse(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.conn.Exec(ctx, "DROP DATABASE IF EXISTS "+schemas.QuoteIdent(cfg.Database)); err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

var testBase = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

// fillTestEvent makes event i of a deterministic, varied sequence.
func fillTestEvent(ev *schemas.Event, s *schemas.Scored, i int) {
	ev.Reset()
	ev.ID = 1_000_000 + uint64(i)
	ev.Seq = 500 + uint64(i/10)
	ev.Line = uint32(i % 10)
	ev.Time = testBase.Add(time.Duration(i)*1500*time.Millisecond + 123*time.Millisecond).UnixNano()
	ev.Source = schemas.SourceKind(1 + i%2)
	ev.SetText(&ev.SourceID, fmt.Appendf(nil, "gw-%d", i%3))
	ev.SetDevice([]byte([]string{"acme", "globex"}[i%2]), fmt.Appendf(nil, "dev-%04d", i%17))
	ev.IDMethod = schemas.IDMethod(1 + i%5)
	if i%4 != 0 {
		ev.SetText(&ev.APIKey, fmt.Appendf(nil, "key-%d", i%7))
	}
	ev.SetClass([]byte("smart_lock/l2"))
	ev.SetText(&ev.Firmware, []byte("2.4.1"))
	if i%5 != 0 {
		ev.ClientIP = netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
	}
	if i%3 != 0 {
		ev.Country = schemas.Country{'D', 'E'}
	}
	ev.ASN = uint32(3320 + i)
	ev.Protocol = schemas.Protocol(1 + i%3)
	ev.SetCommand([]byte("POST /v1/devices/{id}/unlock"))
	ev.Resource = uint64(i) * 0x9e3779b97f4a7c15
	if i%2 == 0 {
		ev.SetText(&ev.ResourceText, fmt.Appendf(nil, "lock-%d/acct-%d", i, i%5))
	}
	ev.Status = uint16(200 + i%3*100)
	ev.Auth = schemas.AuthOutcome(1 + i%3)
	ev.Verdict = schemas.Verdict(i % 4)
	ev.BytesIn = uint64(100 + i)
	ev.BytesOut = math.MaxUint64 - uint64(i)
	ev.Latency = uint32(1000 * i)

	*s = schemas.Scored{Score: float32(i%8) / 8}
	for k := 0; k < i%3; k++ {
		s.Add(schemas.Finding{
			Detector: geo.Name, Reason: geo.ReasonNewCountry, Score: 0.25 * float32(k+1),
			Observed: float64(i) + 0.5, Expected: float64(k),
			ObservedLabel: schemas.LabelString("DE"), ExpectedLabel: schemas.LabelString(fmt.Sprint("F", k)),
		})
	}
}

func testRecord(t testing.TB, n int) arrow.RecordBatch {
	t.Helper()
	b := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer b.Release()
	b.SetScorer(testScorer)
	var ev schemas.Event
	var s schemas.Scored
	for i := range n {
		fillTestEvent(&ev, &s, i)
		b.Append(&ev, &s)
	}
	return b.NewRecord()
}

// testScorer is the instance testRecord's rows name (column scorer).
const testScorer = "scorer-1"

// scoredRow is a scored_events row as read back.
type scoredRow struct {
	Time                                                          time.Time
	TimeMs                                                        int64
	EventID, StreamSeq, Resource, BytesIn, BytesOut               uint64
	Tenant, Device, IDMethod, APIKey, Class, Firmware, SourceKind string
	SourceID, ClientIP, Country, Protocol, Command, Auth, Verdict string
	ResourceIDs                                                   string
	ASN, Latency                                                  uint32
	Status                                                        uint16
	Score                                                         float32
	Detectors, Reasons, ObservedLabels, ExpectedLabels            []string
	Scores                                                        []float32
	Observed, Expected                                            []float64
	Scorer                                                        string
}

func (r *scoredRow) ptrs() []any {
	return []any{&r.Time, &r.TimeMs, &r.EventID, &r.StreamSeq, &r.Tenant, &r.Device, &r.IDMethod, &r.APIKey,
		&r.Class, &r.Firmware, &r.SourceKind, &r.SourceID, &r.ClientIP, &r.Country, &r.ASN, &r.Protocol,
		&r.Command, &r.Resource, &r.ResourceIDs, &r.Status, &r.Auth, &r.Verdict, &r.BytesIn, &r.BytesOut, &r.Latency, &r.Score,
		&r.Detectors, &r.Reasons, &r.Scores, &r.Observed, &r.Expected, &r.ObservedLabels, &r.ExpectedLabels, &r.Scorer}
}

// checkScoredRows reads the scored table back in event id order and checks
// that it holds the n rows expectedScoredRow describes, every value as
// written.
func checkScoredRows(ctx context.Context, t *testing.T, c *ClickHouse, n int) {
	t.Helper()
	rows, err := c.conn.Query(ctx, selectColumns(schemas.ScoredTable(), c.db)+" ORDER BY event_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var got scoredRow
		if err := rows.Scan(got.ptrs()...); err != nil {
			t.Fatal(err)
		}
		got.Time = got.Time.UTC()
		if want := expectedScoredRow(i); !reflect.DeepEqual(got, want) {
			t.Fatalf("scored row %d:\n got %+v\nwant %+v", i, got, want)
		}
		i++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if i != n {
		t.Fatalf("read %d scored rows, want %d", i, n)
	}
}

// expectedScoredRow is what row i of testRecord must read back as.
func expectedScoredRow(i int) scoredRow {
	var ev schemas.Event
	var s schemas.Scored
	fillTestEvent(&ev, &s, i)
	r := scoredRow{
		Time: time.Unix(0, ev.Time).UTC().Truncate(time.Second), TimeMs: ev.Time / 1e6,
		EventID: ev.ID, StreamSeq: ev.Seq, Resource: ev.Resource, BytesIn: ev.BytesIn, BytesOut: ev.BytesOut,
		Tenant: string(ev.Tenant), Device: string(ev.Device), IDMethod: ev.IDMethod.String(), APIKey: string(ev.APIKey),
		Class: string(ev.Class), Firmware: string(ev.Firmware), SourceKind: ev.Source.String(),
		SourceID: string(ev.SourceID), Country: ev.Country.String(), Protocol: ev.Protocol.String(),
		Command: string(ev.Command), ResourceIDs: string(ev.ResourceText), Auth: ev.Auth.String(), Verdict: ev.Verdict.String(), ASN: ev.ASN, Latency: ev.Latency, Status: ev.Status,
		Score:     s.Score,
		Detectors: []string{}, Reasons: []string{}, ObservedLabels: []string{}, ExpectedLabels: []string{},
		Scores: []float32{}, Observed: []float64{}, Expected: []float64{},
		Scorer: testScorer,
	}
	if ev.ClientIP.IsValid() {
		r.ClientIP = ev.ClientIP.String()
	}
	for _, f := range s.Reasons() {
		r.Detectors = append(r.Detectors, f.Detector)
		r.Reasons = append(r.Reasons, f.Reason)
		r.Scores = append(r.Scores, f.Score)
		r.Observed = append(r.Observed, f.Observed)
		r.Expected = append(r.Expected, f.Expected)
		r.ObservedLabels = append(r.ObservedLabels, f.ObservedLabel.String())
		r.ExpectedLabels = append(r.ExpectedLabels, f.ExpectedLabel.String())
	}
	return r
}

func selectColumns(table *schemas.Table, db string) string {
	names := make([]string, len(table.Columns))
	for i, c := range table.Columns {
		names[i] = schemas.QuoteIdent(c.Name)
	}
	return "SELECT " + strings.Join(names, ", ") + " FROM " + schemas.QuoteIdent(db) + "." + schemas.QuoteIdent(table.Name) + " FINAL"
}

func countFinal(t testing.TB, c *ClickHouse, table string) uint64 {
	t.Helper()
	var n uint64
	q := "SELECT count() FROM " + schemas.QuoteIdent(c.db) + "." + schemas.QuoteIdent(table) + " FINAL"
	if err := c.conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("cannot count %q: %v", table, err)
	}
	return n
}

func TestClickHouseMigrate(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{DDL: schemas.DDLOptions{RetentionDays: 7}})
	if !strings.HasPrefix(c.Version(), "18.16") {
		t.Logf("server version %q: the tests here target 18.16", c.Version())
	}
	ctx := context.Background()
	// A table of an earlier release lacks the columns added since: the
	// second Migrate adds them, in place.
	if err := c.conn.Exec(ctx, "ALTER TABLE "+schemas.QuoteIdent(c.db)+"."+schemas.QuoteIdent(schemas.TableScored)+
		" DROP COLUMN "+schemas.QuoteIdent(schemas.ColResourceIDs)); err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	for _, table := range schemas.Tables() {
		rows, err := c.conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", c.db, table.Name)
		if err != nil {
			t.Fatal(err)
		}
		var got []schemas.Column
		for rows.Next() {
			var col schemas.Column
			if err := rows.Scan(&col.Name, &col.Type); err != nil {
				t.Fatal(err)
			}
			got = append(got, col)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		want := make([]schemas.Column, len(table.Columns))
		for i, col := range table.Columns {
			want[i] = schemas.Column{Name: col.Name, Type: col.Type}
			if schemas.Features(c.Version()).LowCardinality && col.LowCardinality {
				want[i].Type = strings.Replace(col.Type, "String", "LowCardinality(String)", 1)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("table %q columns:\n got %v\nwant %v", table.Name, got, want)
		}
		var engine string
		if err := c.conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?", c.db, table.Name).Scan(&engine); err != nil {
			t.Fatal(err)
		}
		if engine != "ReplacingMergeTree" {
			t.Errorf("table %q engine %q, want ReplacingMergeTree", table.Name, engine)
		}
	}
}

// TestClickHouseMigrateAddsColumns checks that Migrate brings a table created
// before a column was added (the verdict, the resource ids and the scorer
// of scored events, the verification status of receipts, the estimated false-alarm
// rate of alerts) up to date, in place, so that the writer's column list fits it.
func TestClickHouseMigrateAddsColumns(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{})
	ctx := context.Background()
	later := map[string][]string{
		schemas.ScoredTable().Name:   {schemas.ColVerdict, schemas.ColResourceIDs, schemas.ColScorer},
		schemas.AlertsTable().Name:   {schemas.ColEntityKind, schemas.ColEntity, schemas.ColGroup, schemas.ColFalseRate},
		schemas.ReceiptsTable().Name: {schemas.ColVerification, schemas.ColReceiptKeyID},
	}
	for _, table := range schemas.Tables() {
		for _, col := range later[table.Name] {
			stmt := "ALTER TABLE " + schemas.QuoteIdent(c.db) + "." + schemas.QuoteIdent(table.Name) + " DROP COLUMN " + schemas.QuoteIdent(col)
			if err := c.conn.Exec(ctx, stmt); err != nil {
				t.Fatalf("cannot make an old table: %v", err)
			}
		}
	}
	if err := c.Migrate(ctx); err != nil {
		t.Fatalf("Migrate of old tables: %v", err)
	}
	for _, table := range schemas.Tables() {
		rows, err := c.conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", c.db, table.Name)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				t.Fatal(err)
			}
			got = append(got, name)
		}
		rows.Close()
		if want := table.ColumnNames(); !reflect.DeepEqual(got, want) {
			t.Errorf("table %q columns after Migrate:\n got %v\nwant %v", table.Name, got, want)
		}
	}
	checkRoundTrip(t, c, ctx)
}

func TestClickHouseRoundTrip(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{})
	checkRoundTrip(t, c, context.Background())
}

// TestClickHouseLowCardinality writes into the tables as created for servers
// with LowCardinality (20.1+). ClickHouse 18.16 has the type behind an
// experimental setting, which is enough to check the writer against it.
func TestClickHouseLowCardinality(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{})
	ctx := context.Background()
	if !schemas.Features(c.Version()).LowCardinality {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"allow_experimental_low_cardinality_type": 1}))
	}
	for _, table := range schemas.Tables() {
		if err := c.conn.Exec(ctx, "DROP TABLE "+schemas.QuoteIdent(c.db)+"."+schemas.QuoteIdent(table.Name)); err != nil {
			t.Fatal(err)
		}
		stmt := table.CreateStatement(c.db, schemas.ServerFeatures{LowCardinality: true}, schemas.DDLOptions{})
		if err := c.conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	var typ string
	q := "SELECT type FROM system.columns WHERE database = ? AND table = ? AND name = ?"
	if err := c.conn.QueryRow(ctx, q, c.db, schemas.TableScored, schemas.ColDetectors).Scan(&typ); err != nil {
		t.Fatal(err)
	}
	if typ != "Array(LowCardinality(String))" {
		t.Fatalf("detectors has type %q, want Array(LowCardinality(String))", typ)
	}
	checkRoundTrip(t, c, ctx)
}

// checkRoundTrip writes scored events, alerts and decisions twice, reads them
// back with FINAL and checks every value and that each row counts once.
func checkRoundTrip(t *testing.T, c *ClickHouse, ctx context.Context) {
	t.Helper()
	const n = 300
	rec := testRecord(t, n)
	defer rec.Release()
	alerts := testCHAlerts()
	decisions := testCHDecisions()
	for range 2 { // the second write must not add rows
		if err := c.WriteScored(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteAlerts(ctx, alerts); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteDecisions(ctx, decisions); err != nil {
			t.Fatal(err)
		}
	}
	if st := c.Stats(); st.RowsWritten != 2*uint64(n+len(alerts)+len(decisions)) || st.Retries != 0 {
		t.Errorf("stats %+v, want %d rows and no retry", st, 2*(n+len(alerts)+len(decisions)))
	}

	// Scored events: every value as written.
	checkScoredRows(ctx, t, c, n)

	// Alerts and decisions: read back through the same field order.
	gotAlerts := readAlerts(t, c)
	if !reflect.DeepEqual(gotAlerts, alerts) {
		t.Errorf("alerts:\n got %+v\nwant %+v", gotAlerts, alerts)
	}
	gotDecisions := readDecisions(t, c)
	if !reflect.DeepEqual(gotDecisions, decisions) {
		t.Errorf("decisions:\n got %+v\nwant %+v", gotDecisions, decisions)
	}

	// Idempotency: each row counted once with FINAL, and merging really collapses the copies.
	for table, want := range map[string]int{schemas.TableScored: n, schemas.TableAlerts: len(alerts), schemas.TableDecisions: len(decisions)} {
		if got := countFinal(t, c, table); got != uint64(want) {
			t.Errorf("count() FROM %s FINAL = %d, want %d", table, got, want)
		}
		if err := c.conn.Exec(ctx, "OPTIMIZE TABLE "+schemas.QuoteIdent(c.db)+"."+schemas.QuoteIdent(table)+" FINAL"); err != nil {
			t.Fatal(err)
		}
		var plain uint64
		if err := c.conn.QueryRow(ctx, "SELECT count() FROM "+schemas.QuoteIdent(c.db)+"."+schemas.QuoteIdent(table)).Scan(&plain); err != nil {
			t.Fatal(err)
		}
		if plain != uint64(want) {
			t.Errorf("count() FROM %s after OPTIMIZE FINAL = %d, want %d", table, plain, want)
		}
	}
}

func testCHAlerts() []schemas.Alert {
	t0 := time.Date(2026, 1, 5, 10, 0, 1, 250e6, time.UTC)
	return []schemas.Alert{
		{
			ID: "al-1", Time: t0, Tenant: "acme", Device: "lock-1", APIKey: "key-1", ClientIP: "203.0.113.7",
			Class: "smart_lock/l2", Command: "POST /v1/devices/{id}/unlock", Country: "DE", Score: 0.9375,
			Severity: schemas.SeverityCritical, FirstEventID: 17, LastEventID: 19, FalseRate: 0.125, Group: "al-0",
			Reasons: []schemas.Explanation{
				{Detector: geo.Name, Reason: geo.ReasonNewCountry, Score: 0.875, Observed: 1, Expected: 0, ObservedLabel: "DE", ExpectedLabel: "FR"},
				{Detector: command.Name, Reason: command.ReasonPrivilegedNew, Score: 0.5, Observed: 3, Expected: 0.25},
			},
		},
		{
			ID: "al-2", Time: t0.Add(time.Hour), Tenant: "globex", EntityKind: schemas.EntityIP, Entity: "198.51.100.7", Score: 0.5,
			Severity: schemas.SeverityLow, FirstEventID: 20, LastEventID: 20, Reasons: []schemas.Explanation{},
		},
	}
}

func testCHDecisions() []schemas.Decision {
	t0 := time.Date(2026, 1, 5, 10, 0, 2, 500e6, time.UTC)
	return []schemas.Decision{
		{ID: "dc-1", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "lock-1", Tenant: "acme", Device: "lock-1",
			CreatedAt: t0, ExpiresAt: t0.Add(15 * time.Minute).Truncate(time.Second), Reason: geo.ReasonNewCountry,
			Score: 0.9375, AlertID: "al-1", Issuer: "iotwatch"},
		{ID: "dc-2", Action: schemas.ActionDryRunBlock, Scope: schemas.ScopeIP, Value: "203.0.113.7", Tenant: "acme",
			CreatedAt: t0.Add(time.Second), Reason: command.ReasonEnumeration, Score: 0.75, AlertID: "al-3", Issuer: "iotwatch", DryRun: true},
	}
}

func readAlerts(t *testing.T, c *ClickHouse) []schemas.Alert {
	t.Helper()
	rows, err := c.conn.Query(context.Background(), selectColumns(schemas.AlertsTable(), c.db)+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []schemas.Alert
	for rows.Next() {
		var a schemas.Alert
		var tm time.Time
		var ms int64
		var det, rea, ol, el []string
		var sc []float32
		var ob, ex []float64
		if err := rows.Scan(&a.ID, &tm, &ms, &a.Tenant, &a.Device, &a.APIKey, &a.ClientIP, &a.Class, &a.Command,
			&a.Country, &a.Score, &a.Severity, &det, &rea, &sc, &ob, &ex, &ol, &el, &a.FirstEventID, &a.LastEventID, &a.EntityKind, &a.Entity, &a.Group, &a.FalseRate); err != nil {
			t.Fatal(err)
		}
		if tm.Unix() != ms/1000 {
			t.Errorf("alert %q: time %v and time_ms %d disagree", a.ID, tm, ms)
		}
		a.Time = time.UnixMilli(ms).UTC()
		a.Reasons = []schemas.Explanation{}
		for i := range det {
			a.Reasons = append(a.Reasons, schemas.Explanation{Detector: det[i], Reason: rea[i], Score: float64(sc[i]),
				Observed: ob[i], Expected: ex[i], ObservedLabel: ol[i], ExpectedLabel: el[i]})
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func readDecisions(t *testing.T, c *ClickHouse) []schemas.Decision {
	t.Helper()
	rows, err := c.conn.Query(context.Background(), selectColumns(schemas.DecisionsTable(), c.db)+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []schemas.Decision
	for rows.Next() {
		var d schemas.Decision
		var created, expires time.Time
		var ms int64
		var dry uint8
		if err := rows.Scan(&d.ID, &d.Action, &d.Scope, &d.Value, &d.Tenant, &d.Device, &created, &ms, &expires,
			&d.Reason, &d.Score, &d.AlertID, &d.Issuer, &dry); err != nil {
			t.Fatal(err)
		}
		if created.Unix() != ms/1000 {
			t.Errorf("decision %q: created_at %v and created_ms %d disagree", d.ID, created, ms)
		}
		d.CreatedAt = time.UnixMilli(ms).UTC()
		if expires.Unix() != 0 {
			d.ExpiresAt = expires.UTC()
		}
		d.DryRun = dry == 1
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestClickHouseRetries writes while the server is down: with a short context
// the write gives up with the context's error and the caller still has the
// whole batch; with MaxRetries it gives up after that many retries; with a
// long context it waits for the server to come back and then writes everything.
func TestClickHouseRetries(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	srv, err := chserver.Start(ctx, chserver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Stop() }()
	c := openTestWriter(t, srv, ClickHouseConfig{RetryBackoff: 20 * time.Millisecond})
	limited, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: srv.DSN(), Database: c.db, RetryBackoff: 20 * time.Millisecond, MaxRetries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer limited.Close()
	const n = 1000
	rec := testRecord(t, n)
	defer rec.Release()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = c.WriteScored(short, rec)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write to a stopped server: err = %v, want context.DeadlineExceeded", err)
	}
	if c.Stats().Retries == 0 {
		t.Errorf("no retry before the context ended: %+v", c.Stats())
	}
	if rec.NumRows() != n || rec.Column(0).Len() != n {
		t.Fatalf("the caller's batch changed: %d rows", rec.NumRows())
	}

	before := limited.Stats().Retries
	if err := limited.WriteScored(ctx, rec); err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Errorf("write with MaxRetries=2: err = %v, want a failure after 3 attempts", err)
	}
	if got := limited.Stats().Retries - before; got != 2 {
		t.Errorf("MaxRetries=2 made %d retries", got)
	}

	// The server comes back on the same ports while a write is waiting for it.
	done := make(chan error, 1)
	long, cancelLong := context.WithTimeout(ctx, 60*time.Second)
	defer cancelLong()
	retriesBefore := c.Stats().Retries
	go func() { done <- c.WriteScored(long, rec) }()
	waitFor(t, 10*time.Second, "a retry of the waiting write", func() bool { return c.Stats().Retries > retriesBefore })
	srv2, err := chserver.Start(ctx, chserver.Options{Dir: dir, TCPPort: srv.TCPPort(), HTTPPort: srv.HTTPPort()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Stop()
	if err := <-done; err != nil {
		t.Fatalf("write after the server came back: %v", err)
	}
	if got := countFinal(t, c, schemas.TableScored); got != n {
		t.Errorf("count after the server came back = %d, want %d", got, n)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func TestClickHouseWrongRecord(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{})
	// A record with the right names but a wrong type fails at once, without retries.
	schema := arrow.NewSchema([]arrow.Field{{Name: schemas.ColTime, Type: arrow.PrimitiveTypes.Int32}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Int32Builder).Append(1)
	rec := b.NewRecordBatch()
	defer rec.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.WriteScored(ctx, rec)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), `"time"`) {
		t.Errorf("err = %v, want an immediate error naming column \"time\"", err)
	}
	if c.Stats().Retries != 0 {
		t.Errorf("a record that cannot fit was retried: %+v", c.Stats())
	}
}

func TestOpenClickHouseError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback refuses connections at once.
	_, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: "clickhouse://default:s3cret@127.0.0.1:1/default"})
	if err == nil {
		t.Fatal("OpenClickHouse succeeded without a server")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error must name the DSN without its password: %v", err)
	}
	_, err = OpenClickHouse(ctx, ClickHouseConfig{DSN: "http://127.0.0.1:8123/default"})
	if err == nil || !strings.Contains(err.Error(), "native") {
		t.Errorf("HTTP DSN: err = %v, want a refusal naming the native protocol", err)
	}
}

// BenchmarkWriteScored inserts batches of 10k scored events.
func BenchmarkWriteScored(b *testing.B) {
	srv := testClickHouse(b)
	c := openTestWriter(b, srv, ClickHouseConfig{})
	const rows = 10_000
	rec := testRecord(b, rows)
	defer rec.Release()
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := c.WriteScored(ctx, rec); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows*b.N)/time.Since(start).Seconds(), "rows/s")
}
