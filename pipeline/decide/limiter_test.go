package decide

import (
	"fmt"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestBlockCapFleetAlert: the first refusal of each event-time minute raises
// one fleet alert; further refusals in the minute raise none; a new minute
// starts over.
func TestBlockCapFleetAlert(t *testing.T) {
	lim := NewLimiter(2)
	cfg := DefaultConfig()
	cfg.MaxBlocksPerMinute = 2
	e, err := NewEngine(cfg, lim)
	if err != nil {
		t.Fatal(err)
	}
	decideAt := func(i int, at time.Duration) *schemas.Decision {
		_, d := e.Decide(event(fmt.Sprintf("d-%d", i), "", "203.0.113.1", at), scored(flood))
		return d
	}
	// Minute 0: blocks 0 and 1 pass, 2 is the first refusal, 3 and 4 add none.
	for i := range 5 {
		if d := decideAt(i, time.Duration(10+i)*time.Second); (d != nil) != (i < 2) {
			t.Fatalf("event %d: decision %v, want one only under the cap", i, d)
		}
		got := lim.AppendAlerts(nil)
		switch {
		case i == 2 && len(got) != 1:
			t.Fatalf("first refusal: %d fleet alerts, want 1", len(got))
		case i != 2 && len(got) != 0:
			t.Fatalf("event %d: %d fleet alerts, want 0: %+v", i, len(got), got)
		case i == 2:
			checkCapAlert(t, &got[0], t0+int64(12*time.Second), uint64(12*time.Second), 2)
		}
	}
	// Minute 1: the count starts over.
	for i := 5; i < 8; i++ {
		decideAt(i, time.Minute+time.Duration(i)*time.Second)
	}
	got := lim.AppendAlerts(nil)
	if len(got) != 1 {
		t.Fatalf("second minute: %d fleet alerts, want 1", len(got))
	}
	checkCapAlert(t, &got[0], t0+int64(time.Minute+7*time.Second), uint64(time.Minute+7*time.Second), 2)
	if n := lim.Denied(); n != 4 {
		t.Fatalf("denied %d, want 4", n)
	}
	if got := lim.AppendAlerts(nil); len(got) != 0 {
		t.Fatalf("alerts taken twice: %+v", got)
	}
}

func checkCapAlert(t *testing.T, a *schemas.Alert, at int64, eventID uint64, max int) {
	t.Helper()
	if a.Device != "" || a.Tenant != "" || a.Severity != schemas.SeverityHigh || a.Score != 1 ||
		a.Time.UnixNano() != at || a.FirstEventID != eventID || a.LastEventID != eventID || a.ID == "" {
		t.Fatalf("fleet alert = %+v", a)
	}
	if len(a.Reasons) != 1 {
		t.Fatalf("fleet alert reasons = %+v", a.Reasons)
	}
	r := a.Reasons[0]
	if r.Reason != schemas.ReasonBlockCapHit || r.Detector != "decide" || r.Observed != float64(max+1) || r.Expected != float64(max) {
		t.Fatalf("fleet alert reason = %+v", r)
	}
}

// TestBlockCapFleetAlertDeterministic: the same events give the same fleet
// alerts, whose id depends only on the minute.
func TestBlockCapFleetAlertDeterministic(t *testing.T) {
	run := func(offset time.Duration) []schemas.Alert {
		lim := NewLimiter(1)
		for i := range 3 {
			lim.allow(t0+int64(offset)+int64(i)*int64(time.Second), uint64(i), uint64(i))
		}
		return lim.AppendAlerts(nil)
	}
	a, b := run(0), run(0)
	if len(a) != 1 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("replays differ:\n%+v\n%+v", a, b)
	}
	if c := run(5 * time.Second); len(c) != 1 || c[0].ID != a[0].ID || c[0].Time.Equal(a[0].Time) {
		t.Fatalf("same minute, later event: id %q time %v, want id %q and another time", c[0].ID, c[0].Time, a[0].ID)
	}
	if c := run(time.Minute); c[0].ID == a[0].ID {
		t.Fatalf("another minute has the same id %q", c[0].ID)
	}
}

func TestLimiterUnlimited(t *testing.T) {
	for _, lim := range []*Limiter{nil, NewLimiter(0)} {
		for i := range 1000 {
			if !lim.Allow(t0 + int64(i)) {
				t.Fatalf("limiter %v refused", lim)
			}
		}
		if got := lim.AppendAlerts(nil); len(got) != 0 || lim.Denied() != 0 {
			t.Fatalf("unlimited limiter raised %+v", got)
		}
	}
}

// TestBlockCapPendingBounded: alerts nobody takes stay bounded, newest kept.
func TestBlockCapPendingBounded(t *testing.T) {
	lim := NewLimiter(1)
	for m := range 100 {
		lim.Allow(t0 + int64(m)*int64(time.Minute))
		lim.Allow(t0 + int64(m)*int64(time.Minute) + 1)
	}
	got := lim.AppendAlerts(nil)
	if len(got) != maxPendingAlerts {
		t.Fatalf("%d pending alerts, want %d", len(got), maxPendingAlerts)
	}
	if last := got[len(got)-1].Time.UnixNano(); last != t0+99*int64(time.Minute)+1 {
		t.Fatalf("newest alert at %d, want the last minute's", last)
	}
}
