// Package locality judges the networks a device's requests come from,
// without a geo database: the client address's IPv4 /24 or IPv6 /48, with
// the ASN when the log or the GeoIP database gives one.
//
// Each device keeps up to Slots networks with time-decayed weights (time
// constant Tau) and the ASN each was seen on. Two things are judged:
//
//   - new_network: a network the device has not been seen from, scored by how
//     stable the device was (the share of its weight on its top network and
//     how long its history is) and less when the new network is on the ASN of
//     its top network (a home's NAT getting a new address). It stays below the
//     default alert threshold on its own: a device moving once is not an
//     attack, but it adds to what other detectors find (a stolen key used from
//     a hosting range, with no country in the log).
//   - concurrent_networks: the device active from two networks interleaved
//     (A, B, A, B, ...): a clone, or a stolen key used while the owner keeps
//     calling. A switch back to the network the device came from just before
//     (A, B, A) adds 1 to a count decayed with time constant AltTau; a device
//     that moves once (home NAT, carrier NAT every 45 minutes, a vehicle
//     crossing a border) never switches back within minutes, so the count
//     stays near 0. The finding needs AltMin such switches back, sustained.
//
// Switches between an IPv4 and an IPv6 network are not counted (a dual-stack
// device alternates between them legitimately); an alternation of two
// networks on one known ASN (a carrier's NAT pool) scores SameASNFactor of
// the score.
package locality

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Name is the detector's registered name. It and its reasons are
// user-facing (findings, alerts, dashboards): renaming one is a migration.
const Name = "locality"

// Reasons.
const (
	// ReasonNewNetwork is a request from a network a stable device was not
	// seen from.
	ReasonNewNetwork = "new_network"
	// ReasonConcurrentNetworks is one identity active from two networks
	// interleaved within minutes: a clone, or a stolen key used while the
	// owner keeps calling.
	ReasonConcurrentNetworks = "concurrent_networks"
)

// Parameters.
const (
	// Slots is the number of networks remembered per device; when full, a new
	// network replaces the one with the least weight.
	Slots = 4
	// Tau is the time constant of network weights, in seconds (7 days).
	Tau = 7 * 24 * 3600.0
	// WarmEvents and WarmAge (seconds): a younger device learns every network
	// silently. Concurrent use needs WarmEvents only.
	WarmEvents = 20
	WarmAge    = 1800.0
	// EstablishedAge (seconds) is the history at which a new network scores
	// its full NewNetworkScore × top share; a warm, younger device scores
	// between half of that and that.
	EstablishedAge = 6 * 3600.0
	// NewNetworkScore is the new_network score of a device seen only from one
	// network for EstablishedAge: below the default alert threshold (0.6).
	NewNetworkScore = 0.5
	// NewSameASNFactor scales new_network when the new network is on the ASN
	// of the device's top network.
	NewSameASNFactor = 0.5
	// KnownCountryFactor scales new_network when the request's country is
	// known: geo then judges the place (a new country), and a new network in
	// a new country is one piece of evidence, not two.
	KnownCountryFactor = 0.5
	// NewWeight is the weight below which a network is new.
	NewWeight = 1.0
	// FlaggedWeight is what a flagged request adds to its network's weight,
	// so that an attacker's network stays new for 4 requests, scored less
	// each time (times 1 - weight/NewWeight): supporting evidence at first
	// sight, not a finding repeated for as long as the network is used.
	FlaggedWeight = 0.25
	// minScore is the smallest score reported.
	minScore = 0.1
	// maxWeight bounds weights read from a record; larger or non-finite
	// values (a corrupt record) read as zero.
	maxWeight = 1e12

	// AltTau (seconds) is the time constant of the count of switches back,
	// or AltGaps of the device's typical gap between requests if longer: a
	// meter calling every 15 minutes alternates as slowly as it calls; at
	// most AltTauMax, so that a carrier NAT moving every 45 minutes within a
	// few /24s (A, B, A by chance) never adds up.
	AltTau    = 15 * 60.0
	AltGaps   = 12
	AltTauMax = 3600.0
	// GapUp: the typical gap moves 1/GapUp of the way to each gap seen
	// (capped at the uint16 it is stored in, 18 hours).
	// AltMin is the decayed count of switches back at which concurrent use is
	// found; it then scores ConcurrentScore, rising to ConcurrentScoreMax as
	// the count grows (ConcurrentScore + (Max-Score)(1-AltMin/count)).
	AltMin             = 3.0
	ConcurrentScore    = 0.7
	ConcurrentScoreMax = 0.95
	// SwitchGap (seconds), or SwitchGapGaps of the device's typical gap if
	// longer, is the longest silence before a switch that still counts as
	// interleaving: a device heard again from its own network minutes after
	// someone else used its identity (the owner back home) is the end of an
	// alternation, not more of it. It is at most SwitchGapMax.
	SwitchGap     = 5 * 60.0
	SwitchGapGaps = 3
	SwitchGapMax  = 15 * 60.0
	GapUp         = 16
	// SameASNFactor scales concurrent_networks when both networks are on one
	// known ASN (a carrier's NAT pool, a home's two uplinks of one ISP).
	SameASNFactor = 0.75
	// episodeFloor is the decayed count below which the next switch starts a
	// new episode (its switches are what Observed counts).
	episodeFloor = 0.5
	// ChurnUp and ChurnTau: churn (0-1) rises by 1/ChurnUp of the way to 1
	// each time the device moves to a network not in its table (flagged or
	// not, warm-up included) and decays with time constant ChurnTau (seconds, 1
	// day); new_network loses that share of its score. A device behind a
	// carrier NAT whose address changes every 45 minutes is near 1 within
	// hours; a home device whose NAT changed address once is at 1/ChurnUp.
	ChurnUp  = 4
	ChurnTau = 24 * 3600.0
	// maxAlt bounds the decayed count read from a record.
	maxAlt = 1e6
)

