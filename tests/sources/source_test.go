package sources_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/schemas"
)

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
