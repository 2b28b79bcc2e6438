package timeofday

import (
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Stats is what the time-of-day detector learns of classes (its
// detectors.ClassStats and the Fleet view its Observe gets): per zone (a
// class in local time, or a class in UTC for events with no known place) and
// command, 24 hourly 64-bit sketches of the devices that issued it at that
// local hour; per zone, the same for any command (the class's activity) and
// the first time each local hour was seen. A slot costs 8 + 24·8 bytes.
type Stats struct {
	classes   *detectors.ClassTable
	keys      []atomic.Uint64 // detectors.Slot keys
	hours     []atomic.Uint64 // 24 words per slot
	saturated atomic.Uint64
}

// Tags mixed with a zone key for its activity and first-seen slots, and
// with a class for a class in UTC (no distinct command hashes to these).
const (
	tagActivity = 0x61637469766974 // "activit"
	tagFirst    = 0x6669727374     // "first"
	tagUTC      = 0x757463         // "utc"
)

// NewStats returns empty statistics over classes, with
// classes.CommandSlots() slots.
func NewStats(classes *detectors.ClassTable) *Stats {
	n := detectors.TableSize(classes.CommandSlots())
	return &Stats{classes: classes, keys: make([]atomic.Uint64, n), hours: make([]atomic.Uint64, n*24)}
}

// ClassDevices implements detectors.Fleet.
func (s *Stats) ClassDevices(class uint64) float64 { return s.classes.ClassDevices(class) }

// ClassSince implements detectors.Fleet.
func (s *Stats) ClassSince(class uint64) int64 { return s.classes.ClassSince(class) }

// Learn implements detectors.ClassStats: ev's device was active at its local
// hour, and issued ev's command then, which is learned unless the class finds
// it odd (View.Odd, whatever the device's own history): an attack does not
// teach the class its hour. A class takes up a new hour from its edge: a
// command at the hour after one that another device uses is not odd, and
// is learned.
func (s *Stats) Learn(ev *schemas.Event, _ []byte) {
	if classOf(ev) == 0 {
		return
	}
	zone, h, _ := zoneHour(ev)
	bit := uint64(1) << detectors.DeviceBit(ev.DeviceKey)
	keys := [2]uint64{detectors.PairKey(zone, tagActivity), detectors.PairKey(zone, ev.CommandID)}
	n := 2
	if _, odd := s.Judge(zone, ev.CommandID, h, ev.DeviceKey, ev.Time); odd {
		n = 1 // don't learn what the class finds odd
	}
	for _, k := range keys[:n] {
		j := detectors.Slot(s.keys, k, true)
		if j < 0 {
			s.saturated.Add(1)
			return
		}
		if w := &s.hours[j*24+h]; w.Load()&bit == 0 {
			w.Or(bit)
		}
	}
	j := detectors.Slot(s.keys, detectors.PairKey(zone, tagFirst), true)
	if j < 0 {
		s.saturated.Add(1)
		return
	}
	detectors.KeepEarliest(&s.hours[j*24+h], ev.Time)
}

// View is what the class knows of a command at a local hour, for one device
// (its own bit excluded).
type View struct {
	// AtHour and Before estimate the other devices that issued the command
	// at the hour and at the hour before it.
	AtHour, Before float64
	// Devices estimates the other devices that issued it at any hour, and
	// Hours counts the hours at which some did.
	Devices float64
	Hours   int
	// PerHour is the mean of the per-hour estimates over those hours.
	PerHour float64
	// Active estimates the other devices active (any command) at the hour.
	Active float64
	// Quiet counts the hours in the run of quiet hours around the hour (it
	// included): hours the class has seen at which no other device issued the
	// command. 0 when the command was issued at the hour.
	Quiet int
	// Since is the first time (Unix ns) the zone was seen at the hour, 0 if
	// never.
	Since int64
}

// Odd reports whether v, at time now (Unix ns), makes the command odd at
// the hour: no other device issued it at the hour nor at the hour before,
// the hour is in a run of MinQuiet quiet hours, MinDevices other devices
// issued it at MinHours hours, MinPerHour per such hour; and MinActive other
// devices were active at the hour, which the class first saw HourSeen or
// more before now.
func (v View) Odd(now int64) bool {
	return v.AtHour == 0 && v.Before == 0 && v.Quiet >= MinQuiet && v.Devices >= MinDevices && v.Hours >= MinHours &&
		v.PerHour >= MinPerHour && v.Active >= MinActive && v.Since != 0 && float64(now-v.Since) >= HourSeen
}

// Judge returns what the zone knows of command at local hour h for device,
// and whether that makes it odd at time now (View.Odd). The usual case, a
// command other devices issued at the hour or the hour before, costs one
// table probe and returns the zero View. It does not allocate.
func (s *Stats) Judge(zone, command uint64, h int, device uint64, now int64) (View, bool) {
	if h < 0 || h >= 24 {
		return View{}, false
	}
	c := detectors.Slot(s.keys, detectors.PairKey(zone, command), false)
	if c < 0 {
		return View{}, false
	}
	own := uint64(1) << detectors.DeviceBit(device)
	if s.hours[c*24+h].Load()&^own != 0 || s.hours[c*24+(h+23)%24].Load()&^own != 0 {
		return View{}, false
	}
	v := s.Hour(zone, command, h, device)
	return v, v.Odd(now)
}

// Hour returns what the zone knows of command at local hour h (0-23) for
// device. It does not allocate.
func (s *Stats) Hour(zone, command uint64, h int, device uint64) View {
	var v View
	if h < 0 || h >= 24 {
		return v
	}
	own := uint64(1) << detectors.DeviceBit(device)
	c := detectors.Slot(s.keys, detectors.PairKey(zone, command), false)
	if j := c; j >= 0 {
		var all uint64
		sum := 0.0
		for i := range 24 {
			b := s.hours[j*24+i].Load() &^ own
			if b == 0 {
				continue
			}
			all |= b
			v.Hours++
			sum += count(bits.OnesCount64(b))
			switch i {
			case h:
				v.AtHour = count(bits.OnesCount64(b))
			case (h + 23) % 24:
				v.Before = count(bits.OnesCount64(b))
			}
		}
		v.Devices = count(bits.OnesCount64(all))
		if v.Hours > 0 {
			v.PerHour = sum / float64(v.Hours)
		}
	}
	if j := detectors.Slot(s.keys, detectors.PairKey(zone, tagActivity), false); j >= 0 {
		v.Active = count(bits.OnesCount64(s.hours[j*24+h].Load() &^ own))
	}
	f := detectors.Slot(s.keys, detectors.PairKey(zone, tagFirst), false)
	if f < 0 {
		return v
	}
	v.Since = int64(s.hours[f*24+h].Load())
	if v.AtHour != 0 || v.Since == 0 || c < 0 {
		return v
	}
	// The quiet hours: h and the hours next to it that the class has seen and
	// at which no other device issued the command.
	quiet := func(i int) bool {
		return s.hours[f*24+i].Load() != 0 && s.hours[c*24+i].Load()&^own == 0
	}
	v.Quiet = 1
	for d := 1; d < 24 && quiet((h+d)%24); d++ {
		v.Quiet++
	}
	for d := 1; d < 24-v.Quiet+1 && quiet((h+24-d)%24); d++ {
		v.Quiet++
	}
	return v
}

// count estimates the devices of a 64-bit sketch with ones bits set (a
// table look-up: Hour estimates 24 sketches per judgement).
func count(ones int) float64 { return detectors.LinearCount(64, ones) }

// Saturated returns how many Learn calls found the table full.
func (s *Stats) Saturated() uint64 { return s.saturated.Load() }

// statsVersion versions the snapshot of Stats.
const statsVersion = 1

// AppendSnapshot implements detectors.ClassStats.
func (s *Stats) AppendSnapshot(dst []byte) []byte {
	dst = detectors.AppendStatsHeader(dst, statsVersion, len(s.keys))
	return detectors.AppendWords(dst, s.keys, s.hours)
}

// LoadSnapshot implements detectors.ClassStats.
func (s *Stats) LoadSnapshot(b []byte) error {
	rest, err := detectors.ReadStatsHeader(b, "time-of-day statistics", statsVersion, len(s.keys))
	if err != nil {
		return err
	}
	if err := detectors.LoadWords(rest, s.keys, s.hours); err != nil {
		return fmt.Errorf("cannot load time-of-day statistics: %w", err)
	}
	return nil
}
