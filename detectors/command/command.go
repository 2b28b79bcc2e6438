// Package command flags commands a device has never issued (privileged ones
// above all) and enumeration: one device addressing many other resources.
//
// Each device keeps a 256-bit Bloom filter (k=2) of the commands it issued
// (ev.CommandID, the hash of the normalized command). A command missing from it
// is judged against the device's class through the fleet view, which counts
// the distinct devices of the class that issued it: a privileged command (see
// Privileged) that fewer than three other devices of the class issued scores
// high and is not learned, so repeating it keeps being flagged; other new
// commands are learned once flagged with a score below 0.5. A Bloom filter has false positives (a
// new command looks known): with 10 commands per device, about 1 in 600.
//
// Transitions: each device remembers its last command and a 192-bit Bloom
// filter of the transitions (previous command, command) it made. A transition
// missing from it is judged against the class's transition sketches (distinct
// devices, in the fleet view): one no other device of an established class made
// is rare_transition, scored by the class's maturity (its size, and its age up
// to a day: routine), and not learned when it would score LearnBelow or more
// in a class a day old. Class-level findings (a command or a transition
// no other device of an established class issued: ClassWarmDevices devices
// and ClassWarmAge of history) need no history of the device: they fire from
// its first event, as its class is its prior.
//
// Classes and models: a class is a device model in one tenant (Event.ClassKey);
// the fleet view also learns every class as its model across tenants
// (Event.ModelKey). A command or transition that fewer than ClassKnownDevices
// other devices of the class issued is judged against the model instead, a
// superset of the class: a tenant's locks that have not unlocked yet (it is
// night there, or the tenant is new) are judged by the unlocks of the model's
// locks elsewhere. A privileged command no device of the model issued is as
// suspicious as before; while its class (or model) is younger than a day
// (ClassMatureAge), which may not have seen its whole routine yet, it alerts
// without blocking.
//
// Enumeration: each device tracks its home resource (the identifier it
// addresses most, normally its own id, with a Misra-Gries counter) and the
// distinct other resources (ev.Resource) it addressed in the last 30-60
// seconds, in two 64-bit windows (linear counting). The count is compared with
// the device's own baseline of distinct other resources per window.
package command

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/detectors/locality"
	"github.com/iotwatch/iotwatch/schemas"
)

// Parameters.
const (
	// WarmEvents and WarmAge (seconds): a younger device learns its commands
	// silently, except privileged commands its (established) class never issued.
	WarmEvents = 20
	WarmAge    = 600.0
	// ClassWarmDevices is the number of distinct devices from which a class's
	// vocabulary is trusted; ClassKnownDevices how many other devices must have
	// issued a privileged command before it counts as known to the class.
	ClassWarmDevices  = 20
	ClassKnownDevices = 3
	// RareShare is the largest share of a class's devices that makes a
	// transition as rare as one no device made: in a class of thousands, a
	// transition one or two other devices made (1 in 1,000 or fewer) is
	// judged as one nobody made in a mature class, not as merely uncommon.
	RareShare = 1e-3
	// ClassWarmAge (seconds): a class is established, its vocabulary and
	// transitions trusted to judge devices with no history of their own, once
	// it has ClassWarmDevices devices and this much history.
	ClassWarmAge = 3600.0
	// ClassMatureAge (seconds): a privileged command no other device of a
	// class younger than a day issued scores ScorePrivilegedYoung, not
	// ScorePrivilegedNew: the class may not have seen its daily routine yet.
	ClassMatureAge = 86400.0
	// A command issued by UsualShare of the class's devices (or UsualDevices
	// devices) is usual for the class: its findings score lowest.
	UsualShare   = 0.2
	UsualDevices = 30
	// Scores.
	ScorePrivilegedNew   = 0.95 // privileged, issued by no other device of the class
	ScorePrivilegedRare  = 0.75 // privileged, issued by fewer than ClassKnownDevices other devices of the class
	ScorePrivilegedYoung = 0.8  // the same on a device still warming up, in a warm class
	ScorePrivilegedClass = 0.5  // privileged, never issued by the device, rare in its class...
	ScorePrivilegedUsual = 0.2  // ...down to this when usual for the class (locks unlock)
	ScoreClassMin        = 0.4  // issued by no other device of the class: from this in a young class...
	ScoreClassMax        = 0.7  // ...to this in a warm one (not learned by the device above LearnBelow)
	ScoreDeviceMax       = 0.35 // issued by other devices of the class, few...
	ScoreDeviceMin       = 0.1  // ...or usual for the class
	LearnBelow           = 0.5
	// An out-of-range argument scores from ScoreParamMin at the bound
	// (detectors.ParamK scales from the class's median) towards
	// ScoreParamMax: ScoreParamMin + (ScoreParamMax-ScoreParamMin)·(1-ParamK/z)
	// at z scales (0.73 at twice the bound, 0.9 at ten times).
	ScoreParamMin = 0.5
	ScoreParamMax = 0.95
	// A response's size (bytes out of a request answered with content:
	// status below 400, at least one byte) is judged, in log units, against
	// the range its class learned for the command, as an argument is: out
	// of it when more than detectors.ParamK scales above the class's median,
	// and also at least SizeMinRatio times the median and SizeMinBytes
	// (small answers vary by large factors). Scored as an argument.
	SizeMinRatio = 4.0
	SizeMinBytes = 1024.0
	// SizeLearnK: a response more than SizeLearnK scales above or below its
	// class's median for the command teaches the range nothing (see
	// detectors.ParamTable.LearnValue), so that a device's growing
	// downloads do not widen the range before they leave it.
	SizeLearnK = detectors.ParamK / 2
	// A transition (previous command, command) no other device of the class
	// made scores from ScoreTransitionMin in a class of ClassWarmDevices
	// devices to ScoreTransitionMax in one of TransitionWarmDevices or more
	// (transitions are many more than commands: a class needs more devices to
	// know them); one that one or two others made scores ScoreTransitionRare.
	TransitionWarmDevices = 100
	ScoreTransitionMin    = 0.3
	ScoreTransitionMax    = 0.65
	ScoreTransitionRare   = 0.25
	// Rollouts: a device that adopts a command (issues it for the first
	// time, after its warm-up) from its home network while at least
	// AdoptMin other devices of its class adopted it from theirs in the
	// last one to two AdoptWindow (seconds) takes part in a rollout: its
	// command finding, or its transition finding when either of the
	// transition's commands is so adopted, scores at most ScoreRollout and
	// is learned. One device alone, or one away from its home network, is
	// judged as before. The home network is the IPv4 /24 or IPv6 /48
	// (locality.NetworkKey) the device's requests come from most, kept
	// with a Misra-Gries counter capped at homeNetMax, and the ASN it is
	// on; it is known once the counter reaches HomeNetStable, and another
	// network on its ASN counts as home. A privileged command the device
	// never issued, from another network than a known home, while AdoptMin
	// other devices of its class adopt it, scores ScorePrivilegedAway
	// however usual it is for the class, and is not learned: a rollout's
	// command from a new network is not a rollout. Away from home outside
	// a rollout, it is judged as at home (by how usual it is for the
	// class): a vehicle abroad unlocks its doors on another carrier's
	// network, and the network is the locality and geo detectors' to judge.
	AdoptWindow = 1800
	AdoptMin    = 5
	// A rollout's first reporters: a firmware update is a sequence (check
	// the manifest, fetch the image, report), and the first devices to
	// reach its privileged step have too few peers that issued it for the
	// rollout discount. A device that adopted, from its home network, a
	// command new to its model (the class across tenants: a vendor's update
	// reaches every tenant; first issued by any of its devices less than
	// AdoptWindow before) that at least one other device of the model
	// adopted at the time is in a rollout's sequence for its next
	// RolloutSteps requests; a
	// privileged command it never issued within them, from its home
	// network, while at least AdoptMin other devices of its model adopt
	// commands, is the sequence's next step: it scores ScoreRollout and is
	// learned. A privileged command out of the blue (no shared adoption
	// before it) is judged as before, however many devices adopt commands.
	RolloutSteps        = 6
	ScoreRollout        = 0.25
	HomeNetStable       = 16
	homeNetMax          = 256
	ScorePrivilegedAway = 0.75
	// Window is the enumeration window, in seconds; the observed count covers
	// the current and the previous window.
	Window = 30
	// MinDistinct is the smallest distinct-resource count that can be an
	// enumeration, MinRatio the smallest ratio to the expected count,
	// FloorExpected the smallest expected count and MinSurprise the Poisson
	// tail threshold (decades).
	MinDistinct   = 10.0
	MinRatio      = 4.0
	FloorExpected = 0.5
	MinSurprise   = 6.0
	// baseAlpha is the weight of a closing window in the baseline (1/8 of it
	// when the window was flagged).
	baseAlpha = 1.0 / 16
	// maxHome bounds the home resource's Misra-Gries counter.
	maxHome = 1024
	// maxBase bounds the baseline read from a record (at most 64·ln 64).
	maxBase = 300
)

