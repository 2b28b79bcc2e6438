// Package geo judges where a device's requests come from: a country the
// device has not been seen in, a location it cannot have reached since its
// previous request, a network (ASN) other than the one it steadily used, and,
// for a device too young to have a history, a country its class does not use.
//
// Each device keeps up to Slots countries with time-decayed weights (time
// constant Tau). An unflagged request adds 1 to its country's weight; a request
// flagged as from a new country adds only FlaggedWeight, so an attacker's
// country does not become "known" after one request: it stays new until it has
// the weight of one ordinary request (20 flagged requests). It is then rare
// until it reaches RareShare of the device's weight; a rare request scores at
// most RareScore and adds 1-score. Requests with an unknown country are ignored.
//
// The device also keeps its usual ASN with a streak count, its last location
// and a learned mobility (how often its location changes): scores are lowered
// for devices that move (vehicles) and kept for those that never do (meters,
// locks), without naming classes. Class knowledge comes from the fleet view,
// which counts distinct devices per (class, country) and (class, ASN).
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
	// WarmEvents and WarmAge (seconds) gate the device's own judgements: a
	// younger device learns every country and ASN it is seen in, and is judged
	// only against its class (rare_fleet_country) and by impossible travel.
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
	// minScore is the smallest score reported.
	minScore = 0.05
	// FlaggedWeight is what a flagged request adds to its country's weight.
	FlaggedWeight = 0.05
	// maxWeight bounds weights read from a record; larger or non-finite values
	// (a corrupt record) read as zero.
	maxWeight = 1e12

	// ClassDevicesMin and ClassAgeMin (seconds): the fleet view is consulted
	// once the device's class has this many devices and this much history.
	ClassDevicesMin = 20
	ClassAgeMin     = 3600.0
	// CommonPeers and CommonShare: a country or ASN used by at least
	// max(CommonPeers, CommonShare × class devices) other devices of the class
	// is common for the class; one used by fewer is common in proportion.
	CommonPeers = 3
	CommonShare = 0.05
	// ClassCommonDiscount is how much of a new-country or ASN-change score a
	// country or ASN common for the class takes away; FleetNewBonus is added
	// to a new-country score when no other device of the class uses it.
	ClassCommonDiscount = 0.4
	FleetNewBonus       = 0.05
	// FleetRareScore is the rare_fleet_country score of a young device in a
	// country no other device of an established class uses, halved when one or
	// two others do.
	FleetRareScore = 0.6

	// ASNStableEvents is the streak of requests from one ASN after which a
	// different ASN is a change; ASNScore the score of a change to an ASN no
	// other device of the class uses (ASNScoreYoungClass when the class is not
	// established). A flagged request from another ASN cuts the streak by a
	// quarter, so a permanent change stops being flagged after about 9.
	ASNStableEvents    = 20
	ASNScore           = 0.7
	ASNScoreYoungClass = 0.55

	// CoordRadiusKm is the uncertainty of coordinates from the log or a
	// city-level GeoIP database. A country's centroid is uncertain by
	// CentroidRadiusFactor times its equal-area radius plus CentroidRadiusPadKm,
	// so that traffic roaming to a neighbouring country is never "travel".
	CoordRadiusKm        = 100.0
	CentroidRadiusFactor = 1.5
	CentroidRadiusPadKm  = 100.0
	// Travel is impossible when the distance between two consecutive
	// locations, less both uncertainty radii, is at least TravelMinKm and
	// needs more than PlaneKmh. It scores TravelScore at PlaneKmh, rising to
	// TravelScoreMax as the speed needed grows.
	TravelMinKm    = 500.0
	PlaneKmh       = 1000.0
	TravelScore    = 0.6
	TravelScoreMax = 0.95

	// MoveKm is the distance between consecutive locations (beyond the
	// difference of their uncertainties) that counts as a move for mobility. Mobility (0-1) rises by 1/MobilityUp of the way to 1
	// on each unflagged move and decays with time constant MobilityTau
	// (seconds, 7 days): a van parked for a day is still a van.
	MoveKm      = 50.0
	MobilityUp  = 8
	MobilityTau = 7 * 24 * 3600.0
	// MobilityDiscount is the share of a new-country, ASN-change or
	// rare_fleet_country score a fully mobile device loses; travel, which is
	// physically impossible whatever the device, loses TravelMobilityDiscount.
	MobilityDiscount       = 0.5
	TravelMobilityDiscount = 0.3
	// NeighbourDiscount is the share of a new-country or rare_fleet_country
	// score a roaming device loses: one seen in a country neighbouring its
	// top country (their centroids' uncertainty regions, as impossible
	// travel draws them, overlap) on a network (ASN) that at least
	// CommonPeers other devices of its model (the class across tenants)
	// use: a vehicle driving across a border onto the neighbour's carrier,
	// which its model's devices of that country use. A key used from the
	// neighbour's hosting range, or a stationary device's from a network
	// its model never uses, is not roaming.
	NeighbourDiscount = 0.5
)

