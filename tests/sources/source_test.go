package sources_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/pipetest"
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
	msgs := pipetest.FleetMessages(t, 300, 3*time.Hour)
	cfg := pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond}

	direct := pipetest.Setup(t, sharedCH.Get(t).DSN(), "src_logs")
	pipetest.PublishLogs(t, direct.JS, msgs)
	dp := direct.Run(t, cfg)
	want := direct.Outcome(t)

	// The scorer reads the events with one consumer of every partition,
	// and as the sole owner of every partition (partition.Consumer).
	for _, owned := range []bool{false, true} {
		db := "src_events"
		if owned {
			db = "src_owned"
		}
		staged := pipetest.Setup(t, sharedCH.Get(t).DSN(), db)
		pipetest.PublishLogs(t, staged.JS, msgs)
		ctx := context.Background()
		scfg := bus.DefaultStreamsConfig()
		scfg.AckWait = 30 * time.Second
		icons, err := bus.EnsureIngest(ctx, staged.JS, scfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := ingest.NewStage(ingest.StageConfig{Partitions: 8}, ingest.Options{}, icons, staged.JS, staged.Pub, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		pipetest.RunUntilDone(t, icons, st.Run)
		if st.M.Acked.Load() != uint64(len(msgs)) || st.M.Events.Load() != dp.M.Events.Load() {
			t.Fatalf("ingest acked %d of %d log messages and published %d events (run decoded %d)",
				st.M.Acked.Load(), len(msgs), st.M.Events.Load(), dp.M.Events.Load())
		}
		es, err := staged.JS.Stream(ctx, schemas.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		if n := es.CachedInfo().State.NumSubjects; n != 2*8 { // events and entity observations
			t.Fatalf("IOTWATCH_EVENTS holds %d subjects, want 16 (8 partitions' events and observations)", n)
		}
		if owned {
			pcons, presence, _, err := bus.EnsurePartitions(ctx, staged.JS, scfg, 8, 0)
			if err != nil {
				t.Fatal(err)
			}
			pc, err := partition.New(ctx, es, pcons, partition.Config{Presence: presence, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Stop(ctx)
			staged.Cons = pc
		} else {
			scons, _, err := bus.EnsureScorer(ctx, staged.JS, scfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			staged.Cons = scons
		}
		cfg.Stream = es
		p := staged.Run(t, cfg)
		got := staged.Outcome(t)

		if got.Rows != want.Rows || p.M.Events.Load() != dp.M.Events.Load() || p.M.Silences.Load() != dp.M.Silences.Load() {
			t.Errorf("owned %v: scored rows: %d from events (%d events, %d silences), %d from logs (%d, %d)", owned, got.Rows, p.M.Events.Load(),
				p.M.Silences.Load(), want.Rows, dp.M.Events.Load(), dp.M.Silences.Load())
		}
		if len(want.Alerts) == 0 {
			t.Fatal("the fleet raised no alert: the comparison would prove nothing")
		}
		if !slices.Equal(got.Alerts, want.Alerts) {
			t.Errorf("owned %v: alerts differ: %d from events, %d from logs; only from events: %v; only from logs: %v",
				owned, len(got.Alerts), len(want.Alerts), diff(got.Alerts, want.Alerts), diff(want.Alerts, got.Alerts))
		}
		if !slices.Equal(got.Decisions, want.Decisions) {
			t.Errorf("owned %v: decisions differ: %d from events, %d from logs", owned, len(got.Decisions), len(want.Decisions))
		}
		if got.DeadLetters != want.DeadLetters || want.DeadLetters == 0 {
			t.Errorf("owned %v: dead-letter messages: %d through ingest, %d through run (want equal, > 0)", owned, got.DeadLetters, want.DeadLetters)
		}
	}
	t.Logf("%d log messages: %d rows, %d alerts, %d decisions, %d dead-letter messages either way", len(msgs), want.Rows,
		len(want.Alerts), len(want.Decisions), want.DeadLetters)
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