// StateSize is the size of the per-device record.
const StateSize = 120

// Record layout, little-endian:
//
//	0:8   first event time, Unix ns (int64)
//	8:12  events seen, saturating (uint32)
//	12:16 baseline distinct other resources per window (float32)
//	16:24 home resource hash (uint64)
//	24:32 current window's resource bitmap (uint64)
//	32:40 previous window's resource bitmap (uint64)
//	40:44 current window index, event time / Window (uint32, wrapping)
//	44:46 home resource counter (uint16)
//	46    flags: 1 = the current window was flagged as enumeration,
//	      2 = the last command, or the transition to it, was flagged and not learned;
//	      bits 2-4: requests left in a rollout's sequence (RolloutSteps; 0: none)
//	47    requests left before transitions are judged again after a 5xx
//	      (RetryQuiet; 0: judged)
//	48:80 Bloom filter of issued commands (256 bits)
//	80:88 last command, ev.CommandID (0: none)
//	88:112 Bloom filter of transitions made (192 bits)
//	112:116 home network, a hash of locality.NetworkKey (uint32, nonzero; 0: none)
//	116:118 home network counter (uint16, at most homeNetMax)
//	118:120 the home network's ASN, hashed (uint16; 0: none known)
type state struct {
	first     int64
	n         uint32
	base      float64
	home      uint64
	cur, prev uint64
	win       uint32
	homeCnt   uint16
	flagged   bool
	last      uint64
	lastBad   bool
	// quiet is how many more requests after the device's latest 5xx make
	// transitions that are neither judged nor learned (RetryQuiet).
	quiet uint8
	// seq is how many more requests the device is in a rollout's sequence
	// (RolloutSteps).
	seq uint8
	// homeNet and homeNetCnt: the device's home network (netHash) and
	// its Misra-Gries counter.
	homeNet    uint32
	homeNetCnt uint16
	homeASN    uint16
}

const (
	bloomOff = 48
	lastOff  = 80
	transOff = 88
	netOff   = 112
	// RetryQuiet is how many requests after a 5xx make transitions that
	// are not judged: a device retries a failed request up to six times
	// with backoff, between its other requests.
	RetryQuiet = 16
	// transBits is the size of the transition Bloom filter.
	transBits = (netOff - transOff) * 8
)

