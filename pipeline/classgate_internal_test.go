package pipeline

import (
	"context"
	"log/slog"
	"math"
	"testing"
	"time"
)

// stepGate is a ClassGate whose limit moves by step after moveAfter Holds
// (never when step is 0).
type stepGate struct {
	limit     int64
	open      bool
	step      int64
	moveAfter int
	holds     int
	learnedTo int64
	idle      bool
}

func (g *stepGate) Learned(t int64, idle bool) { g.learnedTo, g.idle = t, idle }
func (g *stepGate) Limit() (int64, bool)       { return g.limit, g.open }
func (g *stepGate) Hold(context.Context, time.Duration) {
	g.holds++
	if g.step != 0 && g.holds >= g.moveAfter {
		g.limit += g.step
	}
}

// TestAdmit: how many messages the ingest loop fetches next, and when it
// holds, for a gate's limit and the event time dispatched so far.
func TestAdmit(t *testing.T) {
	const batch = 256
	t0 := time.Date(2026, 1, 5, 2, 0, 0, 0, time.UTC).UnixNano()
	admit := func(name string, dispatched, span int64, g *stepGate, want int) *Pipeline {
		t.Helper()
		p := &Pipeline{cfg: Config{FetchBatch: batch, ClassHoldMax: 2 * time.Second}, log: slog.New(slog.DiscardHandler),
			gate: g, dispatchedTo: dispatched, msgSpan: span}
		if got := p.admit(context.Background()); got != want {
			t.Errorf("%s: fetch %d, want %d", name, got, want)
		}
		return p
	}
	admit("open", t0, 1e9, &stepGate{open: true}, batch)
	admit("nothing dispatched yet", math.MinInt64, -1, &stepGate{limit: math.MinInt64}, 1)
	admit("span not known", t0, -1, &stepGate{limit: t0 + 60e9}, 1)
	admit("no span", t0, 0, &stepGate{limit: t0 + 60e9}, batch)
	admit("a minute of room, 10 s a message", t0, 10e9, &stepGate{limit: t0 + 60e9}, 7)
	admit("an hour of room", t0, 10e9, &stepGate{limit: t0 + 3600e9}, batch)

	g := &stepGate{limit: t0, step: 30e9, moveAfter: 3}
	p := admit("at the limit: held until it moves", t0, 10e9, g, 4)
	if g.holds != 3 || p.M.ClassHolds.Load() != 1 || p.M.ClassHoldNanos.Load() == 0 || p.M.ClassHoldOverruns.Load() != 0 {
		t.Errorf("held: %d Holds, holds %d, %d ns, overruns %d; want 3 Holds, one hold, its time, no overrun",
			g.holds, p.M.ClassHolds.Load(), p.M.ClassHoldNanos.Load(), p.M.ClassHoldOverruns.Load())
	}
	g = &stepGate{limit: t0 - 60e9}
	p = admit("a limit that never moves: given up at the bound", t0, 10e9, g, batch)
	if p.M.ClassHolds.Load() != 1 || p.M.ClassHoldOverruns.Load() != 1 || g.holds == 0 {
		t.Errorf("stuck: holds %d, overruns %d, Holds %d; want 1, 1 and some", p.M.ClassHolds.Load(), p.M.ClassHoldOverruns.Load(), g.holds)
	}
	if got := (&Pipeline{cfg: Config{FetchBatch: batch}, dispatchedTo: t0}).admit(context.Background()); got != batch {
		t.Errorf("no gate: fetch %d, want %d", got, batch)
	}
}
