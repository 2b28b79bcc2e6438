package detectors_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/schemas"
)

// The conformance tests walk the registry: every registered detector gets them
// for free, and a new detector fails them until it has witnesses for its reasons.

// maxStateTotal is the budget for the sum of all detectors' state sizes.
const maxStateTotal = 256

func TestRegistry(t *testing.T) {
	all := detectors.All()
	names := detectors.Names()
	for _, want := range []string{volume.Name, geo.Name, command.Name} {
		if !slices.Contains(names, want) {
			t.Errorf("detector %q is not registered; registered: %q", want, names)
		}
	}
	total := 0
	for _, s := range all {
		total += s.StateSize
		if len(s.Doc) < 80 {
			t.Errorf("%s: Doc is too short to explain the detector: %q", s.Name, s.Doc)
		}
		seen := map[string]bool{}
		for _, r := range s.Reasons {
			if r == schemas.ReasonNone || seen[r] {
				t.Errorf("%s: reason %q is empty or declared twice", s.Name, r)
			}
			seen[r] = true
		}
		if _, ok := s.New().(detectors.Detector); !ok {
			t.Errorf("%s: New returned nil", s.Name)
		}
	}
	if total > maxStateTotal {
		t.Errorf("state sizes sum to %d bytes; the budget is %d", total, maxStateTotal)
	}
}

// TestReasonWitnesses checks that every declared reason is produced by at
// least one of the detector's golden scenarios (<detector>/testdata/*.txt): a
// detector brings its witnesses in its own package, no shared list to edit.
func TestReasonWitnesses(t *testing.T) {
	for _, s := range detectors.All() {
		files, err := filepath.Glob(filepath.Join(s.Name, "testdata", "*.txt"))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, path := range files {
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
				t.Errorf("%s: no golden scenario in %s/testdata produces reason %q (seen: %v)", s.Name, s.Name, reason, seen)
			}
		}
	}
}

// check fails t when f breaks the Detector contract.
func check(t testing.TB, s detectors.Spec, f schemas.Finding, what string) {
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

var commands = []string{
	"POST /v1/devices/d-1/readings", "GET /v1/devices/d-1/status", "GET /v1/devices/d-2/status",
	"POST /v1/devices/d-1/unlock", "PUT /v1/devices/d-1/firmware", "GET /v1/devices/d-1/config",
	"PUBLISH devices/d-1/telemetry", "POST /v1/ota/x1/start", "", "GET /",
}

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

// argNames are the argument names random events draw from.
var argNames = []string{"temp", "fan", "x"}

func TestRandomEventsAndState(t *testing.T) {
	const iterations = 20000
	fleet := detectors.NewClassTable(1024, 1024)
	for _, s := range detectors.All() {
		t.Run(s.Name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, uint64(len(s.Name))))
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
				base += rng.Int64N(60e9)
				f := d.Observe(&ev, state, fleet)
				check(t, s, f, fmt.Sprintf("iteration %d", i))
				reasons[f.Reason]++
				fleet.Learn(&ev)
				if !bytes.Equal(buf[s.StateSize:], make([]byte, 8)) {
					t.Fatalf("iteration %d: Observe wrote past its %d bytes of state", i, s.StateSize)
				}
			}
			// Random state is mostly garbage, but some of it must look like
			// history worth a finding, or the loop checked only the easy path.
			if len(reasons) < 2 {
				t.Fatalf("random events produced only %v", reasons)
			}
			t.Logf("findings by reason: %v", reasons)
		})
	}
}

// stream is a plausible event sequence with attacks mixed in, for replay and
// allocation tests.
func stream(n int) []schemas.Event {
	rng := rand.New(rand.NewPCG(7, 7))
	evs := make([]schemas.Event, n)
	t := scenario.Epoch.UnixNano()
	for i := range evs {
		ev := &evs[i]
		ev.SetDevice([]byte("acme"), []byte("d-1"))
		ev.SetClass([]byte("meter/x"))
		raw, country, status, auth := "POST /v1/devices/d-1/readings", "DE", uint16(200), schemas.AuthOK
		step := int64(60e9)
		attack := i > n/2 && (i/50)%4 == 0
		if attack {
			step = 1e9
			switch (i / 200) % 4 {
			case 0:
				raw, status = fmt.Sprintf("GET /v1/devices/d-%d/status", i), 404
			case 1:
				raw, country = "POST /v1/devices/d-1/unlock", "FR"
			case 2:
				status, auth = 401, schemas.AuthFailed
			}
		}
		c, res := schemas.Normalizer{}.Append(nil, nil, []byte(raw))
		ev.SetCommand(c)
		ev.Resource = res
		ev.Country = schemas.Country{country[0], country[1]}
		ev.Status, ev.Auth = status, auth
		t += step/2 + rng.Int64N(step)
		ev.Time = t
	}
	return evs
}