func (s *state) load(b []byte) {
	_ = b[StateSize-1]
	s.first = int64(binary.LittleEndian.Uint64(b[0:]))
	s.n = binary.LittleEndian.Uint32(b[8:])
	s.base = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[12:])))
	if !(s.base >= 0 && s.base <= maxBase) {
		s.base = 0
	}
	s.home = binary.LittleEndian.Uint64(b[16:])
	s.cur = binary.LittleEndian.Uint64(b[24:])
	s.prev = binary.LittleEndian.Uint64(b[32:])
	s.win = binary.LittleEndian.Uint32(b[40:])
	s.homeCnt = min(binary.LittleEndian.Uint16(b[44:]), maxHome)
	s.flagged = b[46]&1 != 0
	s.lastBad = b[46]&2 != 0
	s.quiet = min(b[47], RetryQuiet)
	s.seq = min(b[46]>>2&7, RolloutSteps)
	s.last = binary.LittleEndian.Uint64(b[lastOff:])
	s.homeNet = binary.LittleEndian.Uint32(b[netOff:])
	s.homeNetCnt = min(binary.LittleEndian.Uint16(b[netOff+4:]), homeNetMax)
	s.homeASN = binary.LittleEndian.Uint16(b[netOff+6:])
}

func (s *state) store(b []byte) {
	_ = b[StateSize-1]
	binary.LittleEndian.PutUint64(b[0:], uint64(s.first))
	binary.LittleEndian.PutUint32(b[8:], s.n)
	binary.LittleEndian.PutUint32(b[12:], math.Float32bits(float32(s.base)))
	binary.LittleEndian.PutUint64(b[16:], s.home)
	binary.LittleEndian.PutUint64(b[24:], s.cur)
	binary.LittleEndian.PutUint64(b[32:], s.prev)
	binary.LittleEndian.PutUint32(b[40:], s.win)
	binary.LittleEndian.PutUint16(b[44:], s.homeCnt)
	b[46], b[47] = s.seq<<2, s.quiet
	if s.flagged {
		b[46] |= 1
	}
	if s.lastBad {
		b[46] |= 2
	}
	binary.LittleEndian.PutUint64(b[lastOff:], s.last)
	binary.LittleEndian.PutUint32(b[netOff:], s.homeNet)
	binary.LittleEndian.PutUint16(b[netOff+4:], s.homeNetCnt)
	binary.LittleEndian.PutUint16(b[netOff+6:], s.homeASN)
}

// Where a request comes from, relative to the device's home network.
type place uint8

const (
	placeUnknown place = iota // no home network known yet
	placeHome                 // the home network
	placeAway                 // another network than a known home
)

// netHash is the nonzero 32-bit hash of a's network (locality.NetworkKey).
func netHash(a netip.Addr) uint32 {
	return uint32((locality.NetworkKey(a)*0x9e3779b97f4a7c15)>>32) | 1
}

// asnHash is the nonzero 16-bit hash of a known ASN; 0 for none.
func asnHash(asn uint32) uint16 {
	if asn == 0 {
		return 0
	}
	return uint16((uint64(asn)*0x9e3779b97f4a7c15)>>48) | 1
}

// where tells where ev comes from, relative to the home network before ev:
// a network on the home network's ASN is home too (a household's provider
// giving it a new address, a carrier's NAT pool).
func (s *state) where(ev *schemas.Event) place { return s.whereNet(ev, netHash(ev.ClientIP)) }

// whereNet is where, given net, the netHash of ev's client IP.
func (s *state) whereNet(ev *schemas.Event, net uint32) place {
	switch {
	case s.homeNetCnt < HomeNetStable:
		return placeUnknown
	case net == s.homeNet:
		return placeHome
	case s.homeASN != 0 && asnHash(ev.ASN) == s.homeASN:
		return placeHome
	}
	return placeAway
}

// learnNet counts ev's network towards the home network (Misra-Gries).
func (s *state) learnNet(ev *schemas.Event) { s.learnNetOf(ev, netHash(ev.ClientIP)) }

// learnNetOf is learnNet, given h, the netHash of ev's client IP.
func (s *state) learnNetOf(ev *schemas.Event, h uint32) {
	switch {
	case h == s.homeNet:
		s.homeNetCnt = min(s.homeNetCnt+1, homeNetMax)
		if a := asnHash(ev.ASN); a != 0 {
			s.homeASN = a
		}
	case s.homeNetCnt == 0:
		s.homeNet, s.homeNetCnt, s.homeASN = h, 1, asnHash(ev.ASN)
	default:
		s.homeNetCnt--
	}
}

// warm reports whether the device is past its warm-up at ev (WarmEvents
// and WarmAge).
func (s *state) warm(ev *schemas.Event) bool {
	return s.n >= WarmEvents && ev.Time > s.first && float64(uint64(ev.Time)-uint64(s.first)) >= WarmAge*1e9
}

// adopting reports whether ev adopts its command, judged from before (the
// device's record before ev): the device is past its warm-up, never issued
// the command and comes from its home network.
func adopting(ev *schemas.Event, before []byte) bool {
	if len(before) < StateSize {
		return false
	}
	var s state
	s.load(before)
	h := ev.CommandID
	b1, b2 := byte(h), byte(h>>8)
	bloom := before[bloomOff:lastOff]
	known := bloom[b1>>3]&(1<<(b1&7)) != 0 && bloom[b2>>3]&(1<<(b2&7)) != 0
	return !known && s.warm(ev) && s.where(ev) == placeHome
}

// rolloutStep reports whether the transition from prev to ev's command is a
// step of a rollout across ev's class: either command is adopted as a
// rollout (see rollout), or, while at least AdoptMin other devices of the
// class adopt commands (any), another device adopts either of them too.
func rolloutStep(ev *schemas.Event, fleet *Stats, at place, prev uint64) bool {
	if rollout(ev, fleet, at, ev.CommandID) || rollout(ev, fleet, at, prev) {
		return true
	}
	return fleet != nil && at == placeHome &&
		fleet.ClassAdopters(ev.ClassKey, anyCommand, ev.DeviceKey, ev.Time) >= AdoptMin &&
		(fleet.ClassAdopters(ev.ClassKey, ev.CommandID, ev.DeviceKey, ev.Time) >= 0.5 ||
			prev != 0 && fleet.ClassAdopters(ev.ClassKey, prev, ev.DeviceKey, ev.Time) >= 0.5)
}

// anyCommand is the CommandID under which the adoptions of every command of
// a class are counted too (no command hashes to it in practice).
const anyCommand = 0x6164_6f70_7421_2a2a

