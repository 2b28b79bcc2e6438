package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
)

// TestDetectorsCmd checks that 'iotwatch detectors' lists every registered
// detector with its state size and reasons, and the total against the budget.
func TestDetectorsCmd(t *testing.T) {
	for _, args := range [][]string{{"detectors"}, {"detectors", "--markdown"}} {
		var out, errOut bytes.Buffer
		if code := mainExit(args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
		text := out.String()
		total := 0
		for _, s := range detectors.All() {
			total += s.StateSize
			for _, want := range append([]string{s.Name, s.Doc[:40]}, s.Reasons...) {
				if !strings.Contains(text, want) {
					t.Errorf("%v: output lacks %q", args, want)
				}
			}
		}
		if want := fmt.Sprintf("%d of %d", total, detectors.StateBudget); !strings.Contains(text, want) {
			t.Errorf("%v: output lacks the total %q:\n%s", args, want, text)
		}
	}
	var out, errOut bytes.Buffer
	if code := mainExit([]string{"detectors", "extra"}, &out, &errOut); code != 2 {
		t.Errorf("an unexpected argument exits %d; want 2", code)
	}
}
