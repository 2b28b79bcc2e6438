// Package conformance checks the detector contract (detectors.Detector) for
// every registered detector. It is test support, like scenario: a test that
// has registered detectors (by importing detectors/all, or a detector's own
// package) calls Run.
//
// Everything it needs comes from the registry: each detector's Spec (name,
// reasons, state size, optional event Shapes) and its golden scenarios, found
// next to its package (scenario.Dir). So a new detector gets the checks for
// free, and adding one changes no other detector's checks:
//
//   - Registry: names and reasons are snake_case, unique across detectors and
//     none of schemas' own reasons; the state sizes fit detectors.StateBudget.
//   - Witnesses: every declared reason is produced by one of the detector's
//     own golden scenarios (<package>/testdata/*.txt).
//   - RandomEvents: 20,000 random events (with every registered detector's
//     Shapes) on random state (NaN, Inf, garbage) never panic, never write
//     outside the state slice, and only return declared reasons with finite
//     values and scores in (0,1].
//   - DeterministicReplay: the events of the detector's scenarios, replayed
//     twice from zero state, give identical findings and state bytes, and the
//     findings the scenarios gave.
//   - NoAllocations: Observe does not allocate on those events, attacks
//     included.
//   - Rearm: a detectors.Rearmer keeps the zero state zero, is idempotent,
//     stays within its state and does not allocate.
package conformance

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/schemas"
)

// Run runs every check of the package as a subtest.
func Run(t *testing.T) {
	t.Run("Registry", Registry)
	t.Run("Witnesses", Witnesses)
	t.Run("RandomEvents", RandomEvents)
	t.Run("DeterministicReplay", DeterministicReplay)
	t.Run("NoAllocations", NoAllocations)
	t.Run("Rearm", Rearm)
}

// snake matches a detector or reason name.
var snake = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// pipelineReasons are schemas' own reasons, which no detector may declare.
var pipelineReasons = []string{schemas.ReasonAllowlisted, schemas.ReasonBlockCapHit, schemas.ReasonBlockedDeviceAddress, schemas.ReasonAnalystUnblock}

// Registry checks the registry as a whole: every spec is complete and
// documented, names and reasons are snake_case and unique across detectors
// (a reason names a cause in dashboards whatever the detector), and the
// state sizes sum to at most detectors.StateBudget.
func Registry(t *testing.T) {
	all := detectors.All()
	if len(all) == 0 {
		t.Fatal("no detector is registered")
	}
	total := 0
	owner := map[string]string{} // reason → detector
	for _, s := range all {
		total += s.StateSize
		if !snake.MatchString(s.Name) {
			t.Errorf("%s: name %q is not snake_case", s.Name, s.Name)
		}
		if len(s.Doc) < 80 {
			t.Errorf("%s: Doc is too short to explain the detector: %q", s.Name, s.Doc)
		}
		for _, r := range s.Reasons {
			switch {
			case r == schemas.ReasonNone:
				t.Errorf("%s: declares the empty reason", s.Name)
			case !snake.MatchString(r):
				t.Errorf("%s: reason %q is not snake_case", s.Name, r)
			case slices.Contains(pipelineReasons, r):
				t.Errorf("%s: reason %q is one of the pipeline's own (schemas)", s.Name, r)
			case owner[r] == s.Name:
				t.Errorf("%s: reason %q is declared twice", s.Name, r)
			case owner[r] != "":
				t.Errorf("%s: reason %q is already declared by %s", s.Name, r, owner[r])
			}
			owner[r] = s.Name
		}
		if s.New() == nil {
			t.Errorf("%s: New returned nil", s.Name)
		}
	}
	if total > detectors.StateBudget {
		t.Errorf("state sizes sum to %d bytes; the budget is detectors.StateBudget, %d", total, detectors.StateBudget)
	}
}

