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

// Fleet is the read-only view of class-level statistics that Observe gets:
// the class identity every detector shares (ClassTable) and, for a detector
// whose Spec has Stats, its own class statistics, which then are the view
// (the detector reads them with a type assertion, not a lookup). Values may
// lag the events being scored by a few milliseconds.
//
// Class statistics count distinct devices, not events: one device, however
// many requests it sends, counts once. An attacker driving one device (or one
// stolen key) therefore cannot make its commands look normal for the class,
// while a fleet-wide change of behaviour (vehicles starting their day) is
// learned after a few devices.
type Fleet interface {
	// ClassDevices estimates how many distinct devices of the class were seen.
	ClassDevices(class uint64) float64
	// ClassSince returns the earliest event time (Unix ns) learned for the
	// class, 0 if none: with ClassDevices, how established the class is.
	ClassSince(class uint64) int64
}

// ClassStats is what a detector learns of classes from every device's
// events (commands, countries, rates): its own, kept in its package, made by
// its Spec's Stats. A pipeline has one instance per detector, shared by every
// worker (ClassModel), so all methods must be safe for concurrent use.
//
// It is the Fleet view the detector's Observe gets: ClassDevices and
// ClassSince answer from the class table it was made with.
type ClassStats interface {
	Fleet
	// Learn teaches ev, after every detector observed it, on the worker that
	// owns ev's device (one writer per device), unless ev is a redelivery
	// already learned. before is the detector's state slice as it was before
	// Observe of ev (the device's previous command, say); Learn must not
	// modify or retain it or ev, and must not allocate.
	Learn(ev *schemas.Event, before []byte)
	// AppendSnapshot appends the statistics to dst, versioned by the detector;
	// LoadSnapshot replaces them with a snapshot AppendSnapshot made, or
	// returns an error and leaves them unchanged (a checkpoint then restores
	// the detector without them: it relearns its classes).
	AppendSnapshot(dst []byte) []byte
	LoadSnapshot(b []byte) error
}

// ClassMerger is implemented by the ClassStats of a detector whose class
// statistics are merged across scorer instances (see ClassModel.Merge and
// merge.go): what the other instances' devices taught is added to what its
// Fleet view reads, so that a class sees all its devices. A detector whose
// statistics do not implement it stays instance-local.
//
// The statistics s keep two parts: their own learning (what Learn writes and
// AppendSnapshot saves: this instance's contribution, never the merge) and an
// overlay, read-only, built off the hot path from the others' contributions.
// Reads combine both as the structure allows (sketches OR, earliest times
// take the minimum, windows align); a detector documents its rule per
// structure.
type ClassMerger interface {
	ClassStats
	// MergeFrom adds other's own learning (statistics of the same detector
	// and sizes, loaded from another instance's snapshot) to s's own
	// learning: it is called on an accumulator that no worker uses, never on
	// live statistics. It must not retain other.
	MergeFrom(other ClassStats)
	// SetOverlay makes o (an accumulator MergeFrom filled, of the same
	// detector and sizes) the overlay s's reads add to its own learning,
	// replacing the previous one; nil removes it. Safe while workers learn
	// and read: the overlay is swapped through an atomic pointer, and o must
	// not be written after.
	SetOverlay(o ClassStats)
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
	// Version versions the detector's state slice: change it whenever the
	// meaning of the bytes changes. A checkpoint restores a detector's slice
	// only into a detector of the same name, StateSize and Version; otherwise
	// that detector alone cold-starts.
	Version uint32
	// Reasons lists every reason the detector can return, each declared as a
	// constant in the detector's package: snake_case, unique across
	// detectors, and none of schemas' own (ReasonNone, ReasonAllowlisted, ...).
	Reasons []string
	// Absolute lists the reasons, among Reasons, that are absolute evidence:
	// judged against fixed bounds no benign client of any kind reaches (a
	// request for a known-bad path, dozens of authentication failures in
	// minutes), not against the identity's own baseline. They alone judge
	// and can block a client that is no device identity (Subject.Device is
	// false: an address, a person's or a script's login; package decide).
	Absolute []string
	// Shapes, optional, turn random events into events of the kind this
	// detector judges (a rare status code, a command word, an argument). The
	// conformance tests apply every registered detector's shapes to their
	// stream of random events, so that random state meets the events that
	// make this detector fire, and every other detector meets them too.
	Shapes []Shape
	// New returns a detector with default parameters.
	New func() Detector
	// Stats, when set, returns new, empty class statistics of the detector
	// over classes (its class identity and sizes: CommandSlots, ClassSlots);
	// see ClassStats. Nil for a detector that learns nothing of classes: its
	// Observe gets the class table as its Fleet view.
	Stats func(classes *ClassTable) ClassStats
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
	for _, r := range s.Absolute {
		if !slices.Contains(s.Reasons, r) {
			panic(fmt.Sprintf("BUG: detector %q declares absolute reason %q that is not among its reasons", s.Name, r))
		}
		absolute[r] = true
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