// rollout reports whether ev's device, at place at, takes part in a
// rollout of command (a CommandID) across its class: at home, with at least
// AdoptMin other devices of the class adopting it.
func rollout(ev *schemas.Event, fleet *Stats, at place, command uint64) bool {
	return fleet != nil && at == placeHome && command != 0 &&
		fleet.ClassAdopters(ev.ClassKey, command, ev.DeviceKey, ev.Time) >= AdoptMin
}

// modelKey is the key of ev's model (its class across tenants), or of its
// class when it has none.
func modelKey(ev *schemas.Event) uint64 {
	if ev.HasModel() {
		return ev.ModelKey
	}
	return ev.ClassKey
}

// rolloutNext reports whether a privileged command of a device in a
// rollout's sequence (see RolloutSteps) is the sequence's next step: from
// its home network, while at least AdoptMin other devices of its model
// adopt commands.
func rolloutNext(ev *schemas.Event, fleet *Stats, at place) bool {
	return fleet != nil && at == placeHome &&
		fleet.ClassAdopters(modelKey(ev), anyCommand, ev.DeviceKey, ev.Time) >= AdoptMin
}

// Doc is the catalog paragraph.
const Doc = "Commands the device never issued (256-bit Bloom filter per device), judged against its class. " +
	"Class knowledge counts distinct devices (sketches in the fleet view), so no single device can teach its " +
	"class. A class is a device model in one tenant; a command or transition that fewer than three other devices " +
	"of the class issued is judged against the model across tenants instead (its devices, counts and age), so that " +
	"the locks of a tenant whose night it is are not flagged for the unlocks the model's other tenants make by day. " +
	"A privileged command (a word starting with unlock, firmware, credential, password, passwd, reset, " +
	"config or reconfig, or the word fw or ota; reads such as GET never are) scores 0.95 when no other device of " +
	"the class issued it (0.8 while the class is younger than a day: it may not have seen its whole routine yet) " +
	"and 0.75 when one or two did, and is then not learned; issued by more, it scores 0.5 " +
	"falling to 0.2 as it becomes usual for the class (privileged_command_new). A command no other device of " +
	"the class issued scores 0.4-0.7 by the class's maturity (20 devices, and a day of history: a class seen for " +
	"hours has not seen its devices' daily routine, so the score grows with its age up to a day) " +
	"(new_class_command), and is learned by the device only when its class has fewer than 7 devices; one that others " +
	"issue scores 0.1-0.35, rarer higher (new_command). Transitions (previous command, command) the device " +
	"never made (192-bit Bloom filter) are judged against the class's transition sketches once the class is " +
	"established (20 devices and 1 h of history): one no other device of the class made scores 0.3-0.65 by " +
	"the class's maturity (20-100 devices, and a day of history, whichever is less) and is not learned when its " +
	"class has more than about 65 devices, " +
	"one that one or two others made 0.25, or 0.65 when they are at most 1 in 1,000 of the class (rare_transition; Observed and Expected as for commands, label: the " +
	"second command); a step out of a flagged command or transition is not judged again, nor are the transitions of " +
	"the 16 requests after a 5xx (retries with backoff, a backend incident's catch-up). Devices with fewer " +
	"than 20 events or 10 minutes of history learn silently, except privileged commands unknown to an established " +
	"class (0.8) and commands (0.4-0.7 by the class's age, up to a day) and transitions unknown to an established " +
	"one, flagged from the first event. " +
	"Enumeration: distinct " +
	"resources other than the device's own addressed in the last 30-60 s (Observed, estimated) against the " +
	"device's baseline for that span (Expected), fires at 10 or more, 4x expected and a Poisson tail below " +
	"1e-6; score 0.5 rising with the count. A rollout is not an attack: a device past its warm-up that issues a " +
	"command for the first time from its home network (the /24 or /48 it calls from most, or another on that " +
	"network's ASN) while at least 5 other devices of its class adopted the same command from theirs in the last " +
	"30-60 minutes scores at most 0.25 for the command, and for a transition into or out of such a command (or of " +
	"one another device adopts while 5 others of the class adopt commands), and learns it; one device alone, or one away from its home network, is judged as before, and a privileged command " +
	"the device never issued, from away while the class adopts it, scores 0.75 however usual it is for the class " +
	"(away outside a rollout, it is judged as at home: the network is locality's and geo's to judge). " +
	"A rollout's first reporters: a device that, from its home network, adopted a command new to its model (first " +
	"issued by a device of the class across tenants less than 30 minutes before) that another device of the model " +
	"adopted too, is in the rollout's sequence while its next requests (up to 6) are commands it never issued; a " +
	"privileged command among them, from home, while 5 other devices of the model adopt commands, and the transition " +
	"into it, score at most 0.25 and are learned; a request of its routine in between ends the sequence. For command findings Observed is the estimated number of other " +
	"devices of the class that issued the command and Expected the class's estimated device count; the " +
	"observed label is the end of the command (\"/{id}/unlock\"). " +
	"Numeric arguments (the log's args, or numeric query parameters) are judged against the range their class " +
	"learned for the command and argument (streaming median and mean absolute deviation, in the fleet view; " +
	"judged after 50 values from 5 devices; values it flags are not learned, and 8 devices contradicting a range " +
	"restart it): a value more than 8 scales from the median is param_out_of_range, score 0.5 at the bound " +
	"rising to 0.95 (Observed: the value, label the argument name; Expected: the bound crossed, label the command). " +
	"Response sizes are judged the same way, per class, command and firmware (user agent): the size of a response " +
	"with content (bytes out, status below 400, on a device of a known class) in log units against the range its " +
	"class's devices get for the command; more than 8 scales above the median, and at least 4x the median and " +
	"1 KB, is response_size_out_of_range (downloads growing through a command the device uses; Observed: the " +
	"bytes, label bytes_out; Expected: the bound crossed, in bytes, label the command). A response more than 4 " +
	"scales from the median teaches the range nothing, and 8 devices sending such responses restart it (a new " +
	"firmware's larger answers)."