func TestDeterministicReplay(t *testing.T) {
	evs := stream(4000)
	for _, s := range detectors.All() {
		t.Run(s.Name, func(t *testing.T) {
			run := func() ([]schemas.Finding, []byte) {
				d, fleet := s.New(), detectors.NewClassTable(1024, 1024)
				state := make([]byte, s.StateSize)
				var out []schemas.Finding
				for i := range evs {
					f := d.Observe(&evs[i], state, fleet)
					check(t, s, f, fmt.Sprintf("event %d", i))
					out = append(out, f)
					fleet.Learn(&evs[i])
				}
				return out, state
			}
			f1, s1 := run()
			f2, s2 := run()
			if !slices.Equal(f1, f2) || !bytes.Equal(s1, s2) {
				t.Fatalf("two replays of the same events from zero state differ")
			}
			n := 0
			for _, f := range f1 {
				if f.Reason != schemas.ReasonNone {
					n++
				}
			}
			if n == 0 {
				t.Fatalf("the replayed stream has attacks but produced no finding")
			}
		})
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	evs := stream(4000)
	for _, s := range detectors.All() {
		t.Run(s.Name, func(t *testing.T) {
			d, fleet := s.New(), detectors.NewClassTable(1024, 1024)
			state := make([]byte, s.StateSize)
			i := 0
			allocs := testing.AllocsPerRun(len(evs), func() {
				ev := &evs[i%len(evs)]
				d.Observe(ev, state, fleet)
				fleet.Learn(ev)
				i++
			})
			if allocs != 0 {
				t.Fatalf("Observe allocates %v times per event; want 0", allocs)
			}
		})
	}
}

func FuzzObserve(f *testing.F) {
	f.Add(int64(0), []byte{}, "POST /v1/devices/d-1/unlock", "DE", uint16(200), uint8(1), uint64(0))
	f.Add(int64(1736121600e9), bytes.Repeat([]byte{0xff}, 128), "GET /v1/devices/d-9/status", "FR", uint16(404), uint8(2), uint64(7))
	f.Add(int64(-1), bytes.Repeat([]byte{0x7f, 0x80, 0, 0}, 32), "", "\x00\x00", uint16(401), uint8(9), ^uint64(0))
	all := detectors.All()
	fleet := detectors.NewClassTable(1024, 1024)
	f.Fuzz(func(t *testing.T, tm int64, state []byte, cmd, country string, status uint16, auth uint8, res uint64) {
		var ev schemas.Event
		ev.SetDevice([]byte("acme"), []byte("d-1"))
		ev.SetClass([]byte("meter/x"))
		ev.SetCommand([]byte(cmd))
		ev.Time, ev.Status, ev.Auth, ev.Resource = tm, status, schemas.AuthOutcome(auth), res
		if len(country) >= 2 {
			ev.Country = schemas.Country{country[0], country[1]}
		}
		for _, s := range all {
			st := make([]byte, s.StateSize)
			copy(st, state)
			d := s.New()
			for range 3 { // also from the state the first call wrote
				check(t, s, d.Observe(&ev, st, fleet), "fuzz")
				ev.Time += 1e9
			}
			ev.Time = tm
		}
	})
}

// The catalog in README.md is generated from the registry; -update rewrites it.
const (
	catalogBegin = "<!-- catalog:begin (generated by go test ./detectors -update) -->\n"
	catalogEnd   = "<!-- catalog:end -->\n"
)

func catalog() string {
	var sb strings.Builder
	sb.WriteString(catalogBegin)
	sb.WriteString("\n| detector | state bytes | reasons |\n|---|---|---|\n")
	total := 0
	for _, s := range detectors.All() {
		fmt.Fprintf(&sb, "| `%s` | %d | `%s` |\n", s.Name, s.StateSize, strings.Join(s.Reasons, "`, `"))
		total += s.StateSize
	}
	fmt.Fprintf(&sb, "| total | %d | |\n", total)
	for _, s := range detectors.All() {
		fmt.Fprintf(&sb, "\n**%s**: %s\n", s.Name, s.Doc)
	}
	sb.WriteString("\n" + catalogEnd)
	return sb.String()
}

func TestCatalog(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i, j := strings.Index(text, catalogBegin), strings.Index(text, catalogEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no catalog markers %q ... %q", catalogBegin, catalogEnd)
	}
	got := text[:i] + catalog() + text[j+len(catalogEnd):]
	if got == text {
		return
	}
	if scenario.Updating() {
		if err := os.WriteFile("README.md", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's detector catalog is stale: run go test ./detectors -update")
}

// TestScenariosAll runs the cross-detector scenarios in testdata/ with every
// registered detector.
func TestScenariosAll(t *testing.T) {
	scenario.RunDir(t, "testdata")
}
