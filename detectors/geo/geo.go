// Package geo flags requests from a country the device has not been seen in.
//
// Each device keeps up to Slots countries with time-decayed weights (time
// constant Tau). An unflagged request adds 1 to its country's weight; a request
// flagged as from a new country adds only FlaggedWeight, so an attacker's
// country does not become "known" after one request: it stays new until it has
// the weight of one ordinary request (20 flagged requests). It is then rare
// until it reaches RareShare of the device's weight; a rare request scores at
// most RareScore and adds 1-score. Requests with an unknown country are ignored.
package geo

import (
	"encoding/binary"
	"math"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Parameters.
const (
	// Slots is the number of countries remembered per device; when full, a new
	// country replaces the one with the least weight.
	Slots = 4
	// Tau is the time constant of country weights, in seconds (7 days).
	Tau = 7 * 24 * 3600.0
	// WarmEvents and WarmAge (seconds) gate findings: a younger device learns
	// every country it is seen in.
	WarmEvents = 20
	WarmAge    = 1800.0
	// EstablishedEvents and EstablishedAge (seconds): a device with this much
	// history scores a new country NewScoreEstablished; a warm but younger one
	// scores between NewScoreYoung and that, growing with its history.
	EstablishedEvents   = 200
	EstablishedAge      = 24 * 3600.0
	NewScoreYoung       = 0.7
	NewScoreEstablished = 0.9
	// NewWeight is the weight below which a country is new.
	NewWeight = 1.0
	// RareShare is the share of the device's weight below which a country is
	// rare; a rare country scores up to RareScore, less the more it is used.
	RareShare = 0.05
	RareScore = 0.5
	// minScore is the smallest rare score reported.
	minScore = 0.05
	// FlaggedWeight is what a flagged request adds to its country's weight.
	FlaggedWeight = 0.05
	// maxWeight bounds weights read from a record; larger or non-finite values
	// (a corrupt record) read as zero.
	maxWeight = 1e12
)

// StateSize is the size of the per-device record.
const StateSize = 40

// Record layout, little-endian:
//
//	0:8   last event time with a known country, Unix ns (int64)
//	8:12  seconds of history, saturating (uint32)
//	12:14 events with a known country, saturating (uint16)
//	14:16 unused
//	16:24 Slots countries, 2 bytes each (a zero weight marks a free slot)
//	24:40 Slots weights (float32)
type state struct {
	last      int64
	age       uint32
	n         uint16
	countries [Slots]schemas.Country
	weights   [Slots]float64
}

func (s *state) load(b []byte) {
	_ = b[StateSize-1]
	s.last = int64(binary.LittleEndian.Uint64(b[0:]))
	s.age = binary.LittleEndian.Uint32(b[8:])
	s.n = binary.LittleEndian.Uint16(b[12:])
	for i := range Slots {
		s.countries[i] = schemas.Country{b[16+2*i], b[17+2*i]}
		w := float64(math.Float32frombits(binary.LittleEndian.Uint32(b[24+4*i:])))
		if !(w >= 0 && w <= maxWeight) {
			w = 0
		}
		s.weights[i] = w
	}
}

func (s *state) store(b []byte) {
	_ = b[StateSize-1]
	binary.LittleEndian.PutUint64(b[0:], uint64(s.last))
	binary.LittleEndian.PutUint32(b[8:], s.age)
	binary.LittleEndian.PutUint16(b[12:], s.n)
	b[14], b[15] = 0, 0
	for i := range Slots {
		b[16+2*i], b[17+2*i] = s.countries[i][0], s.countries[i][1]
		binary.LittleEndian.PutUint32(b[24+4*i:], math.Float32bits(float32(s.weights[i])))
	}
}

// Doc is the catalog paragraph.
const Doc = "A request from a country this device has not been seen in (the event's country; unknown countries are " +
	"ignored). Each device remembers 4 countries with weights decayed over 7 days; requests flagged as new add " +
	"1/20 of the weight of an ordinary one, so an attacker's country stays new for 20 requests. A new country scores 0.9 on a device with " +
	"200 events over a day, 0.7 on a younger one; a rare one (under 5% of the device's weight) scores up to 0.5. " +
	"Devices with fewer than 20 events or 30 minutes of history learn every country silently. Observed is the " +
	"country's share of the device's weight (label: the country), Expected the share of the device's top country " +
	"(label: that country)."

func init() {
	detectors.Register(detectors.Spec{
		Name:      schemas.DetectorGeo,
		Doc:       Doc,
		StateSize: StateSize,
		Reasons:   []string{schemas.ReasonNewCountry},
		New:       func() detectors.Detector { return Detector{} },
	})
}

// Detector is the geo detector. The zero value is ready to use.
type Detector struct{}

// Observe implements detectors.Detector.
func (Detector) Observe(ev *schemas.Event, b []byte, _ detectors.Fleet) schemas.Finding {
	if len(b) < StateSize || !ev.Country.Known() {
		return schemas.Finding{}
	}
	var s state
	s.load(b)

	dt := detectors.Advance(&s.last, s.n == 0, ev.Time)
	s.age = uint32(min(float64(s.age)+dt, math.MaxUint32))
	d := detectors.Decay(dt / Tau)

	slot, top, total := -1, -1, 0.0
	for i := range Slots {
		s.weights[i] *= d
		w := s.weights[i]
		total += w
		if w > 0 && s.countries[i] == ev.Country {
			slot = i
		}
		if w > 0 && (top < 0 || w > s.weights[top]) {
			top = i
		}
	}
	w := 0.0
	if slot >= 0 {
		w = s.weights[slot]
	}

	var f schemas.Finding
	if s.n >= WarmEvents && float64(s.age) >= WarmAge {
		var score float64
		share := 0.0
		if total > 0 {
			share = w / total
		}
		switch {
		case w < NewWeight:
			conf := min(float64(s.n)/EstablishedEvents, float64(s.age)/EstablishedAge, 1)
			score = NewScoreYoung + (NewScoreEstablished-NewScoreYoung)*conf
		case share < RareShare:
			score = RareScore * (1 - share/RareShare)
		}
		if score >= minScore {
			f = schemas.Finding{
				Detector:      schemas.DetectorGeo,
				Reason:        schemas.ReasonNewCountry,
				Score:         float32(score),
				Observed:      share,
				ObservedLabel: schemas.Label{ev.Country[0], ev.Country[1]},
			}
			if top >= 0 && total > 0 {
				f.Expected = s.weights[top] / total
				f.ExpectedLabel = schemas.Label{s.countries[top][0], s.countries[top][1]}
			}
		}
	}

	// Learn: fully from an unflagged request, a little from a new country,
	// the more from a rare one the less it was flagged.
	add := 1.0
	switch {
	case f.Reason == schemas.ReasonNone:
	case w < NewWeight:
		add = FlaggedWeight
	default:
		add = 1 - float64(f.Score)
	}
	if slot < 0 {
		// Take a free slot, else the lightest one.
		slot = 0
		for i := 1; i < Slots; i++ {
			if s.weights[i] < s.weights[slot] {
				slot = i
			}
		}
		s.countries[slot], s.weights[slot] = ev.Country, 0
	}
	s.weights[slot] += add
	if s.n < math.MaxUint16 {
		s.n++
	}
	s.store(b)
	return f
}