// StateSize is the size of the per-device record.
const StateSize = 45

// Record layout, little-endian:
//
//	0:4   last event time with a known country, Unix seconds (uint32)
//	4:7   seconds of history, saturating (24 bits)
//	7     events with a known country, saturating (uint8)
//	8:16  Slots countries, 2 bytes each (a zero weight marks a free slot)
//	16:32 Slots weights (float32)
//	32:36 usual ASN (uint32, 0: none)
//	36    requests in a row from the usual ASN, saturating (uint8)
//	37    mobility × 255 (uint8)
//	38    8-bit hash of the previous usual ASN (0: none)
//	39    last location's uncertainty radius in RadiusUnitKm (0: no location)
//	40:42 last location, latitude in 1/360 degree (int16)
//	42:44 last location, longitude in 1/180 degree (int16)
//	44    1 when the last location came from a request this detector flagged
//	      (an excursion: Away), else 0
type state struct {
	last      int64 // Unix ns, whole seconds
	age       uint32
	n         uint8
	countries [Slots]schemas.Country
	weights   [Slots]float64
	asn       uint32
	asnRun    uint8
	mobility  uint8
	asnPrev   uint8
	loc       location
	// away: the last location was learned from a request this detector
	// flagged (an attacker's, or a device's real trip the detector found
	// unusual), or from requests that did not move from there since. A request back in the device's top country after it is no
	// travel: the excursion was the finding (the owner coming home after
	// its stolen key was used elsewhere).
	away bool
}

const maxAge = 1<<24 - 1

func (s *state) load(b []byte) {
	_ = b[StateSize-1]
	s.last = int64(binary.LittleEndian.Uint32(b[0:])) * 1e9
	s.age = uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16
	s.n = b[7]
	for i := range Slots {
		s.countries[i] = schemas.Country{b[8+2*i], b[9+2*i]}
		w := float64(math.Float32frombits(binary.LittleEndian.Uint32(b[16+4*i:])))
		if !(w >= 0 && w <= maxWeight) {
			w = 0
		}
		s.weights[i] = w
	}
	s.asn = binary.LittleEndian.Uint32(b[32:])
	s.asnRun, s.mobility, s.asnPrev = b[36], b[37], b[38]
	s.loc = location{
		radius: b[39],
		lat:    int16(binary.LittleEndian.Uint16(b[40:])),
		lon:    int16(binary.LittleEndian.Uint16(b[42:])),
	}
	s.away = b[44] == 1
}

func (s *state) store(b []byte) {
	_ = b[StateSize-1]
	sec := min(max(s.last/1e9, 0), math.MaxUint32)
	binary.LittleEndian.PutUint32(b[0:], uint32(sec))
	b[4], b[5], b[6] = byte(s.age), byte(s.age>>8), byte(s.age>>16)
	b[7] = s.n
	for i := range Slots {
		b[8+2*i], b[9+2*i] = s.countries[i][0], s.countries[i][1]
		binary.LittleEndian.PutUint32(b[16+4*i:], math.Float32bits(float32(s.weights[i])))
	}
	binary.LittleEndian.PutUint32(b[32:], s.asn)
	b[36], b[37], b[38], b[39] = s.asnRun, s.mobility, s.asnPrev, s.loc.radius
	binary.LittleEndian.PutUint16(b[40:], uint16(s.loc.lat))
	binary.LittleEndian.PutUint16(b[42:], uint16(s.loc.lon))
	b[44] = 0
	if s.away {
		b[44] = 1
	}
}