// StateSize is the size of the per-device record.
const StateSize = 80

// Record layout, little-endian:
//
//	0:4   last event time with a client address, Unix seconds (uint32)
//	4:8   first such event time, Unix seconds (uint32)
//	8:10  events with a client address, saturating (uint16)
//	10    slot of the previous IPv4 request's network (>= Slots: none)
//	11    slot of the IPv4 network before the last IPv4 switch (>= Slots: none)
//	12:14 switches in the current episode, saturating (uint16)
//	14:18 decayed count of switches back (float32)
//	18:20 as 10:12, for IPv6
//	20:22 churn × 65535: how often the device moves to a new network (uint16)
//	22:24 typical gap between requests, seconds (uint16, saturating)
//	24:56 Slots network keys (uint64: 4 and the /24's three bytes, or 6 and the /48's six)
//	56:72 Slots weights (float32; zero marks a free slot)
//	72:80 Slots 16-bit ASN hashes (0: unknown)
type state struct {
	last, first int64 // Unix ns, whole seconds
	n           uint16
	lastSlot    [2]uint8 // per address family: IPv4, IPv6
	prevSlot    [2]uint8
	churn       uint16
	gap         float64 // seconds
	epSwitches  uint16
	alt         float64
	keys        [Slots]uint64
	weights     [Slots]float64
	asns        [Slots]uint16
}

const noSlot = 0xff

func (s *state) load(b []byte) {
	_ = b[StateSize-1]
	s.last = int64(binary.LittleEndian.Uint32(b[0:])) * 1e9
	s.first = int64(binary.LittleEndian.Uint32(b[4:])) * 1e9
	s.n = binary.LittleEndian.Uint16(b[8:])
	s.lastSlot = [2]uint8{slotOf(b[10]), slotOf(b[18])}
	s.prevSlot = [2]uint8{slotOf(b[11]), slotOf(b[19])}
	s.churn = binary.LittleEndian.Uint16(b[20:])
	s.gap = float64(binary.LittleEndian.Uint16(b[22:]))
	s.epSwitches = binary.LittleEndian.Uint16(b[12:])
	s.alt = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[14:])))
	if !(s.alt >= 0 && s.alt <= maxAlt) {
		s.alt = 0
	}
	for i := range Slots {
		s.keys[i] = binary.LittleEndian.Uint64(b[24+8*i:])
		w := float64(math.Float32frombits(binary.LittleEndian.Uint32(b[56+4*i:])))
		if !(w >= 0 && w <= maxWeight) {
			w = 0
		}
		s.weights[i] = w
		s.asns[i] = binary.LittleEndian.Uint16(b[72+2*i:])
	}
}

