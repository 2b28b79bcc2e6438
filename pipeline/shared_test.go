package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestSharedAllowlistAndClusterCap: the pipeline counts its blocks in the
// cluster-wide budget bucket and reads the allowlist from the shared
// bucket. Two addresses stuff credentials across 300 devices each, as in
// TestCredentialStuffingAcrossDevices; the first is in a CIDR an operator
// put in the allowlist bucket: it is alerted but not blocked, and the
// second is blocked, its block counted in the bucket.
func TestSharedAllowlistAndClusterCap(t *testing.T) {
	e := setup(t, "shared_allowlist")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	allow, err := e.js.KeyValue(ctx, schemas.KVAllowlist)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := allow.Put(ctx, "partner-nat", []byte("198.51.100.0/24 # the partner's NAT\n")); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := range 30 {
		for d := range 30 {
			lines = append(lines, entityLine(fmt.Sprintf("lock-%d", d), fmt.Sprintf("203.0.113.%d", d+1), "/v1/devices/x/state",
				time.Duration(i)*time.Minute+time.Duration(d)*time.Second, 200, "ok"))
		}
	}
	attackers := []string{"198.51.100.7", "192.0.2.66"}
	for a, ip := range attackers {
		// Seen 20 minutes before its attack: a block of an address first
		// seen seconds before is charged to the fresh-address budget
		// (decide.FreshLimiter), not to the cluster's cap this test counts.
		lines = append(lines, entityLine(fmt.Sprintf("scout-%d", a), ip, "/v1/devices/x/state",
			time.Duration(10+10*a)*time.Minute, 200, "ok"))
		at := time.Duration(30+10*a) * time.Minute
		for i := range 300 {
			lines = append(lines, entityLine(fmt.Sprintf("victim-%d-%d", a, i), ip, "/v1/login",
				at+time.Duration(i)*50*time.Millisecond, 401, "failed"))
		}
	}
	publishLines(t, e, lines)

	budgets, err := e.js.KeyValue(ctx, schemas.KVBudgets)
	if err != nil {
		t.Fatal(err)
	}
	budget := cluster.NewKVBudget(budgets, cluster.BudgetConfig{Name: schemas.BudgetBlocks, Max: 100}, nil)
	p, err := pipeline.New(pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond, BlockBudget: budget},
		e.cons, e.ch, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		if err := cluster.NewAllowlist(allow, nil, p.Allowlist(), nil, nil).Run(ctx, ready); err != nil {
			t.Errorf("cannot watch the allowlist: %v", err)
		}
	}()
	select {
	case <-ready:
	case <-time.After(time.Minute): // a hang bound
		t.Fatal("the allowlist bucket was never read")
	}
	runUntilAcked(t, e, p)

	blocks := map[string]bool{}
	rows, err := e.conn.Query(ctx, fmt.Sprintf("SELECT %s, %s FROM %s.%s FINAL WHERE %s = ?",
		schemas.ColScope, schemas.ColValue, e.db, schemas.TableDecisions, schemas.ColAction), schemas.ActionBlock)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var scope, value string
		if err := rows.Scan(&scope, &value); err != nil {
			t.Fatal(err)
		}
		blocks[scope+" "+value] = true
	}
	if !blocks[schemas.ScopeIP+" 192.0.2.66"] {
		t.Fatalf("the address outside the allowlist was not blocked; blocks: %v", blocks)
	}
	for b := range blocks {
		if b == schemas.ScopeIP+" 198.51.100.7" || b == schemas.ScopeCIDR+" 198.51.100.0/24" {
			t.Errorf("blocked %s, which the shared allowlist covers", b)
		}
	}
	alerted := false
	for _, a := range entityAlerts(t, e) {
		alerted = alerted || a.entity == "198.51.100.7"
	}
	if !alerted {
		t.Error("the allowlisted address was not even alerted: the test no longer shows that its block was held back")
	}
	n := 0
	keys, err := budgets.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		e, err := budgets.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		n += len(e.Value()) / 8
	}
	if n != len(blocks) {
		t.Errorf("the budget bucket counts %d blocks, ClickHouse holds %d", n, len(blocks))
	}
	if budget.Fallbacks.Load() != 0 {
		t.Errorf("%d blocks counted locally with NATS up", budget.Fallbacks.Load())
	}
}

// runUntilAcked runs p until every log message is acked, then stops it.
func runUntilAcked(t *testing.T, e *env, p *pipeline.Pipeline) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Minute) // a hang bound
	for {
		info, err := e.cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("pipeline did not catch up: pending=%d ack_pending=%d", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