// Doc is the catalog paragraph.
const Doc = "Where a device's requests come from (country and ASN from the log or the GeoIP database; unknown " +
	"countries are ignored). Each device remembers 4 countries with weights decayed over 7 days, its usual ASN with " +
	"a streak count, its last location and a learned mobility (a device whose location keeps changing, such as a " +
	"vehicle, loses up to half of its new_country, asn_change and rare_fleet_country scores and 30% of its " +
	"impossible_travel score; one that never moves, such as a meter, none). new_country: a country the device has " +
	"not been seen in scores 0.9 on a device with 200 events over a day, 0.7 on a younger one, 0.05 more when no " +
	"other device of its class uses the country and up to 40% less when many do; flagged requests add 1/20 of an " +
	"ordinary one's weight, so an attacker's country stays new for 20 requests, then rare (under 5% of the device's " +
	"weight, up to 0.5). Observed is the country's share of the device's weight (label: the country), Expected the " +
	"share of its top country (label: that country). impossible_travel: the distance from the previous request's " +
	"location (coordinates, uncertain by 100 km, else the country's centroid, uncertain by 1.5 times its " +
	"equal-area radius plus 100 km, from the world-countries table, ODbL) less both uncertainties is at least " +
	"500 km and needs more than 1000 km/h: 0.6 rising to 0.95; Observed is the speed needed in km/h (label: the " +
	"country), Expected 1000 (label: the device's top country). asn_change: a request from another ASN after 20 " +
	"in a row from the usual one, in a known country: 0.7 when no other device of the class uses that ASN, down " +
	"to 0.42 when many do (0.55 while the class has under 20 devices or an hour of history); Observed is the " +
	"class's devices on the new ASN (label: it), Expected the streak on the usual ASN (label: it). Devices with " +
	"fewer than 20 events or 30 minutes of history learn every country and ASN silently, except rare_fleet_country: " +
	"a country no other device of an established class (20 devices, 1 h) uses scores 0.6, 0.3 when one or two do; " +
	"Observed is the class's devices in the country (label: it), Expected the class's devices. Roaming: in a country " +
	"neighbouring the device's top country (centroid uncertainty regions overlap) on an ASN at least 3 other devices " +
	"of its model (the class across tenants) use, new_country and rare_fleet_country score half. Coming home: a " +
	"request in the device's top country right after a request this detector flagged, or after requests that " +
	"stayed where such a request came from (an excursion, such as a stolen key used elsewhere for half an hour, " +
	"flagged when it began and learned as it went on), is no impossible travel: the excursion was the finding, " +
	"the owner's return is not."

func init() {
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Reasons: []string{ReasonNewCountry, ReasonImpossibleTravel, ReasonASNChange,
			ReasonRareFleetCountry},
		Version: 2, // 2: the away flag at 44
		New:     func() detectors.Detector { return &Detector{} },
		Stats:   func(classes *detectors.ClassTable) detectors.ClassStats { return NewStats(classes) },
	})
}

// Detector is the geo detector. The zero value is ready to use.
type Detector struct{}

// classView is what the fleet says about the device's class, read only when
// a judgement needs it (the common path does not).
type classView struct {
	fleet       *Stats
	ev          *schemas.Event
	loaded      bool
	devices     float64
	established bool
}

// load reads the class's size and age; it reports whether the class is
// established enough to judge by.
func (c *classView) load() bool {
	if c.loaded || c.fleet == nil {
		return c.established
	}
	c.loaded = true
	c.devices = c.fleet.ClassDevices(c.ev.ClassKey)
	since := c.fleet.ClassSince(c.ev.ClassKey)
	c.established = c.devices >= ClassDevicesMin && since != 0 && float64(c.ev.Time-since)/1e9 >= ClassAgeMin
	return c.established
}

// common maps peers (other devices of the class using a country or ASN) to
// how common that is for the class, 0-1.
func (c *classView) common(peers float64) float64 {
	return min(1, peers/max(CommonPeers, CommonShare*c.devices))
}

