package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/schemas"
)

// fleetMessages returns a simulated fleet with attacks as log messages of
// 100 canonical JSON lines, with a few undecodable records mixed in.
func fleetMessages(t *testing.T, devices int, span time.Duration) [][]byte {
	t.Helper()
	fc := sim.DefaultConfig()
	fc.Devices, fc.Duration = devices, span
	fl, err := sim.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	var buf []byte
	n := 0
	for {
		l, _, ok := fl.Next(buf)
		if !ok {
			break
		}
		buf = append(l, '\n')
		if n++; n%1000 == 0 {
			buf = append(buf, `{"ts":"2026-01-05T10:00:00Z"}`+"\n"...) // no device: a dead letter
		}
		if n%100 == 0 {
			msgs = append(msgs, append([]byte(nil), buf...))
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		msgs = append(msgs, buf)
	}
	return msgs
}

// outcome is what a run left in ClickHouse and NATS.
type outcome struct {
	rows        uint64
	alerts      []string
	decisions   []string
	deadLetters uint64
}

func (e *env) outcome(t *testing.T) outcome {
	t.Helper()
	ctx := context.Background()
	ids := func(table string) []string {
		rows, err := e.conn.Query(ctx, fmt.Sprintf("SELECT %s FROM %s.%s FINAL ORDER BY %s", schemas.ColID, e.db, table, schemas.ColID))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			out = append(out, id)
		}
		return out
	}
	s, err := e.js.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	return outcome{rows: e.count(t, schemas.TableScored), alerts: ids(schemas.TableAlerts), decisions: ids(schemas.TableDecisions),
		deadLetters: s.CachedInfo().State.Msgs}
}

func publishLogs(t *testing.T, js jetstream.JetStream, msgs [][]byte) {
	t.Helper()
	subject := bus.LogSubject(schemas.FormatJSON, "sim")
	for i, m := range msgs {
		if _, err := js.Publish(context.Background(), subject, m, jetstream.WithMsgID(fmt.Sprint("m-", i))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEventsSourceMatchesLogs runs the same fleet through 'run' (decoding the
// logs itself) and through the ingest stage and a scorer of its Arrow
// batches ('run --source events'), each on a fresh NATS server and database:
// the same scored rows, alert ids, decision ids and dead letters.
func TestEventsSourceMatchesLogs(t *testing.T) {
	msgs := fleetMessages(t, 300, 3*time.Hour)
	cfg := pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond}

	direct := setup(t, "src_logs")
	publishLogs(t, direct.js, msgs)
	dp := direct.run(t, cfg)
	want := direct.outcome(t)

	// The scorer reads the events with one consumer of every partition,
	// and as the sole owner of every partition (partition.Consumer).
	for _, owned := range []bool{false, true} {
		db := "src_events"
		if owned {
			db = "src_owned"
		}
		staged := setup(t, db)
		publishLogs(t, staged.js, msgs)
		ctx := context.Background()
		scfg := bus.DefaultStreamsConfig()
		scfg.AckWait = 30 * time.Second
		icons, err := bus.EnsureIngest(ctx, staged.js, scfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := ingest.NewStage(ingest.StageConfig{Partitions: 8}, ingest.Options{}, icons, staged.js, staged.pub, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		runUntilDone(t, icons, st.Run)
		if st.M.Acked.Load() != uint64(len(msgs)) || st.M.Events.Load() != dp.M.Events.Load() {
			t.Fatalf("ingest acked %d of %d log messages and published %d events (run decoded %d)",
				st.M.Acked.Load(), len(msgs), st.M.Events.Load(), dp.M.Events.Load())
		}
		es, err := staged.js.Stream(ctx, schemas.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		if n := es.CachedInfo().State.NumSubjects; n != 2*8 { // events and entity observations
			t.Fatalf("IOTWATCH_EVENTS holds %d subjects, want 16 (8 partitions' events and observations)", n)
		}
		if owned {
			pcons, presence, _, err := bus.EnsurePartitions(ctx, staged.js, scfg, 8, 0)
			if err != nil {
				t.Fatal(err)
			}
			pc, err := partition.New(ctx, es, pcons, partition.Config{Presence: presence, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Stop(ctx)
			staged.cons = pc
		} else {
			scons, _, err := bus.EnsureScorer(ctx, staged.js, scfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			staged.cons = scons
		}
		cfg.Stream = es
		p := staged.run(t, cfg)
		got := staged.outcome(t)

		if got.rows != want.rows || p.M.Events.Load() != dp.M.Events.Load() || p.M.Silences.Load() != dp.M.Silences.Load() {
			t.Errorf("owned %v: scored rows: %d from events (%d events, %d silences), %d from logs (%d, %d)", owned, got.rows, p.M.Events.Load(),
				p.M.Silences.Load(), want.rows, dp.M.Events.Load(), dp.M.Silences.Load())
		}
		if len(want.alerts) == 0 {
			t.Fatal("the fleet raised no alert: the comparison would prove nothing")
		}
		if !slices.Equal(got.alerts, want.alerts) {
			t.Errorf("owned %v: alerts differ: %d from events, %d from logs; only from events: %v; only from logs: %v",
				owned, len(got.alerts), len(want.alerts), diff(got.alerts, want.alerts), diff(want.alerts, got.alerts))
		}
		if !slices.Equal(got.decisions, want.decisions) {
			t.Errorf("owned %v: decisions differ: %d from events, %d from logs", owned, len(got.decisions), len(want.decisions))
		}
		if got.deadLetters != want.deadLetters || want.deadLetters == 0 {
			t.Errorf("owned %v: dead-letter messages: %d through ingest, %d through run (want equal, > 0)", owned, got.deadLetters, want.deadLetters)
		}
	}
	t.Logf("%d log messages: %d rows, %d alerts, %d decisions, %d dead-letter messages either way", len(msgs), want.rows,
		len(want.alerts), len(want.decisions), want.deadLetters)
}

// runUntilDone runs run until cons has nothing pending or unacked.
func runUntilDone(t *testing.T, cons pipeline.Source, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute) // a hang bound: -race on a loaded machine is slow
	for {
		info, err := cons.Info(context.Background())
		if err != nil { // a loaded machine may time an info request out: ask again
			if time.Now().After(deadline) {
				cancel()
				t.Fatal(err)
			}
			continue
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("did not catch up: pending=%d ack_pending=%d", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition, not waiting for work by time
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func diff(a, b []string) string {
	var out []string
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			out = append(out, x)
		}
		if len(out) == 5 {
			out = append(out, "...")
			break
		}
	}
	return strings.Join(out, " ")
}