func (s *state) store(b []byte) {
	_ = b[StateSize-1]
	binary.LittleEndian.PutUint32(b[0:], seconds(s.last))
	binary.LittleEndian.PutUint32(b[4:], seconds(s.first))
	binary.LittleEndian.PutUint16(b[8:], s.n)
	b[10], b[11], b[18], b[19] = s.lastSlot[0], s.prevSlot[0], s.lastSlot[1], s.prevSlot[1]
	binary.LittleEndian.PutUint16(b[12:], s.epSwitches)
	binary.LittleEndian.PutUint32(b[14:], math.Float32bits(float32(s.alt)))
	binary.LittleEndian.PutUint16(b[20:], s.churn)
	binary.LittleEndian.PutUint16(b[22:], uint16(math.Round(min(max(s.gap, 0), math.MaxUint16))))
	for i := range Slots {
		binary.LittleEndian.PutUint64(b[24+8*i:], s.keys[i])
		binary.LittleEndian.PutUint32(b[56+4*i:], math.Float32bits(float32(s.weights[i])))
		binary.LittleEndian.PutUint16(b[72+2*i:], s.asns[i])
	}
}

// slotOf reads a slot index: one out of range is none.
func slotOf(b byte) uint8 {
	if b >= Slots {
		return noSlot
	}
	return b
}

// seconds clamps Unix ns to whole seconds in uint32.
func seconds(t int64) uint32 { return uint32(min(max(t/1e9, 0), math.MaxUint32)) }

// Doc is the catalog paragraph.
const Doc = "The networks a device's requests come from, without a geo database: the client address's IPv4 /24 " +
	"or IPv6 /48, with the ASN when the log or the GeoIP database gives one. Each device remembers 4 networks with " +
	"weights decayed over 7 days, the ASN of each, its typical gap between requests and a churn (how often it moved " +
	"to a new network, decayed over a day). new_network: a network the device was not seen from scores 0.5 times " +
	"the share of the device's weight on its top network (a device seen from one network only: 0.5), times 1 - " +
	"churn (each move takes a quarter of what is left: a device behind a carrier NAT whose address keeps changing " +
	"soon scores nothing), half of that on a device with under 6 h of history, half again when the new network is " +
	"on the ASN of the top one (a home's NAT getting a new address) and half again when the request's country is " +
	"known (geo judges the place then): on its own it stays below the default alert threshold, since a device " +
	"moving once is no attack. Flagged requests add 1/4 of an ordinary one's weight, so an attacker's network " +
	"stays new for 4 requests, scored less each time. Observed is the network's share of the device's weight " +
	"(label: the network), Expected the share of its top network (label: that network). concurrent_networks: the " +
	"device active from two networks interleaved (A, B, A, B ...), a clone or a stolen key used while the owner " +
	"keeps calling: each switch back to the network the device came from just before, within 5 minutes (or 3 " +
	"typical gaps, at most 15 minutes) of the previous request, adds 1 to a count decayed over 15 minutes (or 12 " +
	"typical gaps, at most an hour), and a " +
	"count of 3 scores 0.7, rising to 0.95 as it grows; a device that moves once, or every 45 minutes behind a " +
	"carrier NAT, never switches back within minutes. It is reported on the switches back to the less used network " +
	"of the two (the clone's), not on the owner's requests nor on a move to a third network. Switches between an IPv4 and an IPv6 network (dual stack) " +
	"are not counted; two networks of one ASN (a carrier's NAT pool) score 75%. Observed is the switches between " +
	"networks since the alternation began (label: the less used network of the two), Expected 1, a device that " +
	"moves once (label: the more used one). Events without a client address, and identities that are their " +
	"address, are ignored; devices with fewer than 20 events learn every network silently, and new_network also " +
	"waits for 30 minutes of history."

func init() {
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Version:   1, // bump when the meaning of the state bytes changes
		Reasons:   []string{ReasonNewNetwork, ReasonConcurrentNetworks},
		// Random events carry random addresses, each new: make some come from
		// a few networks, in turn, with or without an ASN.
		Shapes: []detectors.Shape{func(rng *rand.Rand, ev *schemas.Event) {
			ev.ClientIP = shapeAddrs[rng.IntN(len(shapeAddrs))]
			if rng.IntN(2) == 0 {
				ev.ASN = uint32(64500 + rng.IntN(2))
			}
		}},
		New: func() detectors.Detector { return &Detector{} },
	})
}