// Check fails t when f, returned by s's detector, breaks the Detector
// contract: non-finite observed or expected values, a score without a reason,
// an undeclared reason, another detector's name, a score outside (0,1].
func Check(t testing.TB, s detectors.Spec, f schemas.Finding, what string) {
	t.Helper()
	if math.IsNaN(float64(f.Observed)) || math.IsInf(f.Observed, 0) ||
		math.IsNaN(f.Expected) || math.IsInf(f.Expected, 0) {
		t.Fatalf("%s %s: observed/expected not finite: %+v", s.Name, what, f)
	}
	if f.Reason == schemas.ReasonNone {
		if f.Score != 0 {
			t.Fatalf("%s %s: score %v without a reason", s.Name, what, f.Score)
		}
		return
	}
	if !slices.Contains(s.Reasons, f.Reason) {
		t.Fatalf("%s %s: undeclared reason %q", s.Name, what, f.Reason)
	}
	if f.Detector != s.Name {
		t.Fatalf("%s %s: finding names detector %q", s.Name, what, f.Detector)
	}
	if !(f.Score > 0 && f.Score <= 1) {
		t.Fatalf("%s %s: score %v not in (0,1] with reason %q", s.Name, what, f.Score, f.Reason)
	}
}

// scenarios returns the paths of s's golden scenarios; it fails t when there
// are none, since they are the witnesses of s's reasons.
func scenarios(t *testing.T, s detectors.Spec) []string {
	t.Helper()
	dir, err := scenario.Dir(s)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("%s: no golden scenario in %s: every detector brings scenarios that witness its reasons",
			s.Name, filepath.Join(dir, "testdata"))
	}
	return files
}

// Witnesses checks that every declared reason is produced by at least one of
// the detector's golden scenarios (<package>/testdata/*.txt), run with that
// detector alone: a detector brings its witnesses in its own package, no
// shared list to edit.
func Witnesses(t *testing.T) {
	for _, s := range detectors.All() {
		t.Run(s.Name, func(t *testing.T) {
			seen := map[string]int{}
			for _, path := range scenarios(t, s) {
				r, err := scenario.Replay(path, s.Name)
				if err != nil {
					t.Fatal(err)
				}
				for k, n := range r.Seen() {
					seen[k] += n
				}
			}
			for _, reason := range s.Reasons {
				if seen[s.Name+"/"+reason] == 0 {
					t.Errorf("%s: no golden scenario produces reason %q (seen: %v)", s.Name, reason, seen)
				}
			}
		})
	}
}

// stepper replays scenario steps on one detector, as the worker did for the
// scenario Runner: from zero records and an empty class model, each event
// observed on its device's record, then learned by the model with the record
// as it was before.
type stepper struct {
	d       detectors.Detector
	model   *detectors.ClassModel
	records [][]byte
	before  []byte
}

func newStepper(s detectors.Spec, steps []scenario.Step) *stepper {
	st := &stepper{d: s.New(), model: scenario.NewModel(s), before: make([]byte, s.StateSize)}
	for _, step := range steps {
		for step.Record >= len(st.records) {
			st.records = append(st.records, make([]byte, s.StateSize))
		}
	}
	return st
}

// apply replays step; the finding is meaningful for OpScore only.
func (st *stepper) apply(step *scenario.Step) schemas.Finding {
	rec := st.records[step.Record]
	if step.Op == scenario.OpEvict {
		clear(rec)
		return schemas.Finding{}
	}
	copy(st.before, rec)
	f := st.d.Observe(&step.Event, rec, st.model.Fleet(0))
	st.model.Learn(&step.Event, st.before)
	return f
}

// replay scores steps with a new detector of s from zero records and an
// empty class model, as the scenario Runner did, and returns the findings
// (one per scored event) and the final records.
func replay(t *testing.T, s detectors.Spec, steps []scenario.Step) ([]schemas.Finding, [][]byte) {
	st := newStepper(s, steps)
	var out []schemas.Finding
	for i := range steps {
		f := st.apply(&steps[i])
		if steps[i].Op == scenario.OpScore {
			Check(t, s, f, fmt.Sprintf("step %d", i))
			out = append(out, f)
		}
	}
	return out, st.records
}

// DeterministicReplay replays the events of each of the detector's golden
// scenarios twice from zero state and checks that the findings and the state
// bytes are identical, and that they are the findings the scenario gave.
func DeterministicReplay(t *testing.T) {
	for _, s := range detectors.All() {
		t.Run(s.Name, func(t *testing.T) {
			n := 0
			for _, path := range scenarios(t, s) {
				r, err := scenario.Replay(path, s.Name)
				if err != nil {
					t.Fatal(err)
				}
				f1, s1 := replay(t, s, r.Steps())
				f2, s2 := replay(t, s, r.Steps())
				if !slices.Equal(f1, f2) || !slices.EqualFunc(s1, s2, bytes.Equal) {
					t.Fatalf("%s: two replays of the same events from zero state differ", path)
				}
				seen := map[string]int{}
				for _, f := range f1 {
					if f.Reason != schemas.ReasonNone {
						seen[f.Detector+"/"+f.Reason]++
						n++
					}
				}
				if !maps.Equal(seen, r.Seen()) {
					t.Fatalf("%s: replayed steps found %v; the scenario found %v", path, seen, r.Seen())
				}
			}
			if n == 0 {
				t.Fatalf("the detector's scenarios witness its reasons but their replay produced no finding")
			}
		})
	}
}

