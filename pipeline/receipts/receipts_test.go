package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// The tests share one private clickhouse-server, started on first use and
// stopped by TestMain; each test has its own database.
var sharedCH chtest.Shared

func TestMain(m *testing.M) { os.Exit(sharedCH.Main(m)) }

type env struct {
	ctx context.Context
	js  jetstream.JetStream
	kv  jetstream.KeyValue // the blocks bucket
	ch  *sink.ClickHouse
	q   driver.Conn // for the test's queries
	db  string
}

func newEnv(t *testing.T, db string) *env {
	t.Helper()
	chServer := sharedCH.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	nb := natstest.Start(t, natsserver.Options{})
	js := nb.JS
	opts, err := clickhouse.ParseDSN(chServer.DSN())
	if err != nil {
		t.Fatal(err)
	}
	q, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	if err := q.Exec(ctx, "DROP DATABASE IF EXISTS "+schemas.QuoteIdent(db)); err != nil {
		t.Fatal(err)
	}
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: chServer.DSN(), Database: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	if err := ch.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{ctx: ctx, js: js, kv: nb.KV, ch: ch, q: q, db: db}
}

// start runs the consumer, checking nothing, until the test ends or stop is called.
func (e *env) start(t *testing.T) (stop func()) {
	t.Helper()
	return e.startVerified(t, NewVerifier(nil))
}

