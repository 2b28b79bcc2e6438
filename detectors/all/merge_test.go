package all_test

import (
	"fmt"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/schemas"
)

// newModel returns an empty model of every registered detector.
func newModel() *detectors.ClassModel {
	return detectors.NewClassModel(detectors.NewLayout(detectors.All()), detectors.NewClassTable(1<<14, 1024))
}

// TestModelMergeHalvesIsWhole: two instances' models, each learning half
// of a fleet, each merging the other's contribution (AppendContribution,
// Merge), read what one model of the whole fleet reads in the merged
// statistics (class devices, command devices, country and ASN devices):
// exactly, as they are sketches that OR. A contribution that does not
// decode is refused, and a round with no contribution removes the overlay.
func TestModelMergeHalvesIsWhole(t *testing.T) {
	whole := newModel()
	halves := [2]*detectors.ClassModel{newModel(), newModel()}
	before := make([]byte, whole.Layout.Size)
	countries := []string{"DE", "AT", "FR", "NL"}
	var ev schemas.Event
	for i := range 4000 {
		d := (i * 7919) % 300
		ev.Reset()
		ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("d-%d", d)))
		ev.SetClass([]byte(fmt.Sprintf("meter/%d", d%3)))
		ev.SetCommand([]byte(fmt.Sprintf("POST /v1/m/{id}/c%d", i%23)))
		ev.Country = schemas.Country{countries[d%4][0], countries[d%4][1]}
		ev.ASN = uint32(3320 + d%9)
		ev.Time = int64(1736121600e9) + int64(i)*1e9
		whole.Learn(&ev, before)
		halves[d%2].Learn(&ev, before)
	}
	contrib := [2][]byte{halves[0].AppendContribution(nil), halves[1].AppendContribution(nil)}
	for i, h := range halves {
		g := h.NewMerge()
		g.Begin()
		if err := g.Add(contrib[1-i][:len(contrib[1-i])-3]); err == nil {
			t.Errorf("a truncated contribution merged")
		}
		if err := g.Add(contrib[1-i]); err != nil {
			t.Fatal(err)
		}
		g.Apply()
	}
	other := schemas.Hash2([]byte("acme"), []byte("nobody"))
	for i, h := range halves {
		cw, ch := whole.FleetOf(command.Name).(*command.Stats), h.FleetOf(command.Name).(*command.Stats)
		gw, gh := whole.FleetOf(geo.Name).(*geo.Stats), h.FleetOf(geo.Name).(*geo.Stats)
		for c := range 3 {
			ev.SetClass([]byte(fmt.Sprintf("meter/%d", c)))
			if a, b := h.Table.ClassDevices(ev.ClassKey), whole.Table.ClassDevices(ev.ClassKey); a != b || a == 0 {
				t.Errorf("half %d class %d: %v devices, whole %v", i, c, a, b)
			}
			for k := range 23 {
				ev.SetCommand([]byte(fmt.Sprintf("POST /v1/m/{id}/c%d", k)))
				if a, b := ch.ClassCommandDevices(ev.ClassKey, ev.CommandID, other), cw.ClassCommandDevices(ev.ClassKey, ev.CommandID, other); a != b {
					t.Errorf("half %d class %d command %d: %v devices, whole %v", i, c, k, a, b)
				}
			}
			for _, co := range countries {
				cc := schemas.Country{co[0], co[1]}
				if a, b := gh.ClassCountryDevices(ev.ClassKey, cc, other), gw.ClassCountryDevices(ev.ClassKey, cc, other); a != b {
					t.Errorf("half %d class %d country %s: %v devices, whole %v", i, c, co, a, b)
				}
			}
			for asn := uint32(3320); asn < 3329; asn++ {
				if a, b := gh.ClassASNDevices(ev.ClassKey, asn, other), gw.ClassASNDevices(ev.ClassKey, asn, other); a != b {
					t.Errorf("half %d class %d ASN %d: %v devices, whole %v", i, c, asn, a, b)
				}
			}
		}
	}
	// Own contributions never count twice: a contribution taken after the
	// merge is the same as before it.
	if again := halves[0].AppendContribution(nil); string(again) != string(contrib[0]) {
		t.Errorf("the contribution changed with the merge: it must hold only the instance's own learning")
	}
	// A round with nothing to merge (the other instance expired) removes the
	// overlay: the half reads its own devices again.
	ev.SetClass([]byte("meter/0"))
	merged := halves[0].Table.ClassDevices(ev.ClassKey)
	g := halves[0].NewMerge()
	g.Begin()
	g.Apply()
	if own := halves[0].Table.ClassDevices(ev.ClassKey); !(own < merged) {
		t.Errorf("after an empty round: %v devices, want fewer than the merged %v", own, merged)
	}
}
