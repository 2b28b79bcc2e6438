package all_test

import (
	"fmt"
	"testing"

	"github.com/klauspost/compress/s2"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/schemas"
)

// liveModel returns a model of every registered detector at the live
// path's sizes (score.ClassCommands, score.Classes) that learned devices
// devices of 200 classes (two events each, of 40 commands per class, in 8
// countries).
func liveModel(devices int) *detectors.ClassModel {
	m := detectors.NewClassModel(detectors.NewLayout(detectors.All()), detectors.NewClassTable(score.ClassCommands, score.Classes))
	before := make([]byte, m.Layout.Size)
	var ev schemas.Event
	countries := []string{"DE", "AT", "FR", "NL", "US", "GB", "PL", "IT"}
	for d := range devices {
		for k := range 2 {
			ev.Reset()
			ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("d-%d", d)))
			ev.SetClass([]byte(fmt.Sprintf("model-%d", d%200)))
			ev.SetCommand([]byte(fmt.Sprintf("POST /v1/x/{id}/c%d", (d+k)%40)))
			c := countries[d%8]
			ev.Country, ev.ASN = schemas.Country{c[0], c[1]}, uint32(3320+d%50)
			ev.Time = int64(1736121600e9) + int64(d)*1e6 + int64(k)*1e9
			m.Learn(&ev, before)
		}
	}
	return m
}

// BenchmarkClassContribution: one instance's contribution (the snapshot
// of its class table and merged statistics, S2-compressed as published):
// time per publish, raw and compressed bytes.
func BenchmarkClassContribution(b *testing.B) {
	for _, devices := range []int{20_000, 1_000_000} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			m := liveModel(devices)
			var raw, comp []byte
			b.ResetTimer()
			for b.Loop() {
				raw = m.AppendContribution(raw[:0])
				comp = s2.Encode(comp[:0], raw)
			}
			b.ReportMetric(float64(len(raw)), "raw-bytes")
			b.ReportMetric(float64(len(comp)), "s2-bytes")
		})
	}
}

// BenchmarkClassMerge: merging two other instances' contributions into a
// model's overlay (decode, merge, swap), per round.
func BenchmarkClassMerge(b *testing.B) {
	for _, devices := range []int{20_000, 1_000_000} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			others := [][]byte{liveModel(devices).AppendContribution(nil), liveModel(devices / 2).AppendContribution(nil)}
			m := liveModel(devices)
			g := m.NewMerge()
			b.ResetTimer()
			for b.Loop() {
				g.Begin()
				for _, o := range others {
					if err := g.Add(o); err != nil {
						b.Fatal(err)
					}
				}
				g.Apply()
			}
		})
	}
}