func init() {
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Reasons: []string{ReasonNewCommand, ReasonNewClassCommand,
			ReasonPrivilegedNew, ReasonEnumeration, ReasonRareTransition,
			ReasonParamOutOfRange, ReasonResponseSize},
		Version: 3, // 2: byte 47 counts the requests after a 5xx (RetryQuiet); 3: the home network
		New:     func() detectors.Detector { return &Detector{} },
		Stats:   func(classes *detectors.ClassTable) detectors.ClassStats { return NewStats(classes) },
	})
}

// Detector is the command detector. The zero value is ready to use.
type Detector struct{}

// Observe implements detectors.Detector. Class knowledge comes from fleet
// when it is the detector's *Stats (as a ClassModel hands it); any other
// view, or nil, judges without it.
func (*Detector) Observe(ev *schemas.Event, b []byte, view detectors.Fleet) schemas.Finding {
	if len(b) < StateSize {
		return schemas.Finding{}
	}
	fleet, _ := view.(*Stats)
	var s state
	s.load(b)
	if s.n == 0 {
		s.first = ev.Time
		s.win = window(ev.Time)
		s.cur, s.prev, s.flagged = 0, 0, false
		s.last, s.lastBad = 0, false
	}
	warm := s.warm(ev)
	net := netHash(ev.ClientIP) // once: where before ev, then learned
	at := s.whereNet(ev, net)
	s.learnNetOf(ev, net)

	enum := s.enumeration(ev, warm)
	f := s.command(ev, b[bloomOff:lastOff], b[transOff:netOff], fleet, warm, at)
	if enum.Score > f.Score {
		f = enum
	}
	if ev.NArgs > 0 && fleet != nil {
		if p := params(ev, fleet); p.Score > f.Score {
			f = p
		}
	}
	if fleet != nil && sizeJudged(ev) {
		responseSize(ev, fleet, &f)
	}
	if s.n < math.MaxUint32 {
		s.n++
	}
	s.store(b)
	return f
}

// Rearm implements detectors.Rearmer: the enumeration windows (the distinct
// resources addressed in the last 30-60 s) start empty. Commands and
// transitions learned, and the enumeration baseline, are kept.
func (Detector) Rearm(b []byte) {
	if len(b) < StateSize {
		return
	}
	clear(b[24:40]) // the current and previous windows' resource bitmaps
	b[46] &^= 1     // the current window is no longer flagged
}

func window(t int64) uint32 { return uint32(t / (Window * 1e9)) }

// distinct estimates the number of distinct resources set in bitmap m.
func distinct(m uint64) float64 { return distinctByOnes[bits.OnesCount64(m)] }

// distinctByOnes is distinct's estimate by the bitmap's ones, computed once:
// a logarithm per event was a tenth of an enumeration's cost.
var distinctByOnes = func() (d [65]float64) {
	for ones := range d {
		d[ones] = distinctOf(ones)
	}
	return d
}()

// distinctOf is the linear-counting estimate of a 64-bit bitmap with ones set.
func distinctOf(ones int) float64 {
	zeros := 64 - ones
	if zeros == 0 {
		return 64 * math.Ln2 * 6 // 64·ln 64: the estimator's limit
	}
	return 64 * math.Log(64/float64(zeros))
}

func (s *state) enumeration(ev *schemas.Event, warm bool) schemas.Finding {
	// Rotate windows; a late event (an earlier window) counts in the current one.
	if d := int32(window(ev.Time) - s.win); d > 0 {
		// A flagged window teaches the baseline little (an enumeration does not
		// become normal), but something (a gateway that starts polling more
		// devices does, eventually).
		alpha := baseAlpha
		if s.flagged {
			alpha = baseAlpha / 8
		}
		s.base += alpha * (distinct(s.cur) - s.base)
		if d == 1 {
			s.prev = s.cur
		} else {
			s.prev = 0
		}
		s.cur, s.flagged, s.win = 0, false, window(ev.Time)
	}
	r := ev.Resource
	if r == 0 {
		return schemas.Finding{}
	}
	switch {
	case r == s.home:
		s.homeCnt = min(s.homeCnt+1, maxHome)
		return schemas.Finding{}
	case s.homeCnt == 0:
		s.home, s.homeCnt = r, 1
		return schemas.Finding{}
	}
	s.cur |= 1 << (r >> 58)
	var f schemas.Finding
	if warm {
		observed := distinct(s.cur | s.prev)
		expected := max(2*s.base, FloorExpected)
		if observed >= MinDistinct && observed >= MinRatio*expected {
			if score := detectors.SurpriseScore(detectors.PoissonSurprise(observed, expected), MinSurprise); score > 0 {
				f = schemas.Finding{
					Detector: Name,
					Reason:   ReasonEnumeration,
					Score:    score,
					Observed: observed,
					Expected: expected,
				}
				s.flagged = true
			}
		}
	}
	if f.Reason == schemas.ReasonNone {
		s.homeCnt--
	}
	return f
}

