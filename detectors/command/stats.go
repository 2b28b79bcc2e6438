package command

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Stats is what the command detector learns of classes (its
// detectors.ClassStats and the Fleet view its Observe gets): per (class,
// command) and per (class, previous command, command) transition, a 64-bit
// sketch of the devices that issued it, every class also learned as its
// model across tenants (Event.ModelKey), and per (class, command, argument)
// the range of the numeric argument (detectors.ParamTable), in the same
// table per (class, command, firmware) the range of the response sizes
// (sizeKey), and per (class,
// command) the devices that adopted it in the last AdoptWindow or two (a
// rollout: see ClassAdopters), and per (class, command) and per (class,
// previous command, command) the earliest event time any device of the class
// was learned with it (see firstSeen: what was new at an event's time stays
// new to it whatever the class learned of later times). It costs 160 bytes
// per command slot (64 of them for argument ranges, 32 for adoptions, 32 for
// first times). Adoptions are counted per class and per model (a vendor's
// rollout reaches every tenant of the model).
type Stats struct {
	classes     *detectors.ClassTable
	commands    *detectors.DeviceSketches
	transitions *detectors.DeviceSketches // as many slots as commands
	params      *detectors.ParamTable
	adopted     *adoptions
	firstCmd    *firstSeen // per PairKey(class, command)
	firstStep   *firstSeen // per transitionKey
}

// NewStats returns empty statistics over classes, with classes.CommandSlots()
// slots each for commands, transitions and argument ranges.
func NewStats(classes *detectors.ClassTable) *Stats {
	n := classes.CommandSlots()
	return &Stats{classes: classes, commands: detectors.NewDeviceSketches(n),
		transitions: detectors.NewDeviceSketches(n), params: detectors.NewParamTable(n), adopted: newAdoptions(n),
		firstCmd: newFirstSeen(n), firstStep: newFirstSeen(n)}
}

// transitionKey mixes differently from detectors.PairKey, so that a
// transition and a command never share a key by construction.
func transitionKey(class, prev, command uint64) uint64 {
	k := (prev*0xc2b2ae3d27d4eb4f ^ command) * 0x9e3779b97f4a7c15
	return (class ^ k ^ k>>29) * 0xd6e8feb86659fd93
}

// ClassDevices implements detectors.Fleet.
func (s *Stats) ClassDevices(class uint64) float64 { return s.classes.ClassDevices(class) }

// ClassSince implements detectors.Fleet.
func (s *Stats) ClassSince(class uint64) int64 { return s.classes.ClassSince(class) }

// ClassCommandDevices estimates how many distinct devices of the class (or
// model), other than device (a DeviceKey), issued the command.
func (s *Stats) ClassCommandDevices(class, command, device uint64) float64 {
	return s.commands.Devices(detectors.PairKey(class, command), device)
}

// classCommandOthers is ClassCommandDevices as of event time t: none when
// every device the class (or model) learned with the command issued it at t
// or later (the class learned it from events after t: another partition
// ahead in event time).
func (s *Stats) classCommandOthers(class, command, device uint64, t int64) float64 {
	key := detectors.PairKey(class, command)
	others := s.commands.Devices(key, device)
	if others > 0 && s.firstCmd.learnedAfter(key, t) {
		return 0
	}
	return others
}

// classCommandNew reports whether the class (or model) first issued command
// less than AdoptWindow before event time t: something new to it spreading.
func (s *Stats) classCommandNew(class, command uint64, t int64) bool {
	first := s.firstCmd.first(detectors.PairKey(class, command))
	return first != 0 && t-first < AdoptWindow*1e9
}

// classTransitionOthers is ClassTransitionDevices as of event time t (see
// classCommandOthers).
func (s *Stats) classTransitionOthers(class, prev, command, device uint64, t int64) float64 {
	key := transitionKey(class, prev, command)
	others := s.transitions.Devices(key, device)
	if others > 0 && s.firstStep.learnedAfter(key, t) {
		return 0
	}
	return others
}

// ClassTransitionDevices estimates how many distinct devices of the class (or
// model), other than device, issued command right after prev (the CommandID
// of the previous command).
func (s *Stats) ClassTransitionDevices(class, prev, command, device uint64) float64 {
	return s.transitions.Devices(transitionKey(class, prev, command), device)
}

// ClassAdopters estimates how many distinct devices of the class, other
// than device, adopted command in the AdoptWindow of event time t or the one
// before: issued it for the first time, after their warm-up, from their home
// networks. Many at once is a rollout.
func (s *Stats) ClassAdopters(class, command, device uint64, t int64) float64 {
	return s.adopted.devices(detectors.PairKey(class, command), device, t)
}

// ClassParam returns the range the class learned for the numeric argument
// name (a schemas.Arg Key) of command; the zero ParamRange if none. Values
// the range judged out of it were not learned.
func (s *Stats) ClassParam(class, command, name uint64) detectors.ParamRange {
	return s.params.ClassParam(class, command, name)
}

// Learn implements detectors.ClassStats: ev's device issued ev's command in
// its class and model, its numeric arguments (those in range), its response's
// size (when it carries content: within SizeLearnK scales), and the
// transition from the device's previous command, the last one recorded in
// before (none: no transition); and, when before shows that the device
// adopted the command (see adopting), the adoption.
func (s *Stats) Learn(ev *schemas.Event, before []byte) {
	s.commands.Learn(detectors.PairKey(ev.ClassKey, ev.CommandID), ev.DeviceKey)
	s.firstCmd.learn(detectors.PairKey(ev.ClassKey, ev.CommandID), ev.Time)
	if adopting(ev, before) {
		s.adopted.learn(detectors.PairKey(ev.ClassKey, ev.CommandID), ev.DeviceKey, ev.Time)
		s.adopted.learn(detectors.PairKey(ev.ClassKey, anyCommand), ev.DeviceKey, ev.Time)
		if ev.HasModel() {
			s.adopted.learn(detectors.PairKey(ev.ModelKey, ev.CommandID), ev.DeviceKey, ev.Time)
			s.adopted.learn(detectors.PairKey(ev.ModelKey, anyCommand), ev.DeviceKey, ev.Time)
		}
	}
	if ev.HasModel() {
		s.commands.Learn(detectors.PairKey(ev.ModelKey, ev.CommandID), ev.DeviceKey)
		s.firstCmd.learn(detectors.PairKey(ev.ModelKey, ev.CommandID), ev.Time)
	}
	s.params.Learn(ev)
	if sizeJudged(ev) {
		s.params.LearnValue(ev.ClassKey, ev.CommandID, sizeKey(ev), detectors.Log1pCount(float64(ev.BytesOut)), SizeLearnK, ev.DeviceKey)
	}
	if prev := lastCommand(before); prev != 0 {
		s.transitions.Learn(transitionKey(ev.ClassKey, prev, ev.CommandID), ev.DeviceKey)
		s.firstStep.learn(transitionKey(ev.ClassKey, prev, ev.CommandID), ev.Time)
		if ev.HasModel() {
			s.transitions.Learn(transitionKey(ev.ModelKey, prev, ev.CommandID), ev.DeviceKey)
			s.firstStep.learn(transitionKey(ev.ModelKey, prev, ev.CommandID), ev.Time)
		}
	}
}

// MergeFrom implements detectors.ClassMerger: other's command and
// transition sketches OR into s's, its first times by minimum, and its
// adoptions merge window by window (see adoptions.mergeFrom). The argument ranges are not merged: they stay
// each instance's own.
func (s *Stats) MergeFrom(other detectors.ClassStats) {
	o := other.(*Stats)
	s.commands.MergeFrom(o.commands)
	s.transitions.MergeFrom(o.transitions)
	s.adopted.mergeFrom(o.adopted)
	s.firstCmd.mergeFrom(o.firstCmd)
	s.firstStep.mergeFrom(o.firstStep)
}

// SetOverlay implements detectors.ClassMerger: ClassCommandDevices,
// ClassTransitionDevices and ClassAdopters count the overlay's devices too.
func (s *Stats) SetOverlay(o detectors.ClassStats) {
	if o, ok := o.(*Stats); ok && o != nil {
		s.commands.SetOverlay(o.commands)
		s.transitions.SetOverlay(o.transitions)
		s.adopted.overlay.Store(o.adopted)
		s.firstCmd.overlay.Store(o.firstCmd)
		s.firstStep.overlay.Store(o.firstStep)
		return
	}
	s.commands.SetOverlay(nil)
	s.transitions.SetOverlay(nil)
	s.adopted.overlay.Store(nil)
	s.firstCmd.overlay.Store(nil)
	s.firstStep.overlay.Store(nil)
}

// lastCommand returns the CommandID of the last command Observe recorded in
// b, 0 if none.
func lastCommand(b []byte) uint64 {
	if len(b) < StateSize {
		return 0
	}
	return binary.LittleEndian.Uint64(b[lastOff:])
}

// Saturated returns how many learn calls found a table full.
func (s *Stats) Saturated() uint64 {
	return s.commands.Saturated() + s.transitions.Saturated() + s.params.Saturated() + s.adopted.saturated.Load() +
		s.firstCmd.saturated.Load() + s.firstStep.saturated.Load()
}

// statsVersion versions the snapshot of Stats (1: commands, transitions,
// argument ranges, as the class table's version 5 held them; 2: and
// adoptions; 3: and first times of commands and transitions).
const statsVersion = 3

// The snapshot holds the commands' and the transitions' sketches and the
// argument ranges (their AppendWords), then the other arrays (rest).
func (s *Stats) rest() [][]atomic.Uint64 {
	a := append(s.adopted.arrays(), s.firstCmd.arrays()...)
	return append(a, s.firstStep.arrays()...)
}

// AppendSnapshot implements detectors.ClassStats.
func (s *Stats) AppendSnapshot(dst []byte) []byte {
	dst = detectors.AppendStatsHeader(dst, statsVersion, s.classes.CommandSlots())
	dst = s.commands.AppendWords(dst)
	dst = s.transitions.AppendWords(dst)
	dst = s.params.AppendWords(dst)
	return detectors.AppendWords(dst, s.rest()...)
}

// LoadSnapshot implements detectors.ClassStats.
func (s *Stats) LoadSnapshot(b []byte) error {
	rest, err := detectors.ReadStatsHeader(b, "command statistics", statsVersion, s.classes.CommandSlots())
	if err != nil {
		return err
	}
	c, tr, pr := 8*s.commands.Words(), 8*s.transitions.Words(), 8*s.params.Words()
	if want := c + tr + pr + 8*words(s.rest()); len(rest) != want {
		return fmt.Errorf("cannot load command statistics: %d bytes, want %d", len(rest), want)
	}
	// The length is right: no part fails, none is loaded without the others.
	for _, err := range []error{
		s.commands.LoadWords(rest[:c]),
		s.transitions.LoadWords(rest[c : c+tr]),
		s.params.LoadWords(rest[c+tr : c+tr+pr]),
		detectors.LoadWords(rest[c+tr+pr:], s.rest()...),
	} {
		if err != nil {
			return fmt.Errorf("cannot load command statistics: %w", err)
		}
	}
	return nil
}

// words counts the words of arrays.
func words(arrays [][]atomic.Uint64) int {
	n := 0
	for _, a := range arrays {
		n += len(a)
	}
	return n
}
