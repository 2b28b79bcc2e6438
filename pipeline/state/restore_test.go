package state

import (
	"testing"
)

// TestRestoreOrderDoesNotCluster reproduces issue 13's restore pathology at a
// size that runs quickly: records read out of one table in its slot order
// (as a checkpoint writes them) and inserted into a fresh table of the
// default size (as a restore did) must cost a bounded number of probes per
// record, whether or not the new table is presized. Before the fix, the
// records arrived in the order of the new table's home slots too, so the
// small table's first slots took every record: the probes grew with the
// square of the records.
func TestRestoreOrderDoesNotCluster(t *testing.T) {
	const devices = 100_000
	src := mustTable(t, Config{RecordSize: 16, InitialDevices: devices})
	for i := range uint64(devices) {
		rec, _ := src.Record(splitmix(i), splitmix(^i), at(0))
		rec[0] = byte(i)
	}
	for _, presize := range []bool{false, true} {
		dst := mustTable(t, Config{RecordSize: 16})
		if presize {
			dst.Reserve(devices)
		}
		before := dst.Stats()
		src.Range(func(key, alt uint64, lastSeen int64, rec []byte) bool {
			r, existed := dst.Record(key, alt, lastSeen)
			if existed {
				t.Fatalf("presize=%v: device (%x, %x) restored twice", presize, key, alt)
			}
			copy(r, rec)
			return true
		})
		st := dst.Stats()
		if st.Devices != devices {
			t.Fatalf("presize=%v: %d devices restored, want %d", presize, st.Devices, devices)
		}
		// Linear probing at load <= 3/4 averages (1 + 1/(1-a)^2)/2 <= 8.5
		// probes per unsuccessful search; 16 per record leaves room for the
		// doubling table's rebuilds, which are not counted as probes.
		perRecord := float64(st.Probes-before.Probes) / devices
		t.Logf("presize=%v: %.2f probes per record, %d grows", presize, perRecord, st.Grows)
		if perRecord > 16 {
			t.Errorf("presize=%v: %.1f probes per restored record, want <= 16: insertion order clusters", presize, perRecord)
		}
		if presize && st.Grows != before.Grows {
			t.Errorf("presized table grew %d times during the restore", st.Grows-before.Grows)
		}
	}
}

// TestReserve checks that Reserve keeps every record, makes room for the
// devices asked for, never shrinks the table and respects the MaxDevices cap.
func TestReserve(t *testing.T) {
	tb := mustTable(t, Config{RecordSize: 8})
	for i := range uint64(500) {
		rec, _ := tb.Record(i, 1, at(int64(i)))
		rec[0] = byte(i)
	}
	tb.Reserve(10_000)
	if c := tb.Stats().Capacity; c*3 < 10_000*4 {
		t.Fatalf("capacity %d after Reserve(10000): below the load bound", c)
	}
	grows := tb.Stats().Grows
	for i := range uint64(10_000) {
		rec, existed := tb.Record(i, 1, at(int64(i)))
		if i < 500 && (!existed || rec[0] != byte(i)) {
			t.Fatalf("device %d lost by Reserve (existed %v, rec %d)", i, existed, rec[0])
		}
	}
	if g := tb.Stats().Grows; g != grows {
		t.Fatalf("table grew %d times after Reserve(10000) while inserting 10000 devices", g-grows)
	}
	c := tb.Stats().Capacity
	tb.Reserve(10)
	if tb.Stats().Capacity != c {
		t.Fatalf("Reserve(10) changed the capacity from %d to %d", c, tb.Stats().Capacity)
	}
	capped := mustTable(t, Config{RecordSize: 8, MaxDevices: 100})
	capped.Reserve(1_000_000)
	if c := capped.Stats().Capacity; c > capacityFor(100) {
		t.Fatalf("Reserve beyond MaxDevices 100 made %d slots", c)
	}
}