// command judges ev's command and the transition to it from the device's last
// command, and records both.
func (s *state) command(ev *schemas.Event, bloom, trans []byte, fleet *Stats, warm bool, at place) schemas.Finding {
	h := ev.CommandID
	var (
		f        schemas.Finding
		learned  = true
		cls      classLook
		newToDev bool // a command the device never issued
		step     bool // ev's command is a rollout sequence's next step
	)
	b1, b2 := byte(h), byte(h>>8)
	if bloom[b1>>3]&(1<<(b1&7)) == 0 || bloom[b2>>3]&(1<<(b2&7)) == 0 {
		newToDev = true
		f, learned, step = newCommand(ev, bloom, fleet, &cls, warm, at, s.seq > 0)
	}
	switch {
	case newToDev && learned && warm && at == placeHome && fleet != nil &&
		fleet.ClassAdopters(modelKey(ev), h, ev.DeviceKey, ev.Time) >= 0.5 &&
		fleet.classCommandNew(modelKey(ev), h, ev.Time):
		s.seq = RolloutSteps // adopted what is new to its model, with others
	case !newToDev:
		s.seq = 0 // a command it knew: its routine, not the sequence
	case s.seq > 0:
		s.seq--
	}
	prev, prevBad := s.last, s.lastBad
	s.last, s.lastBad = h, !learned
	// After a request the backend failed, the device's retries (with
	// backoff, between its other requests) and its catch-up break its
	// grammar: the next RetryQuiet transitions are not the device's own,
	// neither judged nor learned.
	quiet := s.quiet > 0
	switch {
	case ev.Status >= 500 && ev.Status < 600:
		s.quiet = RetryQuiet
	case quiet:
		s.quiet--
	}
	// A transition out of or into a command or transition the device was
	// flagged for (and did not learn) is part of that finding, not a second one.
	if prev == 0 || prevBad || !learned || quiet {
		return f
	}
	t := prev*0xc2b2ae3d27d4eb4f ^ h
	t ^= t >> 31
	t *= 0x9e3779b97f4a7c15
	i1 := uint((uint64(uint32(t)) * transBits) >> 32)
	i2 := uint(((t >> 32) * transBits) >> 32)
	if trans[i1>>3]&(1<<(i1&7)) != 0 && trans[i2>>3]&(1<<(i2&7)) != 0 {
		return f
	}
	tf, learn := transition(ev, prev, fleet, cls.get(ev, fleet), at, step)
	if learn {
		trans[i1>>3] |= 1 << (i1 & 7)
		trans[i2>>3] |= 1 << (i2 & 7)
	} else {
		s.lastBad = true // the way out of a flagged step belongs to the same finding
	}
	if tf.Score > f.Score {
		f = tf
	}
	return f
}

// params judges ev's numeric arguments against the ranges ev's class learned
// for its command, and returns the finding of the one furthest out.
func params(ev *schemas.Event, fleet *Stats) schemas.Finding {
	var f schemas.Finding
	for _, a := range ev.ArgList() {
		z, bound := fleet.ClassParam(ev.ClassKey, ev.CommandID, a.Key).Judge(a.Value)
		if z == 0 {
			continue
		}
		score := float32(ScoreParamMin + (ScoreParamMax-ScoreParamMin)*(1-detectors.ParamK/z))
		if score <= f.Score {
			continue
		}
		f = schemas.Finding{
			Detector:      Name,
			Reason:        ReasonParamOutOfRange,
			Score:         score,
			Observed:      a.Value,
			Expected:      bound,
			ObservedLabel: schemas.MakeLabel(a.Name),
			ExpectedLabel: commandLabel(ev.Command),
		}
	}
	return f
}

// responseSizeKey is the name key under which the argument table
// (detectors.ParamTable) keeps the range of a command's response sizes,
// ln(1+bytes out), per class: a constant, where an argument's key is the
// hash of its name.
const responseSizeKey = 0x7265_7370_6f6e_7365 // "response"

// sizeKey is the name key of ev's response size range: per firmware (the
// user agent), since what a command returns changes with the firmware that
// asks (a new firmware's larger config document): a class in the middle of
// a rollout keeps one range per version, not one wide range of both.
func sizeKey(ev *schemas.Event) uint64 { return responseSizeKey ^ schemas.Hash(ev.Firmware) }

// logSizeMinRatio is ln(SizeMinRatio); bytesOutLabel labels a response
// size finding's Observed.
var (
	logSizeMinRatio = math.Log(SizeMinRatio)
	bytesOutLabel   = schemas.LabelString("bytes_out")
)

// sizeJudged reports whether ev's response size is learned and judged: a
// request answered with content. An empty answer (a 204, an acknowledged
// publish) and an error's body say nothing of what the command returns.
// Only a device of a class: what makes "the same command, the same size"
// (a person's browser fetches pages of every size).
func sizeJudged(ev *schemas.Event) bool {
	return ev.BytesOut > 0 && ev.Status < 400 && len(ev.Class) > 0
}

// responseSize judges ev's response size against the range ev's class
// learned for its command. Why per command and class: a device's own
// responses mix empty acknowledgements, small answers and its occasional
// download, so no size of its own tells a config grown twentyfold from the
// device's usual traffic (its median answer is often 0 bytes); its class's
// devices get about the same size for the same command. A class-wide change
// (a new firmware's larger config) restarts the range, as a class moving
// its arguments does (detectors.ParamShiftDevices).
// The finding replaces *f when it scores higher (in place: it is built
// only then, and not copied back).
func responseSize(ev *schemas.Event, fleet *Stats, f *schemas.Finding) {
	if float64(ev.BytesOut) < SizeMinBytes {
		return
	}
	x := detectors.Log1pCount(float64(ev.BytesOut))
	r := fleet.ClassParam(ev.ClassKey, ev.CommandID, sizeKey(ev))
	z, bound := r.Judge(x)
	if z == 0 || x < r.Center+logSizeMinRatio {
		return // in range, below it, or not SizeMinRatio times the median
	}
	score := float32(ScoreParamMin + (ScoreParamMax-ScoreParamMin)*(1-detectors.ParamK/z))
	if score <= f.Score {
		return
	}
	*f = schemas.Finding{
		Detector:      Name,
		Reason:        ReasonResponseSize,
		Score:         score,
		Observed:      float64(ev.BytesOut),
		Expected:      math.Expm1(max(bound, r.Center+logSizeMinRatio)),
		ObservedLabel: bytesOutLabel,
		ExpectedLabel: commandLabel(ev.Command),
	}
}

// class is what the fleet view says of ev's class.
type class struct {
	devices     float64 // estimated distinct devices
	established bool    // ClassWarmDevices devices and ClassWarmAge of history
	mature      bool    // ClassMatureAge of history
	// age is the share of ClassMatureAge the class has been seen, in
	// [0,1]: how much of its devices' daily routine its vocabulary and
	// transitions can hold (routine).
	age float64
}

