package sink

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestClickHouseWritten: of a set of events, Written names those with a
// scored row, the stored alerts they raised (by last_event_id) and the
// stored decisions taken on those alerts, and nothing else: not an event
// outside the time bounds, not an alert of another event, not a decision
// on another alert.
func TestClickHouseWritten(t *testing.T) {
	c := openTestWriter(t, testClickHouse(t), ClickHouseConfig{})
	ctx := context.Background()
	rec := testRecord(t, 10) // events 1,000,000-1,000,009, 1.5 s apart from testBase
	defer rec.Release()
	if err := c.WriteScored(ctx, rec); err != nil {
		t.Fatal(err)
	}
	alerts := testCHAlerts() // al-1 a device's, al-2 an address's
	alerts[0].LastEventID = 1_000_003
	alerts[1].LastEventID = 1_000_009
	alerts[1].Time = alerts[0].Time
	other := alerts[0] // another event's
	other.ID, other.LastEventID = "al-9", 1_000_004
	if err := c.WriteAlerts(ctx, append(alerts, other)); err != nil {
		t.Fatal(err)
	}
	decisions := testCHDecisions() // dc-1 on al-1, dc-2 on al-3
	onEntity := decisions[1]
	onEntity.ID, onEntity.AlertID = "dc-3", "al-2"
	if err := c.WriteDecisions(ctx, append(decisions, onEntity)); err != nil {
		t.Fatal(err)
	}
	from, to := testBase.UnixNano(), testBase.Add(time.Minute).UnixNano()
	got, err := c.Written(ctx, []uint64{1_000_001, 1_000_003, 1_000_009, 1_000_042, 7}, from, to)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got.Events)
	if want := []uint64{1_000_001, 1_000_003, 1_000_009}; !slices.Equal(got.Events, want) {
		t.Errorf("events stored: %v, want %v", got.Events, want)
	}
	slices.Sort(got.Alerts)
	slices.Sort(got.Decisions)
	if want := []string{"al-1", "al-2"}; !slices.Equal(got.Alerts, want) {
		t.Errorf("alerts stored: %q, want %q", got.Alerts, want)
	}
	if want := []string{"dc-1", "dc-3"}; !slices.Equal(got.Decisions, want) {
		t.Errorf("decisions stored: %q, want %q", got.Decisions, want)
	}
	// Bounds a day later: the rows are outside them.
	day := 24 * time.Hour.Nanoseconds()
	if got, err := c.Written(ctx, []uint64{1_000_001, 1_000_003}, from+day, to+day); err != nil || len(got.Events)+len(got.Alerts)+len(got.Decisions) != 0 {
		t.Errorf("a day later: %+v, %v; want nothing", got, err)
	}
}
