// Package testids compares the ids a disturbed run stored or published with
// those of an undisturbed control run: the check the crash, fault and cluster
// tests share ("nothing lost, nothing invented").
package testids

import (
	"slices"
	"testing"
)

// Compare fails t when got and want, both sorted, differ, naming up to five
// ids on each side. what names the ids ("alerts in ClickHouse") and after the
// disturbance ("after the crash").
func Compare(t testing.TB, what, after string, got, want []string) {
	t.Helper()
	var extra, missing []string
	for _, id := range got {
		if _, ok := slices.BinarySearch(want, id); !ok {
			extra = append(extra, id)
		}
	}
	for _, id := range want {
		if _, ok := slices.BinarySearch(got, id); !ok {
			missing = append(missing, id)
		}
	}
	if len(extra) > 0 || len(missing) > 0 {
		t.Errorf("%s: %d %s, %d in the control run: %d not in the control run (%q), %d missing (%q)",
			what, len(got), after, len(want), len(extra), extra[:min(5, len(extra))], len(missing), missing[:min(5, len(missing))])
	}
}
