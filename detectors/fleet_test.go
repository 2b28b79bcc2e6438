package detectors

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestClassSnapshotVersions: a snapshot round trip keeps the classes (and
// models) and their ages; the versions that also held detectors'
// statistics (1-5, before each detector snapshotted its own), unknown
// versions, wrong sizes and truncated snapshots are refused and leave the
// table unchanged.
func TestClassSnapshotVersions(t *testing.T) {
	tab := NewClassTable(1024, 1024)
	var ev schemas.Event
	ev.SetClass([]byte("meter/x"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	for i := range 50 {
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", i))
		ev.Time = int64(1736121600e9) + int64(i)*1e9
		tab.Learn(&ev)
	}
	class := ev.ClassKey
	snap := tab.AppendSnapshot(nil)
	back := NewClassTable(1024, 1024)
	if err := back.LoadSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if a, b := tab.ClassDevices(class), back.ClassDevices(class); a != b || a < 40 {
		t.Errorf("class devices after a round trip: %v, before %v", b, a)
	}
	if a, b := tab.ClassSince(class), back.ClassSince(class); a != b || a == 0 {
		t.Errorf("class age after a round trip: %v, before %v", b, a)
	}
	empty := NewClassTable(1024, 1024)
	for _, v := range []uint32{1, 5, 9} {
		if err := empty.LoadSnapshot(append(binary.LittleEndian.AppendUint32(nil, v), snap[4:]...)); err == nil {
			t.Errorf("a version %d snapshot loaded", v)
		}
	}
	if err := empty.LoadSnapshot(snap[:len(snap)-8]); err == nil {
		t.Errorf("a truncated snapshot loaded")
	}
	if err := NewClassTable(1024, 4096).LoadSnapshot(snap); err == nil {
		t.Errorf("a snapshot of 1024 class slots loaded into a table of 4096")
	}
	if empty.ClassDevices(class) != 0 {
		t.Errorf("a refused snapshot changed the table")
	}
}

// TestLinearCountTable checks that the sizes LinearCount reads from a table
// give the computed estimate bit for bit, and that other sizes, and counts
// out of a table's range, are still computed.
func TestLinearCountTable(t *testing.T) {
	for _, m := range []int{64, 256, clsWords * 64, 128, 512} {
		for ones := -1; ones <= m+1; ones++ {
			got, want := LinearCount(m, ones), linearCount(m, ones)
			if math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("LinearCount(%d, %d) = %v, computed %v", m, ones, got, want)
			}
		}
	}
	if got, want := LinearCount(64, 64), 64*math.Log(64); got != want {
		t.Errorf("LinearCount(64, 64) = %v, want the ceiling %v", got, want)
	}
}
