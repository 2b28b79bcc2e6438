package geo

import (
	"fmt"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Stats is what the geo detector learns of classes (its
// detectors.ClassStats and the Fleet view its Observe gets): per (class,
// country), (class, ASN) and (model, ASN), a 64-bit sketch of the devices seen there,
// perClass slots per class slot of the class table (256 bytes per class
// slot).
type Stats struct {
	classes *detectors.ClassTable
	places  *detectors.DeviceSketches // countries and ASNs
}

// perClass is the number of (class, country) and (class, ASN) slots per class
// slot.
const perClass = 16

// NewStats returns empty statistics over classes.
func NewStats(classes *detectors.ClassTable) *Stats {
	return &Stats{classes: classes, places: detectors.NewDeviceSketches(classes.ClassSlots() * perClass)}
}

// countryKey and asnKey place a country or an ASN of a class in the table;
// the tags keep countries and ASNs apart.
func countryKey(class uint64, c schemas.Country) uint64 {
	return detectors.PairKey(class, 0x434f0000_00000000|uint64(c[0])<<8|uint64(c[1]))
}

func asnKey(class uint64, asn uint32) uint64 {
	return detectors.PairKey(class, 0x41530000_00000000|uint64(asn))
}

// ClassDevices implements detectors.Fleet.
func (s *Stats) ClassDevices(class uint64) float64 { return s.classes.ClassDevices(class) }

// ClassSince implements detectors.Fleet.
func (s *Stats) ClassSince(class uint64) int64 { return s.classes.ClassSince(class) }

// ClassCountryDevices estimates how many distinct devices of the class, other
// than device (a DeviceKey), were seen in the country.
func (s *Stats) ClassCountryDevices(class uint64, country schemas.Country, device uint64) float64 {
	return s.places.Devices(countryKey(class, country), device)
}

// ClassASNDevices estimates how many distinct devices of the class, other
// than device, were seen in the autonomous system asn.
func (s *Stats) ClassASNDevices(class uint64, asn uint32, device uint64) float64 {
	return s.places.Devices(asnKey(class, asn), device)
}

// Learn implements detectors.ClassStats: ev's device was seen in ev's country
// and ASN, when known, and its model (across tenants) in that ASN.
func (s *Stats) Learn(ev *schemas.Event, _ []byte) {
	if ev.Country.Known() {
		s.places.Learn(countryKey(ev.ClassKey, ev.Country), ev.DeviceKey)
	}
	if ev.ASN != 0 {
		s.places.Learn(asnKey(ev.ClassKey, ev.ASN), ev.DeviceKey)
		if ev.HasModel() {
			s.places.Learn(asnKey(ev.ModelKey, ev.ASN), ev.DeviceKey)
		}
	}
}

// ModelASNDevices estimates how many distinct devices of the model (the
// class across tenants, Event.ModelKey), other than device, were seen in the
// autonomous system asn.
func (s *Stats) ModelASNDevices(model uint64, asn uint32, device uint64) float64 {
	return s.places.Devices(asnKey(model, asn), device)
}

// MergeFrom implements detectors.ClassMerger: other's country and ASN
// sketches OR into s's.
func (s *Stats) MergeFrom(other detectors.ClassStats) { s.places.MergeFrom(other.(*Stats).places) }

// SetOverlay implements detectors.ClassMerger: ClassCountryDevices,
// ClassASNDevices and ModelASNDevices count the overlay's devices too.
func (s *Stats) SetOverlay(o detectors.ClassStats) {
	if o, ok := o.(*Stats); ok && o != nil {
		s.places.SetOverlay(o.places)
		return
	}
	s.places.SetOverlay(nil)
}

// Saturated returns how many learn calls found the table full.
func (s *Stats) Saturated() uint64 { return s.places.Saturated() }

// statsVersion versions the snapshot of Stats (1: the class table's version 5
// geo arrays).
const statsVersion = 1

// AppendSnapshot implements detectors.ClassStats.
func (s *Stats) AppendSnapshot(dst []byte) []byte {
	dst = detectors.AppendStatsHeader(dst, statsVersion, s.classes.ClassSlots())
	return s.places.AppendWords(dst)
}

// LoadSnapshot implements detectors.ClassStats.
func (s *Stats) LoadSnapshot(b []byte) error {
	rest, err := detectors.ReadStatsHeader(b, "geo statistics", statsVersion, s.classes.ClassSlots())
	if err != nil {
		return err
	}
	if err := s.places.LoadWords(rest); err != nil {
		return fmt.Errorf("cannot load geo statistics: %w", err)
	}
	return nil
}
