// Package detectors holds the detector contract, the registry every detector
// registers into from init(), and the read-only fleet view detectors may consult.
//
// A detector is a pure, deterministic function of (event, the device's state
// record, a read-only fleet view) that returns a Finding. It never reads the wall
// clock (it uses ev.Time), never logs, never allocates on the per-event path and
// never keeps references to ev or state. That is what makes replay, golden tests
// and checkpoints exact. Each detector lives in its own package under detectors/
// and registers itself; detectors/all imports them all.
package detectors

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/iotwatch/iotwatch/schemas"
)

// Detector judges one event.
type Detector interface {
	// Observe scores ev against state and updates state in place.
	//
	// state is exactly the declared StateSize bytes of this device's record; all
	// zeros means "no history" (a new device, or one whose record expired or was
	// written by an incompatible version). Observe must not retain ev, state or
	// fleet, must not allocate, and must return a Finding whose Reason is
	// ReasonNone (score 0) or one of the declared reasons, with Score in [0,1].
	Observe(ev *schemas.Event, state []byte, fleet Fleet) schemas.Finding
}

// Fleet is a read-only view of class-level statistics shared by all workers.
// Values may lag the events being scored by a few milliseconds.
//
// Class statistics count distinct devices, not events: one device, however
// many requests it sends, counts once. An attacker driving one device (or one
// stolen key) therefore cannot make its commands look normal for the class,
// while a fleet-wide change of behaviour (vehicles starting their day) is
// learned after a few devices.
type Fleet interface {
	// ClassCommandDevices estimates how many distinct devices of the class,
	// other than device (a DeviceKey), issued the command.
	ClassCommandDevices(class, command, device uint64) float64
	// ClassDevices estimates how many distinct devices of the class were seen.
	ClassDevices(class uint64) float64
	// ClassTransitionDevices estimates how many distinct devices of the class,
	// other than device, issued command right after prev (an identifier of
	// the previous command, as a CommandTracker records it).
	ClassTransitionDevices(class, prev, command, device uint64) float64
	// ClassCountryDevices estimates how many distinct devices of the class,
	// other than device, were seen in the country.
	ClassCountryDevices(class uint64, country schemas.Country, device uint64) float64
	// ClassASNDevices estimates how many distinct devices of the class, other
	// than device, were seen in the autonomous system asn.
	ClassASNDevices(class uint64, asn uint32, device uint64) float64
	// ClassSince returns the earliest event time (Unix ns) learned for the
	// class, 0 if none: with ClassDevices, how established the class is.
	ClassSince(class uint64) int64
	// ClassParam returns the range the class learned for the numeric
	// argument name (a schemas.Arg Key) of command; the zero ParamRange if
	// none. Values the range judged out of it were not learned.
	ClassParam(class, command, name uint64) ParamRange
}

// CommandTracker is implemented by a detector that records each device's last
// command in its state, so that the worker can teach the fleet view the
// device's transitions (ClassTable.LearnTransition) without a state of its own.
type CommandTracker interface {
	// LastCommand returns an identifier of the last command recorded in state
	// (before Observe of the current event: the device's previous command),
	// or 0 when there is none. It must not allocate or retain state.
	LastCommand(state []byte) uint64
}

// FindCommandTracker returns the index in dets of the first detector that is a
// CommandTracker, and the tracker, or -1 and nil.
func FindCommandTracker(dets []Detector) (int, CommandTracker) {
	for i, d := range dets {
		if t, ok := d.(CommandTracker); ok {
			return i, t
		}
	}
	return -1, nil
}

// Spec describes a detector for the registry.
type Spec struct {
	// Name is the detector's Name constant, declared in its own package
	// (volume.Name): unique, snake_case and user-facing.
	Name string
	// Doc is one paragraph for the generated catalog and --help.
	Doc string
	// StateSize is the number of bytes of per-device state the detector needs.
	StateSize int
	// Reasons lists every reason the detector can return, each declared as a
	// constant in the detector's package: snake_case, unique across
	// detectors, and none of schemas' own (ReasonNone, ReasonAllowlisted, ...).
	Reasons []string
	// Shapes, optional, turn random events into events of the kind this
	// detector judges (a rare status code, a command word, an argument). The
	// conformance tests apply every registered detector's shapes to their
	// stream of random events, so that random state meets the events that
	// make this detector fire, and every other detector meets them too.
	Shapes []Shape
	// New returns a detector with default parameters.
	New func() Detector
}

// Shape rewrites some fields of ev, a random event of a random device, into
// an event of the kind a detector judges, drawing any values from rng. It is
// test support declared with the detector (Spec.Shapes): it is not called in
// production.
type Shape func(rng *rand.Rand, ev *schemas.Event)

var (
	regMu    sync.Mutex
	registry = map[string]Spec{}
)

// Register adds a detector. It is meant to be called from init(); a duplicate or
// malformed spec panics, because it is a programming error found at start-up.
func Register(s Spec) {
	regMu.Lock()
	defer regMu.Unlock()
	if s.Name == "" || s.New == nil || s.StateSize <= 0 || len(s.Reasons) == 0 {
		panic(fmt.Sprintf("BUG: detector spec %q is incomplete", s.Name))
	}
	if _, dup := registry[s.Name]; dup {
		panic(fmt.Sprintf("BUG: detector %q registered twice", s.Name))
	}
	registry[s.Name] = s
}

// All returns every registered detector, sorted by name.
func All() []Spec {
	regMu.Lock()
	defer regMu.Unlock()
	out := make([]Spec, 0, len(registry))
	for _, s := range registry {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Spec) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Lookup returns the registered detector with the given name.
func Lookup(name string) (Spec, bool) {
	regMu.Lock()
	defer regMu.Unlock()
	s, ok := registry[name]
	return s, ok
}

// Names returns the names of all registered detectors, sorted.
func Names() []string {
	all := All()
	names := make([]string, len(all))
	for i, s := range all {
		names[i] = s.Name
	}
	return names
}