// routine scales a class-level novelty score (a command or a transition no
// other device of the class issued) from lo to hi by how much of a day the
// class has been seen (class.age) and by size (size, in [0,1]), whichever
// is less: a class seen for an hour has not seen its devices' daily routine
// (a vehicle's trip ends, an activation, a camera's live view, the steps of
// a monthly update), so what none of its devices did yet is weak evidence
// on its own, as ClassMatureAge already makes a privileged command alert
// without blocking. The score reaches hi once the class is a day old.
func routine(lo, hi, size float64, cls class) float64 {
	return lo + (hi-lo)*min(size, cls.age, 1)
}

func lookClass(ev *schemas.Event, fleet *Stats) class { return look(ev, fleet, ev.ClassKey) }

// classLook is lookClass of one event, looked up when first needed (a
// command judged in its model needs it only for the transition after it).
type classLook struct {
	c      class
	looked bool
}

func (l *classLook) get(ev *schemas.Event, fleet *Stats) class {
	if !l.looked {
		l.c, l.looked = lookClass(ev, fleet), true
	}
	return l.c
}

// look returns what the fleet view says of the class key (ev's class or
// model) at ev's time.
func look(ev *schemas.Event, fleet *Stats, key uint64) class {
	if fleet == nil {
		return class{}
	}
	c := class{devices: fleet.ClassDevices(key)}
	since := fleet.ClassSince(key)
	if since == 0 || ev.Time <= since {
		return c
	}
	age := float64(ev.Time-since) / 1e9
	c.established = c.devices >= ClassWarmDevices && age >= ClassWarmAge
	c.mature = age >= ClassMatureAge // whatever its size: the age is what a routine needs
	c.age = min(age/ClassMatureAge, 1)
	return c
}

// widen reports whether a command or transition that others other devices
// of ev's class issued is judged in ev's model instead: the class across
// tenants, a superset of it, when ev has one and the class knows it from
// fewer than ClassKnownDevices devices (the locks of a tenant whose night it
// is have not unlocked yet; those of the model have).
func widen(ev *schemas.Event, others float64) bool {
	return others < ClassKnownDevices && ev.HasModel()
}

// transition judges the transition from prev to ev's command, which the device
// never made, against its class; learn reports whether the device should
// remember it.
// step reports whether ev's command was judged the next step of a rollout's
// sequence (see RolloutSteps): the transition into it is part of that step.
func transition(ev *schemas.Event, prev uint64, fleet *Stats, cls class, at place, step bool) (f schemas.Finding, learn bool) {
	if fleet == nil || !cls.established {
		return f, true // a young class knows too few transitions to judge any
	}
	others := fleet.classTransitionOthers(ev.ClassKey, prev, ev.CommandID, ev.DeviceKey, ev.Time)
	if widen(ev, others) {
		if cls = look(ev, fleet, ev.ModelKey); !cls.established {
			return f, true
		}
		others = fleet.classTransitionOthers(ev.ModelKey, prev, ev.CommandID, ev.DeviceKey, ev.Time)
	}
	devices := cls.devices
	var score float64
	learn = true
	switch {
	case others < 0.5 || others < ClassKnownDevices && others+1 <= RareShare*devices: // none, or as few as none
		size := (devices - ClassWarmDevices) / (TransitionWarmDevices - ClassWarmDevices)
		// Learned or not by the class's size alone: a young class's low
		// score (routine) does not teach the device a step no other
		// device took.
		learn = ScoreTransitionMin+(ScoreTransitionMax-ScoreTransitionMin)*min(size, 1) < LearnBelow
		score = routine(ScoreTransitionMin, ScoreTransitionMax, size, cls)
	case others < ClassKnownDevices:
		score = ScoreTransitionRare
	default:
		return f, true
	}
	if score > ScoreRollout && (step || rolloutStep(ev, fleet, at, prev)) {
		score, learn = ScoreRollout, true // a step of a rollout across the class
	}
	return schemas.Finding{
		Detector:      Name,
		Reason:        ReasonRareTransition,
		Score:         float32(score),
		Observed:      math.Round(others*10) / 10,
		Expected:      math.Round(devices*10) / 10,
		ObservedLabel: commandLabel(ev.Command),
	}, learn && score < LearnBelow
}

