package timeofday

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// epoch is 2025-01-06 00:00 UTC (01:00 in Germany).
const epoch = int64(1736121600e9)

// fleet returns statistics of a class of 12 locks in Germany that report
// their state at every hour and unlock from 06:00 to 23:59 local, for a day,
// and a device of that class warmed by a day of state reports.
func fleet(tb testing.TB) (*Stats, *schemas.Event, []byte) {
	tb.Helper()
	stats := NewStats(detectors.NewClassTable(1024, 1024))
	var ev schemas.Event
	ev.SetClass([]byte("lock/bolt"))
	ev.Country = schemas.Country{'D', 'E'}
	state := make([]byte, StateSize)
	var before [StateSize]byte
	for hour := range int64(24) {
		for p := range 12 {
			ev.SetDevice([]byte("acme"), []byte{'p', byte('a' + p)})
			ev.Time = epoch + hour*3600e9 + int64(p)*60e9
			ev.SetCommand([]byte("PUBLISH locks/{id}/state"))
			stats.Learn(&ev, before[:])
			if local := (hour + 1) % 24; local >= 6 {
				ev.SetCommand([]byte("PUBLISH locks/{id}/unlocked"))
				stats.Learn(&ev, before[:])
			}
		}
	}
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetCommand([]byte("PUBLISH locks/{id}/state"))
	var d Detector
	for i := range int64(24 * 15) {
		ev.Time = epoch + i*240e9
		d.Observe(&ev, state, stats)
	}
	return stats, &ev, state
}

// benchObserve measures Observe of cmd at local hour (Germany) on the
// second day.
func benchObserve(b *testing.B, cmd string, local int64) {
	stats, ev, state := fleet(b)
	ev.SetCommand([]byte(cmd))
	ev.Time = epoch + 86400e9 + (local-1)*3600e9
	var d Detector
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		ev.Time++
		d.Observe(ev, state, stats)
	}
	cpu.Report(b)
}

func BenchmarkObserve(b *testing.B) {
	// A heartbeat at night: judged, used at every hour.
	b.Run("state_night", func(b *testing.B) { benchObserve(b, "PUBLISH locks/{id}/state", 3) })
	// The owner's command at its hour.
	b.Run("unlock_day", func(b *testing.B) { benchObserve(b, "PUBLISH locks/{id}/unlocked", 9) })
	// The attack path: an unlock at 03:00, a finding every event.
	b.Run("unlock_night", func(b *testing.B) { benchObserve(b, "PUBLISH locks/{id}/unlocked", 3) })
}

// TestObserveAllocs checks the attack path does not allocate and finds the
// night unlock, not the day one.
func TestObserveAllocs(t *testing.T) {
	stats, ev, state := fleet(t)
	var d Detector
	ev.SetCommand([]byte("PUBLISH locks/{id}/unlocked"))
	for _, c := range []struct {
		local int64
		want  string
	}{{3, ReasonOddHourCommand}, {9, ""}} {
		ev.Time = epoch + 86400e9 + (c.local-1)*3600e9
		var f schemas.Finding
		if n := testing.AllocsPerRun(100, func() { f = d.Observe(ev, state, stats) }); n != 0 {
			t.Errorf("Observe at %02d:00 local allocates %.0f times", c.local, n)
		}
		if f.Reason != c.want {
			t.Errorf("unlock at %02d:00 local: reason %q, want %q", c.local, f.Reason, c.want)
		}
	}
}

// TestSnapshotRoundTrip checks the statistics survive a snapshot: a restored
// copy judges the night unlock as the original does, and a snapshot of
// another size is refused.
func TestSnapshotRoundTrip(t *testing.T) {
	stats, ev, state := fleet(t)
	restored := NewStats(detectors.NewClassTable(1024, 1024))
	if err := restored.LoadSnapshot(stats.AppendSnapshot(nil)); err != nil {
		t.Fatal(err)
	}
	ev.SetCommand([]byte("PUBLISH locks/{id}/unlocked"))
	ev.Time = epoch + 86400e9 + 2*3600e9
	if f := (&Detector{}).Observe(ev, state, restored); f.Reason != ReasonOddHourCommand {
		t.Fatalf("restored statistics: reason %q, want %q", f.Reason, ReasonOddHourCommand)
	}
	if err := restored.LoadSnapshot(stats.AppendSnapshot(nil)[:40]); err == nil {
		t.Fatal("a truncated snapshot loaded")
	}
}

// TestZoneHour checks local time: a known country's offset, else the
// longitude's, else UTC (a zone of its own).
func TestZoneHour(t *testing.T) {
	var ev schemas.Event
	ev.SetClass([]byte("lock/bolt"))
	ev.Time = epoch + 2*3600e9 + 12*60e9 // 02:12 UTC
	for _, c := range []struct {
		country  schemas.Country
		lon      float32
		hour     int
		utcZone  bool
		describe string
	}{
		{schemas.Country{'D', 'E'}, 0, 3, false, "Germany, UTC+1"},
		{schemas.Country{'U', 'S'}, 0, 21, false, "the United States, UTC-5"},
		{schemas.Country{'J', 'P'}, 0, 11, false, "Japan, UTC+9"},
		{schemas.Country{}, 139.7, 11, false, "longitude 139.7 (Tokyo)"},
		{schemas.Country{}, 0, 2, true, "nothing known"},
	} {
		ev.Country, ev.Lon = c.country, c.lon
		zone, h, _ := zoneHour(&ev)
		if h != c.hour || (zone != ev.ModelKey) != c.utcZone {
			t.Errorf("%s: hour %d (UTC zone %v), want %d (%v)", c.describe, h, zone != ev.ModelKey, c.hour, c.utcZone)
		}
	}
}
