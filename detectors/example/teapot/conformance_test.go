package teapot_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	_ "github.com/iotwatch/iotwatch/detectors/all" // the production detectors, next to the teapot
	"github.com/iotwatch/iotwatch/detectors/conformance"
	"github.com/iotwatch/iotwatch/detectors/example/teapot"
	"github.com/iotwatch/iotwatch/detectors/scenario"
)

// TestConformance runs the conformance checks with the teapot registered next
// to the production detectors, as a file detectors/all/teapot.go would
// register it: the teapot passes them with nothing but its package, and every
// production detector still passes them (the state budget, the uniqueness of
// names and reasons, the random stream with the teapot's shapes).
func TestConformance(t *testing.T) {
	if _, ok := detectors.Lookup(teapot.Name); !ok || len(detectors.All()) < 2 {
		t.Fatalf("registered: %q; want the teapot and the production detectors", detectors.Names())
	}
	conformance.Run(t)
}

// TestCrossDetectorScenarios runs the scenarios of detectors/testdata, which
// drive every registered detector through one record per device, with the
// teapot registered too: a new detector in the layout changes no other
// detector's findings.
func TestCrossDetectorScenarios(t *testing.T) { scenario.RunDir(t, "../../testdata") }
