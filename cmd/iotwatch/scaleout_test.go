package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// sharedCH is the package's private ClickHouse, started by the first test
// that needs one.
var sharedCH chtest.Shared

func TestMain(m *testing.M) { os.Exit(sharedCH.Main(m)) }

// TestIngestAndScorerCommands runs 'iotwatch ingest' and 'iotwatch run
// --source events' as an operator would, against a real NATS server and
// ClickHouse: every event of the logs ends up scored in ClickHouse, and both
// commands stop cleanly.
func TestIngestAndScorerCommands(t *testing.T) {
	dsn := sharedCH.Get(t).DSN()
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	ctx := context.Background()
	nc, js, err := bus.Connect(ctx, ns.URL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := bus.EnsureIngest(ctx, js, bus.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	const msgs, lines = 30, 40
	for m := range msgs {
		var b strings.Builder
		for l := range lines {
			fmt.Fprintf(&b, `{"ts":"2026-01-05T10:%02d:%02dZ","tenant":"acme","device":"d-%d","class":"meter/m1","method":"POST","path":"/v1/readings","status":200}`+"\n", m, l, l%13)
		}
		if _, err := js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "gw"), []byte(b.String())); err != nil {
			t.Fatal(err)
		}
	}

	ingestCtx, stopIngest := context.WithCancel(ctx)
	ingestDone := make(chan error, 1)
	go func() {
		ingestDone <- ingestCmd(ingestCtx, []string{"--nats", ns.URL(), "--partitions", "4", "--log-level", "warn"}, io.Discard)
	}()
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() {
		runDone <- runCmd(runCtx, []string{"--source", sourceEvents, "--partitions", "4", "--nats", ns.URL(), "--clickhouse", dsn, "--database", "cmd_events",
			"--workers", "2", "--flush-interval", "50ms", "--log-level", "warn"}, io.Discard)
	}()

	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Minute)
	var rows uint64
	for rows < msgs*lines {
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse holds %d scored rows after 2 minutes, want %d", rows, msgs*lines)
		}
		select {
		case err := <-ingestDone:
			t.Fatalf("ingest stopped: %v", err)
		case err := <-runDone:
			t.Fatalf("run stopped: %v", err)
		case <-time.After(100 * time.Millisecond): // polling ClickHouse, not waiting for work by time
		}
		// Before run created the table the query fails: keep polling.
		_ = conn.QueryRow(ctx, "SELECT count() FROM cmd_events."+schemas.TableScored+" FINAL").Scan(&rows)
	}
	if rows != msgs*lines {
		t.Fatalf("ClickHouse holds %d scored rows, want %d", rows, msgs*lines)
	}
	stopIngest()
	stopRun()
	if err := <-ingestDone; err != nil {
		t.Errorf("ingest: %v", err)
	}
	if err := <-runDone; err != nil {
		t.Errorf("run --source events: %v", err)
	}
}
