// Package timeofday is the time-of-day detector: the local hours of the day
// at which a device's class issues each command, and a command issued at an
// hour at which no other device of its class issues it (an owner's daytime
// command at 03:00).
package timeofday

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// StateSize is the size of a device's state (all little-endian):
//
//	0:8   time of the device's first event, Unix ns (int64)
//	8:12  events seen, uint32 (saturates)
//
// The hours of each command are the class's (Stats), not the device's: a
// device's own commands at an hour are a handful a day, its class's are
// many, and the class judges a young device too.
const StateSize = 12

// Thresholds.
const (
	// MinEvents and MinAge: a device is judged once it has this many events
	// over at least this long (ns).
	MinEvents = 8
	MinAge    = 30 * 60 * 1e9
	// MinDevices other devices of the class issued the command, at MinHours
	// distinct local hours, MinPerHour of them per such hour on average.
	MinDevices = 8
	MinHours   = 12
	MinPerHour = 3.0
	// MinActive other devices of the class were active (any command) at the
	// hour, first seen at least HourSeen (ns) before the event: the class
	// has lived through (most of) the hour, so the command's absence there
	// is a habit and not an hour just begun.
	MinActive = 8
	// MinQuiet: the hour is in a run of at least this many quiet hours (the
	// class's night for the command), not a gap in a sparse command's day.
	MinQuiet = 3
	HourSeen = 45 * 60 * 1e9
)

// Detector is the time-of-day detector. It is stateless: everything it
// knows of a device is in the state slice, of its class in Stats.
type Detector struct{}

// offsets are standard UTC offsets in minutes (no daylight saving time) of
// the countries the detector places in local time; a country not listed is
// placed by its longitude (Event.Lon) when known, else judged in UTC. Where
// a country spans zones, its most populous one.
var offsets = map[schemas.Country]int16{
	{'D', 'E'}: 60, {'F', 'R'}: 60, {'G', 'B'}: 0, {'I', 'E'}: 0, {'P', 'T'}: 0, {'E', 'S'}: 60, {'I', 'T'}: 60,
	{'N', 'L'}: 60, {'B', 'E'}: 60, {'C', 'H'}: 60, {'A', 'T'}: 60, {'P', 'L'}: 60, {'C', 'Z'}: 60, {'S', 'E'}: 60,
	{'N', 'O'}: 60, {'D', 'K'}: 60, {'F', 'I'}: 120, {'G', 'R'}: 120, {'R', 'O'}: 120, {'U', 'A'}: 120,
	{'T', 'R'}: 180, {'R', 'U'}: 180, {'I', 'L'}: 120, {'E', 'G'}: 120, {'Z', 'A'}: 120, {'N', 'G'}: 60,
	{'K', 'E'}: 180, {'S', 'A'}: 180, {'A', 'E'}: 240, {'I', 'N'}: 330, {'P', 'K'}: 300, {'B', 'D'}: 360,
	{'T', 'H'}: 420, {'V', 'N'}: 420, {'I', 'D'}: 420, {'C', 'N'}: 480, {'H', 'K'}: 480, {'T', 'W'}: 480,
	{'S', 'G'}: 480, {'M', 'Y'}: 480, {'P', 'H'}: 480, {'K', 'R'}: 540, {'J', 'P'}: 540, {'A', 'U'}: 600,
	{'N', 'Z'}: 720, {'U', 'S'}: -300, {'C', 'A'}: -300, {'M', 'X'}: -360, {'B', 'R'}: -180, {'A', 'R'}: -180,
	{'C', 'L'}: -240, {'C', 'O'}: -300, {'P', 'E'}: -300,
}

// offsetTable is offsets indexed by a country's two letters (A-Z each),
// noOffset where the map has none: what offsetOf reads per event, without a
// map lookup.
var offsetTable = func() (t [26 * 26]int16) {
	for i := range t {
		t[i] = noOffset
	}
	for c, o := range offsets {
		if c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' || o == noOffset {
			panic("BUG: timeofday: offsets holds a country that is not two capital letters")
		}
		t[int(c[0]-'A')*26+int(c[1]-'A')] = o
	}
	return t
}()

const noOffset = math.MinInt16

// offsetOf returns offsets[c] and whether c is listed.
func offsetOf(c schemas.Country) (int, bool) {
	a, b := c[0]-'A', c[1]-'A'
	if a >= 26 || b >= 26 {
		return 0, false
	}
	if o := offsetTable[int(a)*26+int(b)]; o != noOffset {
		return int(o), true
	}
	return 0, false
}

// classOf returns the class ev's hours are learned and judged in: its
// model across tenants (Event.ModelKey), else its class.
func classOf(ev *schemas.Event) uint64 {
	if ev.ModelKey != 0 {
		return ev.ModelKey
	}
	return ev.ClassKey
}

// zoneHour returns ev's zone key (its class, or its class in UTC when ev's
// place is unknown), its local hour of day (0-23) and minute of the day.
func zoneHour(ev *schemas.Event) (zone uint64, hour, minute int) {
	off, local := 0, false
	if o, ok := offsetOf(ev.Country); ok {
		off, local = o, true
	} else if (ev.Lat != 0 || ev.Lon != 0) && ev.Lon >= -180 && ev.Lon <= 180 {
		off, local = int(math.Round(float64(ev.Lon)/15))*60, true
	}
	m := ev.Time/60e9 + int64(off)
	m = (m%1440 + 1440) % 1440
	zone = classOf(ev)
	if !local {
		zone = detectors.PairKey(zone, tagUTC)
	}
	return zone, int(m / 60), int(m)
}

