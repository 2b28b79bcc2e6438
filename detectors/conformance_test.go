package detectors_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/conformance"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/schemas"
)

// The conformance tests (detectors/conformance) walk the registry: every
// registered detector gets them for free, with the witnesses of its reasons
// and the events of its replays taken from its own golden scenarios.

func TestRegistry(t *testing.T) {
	names := detectors.Names()
	for _, want := range []string{volume.Name, geo.Name, command.Name} {
		if !slices.Contains(names, want) {
			t.Errorf("detector %q is not registered; registered: %q", want, names)
		}
	}
	conformance.Registry(t)
}

// TestReasonWitnesses checks that every declared reason is produced by at
// least one of the detector's golden scenarios (<detector>/testdata/*.txt): a
// detector brings its witnesses in its own package, no shared list to edit.
func TestReasonWitnesses(t *testing.T) { conformance.Witnesses(t) }

func TestRandomEventsAndState(t *testing.T) { conformance.RandomEvents(t) }

func TestDeterministicReplay(t *testing.T) { conformance.DeterministicReplay(t) }

func TestObserveDoesNotAllocate(t *testing.T) { conformance.NoAllocations(t) }

func FuzzObserve(f *testing.F) {
	f.Add(int64(0), []byte{}, "POST /v1/devices/d-1/unlock", "DE", uint16(200), uint8(1), uint64(0))
	f.Add(int64(1736121600e9), bytes.Repeat([]byte{0xff}, 128), "GET /v1/devices/d-9/status", "FR", uint16(404), uint8(2), uint64(7))
	f.Add(int64(-1), bytes.Repeat([]byte{0x7f, 0x80, 0, 0}, 32), "", "\x00\x00", uint16(401), uint8(9), ^uint64(0))
	all := detectors.All()
	// One class model over every detector: each observes with its own view
	// and learns what it is fed, fuzzed state included.
	layout := detectors.NewLayout(all)
	model := detectors.NewClassModel(layout, detectors.NewClassTable(1024, 1024))
	before := make([]byte, layout.Size)
	f.Fuzz(func(t *testing.T, tm int64, state []byte, cmd, country string, status uint16, auth uint8, res uint64) {
		var ev schemas.Event
		ev.SetDevice([]byte("acme"), []byte("d-1"))
		ev.SetClass([]byte("meter/x"))
		ev.SetCommand([]byte(cmd))
		ev.Time, ev.Status, ev.Auth, ev.Resource = tm, status, schemas.AuthOutcome(auth), res
		if len(country) >= 2 {
			ev.Country = schemas.Country{country[0], country[1]}
		}
		for i, s := range all {
			st := make([]byte, s.StateSize)
			copy(st, state)
			d := s.New()
			for range 3 { // also from the state the first call wrote
				clear(before)
				copy(layout.State(before, i), st)
				conformance.Check(t, s, d.Observe(&ev, st, model.Fleet(i)), "fuzz")
				model.Learn(&ev, before)
				ev.Time += 1e9
			}
			ev.Time = tm
		}
	})
}

// Each detector's package README.md is generated from its Spec
// (detectors.PackageDoc) between these markers; -update rewrites it. A
// detector's description thus lives in its own package, and a new detector
// makes no shared document stale.
const (
	docBegin = "<!-- doc:begin (generated from the registry by go test ./detectors -update) -->\n"
	docEnd   = "<!-- doc:end -->\n"
)

func TestPackageDocs(t *testing.T) {
	for _, s := range detectors.All() {
		dir, err := scenario.Dir(s)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "README.md")
		want := docBegin + detectors.PackageDoc(s) + docEnd
		data, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		text := string(data)
		i, j := strings.Index(text, docBegin), strings.Index(text, docEnd)
		got := want
		if i >= 0 && j > i {
			got = text[:i] + want + text[j+len(docEnd):]
		} else if text != "" {
			got = want + "\n" + text // keep what the author wrote, after the generated part
		}
		if got == text {
			continue
		}
		if scenario.Updating() {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is missing or stale: run go test ./detectors -update", path)
	}
}

// TestScenariosAll runs the cross-detector scenarios in testdata/ with every
// registered detector.
func TestScenariosAll(t *testing.T) {
	scenario.RunDir(t, "testdata")
}