// NoAllocations checks that Observe does not allocate on the events of the
// detector's golden scenarios, attacks included.
func NoAllocations(t *testing.T) {
	for _, s := range detectors.All() {
		t.Run(s.Name, func(t *testing.T) {
			for _, path := range scenarios(t, s) {
				r, err := scenario.Replay(path, s.Name)
				if err != nil {
					t.Fatal(err)
				}
				steps := r.Steps()
				if len(steps) == 0 {
					continue
				}
				st := newStepper(s, steps)
				i := 0
				allocs := testing.AllocsPerRun(len(steps), func() {
					st.apply(&steps[i%len(steps)])
					i++
				})
				if allocs != 0 {
					t.Fatalf("%s: Observe allocates %v times per event; want 0", path, allocs)
				}
			}
		})
	}
}

var commands = []string{
	"POST /v1/devices/d-1/readings", "GET /v1/devices/d-1/status", "GET /v1/devices/d-2/status",
	"POST /v1/devices/d-1/unlock", "PUT /v1/devices/d-1/firmware", "GET /v1/devices/d-1/config",
	"PUBLISH devices/d-1/telemetry", "POST /v1/ota/x1/start", "", "GET /",
}

// argNames are the argument names random events draw from.
var argNames = []string{"temp", "fan", "x"}

// randomEvent fills ev with anything a decoder could produce and more: times
// out of order and at the int64 extremes, unknown enum values, odd countries.
func randomEvent(rng *rand.Rand, ev *schemas.Event, base int64) {
	ev.Reset()
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetClass([]byte(fmt.Sprintf("class-%d", rng.IntN(3))))
	switch rng.IntN(8) {
	case 0:
		ev.Time = int64(rng.Uint64())
	case 1:
		ev.Time = base - rng.Int64N(1e12)
	default:
		ev.Time = base + rng.Int64N(1e12)
	}
	if rng.IntN(4) == 0 {
		cmd := make([]byte, rng.IntN(40))
		for i := range cmd {
			cmd[i] = byte(rng.UintN(256))
		}
		ev.SetCommand(cmd)
	} else {
		c, res := schemas.Normalizer{}.Append(nil, nil, []byte(commands[rng.IntN(len(commands))]))
		ev.SetCommand(c)
		ev.Resource = res
	}
	if rng.IntN(4) == 0 {
		ev.Resource = rng.Uint64()
	}
	if rng.IntN(5) != 0 {
		ev.Country = schemas.Country{byte(rng.UintN(256)), byte(rng.UintN(256))}
	}
	ev.Status = uint16(rng.UintN(1 << 16))
	if rng.IntN(2) == 0 {
		ev.Status = uint16(200 + 100*rng.IntN(5) + rng.IntN(5))
	}
	ev.Auth = schemas.AuthOutcome(rng.UintN(6))
	for range rng.IntN(3) {
		// Arguments of every magnitude and sign (SetArg refuses NaN and infinities).
		v := (rng.Float64() - 0.5) * math.Pow(10, float64(rng.IntN(40)-10))
		switch rng.IntN(16) {
		case 0:
			v = math.NaN()
		case 1:
			v = math.Inf(1 - 2*rng.IntN(2))
		}
		ev.SetArg([]byte(argNames[rng.IntN(len(argNames))]), v)
	}
	ev.CommandID ^= uint64(rng.IntN(2)) * rng.Uint64()
}