// Observe implements detectors.Detector.
func (*Detector) Observe(ev *schemas.Event, state []byte, fleet detectors.Fleet) schemas.Finding {
	if len(state) < StateSize {
		return schemas.Finding{}
	}
	first := int64(binary.LittleEndian.Uint64(state[0:]))
	n := binary.LittleEndian.Uint32(state[8:])
	if n == 0 || ev.Time < first {
		first = ev.Time
		binary.LittleEndian.PutUint64(state[0:], uint64(first))
	}
	if n < math.MaxUint32 {
		binary.LittleEndian.PutUint32(state[8:], n+1)
	}
	if n < MinEvents || float64(ev.Time)-float64(first) < MinAge || classOf(ev) == 0 {
		return schemas.Finding{}
	}
	s, ok := fleet.(*Stats)
	if !ok {
		return schemas.Finding{}
	}
	zone, h, minute := zoneHour(ev)
	v, odd := s.Judge(zone, ev.CommandID, h, ev.DeviceKey, ev.Time)
	if !odd {
		return schemas.Finding{}
	}
	score := float32(0.95 * v.PerHour / (v.PerHour + 2))
	f := schemas.Finding{
		Detector: Name, Reason: ReasonOddHourCommand, Score: score,
		Observed: float64(minute) / 60, Expected: math.Round(v.PerHour),
	}
	f.ObservedLabel = clock(minute, zone == classOf(ev))
	return f
}

// clock formats minute of the day as "03:12 local" or "03:12 UTC".
func clock(minute int, local bool) schemas.Label {
	var l schemas.Label
	h, m := minute/60, minute%60
	l[0], l[1], l[2], l[3], l[4], l[5] = byte('0'+h/10), byte('0'+h%10), ':', byte('0'+m/10), byte('0'+m%10), ' '
	if local {
		copy(l[6:], "local")
	} else {
		copy(l[6:], "UTC")
	}
	return l
}

// Doc describes the time-of-day detector for the generated catalog.
const Doc = "Judges the local hour of day at which a device issues each command against its class (its model " +
	"across tenants). Local time is the event's country's standard UTC offset (a table of common countries), else " +
	"its longitude's, else UTC (a class in UTC is a zone of its own). The class statistics keep, per class and " +
	"command, a 64-bit sketch of the devices that issued it at each of the 24 local hours, and per class the " +
	"devices active (any command) at each hour and the first time the hour was seen. A command is an " +
	"odd_hour_command when no other device of the class issued it at the hour nor at the hour before, the hour " +
	"is in a run of 3 or more such quiet hours the class has seen (its night for the command, not a gap in a " +
	"sparse day), at least 8 other devices issued it, at 12 or more hours, 3 or more per such hour on average, " +
	"and 8 other devices were active at the hour, which the class first saw 45 minutes or more before " +
	"(Observed: the local hour, 3.2 for 03:12, with the clock as label; Expected: the other devices per hour " +
	"at its usual hours), score 0.95·e/(e+2) for e of them (0.57 at 3, 0.79 at 10). A command the class issues " +
	"at all hours (a heartbeat, a meter's reading) never fires, nor does one at the hour after a used one (a " +
	"rollout's new command reaching a new hour); a device's own bit never counts for it, and a command its " +
	"class finds odd is not learned, so an attack does not teach the class its hour; a class takes up a new " +
	"hour from the edge of its day. Warm-up: a device is judged after 8 events over 30 minutes (its class's " +
	"hours judge it from then on); a class after it has seen the hour."

func init() {
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Version:   1,
		Reasons:   []string{ReasonOddHourCommand},
		// Random events come from one device at random hours: make a fleet
		// of locks that unlock by day, and now and then one at night.
		Shapes: []detectors.Shape{shapeFleet},
		New:    func() detectors.Detector { return &Detector{} },
		Stats:  func(classes *detectors.ClassTable) detectors.ClassStats { return NewStats(classes) },
	})
}

// shapeDevices, shapeState and shapeUnlock are the conformance shape's
// fleet and commands.
var (
	shapeDevices = func() (d [16][]byte) {
		for i := range d {
			d[i] = []byte{'p', '-', byte('a' + i)}
		}
		return d
	}()
	shapeState  = []byte("PUBLISH locks/{id}/state")
	shapeUnlock = []byte("PUBLISH locks/{id}/unlocked")
	// shapeNightOwl is the one lock that unlocks at night.
	shapeNightOwl = []byte("p-night")
)

// shapeFleet is the conformance shape: one of 16 locks of one class in
// Germany reports its state, or unlocks, between 06:00 and 23:59 local, and
// once a day of events has gone by, another one sometimes unlocks between
// 02:00 and 04:59.
func shapeFleet(rng *rand.Rand, ev *schemas.Event) {
	ev.SetDevice([]byte("acme"), shapeDevices[rng.IntN(len(shapeDevices))])
	ev.SetClass([]byte("lock/shape"))
	ev.Country = schemas.Country{'D', 'E'}
	local := (ev.Time/3600e9 + 1) % 24
	switch {
	case rng.IntN(3) == 0:
		ev.SetCommand(shapeState)
	case local >= 6:
		ev.SetCommand(shapeUnlock)
	case local >= 2 && local < 5 && rng.IntN(2) == 0 && ev.Time > shapeNight:
		ev.SetDevice([]byte("acme"), shapeNightOwl)
		ev.SetCommand(shapeUnlock)
	default:
		ev.SetCommand(shapeState)
	}
}

// shapeNight is when the shape's locks may unlock at night: a day after
// the scenarios' epoch (2025-01-06), when their class knows its hours.
const shapeNight = 1736121600e9 + 86400e9
