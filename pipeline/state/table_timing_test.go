package state

import (
	"fmt"
	"testing"
)

// BenchmarkRecord measures one event's state access: Record of a random
// existing device (a cache miss at these sizes) and an update of its record.
func BenchmarkRecord(b *testing.B) {
	for _, devices := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			tb := mustTable(b, Config{RecordSize: 128, InitialDevices: devices})
			for i := range devices {
				tb.Record(splitmix(uint64(i)), splitmix(^uint64(i)), at(0))
			}
			b.ReportAllocs()
			b.ResetTimer()
			x := uint64(1)
			for b.Loop() {
				x = splitmix(x)
				i := x % uint64(devices)
				rec, existed := tb.Record(splitmix(i), splitmix(^i), at(1))
				if !existed {
					b.Fatalf("device %d missing", i)
				}
				rec[0]++
				rec[127]++
			}
		})
	}
}

// BenchmarkRecordInsert measures insertion of new devices into a table that
// grows from its default size.
func BenchmarkRecordInsert(b *testing.B) {
	tb := mustTable(b, Config{RecordSize: 128})
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		i++
		rec, _ := tb.Record(splitmix(i), i, at(0))
		rec[0] = 1
	}
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
