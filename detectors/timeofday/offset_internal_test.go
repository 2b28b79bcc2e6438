package timeofday

import (
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestOffsetOfMatchesOffsets checks offsetOf, the table zoneHour reads,
// against the offsets map for every two-byte country code.
func TestOffsetOfMatchesOffsets(t *testing.T) {
	for a := range 256 {
		for b := range 256 {
			c := schemas.Country{byte(a), byte(b)}
			want, wantOK := offsets[c]
			got, ok := offsetOf(c)
			if ok != wantOK || got != int(want) {
				t.Fatalf("offsetOf(%q) = %d, %v; the map says %d, %v", c[:], got, ok, want, wantOK)
			}
		}
	}
}