// RandomEvents feeds each detector 20,000 random events on random state
// (random bytes, NaN, Inf and extreme float32 patterns, zeros). Every
// registered detector's Shapes are applied to half of the events (drawn
// from a random source of their own, so that the rest of the stream does not
// depend on which detectors are registered). Observe must never panic, write
// past its state or break the contract (Check), and must return more than
// one kind of finding, or the loop checked only the easy path.
func RandomEvents(t *testing.T) {
	const iterations = 20000
	var shapes []detectors.Shape
	for _, s := range detectors.All() {
		shapes = append(shapes, s.Shapes...)
	}
	for _, s := range detectors.All() {
		t.Run(s.Name, func(t *testing.T) {
			// The detector's own view: its class statistics, learning every
			// event with the (random) state as it was before, as the worker does.
			model := detectors.NewClassModel(detectors.NewLayout([]detectors.Spec{s}), detectors.NewClassTable(1024, 1024))
			before := make([]byte, s.StateSize)
			rng := rand.New(rand.NewPCG(42, uint64(len(s.Name))))
			shapeRNG := rand.New(rand.NewPCG(43, uint64(len(s.Name))))
			d := s.New()
			buf := make([]byte, s.StateSize+8)
			state := buf[:s.StateSize:s.StateSize]
			var ev schemas.Event
			base := scenario.Epoch.UnixNano()
			reasons := map[string]int{}
			for i := range iterations {
				switch rng.IntN(10) {
				case 0: // random bytes
					for j := range state {
						state[j] = byte(rng.UintN(256))
					}
				case 1: // random float32 bit patterns, NaN and Inf included
					for j := 0; j+4 <= len(state); j += 4 {
						v := math.Float32bits([]float32{float32(math.NaN()), float32(math.Inf(1)),
							float32(math.Inf(-1)), -1, 3e38, 1e-40}[rng.IntN(6)])
						state[j], state[j+1], state[j+2], state[j+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
					}
				case 2:
					clear(state)
				}
				randomEvent(rng, &ev, base)
				if len(shapes) > 0 && shapeRNG.IntN(2) == 0 {
					shapes[shapeRNG.IntN(len(shapes))](shapeRNG, &ev)
				}
				base += rng.Int64N(60e9)
				if r, ok := d.(detectors.Rearmer); ok && rng.IntN(10) == 0 {
					r.Rearm(state) // a block lifted: random state must survive it too
				}
				copy(before, state)
				f := d.Observe(&ev, state, model.Fleet(0))
				Check(t, s, f, fmt.Sprintf("iteration %d", i))
				reasons[f.Reason]++
				model.Learn(&ev, before)
				if !bytes.Equal(buf[s.StateSize:], make([]byte, 8)) {
					t.Fatalf("iteration %d: Observe wrote past its %d bytes of state", i, s.StateSize)
				}
			}
			if len(reasons) < 2 {
				t.Fatalf("random events produced only %v", reasons)
			}
			t.Logf("findings by reason: %v", reasons)
		})
	}
}

// Rearm checks every detector that is a detectors.Rearmer: the zero state
// (no history) stays zero, Rearm is idempotent, stays within the state and
// does not allocate, on the records the detector's golden scenarios leave.
func Rearm(t *testing.T) {
	for _, s := range detectors.All() {
		r, ok := s.New().(detectors.Rearmer)
		if !ok {
			continue
		}
		t.Run(s.Name, func(t *testing.T) {
			buf := make([]byte, s.StateSize+8)
			state := buf[:s.StateSize:s.StateSize]
			r.Rearm(state)
			if !bytes.Equal(buf, make([]byte, len(buf))) {
				t.Fatal("Rearm of the zero state (no history) wrote to it")
			}
			once := make([]byte, s.StateSize)
			for _, path := range scenarios(t, s) {
				rp, err := scenario.Replay(path, s.Name)
				if err != nil {
					t.Fatal(err)
				}
				_, states := replay(t, s, rp.Steps())
				for i, st := range states {
					copy(state, st)
					r.Rearm(state)
					copy(once, state)
					r.Rearm(state)
					if !bytes.Equal(state, once) {
						t.Fatalf("%s, record %d: Rearm is not idempotent", path, i)
					}
					if !bytes.Equal(buf[s.StateSize:], make([]byte, 8)) {
						t.Fatalf("%s, record %d: Rearm wrote past its %d bytes of state", path, i, s.StateSize)
					}
				}
				if allocs := testing.AllocsPerRun(10, func() { r.Rearm(state) }); allocs != 0 {
					t.Fatalf("%s: Rearm allocates %v times; want 0", path, allocs)
				}
			}
		})
	}
}