// shapeAddrs are the addresses the conformance shape draws from: three IPv4
// /24s, one IPv6 /48 and an IPv4-mapped IPv6 address.
var shapeAddrs = []netip.Addr{
	netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.9"),
	netip.MustParseAddr("203.0.113.20"), netip.MustParseAddr("192.0.2.1"),
	netip.MustParseAddr("2001:db8:1234::1"), netip.MustParseAddr("::ffff:203.0.113.21"),
}

// Detector is the locality detector. The zero value is ready to use.
type Detector struct{}

// Observe implements detectors.Detector. It needs no fleet view.
func (*Detector) Observe(ev *schemas.Event, b []byte, _ detectors.Fleet) schemas.Finding {
	if len(b) < StateSize || !ev.ClientIP.IsValid() || ev.IDMethod == schemas.IDClientIP {
		// An identity that is its address never changes network.
		return schemas.Finding{}
	}
	key := NetworkKey(ev.ClientIP)
	asn := asnHash(ev.ASN)
	var s state
	s.load(b)

	first := s.n == 0
	dt := detectors.Advance(&s.last, first, ev.Time)
	if first {
		s.first = s.last
	}
	age := max(float64(s.last-s.first)/1e9, 0)
	d := detectors.Decay(dt / Tau)
	churn := float64(s.churn) / math.MaxUint16 * detectors.Decay(dt/ChurnTau)
	s.alt *= detectors.Decay(dt / min(max(AltTau, AltGaps*s.gap), AltTauMax))
	switchGap := min(max(SwitchGap, SwitchGapGaps*s.gap), SwitchGapMax)
	if dt > 0 {
		s.gap += (min(dt, math.MaxUint16) - s.gap) / GapUp
	}

	slot, top, free, total := -1, -1, -1, 0.0
	for i := range Slots {
		s.weights[i] *= d
		w := s.weights[i]
		total += w
		if w > 0 && s.keys[i] == key {
			slot = i
		}
		if w > 0 && (top < 0 || w > s.weights[top]) {
			top = i
		}
		// The network of the previous request (of either family) is kept:
		// two new networks in turn must not evict each other.
		if (free < 0 || w < s.weights[free]) && s.lastSlot[0] != uint8(i) && s.lastSlot[1] != uint8(i) {
			free = i
		}
	}
	w := 0.0
	if slot >= 0 {
		w = s.weights[slot]
	} else {
		// Take the least used slot; forget the alternation through it.
		slot = free
		s.keys[slot], s.weights[slot], s.asns[slot] = key, 0, asn
		for fam := range 2 {
			if int(s.prevSlot[fam]) == slot {
				s.prevSlot[fam] = noSlot
			}
		}
	}
	if asn != 0 {
		s.asns[slot] = asn
	}

	// Switches, and switches back (A, B, A), within one address family.
	fam := 0
	if family(key) == 6 {
		fam = 1
	}
	last := s.lastSlot[fam]
	switched := last != noSlot && int(last) != slot && dt <= switchGap
	back := false // a switch back: A, B, A
	if switched {
		if s.alt < episodeFloor {
			s.epSwitches = 0
		}
		if s.epSwitches < math.MaxUint16 {
			s.epSwitches++
		}
		if int(s.prevSlot[fam]) == slot {
			s.alt++
			back = true
		}
		s.prevSlot[fam] = last
	}
	s.lastSlot[fam] = uint8(slot)

	// Concurrent use is reported on the switches back of a sustained
	// alternation to the less used network of the two (the clone's, the
	// stolen key's): it ends with the alternation, and neither the owner's
	// own requests, the one that ends it included, nor a move to a third
	// network are flagged.
	var f schemas.Finding
	if other := last; back && s.n >= WarmEvents && s.alt >= AltMin && s.weights[other] > 0 &&
		s.weights[slot] <= s.weights[other] {
		score := ConcurrentScore + (ConcurrentScoreMax-ConcurrentScore)*(1-AltMin/s.alt)
		if s.asns[other] != 0 && s.asns[other] == s.asns[slot] {
			score *= SameASNFactor
		}
		f = schemas.Finding{
			Detector: Name, Reason: ReasonConcurrentNetworks, Score: float32(score),
			Observed: float64(s.epSwitches), Expected: 1,
			ObservedLabel: NetworkLabel(key), ExpectedLabel: NetworkLabel(s.keys[other]),
		}
	}
	if s.n >= WarmEvents && age >= WarmAge && w < NewWeight && top >= 0 && top != slot && total > 0 {
		share := s.weights[top] / total
		score := NewNetworkScore * share * (0.5 + 0.5*min(1, age/EstablishedAge)) * (1 - churn) * (1 - w/NewWeight)
		if asn != 0 && s.asns[top] == asn {
			score *= NewSameASNFactor
		}
		if ev.Country.Known() {
			score *= KnownCountryFactor
		}
		if score >= minScore && float32(score) > f.Score {
			f = schemas.Finding{
				Detector: Name, Reason: ReasonNewNetwork, Score: float32(score),
				Observed: w / total, Expected: share,
				ObservedLabel: NetworkLabel(key), ExpectedLabel: NetworkLabel(s.keys[top]),
			}
		}
	}

	if ev.FailedAuth() {
		// A refused request is judged but teaches nothing: it did not prove
		// to be the device, so an attacker's failed logins neither become a
		// network of the device's nor an alternation with it.
		return f
	}

	// Learn: a flagged request barely counts towards its network.
	add := 1.0
	if f.Reason != schemas.ReasonNone {
		add = FlaggedWeight
	}
	if !first && s.weights[slot] == 0 {
		// A move to a network not in the table, flagged or not: a device
		// roaming abroad from address to address soon stops being news. An
		// attacker calling from one network moves once.
		churn += (1 - churn) / ChurnUp
	}
	s.churn = uint16(math.Round(min(max(churn, 0), 1) * math.MaxUint16))
	s.weights[slot] = min(s.weights[slot]+add, maxWeight)
	if s.n < math.MaxUint16 {
		s.n++
	}
	s.store(b)
	return f
}