// newCommand judges ev's command, which the device never issued, against its
// class, and learns it into bloom unless flagged high; learned reports
// whether it did.
//
// inSeq reports whether the device is in a rollout's sequence (see
// RolloutSteps).
func newCommand(ev *schemas.Event, bloom []byte, fleet *Stats, lc *classLook, warm bool, at place, inSeq bool) (f schemas.Finding, learned, step bool) {
	h := ev.CommandID
	b1, b2 := byte(h), byte(h>>8)
	var (
		others float64 // other devices of the class (or model) that issued it
		cls    class   // what the fleet view says of the class (or model)
	)
	if fleet != nil {
		others = fleet.classCommandOthers(ev.ClassKey, h, ev.DeviceKey, ev.Time)
		if widen(ev, others) {
			others, cls = fleet.classCommandOthers(ev.ModelKey, h, ev.DeviceKey, ev.Time), look(ev, fleet, ev.ModelKey)
		} else {
			cls = lc.get(ev, fleet)
		}
	}
	devices := cls.devices
	priv := Privileged(ev.Command)
	var (
		reason string
		score  float64
		learn  = true
	)
	switch {
	case !warm:
		// The device's own vocabulary is not known yet; its class's may be.
		switch {
		case priv && others < ClassKnownDevices && cls.established:
			reason, score, learn = ReasonPrivilegedNew, ScorePrivilegedYoung, false
		case others < 0.5 && cls.established:
			reason, score, learn = ReasonNewClassCommand, routine(ScoreClassMin, ScoreClassMax, 1, cls), false
		}
	case priv && others < 0.5 && !cls.mature:
		// A class younger than a day may not have seen its daily routine
		// (its updates, its mornings): an alert, not a block.
		reason, score, learn = ReasonPrivilegedNew, ScorePrivilegedYoung, false
	case priv && others < 0.5:
		reason, score, learn = ReasonPrivilegedNew, ScorePrivilegedNew, false
	case priv && others < ClassKnownDevices:
		// One or two others of the class did: rare enough to alert, not to block.
		reason, score, learn = ReasonPrivilegedNew, ScorePrivilegedRare, false
	case priv && at == placeAway && fleet != nil &&
		fleet.ClassAdopters(ev.ClassKey, h, ev.DeviceKey, ev.Time) >= AdoptMin:
		// The class adopts it now, but the device is away from its home
		// network: a rollout's command is not issued from elsewhere. Away
		// alone is not the finding (a vehicle abroad unlocks its doors on
		// the neighbour's carrier; the network is locality's and geo's to
		// judge): it only withholds the rollout's discount.
		reason, score, learn = ReasonPrivilegedNew, ScorePrivilegedAway, false
	case priv:
		// A lock that unlocks for the first time is a lock; a privileged command
		// few of its class issue is worth a look, not an alert on its own.
		reason = ReasonPrivilegedNew
		score = ScorePrivilegedClass - (ScorePrivilegedClass-ScorePrivilegedUsual)*usual(others, devices)
	case others < 0.5:
		reason = ReasonNewClassCommand
		// Learned or not by the class's size alone: a young class's low
		// score (routine) does not teach the device a command no other
		// device issued.
		learn = ScoreClassMin+(ScoreClassMax-ScoreClassMin)*min(devices/ClassWarmDevices, 1) < LearnBelow
		score = routine(ScoreClassMin, ScoreClassMax, devices/ClassWarmDevices, cls)
	default:
		reason = ReasonNewCommand
		score = ScoreDeviceMax - (ScoreDeviceMax-ScoreDeviceMin)*usual(others, devices)
	}
	if reason != schemas.ReasonNone && score > ScoreRollout && rollout(ev, fleet, at, h) {
		score, learn = ScoreRollout, true // adopted across the class from home networks at once
	}
	if reason == ReasonPrivilegedNew && score > ScoreRollout && inSeq && warm && rolloutNext(ev, fleet, at) {
		score, learn, step = ScoreRollout, true, true // the next step of a sequence the device's model adopts
	}
	if learn {
		bloom[b1>>3] |= 1 << (b1 & 7)
		bloom[b2>>3] |= 1 << (b2 & 7)
	}
	if reason == schemas.ReasonNone {
		return schemas.Finding{}, learn, step
	}
	return schemas.Finding{
		Detector:      Name,
		Reason:        reason,
		Score:         float32(score),
		Observed:      math.Round(others*10) / 10,
		Expected:      math.Round(devices*10) / 10,
		ObservedLabel: commandLabel(ev.Command),
	}, learn, step
}

// usual is how usual a command is for its class, in [0,1]: the share of the
// class's devices that issued it, relative to UsualShare (capped at
// UsualDevices devices, for large classes whose sketches saturate).
func usual(others, devices float64) float64 {
	need := min(max(UsualShare*devices, ClassKnownDevices), UsualDevices)
	return min(others/need, 1)
}

// commandLabel returns the end of cmd, where commands differ: its last 16
// bytes, starting at a '/' when there is one ("/{id}/unlock").
func commandLabel(cmd []byte) schemas.Label {
	const n = len(schemas.Label{})
	if len(cmd) > n {
		cmd = cmd[len(cmd)-n:]
		for i, c := range cmd {
			if c == '/' {
				cmd = cmd[i:]
				break
			}
		}
	}
	return schemas.MakeLabel(cmd)
}

// Privileged reports whether a normalized command is privileged: one of its
// words starts with unlock, firmware, credential, password, passwd, reset,
// config or reconfig, or is fw or ota. Words are runs of ASCII letters, also
// split where a lower-case letter is followed by an upper-case one
// ("factoryReset"), compared case-insensitively; so "/presets" and "/quota"
// are not privileged. Reads (GET, HEAD, OPTIONS, SUBSCRIBE) are never
// privileged: fetching one's config or checking for a firmware update changes
// nothing. It does not allocate.
func Privileged(cmd []byte) bool {
	for _, m := range readMethods {
		if len(cmd) > len(m) && string(cmd[:len(m)]) == m && cmd[len(m)] == ' ' {
			return false
		}
	}
	for i := 0; i < len(cmd); {
		if !isLetter(cmd[i]) {
			i++
			continue
		}
		j := i + 1
		for j < len(cmd) && isLetter(cmd[j]) && !(isLower(cmd[j-1]) && !isLower(cmd[j])) {
			j++
		}
		if privilegedWord(cmd[i:j]) {
			return true
		}
		i = j
	}
	return false
}

var readMethods = [...]string{"GET", "HEAD", "OPTIONS", "SUBSCRIBE"}

var privilegedPrefixes = [...]string{"unlock", "firmware", "credential", "password", "passwd", "reset", "config", "reconfig"}

func privilegedWord(w []byte) bool {
	switch len(w) {
	case 0, 1, 4:
		return false
	case 2:
		return hasPrefixFold(w, "fw")
	case 3:
		return hasPrefixFold(w, "ota")
	}
	switch w[0] | 0x20 {
	case 'u', 'f', 'c', 'p', 'r': // the prefixes' first letters
	default:
		return false // most words: no prefix to compare
	}
	for _, p := range privilegedPrefixes {
		if hasPrefixFold(w, p) {
			return true
		}
	}
	return false
}

// hasPrefixFold reports whether w starts with the lower-case ASCII prefix p, ignoring case.
func hasPrefixFold(w []byte, p string) bool {
	if len(w) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		if w[i]|0x20 != p[i] {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isLower(c byte) bool  { return c >= 'a' && c <= 'z' }