// startVerified runs the consumer with v until the test ends or stop is called.
func (e *env) startVerified(t *testing.T, v *Verifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	cfg := defaultConfig()
	cfg.fetchWait = 100 * time.Millisecond
	go func() { done <- run(ctx, e.js, e.ch, cfg, v, nil) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) publish(t *testing.T, subject, msgID string, v any) {
	t.Helper()
	data, ok := v.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := e.js.Publish(e.ctx, subject, data, opts...); err != nil {
		t.Fatal(err)
	}
}

func (e *env) count(t *testing.T, query string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := e.q.QueryRow(e.ctx, fmt.Sprintf(query, schemas.QuoteIdent(e.db)), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not waiting for work
	}
}

var applied = time.Date(2026, 3, 1, 12, 0, 1, 250_000_000, time.UTC)

func receipt(decision, enforcer, action string, at time.Time) schemas.ApplyReceipt {
	return schemas.ApplyReceipt{DecisionID: decision, EnforcerID: enforcer, Action: action,
		Scope: schemas.ScopeDevice, Value: "lock-000042", KeyID: "k1", AppliedAt: at, SchemaV: schemas.SchemaVersion}
}

func TestReceiptsStoredOnceAcrossRedelivery(t *testing.T) {
	e := newEnv(t, "t_receipts_redelivery")
	rs := []schemas.ApplyReceipt{
		receipt("d-1", "nginx-1", schemas.ActionBlock, applied),
		receipt("d-1", "nginx-2", schemas.ActionBlock, applied.Add(40*time.Millisecond)),
		receipt("d-1", "nginx-1", schemas.ActionUnblock, applied.Add(15*time.Minute)),
		receipt("d-2", "nginx-1", schemas.ActionThrottle, applied.Add(time.Second)),
	}
	rs[3].Result, rs[3].Reason, rs[3].Detail = schemas.ReceiptNotApplicable, schemas.ReceiptReasonScope, "cannot match scope mqtt_username"
	for i := range rs {
		e.publish(t, schemas.SubjectDecisionsApplied, schemas.ReceiptMsgID(&rs[i]), rs[i])
	}
	// Neither a decision nor a bad receipt is stored; a bad one does not hold up the rest.
	e.publish(t, schemas.SubjectDecisionsPrefix+"."+schemas.ActionBlock, "d-9", schemas.Decision{ID: "d-9", Action: schemas.ActionBlock})
	e.publish(t, schemas.SubjectDecisionsApplied, "", []byte(`{"decision_id":"d-3"}`))
	e.publish(t, schemas.SubjectDecisionsApplied, "", []byte(`{not json`))

	stop := e.start(t)
	waitFor(t, "4 receipt rows", func() bool { return e.count(t, "SELECT count() FROM %s.receipts FINAL") == 4 })
	waitFor(t, "every receipt acked", func() bool {
		info, err := e.js.Consumer(e.ctx, schemas.StreamDecisions, schemas.ConsumerReceipts)
		if err != nil {
			t.Fatal(err)
		}
		ci, err := info.Info(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ci.NumAckPending == 0 && ci.NumPending == 0
	})
	stop()
	if got := e.ch.Stats().RowsWritten; got != 4 {
		t.Fatalf("rows written %d, want 4", got)
	}

	// The row holds every field.
	var (
		enforcer, action, scope, value, keyID string
		appliedAt                             time.Time
		appliedMs, receivedMs                 int64
		seq                                   uint64
	)
	row := e.q.QueryRow(e.ctx, "SELECT enforcer, action, scope, value, key_id, applied_at, applied_ms, received_ms, stream_seq FROM "+
		schemas.QuoteIdent(e.db)+".receipts FINAL WHERE decision_id = 'd-1' AND enforcer = 'nginx-2'")
	if err := row.Scan(&enforcer, &action, &scope, &value, &keyID, &appliedAt, &appliedMs, &receivedMs, &seq); err != nil {
		t.Fatal(err)
	}
	wantMs := applied.Add(40 * time.Millisecond).UnixMilli()
	if enforcer != "nginx-2" || action != "block" || scope != "device" || value != "lock-000042" || keyID != "k1" ||
		!appliedAt.Equal(applied.Truncate(time.Second)) || appliedMs != wantMs || seq != 2 {
		t.Fatalf("row = %q %q %q %q %q %v %d seq %d", enforcer, action, scope, value, keyID, appliedAt, appliedMs, seq)
	}
	if now := time.Now().UnixMilli(); receivedMs < now-60_000 || receivedMs > now {
		t.Fatalf("received_ms %d is not the stream time (now %d)", receivedMs, now)
	}
	// Without enforcement point keys nothing is trusted blindly: every row says unverified.
	if n := e.count(t, "SELECT count() FROM %s.receipts FINAL WHERE verification = 'unverified' AND receipt_key_id = ''"); n != 4 {
		t.Errorf("%d rows unverified, want 4", n)
	}
	// The result: a receipt without one (an older enforcement point) was applied.
	for _, w := range []struct{ decision, enforcer, result, reason, detail string }{
		{"d-1", "nginx-2", schemas.ReceiptApplied, "", ""},
		{"d-2", "nginx-1", schemas.ReceiptNotApplicable, schemas.ReceiptReasonScope, rs[3].Detail},
	} {
		var result, reason, detail string
		row := e.q.QueryRow(e.ctx, "SELECT result, reason, detail FROM "+schemas.QuoteIdent(e.db)+".receipts FINAL WHERE decision_id = ? AND enforcer = ?", w.decision, w.enforcer)
		if err := row.Scan(&result, &reason, &detail); err != nil {
			t.Fatal(err)
		}
		if result != w.result || reason != w.reason || detail != w.detail {
			t.Errorf("%s at %s: result %q reason %q detail %q; want %q %q %q", w.decision, w.enforcer, result, reason, detail, w.result, w.reason, w.detail)
		}
	}

	// A redelivery of everything (the consumer is recreated from the first
	// message) writes the rows again; FINAL still counts each receipt once.
	if err := e.js.DeleteConsumer(e.ctx, schemas.StreamDecisions, schemas.ConsumerReceipts); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	waitFor(t, "the redelivered rows", func() bool { return e.ch.Stats().RowsWritten == 8 })
	if n := e.count(t, "SELECT count() FROM %s.receipts FINAL"); n != 4 {
		t.Fatalf("%d rows after redelivery, want 4", n)
	}
}

// TestDecidedToEnforced is the analyst's query of the report: decided →
// enforced → lifted for one decision, joining decisions and receipts.
func TestDecidedToEnforced(t *testing.T) {
	e := newEnv(t, "t_receipts_join")
	created := applied.Add(-180 * time.Millisecond)
	d := schemas.Decision{ID: "d-7f3a", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "lock-000042",
		Tenant: "acme", Device: "lock-000042", CreatedAt: created, ExpiresAt: created.Add(15 * time.Minute),
		Reason: command.ReasonPrivilegedNew, Score: 0.98, AlertID: "a-1", Issuer: "iotwatch", SchemaV: schemas.SchemaVersion}
	if err := e.ch.WriteDecisions(e.ctx, []schemas.Decision{d}); err != nil {
		t.Fatal(err)
	}
	rs := []schemas.ApplyReceipt{
		receipt(d.ID, "nginx-1", schemas.ActionBlock, applied),
		receipt(d.ID, "envoy-1", schemas.ActionBlock, applied.Add(70*time.Millisecond)),
	}
	for i := range rs {
		e.publish(t, schemas.SubjectDecisionsApplied, schemas.ReceiptMsgID(&rs[i]), rs[i])
	}
	e.start(t)
	waitFor(t, "2 receipt rows", func() bool { return e.count(t, "SELECT count() FROM %s.receipts FINAL") == 2 })

	q := fmt.Sprintf(decidedToEnforced, e.db, e.db)
	rows, err := e.q.Query(e.ctx, q, d.ID)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var (
			id, scope, value, enforcer, action string
			decidedMs, enforcedMs, lagMs       int64
		)
		if err := rows.Scan(&id, &scope, &value, &decidedMs, &enforcer, &action, &enforcedMs, &lagMs); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s=%s %s %s after %dms", id, scope, value, enforcer, action, lagMs))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"d-7f3a device=lock-000042 nginx-1 block after 180ms", "d-7f3a device=lock-000042 envoy-1 block after 250ms"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("decided → enforced:\n got %q\nwant %q", got, want)
	}
}

// decidedToEnforced is the query in the package's report: one row per
// enforcement point and action for a decision id, with the delay from the
// decision to its enforcement. It runs on ClickHouse 18.16.
const decidedToEnforced = `SELECT d.id, d.scope, d.value, d.created_ms, r.enforcer, r.action, r.applied_ms, r.applied_ms - d.created_ms AS lag_ms
FROM (SELECT id, scope, value, created_ms FROM %s.decisions FINAL WHERE id = ?) AS d
ALL INNER JOIN (SELECT decision_id AS id, enforcer, action, applied_ms FROM %s.receipts FINAL) AS r USING id
ORDER BY r.applied_ms`
