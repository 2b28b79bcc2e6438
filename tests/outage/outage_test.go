package outage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// waitUntil polls cond (a condition on servers or counters, not a clock)
// until it holds; timeout is a generous bound on a hang.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s: %s", timeout, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDecisionsWithoutClickHouse: decisions do not wait for the analyst
// store. Twenty meters report for two hours; ClickHouse stops; meter-7 floods.
// The block reaches NATS (the decisions stream and the KV bucket of active
// blocks) while ClickHouse is still down, and the pipeline says that rows
// wait for it; no message is acked before its rows are durable. ClickHouse
// comes back on its data and ports: every row is there exactly once, the
// decision and its alert too, and every message is acked, none redelivered.
func TestDecisionsWithoutClickHouse(t *testing.T) {
	ctx := context.Background()
	srv, err := chserver.Start(ctx, chserver.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("cannot start a private clickhouse-server: %v", err)
	}
	t.Cleanup(func() { srv.Stop() })
	e := setupOn(t, "outage", srv.DSN())
	subject := bus.LogSubject(schemas.FormatJSON, "test")
	published := 0
	publish := func(k int, lines []string) {
		t.Helper()
		if _, err := e.js.Publish(ctx, subject, []byte(strings.Join(lines, "\n")), jetstream.WithMsgID(fmt.Sprint("m-", k))); err != nil {
			t.Fatal(err)
		}
		published += len(lines)
	}
	msgs := 0
	for i := range 120 { // two hours, one message a minute of event time
		var lines []string
		for d := range 20 {
			lines = append(lines, line(fmt.Sprintf("meter-%d", d), time.Duration(i)*time.Minute+time.Duration(d)*time.Second, ""))
		}
		publish(msgs, lines)
		msgs++
	}
	baseline := published

	p, err := pipeline.New(pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond}, e.cons, e.ch, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pipetest.Background(p)()
	waitUntil(t, time.Minute, "the baseline is acked", func() (bool, string) {
		return p.M.Acked.Load() == uint64(msgs), fmt.Sprintf("acked %d of %d", p.M.Acked.Load(), msgs)
	})

	tcp, http := srv.TCPPort(), srv.HTTPPort()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ackedAtStop := p.M.Acked.Load()

	// The flood: 300 requests in a minute, in messages of 20.
	floodAt := time.Now()
	for k := range 15 {
		var lines []string
		for i := range 20 {
			lines = append(lines, line("meter-7", 120*time.Minute+time.Duration(k*20+i)*200*time.Millisecond, ""))
		}
		publish(msgs, lines)
		msgs++
	}
	kv, err := e.js.KeyValue(ctx, schemas.KVActiveBlocks)
	if err != nil {
		t.Fatal(err)
	}
	var block schemas.Decision
	waitUntil(t, 30*time.Second, "meter-7's block is in the KV bucket with ClickHouse down", func() (bool, string) {
		entry, err := kv.Get(ctx, schemas.KVKey(schemas.ScopeAPIKey, "key-meter-7")) // identified by its API key: the key is blocked
		if err != nil {
			return false, fmt.Sprintf("%v; scored %d of %d events, decisions %d", err, p.M.Events.Load(), published, p.M.Decisions.Load())
		}
		if err := json.Unmarshal(entry.Value(), &block); err != nil {
			t.Fatalf("KV value %q: %v", entry.Value(), err)
		}
		return true, ""
	})
	blockedAfter := time.Since(floodAt)
	if block.Action != schemas.ActionBlock || block.Scope != schemas.ScopeAPIKey || block.Value != "key-meter-7" {
		t.Errorf("KV decision = %+v, want a block of meter-7's API key", block)
	}
	decisions, err := e.js.Stream(ctx, schemas.StreamDecisions)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := decisions.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("decisions stream holds %v messages (%v), want the one block", info.State.Msgs, err)
	}
	// The flood goes on against the block; the gateway refuses it and logs its
	// verdict. Stored, not judged: no new alert or decision.
	const refused = 20
	var lines []string
	for i := range refused {
		l := line("meter-7", 121*time.Minute+time.Duration(i)*200*time.Millisecond, "")
		lines = append(lines, strings.Replace(l, `"status":200,"auth":"ok"`, `"status":403,"auth":"failed","verdict":"denied"`, 1))
	}
	publish(msgs, lines)
	msgs++
	// Everything fetched is scored and decided; its rows wait, unacked.
	waitUntil(t, 30*time.Second, "every event is scored and its row waits with ClickHouse down", func() (bool, string) {
		h := p.Health()
		return p.M.Events.Load() == uint64(published) && h.RowsWaiting >= int64(published-baseline),
			fmt.Sprintf("scored %d of %d; %+v", p.M.Events.Load(), published, h)
	})
	h := p.Health()
	if h.RowsWaiting < int64(published-baseline) || h.BytesWaiting <= 0 || h.OldestWaiting <= 0 || h.Full {
		t.Errorf("Health with ClickHouse down = %+v, want at least the flood's %d rows waiting and room left", h, published-baseline)
	}
	var metrics strings.Builder
	p.WriteMetrics(&metrics)
	if want := fmt.Sprintf("%s %d\n", schemas.MetricRowsWaiting, h.RowsWaiting); !strings.Contains(metrics.String(), want) {
		t.Errorf("metrics lack %q", want)
	}
	if got := p.M.Acked.Load(); got != ackedAtStop {
		t.Errorf("acked %d messages while ClickHouse was down, whose rows are not durable", got-ackedAtStop)
	}

	srv, err = chserver.Start(ctx, chserver.Options{Dir: srv.Dir(), TCPPort: tcp, HTTPPort: http})
	if err != nil {
		t.Fatalf("cannot restart clickhouse-server on its data and ports: %v", err)
	}
	t.Cleanup(func() { srv.Stop() })
	waitUntil(t, 2*time.Minute, "every message is acked after ClickHouse is back", func() (bool, string) {
		info, err := e.cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.NumPending == 0 && info.NumAckPending == 0 && p.M.Acked.Load() == uint64(msgs),
			fmt.Sprintf("pending %d, ack pending %d, acked %d of %d", info.NumPending, info.NumAckPending, p.M.Acked.Load(), msgs)
	})
	if h := p.Health(); h.RowsWaiting != 0 || h.BytesWaiting != 0 {
		t.Errorf("Health after catching up = %+v, want nothing waiting", h)
	}
	if info, err := e.cons.Info(ctx); err != nil || info.NumRedelivered != 0 {
		t.Errorf("consumer redelivered %d messages (%v), want none", info.NumRedelivered, err)
	}
	var final, raw, distinct uint64
	q := func(query string, dst *uint64) {
		t.Helper()
		if err := e.conn.QueryRow(ctx, query).Scan(dst); err != nil {
			t.Fatalf("cannot query %q: %v", query, err)
		}
	}
	q(fmt.Sprintf("SELECT count() FROM %s.%s FINAL", e.db, schemas.TableScored), &final)
	q(fmt.Sprintf("SELECT count() FROM %s.%s", e.db, schemas.TableScored), &raw)
	q(fmt.Sprintf("SELECT uniqExact(%s) FROM %s.%s", schemas.ColEventID, e.db, schemas.TableScored), &distinct)
	if final != uint64(published) || distinct != uint64(published) || raw != uint64(published) {
		t.Errorf("scored rows: FINAL %d, raw %d, distinct ids %d; want %d each", final, raw, distinct, published)
	}
	var stored uint64
	q(fmt.Sprintf("SELECT count() FROM %s.%s FINAL WHERE %s = '%s'", e.db, schemas.TableDecisions, schemas.ColID, block.ID), &stored)
	if stored != 1 {
		t.Errorf("decisions table holds the block %d times, want once", stored)
	}
	q(fmt.Sprintf("SELECT count() FROM %s.%s FINAL WHERE %s = '%s'", e.db, schemas.TableAlerts, schemas.ColID, block.AlertID), &stored)
	if stored != 1 {
		t.Errorf("alerts table holds the block's alert %d times, want once", stored)
	}
	q(fmt.Sprintf("SELECT count() FROM %s.%s FINAL WHERE %s = '%s' AND %s = 0", e.db, schemas.TableScored, schemas.ColVerdict, schemas.VerdictDenied, schemas.ColScore), &stored)
	if stored != refused {
		t.Errorf("scored_events holds %d unscored rows with verdict denied, want %d", stored, refused)
	}
	if info, err := decisions.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("decisions stream holds %v messages (%v) after the refused requests, want the one block", info.State.Msgs, err)
	}
	t.Logf("RESULT decisions-without-clickhouse: flood of %d events published with ClickHouse down, block in KV %.0f ms later; %d rows waited; all %d rows stored once after the restart",
		published-baseline, blockedAfter.Seconds()*1000, h.RowsWaiting, published)
}