// NetworkKey returns the network of a client address as a nonzero key: 4
// and the three bytes of its IPv4 /24, or 6 and the six bytes of its IPv6
// /48 (an IPv4-mapped IPv6 address is IPv4).
func NetworkKey(a netip.Addr) uint64 {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return 4<<56 | uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2])
	}
	b := a.As16()
	return 6<<56 | uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// family is a network key's address family (4 or 6).
func family(key uint64) uint64 { return key >> 56 }

// asnHash is a 16-bit hash of a known ASN, never 0; 0 for an unknown one.
func asnHash(asn uint32) uint16 {
	if asn == 0 {
		return 0
	}
	h := uint16(asn*2654435761>>16) | 1
	return h
}

// NetworkLabel writes a network key as text, without allocating: "a.b.c.0/24"
// for IPv4, "x:y:z::" (the /48) for IPv6.
func NetworkLabel(key uint64) schemas.Label {
	var l schemas.Label
	n := 0
	if family(key) == 4 {
		// At most "255.255.255.0/24": 16 bytes, the label's size.
		for _, sh := range [3]uint{16, 8, 0} {
			d := &decimal[byte(key>>sh)]
			n += copy(l[n:], d.digits[:d.n])
			l[n] = '.'
			n++
		}
		copy(l[n:], "0/24")
		return l
	}
	// At most "ffff:ffff:ffff::": 16 bytes, the label's size.
	for _, sh := range [3]uint{32, 16, 0} {
		v := uint16(key >> sh)
		digits := max(1, (19-bits.LeadingZeros16(v))/4) // hex digits, no leading zeros
		for i := digits - 1; i >= 0; i-- {
			l[n+i] = "0123456789abcdef"[v&0xf]
			v >>= 4
		}
		n += digits
		l[n] = ':'
		n++
	}
	l[n] = ':'
	return l
}

// decimal holds the decimal digits of every byte value.
var decimal = func() (t [256]struct {
	digits [3]byte
	n      int
}) {
	for v := range t {
		d := &t[v]
		switch {
		case v >= 100:
			d.digits, d.n = [3]byte{byte('0' + v/100), byte('0' + v/10%10), byte('0' + v%10)}, 3
		case v >= 10:
			d.digits, d.n = [3]byte{byte('0' + v/10), byte('0' + v%10)}, 2
		default:
			d.digits, d.n = [3]byte{byte('0' + v)}, 1
		}
	}
	return t
}()