// Observe implements detectors.Detector. Class knowledge comes from view
// when it is the detector's *Stats (as a ClassModel hands it); any other
// view, or nil, judges without it.
func (*Detector) Observe(ev *schemas.Event, b []byte, view detectors.Fleet) schemas.Finding {
	if len(b) < StateSize || !ev.Country.Known() {
		return schemas.Finding{}
	}
	fleet, _ := view.(*Stats)
	var s state
	s.load(b)

	first := s.n == 0
	prevTime := s.last
	dt := detectors.Advance(&s.last, first, ev.Time)
	s.age = uint32(min(float64(s.age)+dt, maxAge))
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
	mobility := float64(s.mobility) / 255
	stay := 1 - MobilityDiscount*mobility
	warm := s.n >= WarmEvents && float64(s.age) >= WarmAge
	cls := classView{fleet: fleet, ev: ev}
	var topLabel schemas.Label
	if top >= 0 {
		topLabel = countryLabel(s.countries[top])
	}

	// Every reason that applies is a candidate; the highest score is reported.
	var f schemas.Finding

	// Impossible travel, from the previous request's location.
	loc := eventLocation(ev)
	moved := false
	// Back in its top country after a flagged excursion (Away): the
	// excursion was the finding, the return is not a second one.
	home := s.away && top >= 0 && s.countries[top] == ev.Country
	cameHome := false // a travel not judged for that
	if loc.known() && s.loc.known() && !first && loc != s.loc {
		h := haversine(s.loc, loc)
		// A location inside the other's uncertainty (coordinates, then only a
		// country) is not a move.
		moved = h >= havKm(MoveKm+math.Abs(s.loc.radiusKm()-loc.radiusKm()))
		slack := s.loc.radiusKm() + loc.radiusKm()
		if h >= havKm(slack+TravelMinKm) {
			excess := havDistanceKm(h) - slack
			gap := math.Abs(float64(ev.Time-prevTime)) / 1e9
			kmh := excess / max(gap, 1) * 3600
			if kmh > PlaneKmh && home {
				cameHome = true
			} else if kmh > PlaneKmh {
				score := TravelScore + (TravelScoreMax-TravelScore)*(1-PlaneKmh/kmh)
				consider(&f, schemas.Finding{
					Detector: Name, Reason: ReasonImpossibleTravel,
					Score:    float32(score * (1 - TravelMobilityDiscount*mobility)),
					Observed: kmh, Expected: PlaneKmh,
					ObservedLabel: countryLabel(ev.Country), ExpectedLabel: topLabel,
				})
			}
		}
	}

	// Roaming into a neighbouring country (NeighbourDiscount).
	roam := 1.0
	if top >= 0 && s.countries[top] != ev.Country && ev.ASN != 0 && fleet != nil && ev.HasModel() &&
		neighbours(s.countries[top], ev.Country) &&
		fleet.ModelASNDevices(ev.ModelKey, ev.ASN, ev.DeviceKey) >= CommonPeers {
		roam = 1 - NeighbourDiscount
	}

	if warm {
		// A new or rare country for this device.
		var score float64
		share := 0.0
		if total > 0 {
			share = w / total
		}
		switch {
		case w < NewWeight:
			conf := min(float64(s.n)/EstablishedEvents, float64(s.age)/EstablishedAge, 1)
			score = NewScoreYoung + (NewScoreEstablished-NewScoreYoung)*conf
			if cls.load() {
				peers := fleet.ClassCountryDevices(ev.ClassKey, ev.Country, ev.DeviceKey)
				score *= 1 - ClassCommonDiscount*cls.common(peers)
				if peers < 0.5 {
					score += FleetNewBonus
				}
			}
		case share < RareShare:
			score = RareScore * (1 - share/RareShare)
		}
		if score > 0 {
			c := schemas.Finding{
				Detector: Name, Reason: ReasonNewCountry,
				Score:    float32(min(1, score*stay*roam)),
				Observed: share, ObservedLabel: countryLabel(ev.Country),
				ExpectedLabel: topLabel,
			}
			if top >= 0 && total > 0 {
				c.Expected = s.weights[top] / total
			}
			consider(&f, c)
		}

		// A change of network in a country the device knows.
		// A return to the previous usual network (after a carrier change,
		// or after an attacker's network took over) is not one.
		if ev.ASN != 0 && s.asn != 0 && ev.ASN != s.asn && s.asnRun >= ASNStableEvents && w >= NewWeight &&
			asnHash(ev.ASN) != s.asnPrev {
			score, peers := ASNScoreYoungClass, 0.0
			if cls.load() {
				peers = fleet.ClassASNDevices(ev.ClassKey, ev.ASN, ev.DeviceKey)
				score = ASNScore * (1 - ClassCommonDiscount*cls.common(peers))
			}
			consider(&f, schemas.Finding{
				Detector: Name, Reason: ReasonASNChange,
				Score:    float32(score * stay),
				Observed: peers, Expected: float64(s.asnRun),
				ObservedLabel: asnLabel(ev.ASN), ExpectedLabel: asnLabel(s.asn),
			})
		}
	} else if w < NewWeight && cls.load() {
		// Too young to judge by its own history: judge it by its class.
		peers := fleet.ClassCountryDevices(ev.ClassKey, ev.Country, ev.DeviceKey)
		if peers < CommonPeers {
			score := FleetRareScore
			if peers >= 0.5 {
				score /= 2
			}
			consider(&f, schemas.Finding{
				Detector: Name, Reason: ReasonRareFleetCountry,
				Score:    float32(score * stay * roam),
				Observed: peers, Expected: cls.devices,
				ObservedLabel: countryLabel(ev.Country),
			})
		}
	}
	flagged := f.Reason != schemas.ReasonNone
	if ev.FailedAuth() {
		// A refused request is judged but teaches nothing: it did not prove
		// to be the device, so an attacker's failed login from afar neither
		// moves the device (its return home is no travel) nor makes the
		// attacker's country its own.
		return f
	}

	// Learn: fully from an unflagged request, a little from a new country,
	// the more from a known one the less it was flagged.
	add := 1.0
	switch {
	case !flagged:
	case w < NewWeight:
		add = FlaggedWeight
	default:
		add = max(0, 1-float64(f.Score))
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

	switch {
	case ev.ASN == 0:
	case ev.ASN == s.asn:
		s.asnRun = uint8(min(int(s.asnRun)+1, math.MaxUint8))
	case flagged && s.asnRun >= ASNStableEvents:
		s.asnRun -= s.asnRun / 4 // keep the usual ASN through an attack
	default:
		if s.asn != 0 && s.asnRun > 0 {
			s.asnPrev = asnHash(s.asn)
		}
		s.asn, s.asnRun = ev.ASN, 1
	}

	if ev.Time >= prevTime || first {
		s.mobility = decayByte(s.mobility, dt/MobilityTau, uint64(ev.Time)^ev.DeviceKey)
		if moved && !flagged && !cameHome { // nor is an impossible return from an excursion
			s.mobility += max(1, (255-s.mobility)/MobilityUp)
		}
		if loc.known() {
			// An excursion lasts while the device stays where its flagged
			// request came from: a stolen key used from one place for half
			// an hour is flagged at first and learned as it goes on, and
			// the owner's next request from home is still its return.
			s.loc, s.away = loc, flagged || s.away && !moved
		}
	}
	if s.n < math.MaxUint8 {
		s.n++
	}
	s.store(b)
	return f
}

// consider makes c the finding when it scores at least minScore and more
// than the finding so far.
func consider(f *schemas.Finding, c schemas.Finding) {
	if c.Score >= minScore && c.Score > f.Score {
		*f = c
	}
}

// decayByte multiplies b by detectors.Decay(x), rounding up or down at random
// with the probability that keeps the expected value exact: 8 bits then decay
// over days even when each step is far below one unit. The random source is
// a hash of seed (the event's time and device), so replay stays exact.
func decayByte(b uint8, x float64, seed uint64) uint8 {
	if b == 0 {
		return 0
	}
	v := float64(b) * detectors.Decay(x)
	lo := math.Floor(v)
	seed = (seed ^ seed>>30) * 0xbf58476d1ce4e5b9
	seed = (seed ^ seed>>27) * 0x94d049bb133111eb
	seed ^= seed >> 31
	if float64(seed>>11)/(1<<53) < v-lo {
		lo++
	}
	return uint8(min(lo, 255))
}

// countryLabel is the country's code as a label.
func countryLabel(c schemas.Country) schemas.Label { return schemas.Label{c[0], c[1]} }

// asnHash is an 8-bit hash of asn, never 0: enough to recognize a return to
// the previous network (a collision, 1 in 255, hides one ASN change).
func asnHash(asn uint32) uint8 {
	h := uint64(asn) * 0x9e3779b97f4a7c15
	return uint8(h>>56)%255 + 1
}

// asnLabel is "AS" and the number.
func asnLabel(asn uint32) schemas.Label {
	l := schemas.Label{'A', 'S'}
	var digits [10]byte
	i := len(digits)
	for {
		i--
		digits[i] = byte('0' + asn%10)
		asn /= 10
		if asn == 0 {
			break
		}
	}
	copy(l[2:], digits[i:])
	return l
}