// TestWaitingIsBounded: while ClickHouse does not take rows, what waits for it
// is bounded by MaxWaitingBytes: at the bound the pipeline says so and stops
// fetching; once rows are written it resumes by itself, and every event is
// stored once.
func TestWaitingIsBounded(t *testing.T) {
	e := setup(t, "bounded")
	ctx := context.Background()
	const msgs, perMsg = 200, 10
	for k := range msgs {
		var lines []string
		for i := range perMsg {
			lines = append(lines, line(fmt.Sprintf("meter-%d", i), time.Duration(k*perMsg+i)*time.Second, ""))
		}
		if _, err := e.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "test"), []byte(strings.Join(lines, "\n"))); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	const limit = 64 << 10
	p, err := pipeline.New(pipeline.Config{Workers: 2, FetchBatch: 10, MaxInFlight: 64, FlushRows: 50, FlushInterval: 10 * time.Millisecond, MaxWaitingBytes: limit},
		e.cons, slowRows{e.ch, release}, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pipetest.Background(p)()
	waitUntil(t, 30*time.Second, "the waiting rows reach their bound", func() (bool, string) {
		h := p.Health()
		return h.Full, fmt.Sprintf("%+v", h)
	})
	h := p.Health()
	if h.BytesLimit != limit || h.BytesWaiting > limit+16<<10 {
		t.Errorf("Health at the bound = %+v: more than one job beyond the %d-byte limit", h, limit)
	}
	fetched := p.M.Messages.Load()
	if fetched >= msgs {
		t.Errorf("fetched all %d messages with the buffer full: fetching did not pause", fetched)
	}
	var metrics strings.Builder
	p.WriteMetrics(&metrics)
	if want := schemas.MetricWaitingFull + " 1\n"; !strings.Contains(metrics.String(), want) {
		t.Errorf("metrics lack %q", want)
	}
	close(release)
	waitUntil(t, time.Minute, "every message is acked once rows are written", func() (bool, string) {
		return p.M.Acked.Load() == msgs, fmt.Sprintf("acked %d of %d; %+v", p.M.Acked.Load(), msgs, p.Health())
	})
	if got := e.count(t, schemas.TableScored); got != msgs*perMsg {
		t.Errorf("ClickHouse holds %d rows, want %d", got, msgs*perMsg)
	}
	t.Logf("at the bound: %+v, %d of %d messages fetched", h, fetched, msgs)
}
