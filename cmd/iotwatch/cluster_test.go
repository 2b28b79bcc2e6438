package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestRunOnClickHouseCluster: `iotwatch migrate --cluster` on two ClickHouse
// shards on loopback, then `iotwatch run --clickhouse-cluster` consumes a
// fleet's access logs from an embedded NATS: every event is stored once
// (raw count, FINAL count and distinct ids equal what was sent), each
// device's rows are on exactly one shard, and both shards hold some. run on a
// database that was not migrated for the cluster refuses to start and names
// the migrate command.
func TestRunOnClickHouseCluster(t *testing.T) {
	if _, err := chserver.Available(); err != nil {
		t.Fatalf("this test needs a real ClickHouse: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := chserver.StartCluster(ctx, chserver.ClusterOptions{Name: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	dsn := cl.Servers()[1].DSN() // any host will do
	env := natstest.Start(t, natsserver.Options{})

	run := func(ctx context.Context, db string) error {
		var out bytes.Buffer
		return runCmd(ctx, []string{"--nats", env.Server.URL(), "--clickhouse", dsn, "--database", db,
			"--clickhouse-cluster", cl.Name(), "--workers", "2", "--flush-interval", "100ms", "--log-level", "warn"}, &out)
	}
	if err := run(ctx, "not_migrated"); err == nil || !strings.Contains(err.Error(), "iotwatch migrate --cluster fleet") {
		t.Errorf("run on a database not migrated for the cluster: %v; want an error naming the migrate command", err)
	}

	const db = "fleet"
	var out, errOut bytes.Buffer
	if code := mainExit([]string{"migrate", "--clickhouse", dsn, "--database", db, "--cluster", cl.Name()}, &out, &errOut); code != 0 {
		t.Fatalf("migrate --cluster exited %d: %s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), `cluster "fleet" (per-host, 2 hosts`) {
		t.Errorf("migrate --cluster said %q; want per-host on 2 hosts (no ZooKeeper)", out.String())
	}

	const (
		messages = 40
		lines    = 50
		devices  = 120
		sent     = messages * lines
	)
	subject := bus.LogSubject(schemas.FormatJSON, "cluster-test")
	for k := range messages {
		var b bytes.Buffer
		for i := k * lines; i < (k+1)*lines; i++ {
			if i > k*lines {
				b.WriteByte('\n')
			}
			d := i % devices
			at := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC).Add(time.Duration(i/devices)*time.Second + time.Duration(d)*time.Millisecond)
			fmt.Fprintf(&b, `{"ts":%q,"src":"gateway","tenant":"acme","device":"dev-%d","class":"meter/m1","ip":"203.0.113.9","country":"DE","method":"POST","path":"/v1/devices/dev-%d/readings","status":200,"auth":"ok"}`,
				at.Format(time.RFC3339Nano), d, d)
		}
		if _, err := env.JS.Publish(ctx, subject, b.Bytes(), jetstream.WithMsgID("m-"+strconv.Itoa(k))); err != nil {
			t.Fatal(err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, db) }()
	dist := clusterConn(t, cl.Servers()[0])
	count := func(conn driver.Conn, q string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	deadline := time.Now().Add(2 * time.Minute) // a hang bound, not a speed target
	for {
		info, err := env.Consumer.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream >= messages {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run stopped before it consumed the stream: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("run acked %d of %d messages in 2 minutes", info.AckFloor.Stream, messages)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	// Acked means durable: no wait for the rows.
	raw := count(dist, "SELECT count() FROM fleet.scored_events")
	final := count(dist, "SELECT count() FROM fleet.scored_events FINAL")
	ids := count(dist, "SELECT uniqExact(event_id) FROM fleet.scored_events")
	if raw != sent || final != sent || ids != sent {
		t.Errorf("raw %d, FINAL %d, distinct ids %d; want %d each", raw, final, ids, sent)
	}
	shardOf := map[string]int{}
	for i, s := range cl.Servers() {
		rows, err := clusterConn(t, s).Query(ctx, "SELECT DISTINCT device FROM fleet.scored_events_local")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				t.Fatal(err)
			}
			if prev, dup := shardOf[d]; dup {
				t.Errorf("device %s has rows on shards %d and %d", d, prev, i+1)
			}
			shardOf[d] = i + 1
			n++
		}
		rows.Close()
		if n == 0 {
			t.Errorf("shard %d holds no device", i+1)
		}
		t.Logf("shard %d: %d devices", i+1, n)
	}
	if len(shardOf) != devices {
		t.Errorf("%d devices on the shards, want %d", len(shardOf), devices)
	}
}

// clusterConn is a plain connection to one server of a cluster.
func clusterConn(t *testing.T, s *chserver.Server) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TCPPort()))}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
