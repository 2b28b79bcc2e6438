package all_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	_ "github.com/iotwatch/iotwatch/detectors/all"
)

// TestOneFilePerDetector checks that the registry this package builds is
// exactly one detector per file, each file named after its detector: adding a
// detector adds one file, and nothing else registers one in the binary.
func TestOneFilePerDetector(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".go")
		if !ok || name == "doc" || strings.HasSuffix(name, "_test") {
			continue
		}
		files = append(files, name)
	}
	slices.Sort(files)
	if names := detectors.Names(); !slices.Equal(files, names) {
		t.Errorf("registered detectors %q; want one per file of detectors/all: %q", names, files)
	}
}
