package entity

import (
	"math"

	"github.com/iotwatch/iotwatch/schemas"
)

// ReasonPrefixWave: a network (/24, IPv6 /48) from which many addresses never
// seen before hit one route within about a minute: a distributed flood
// spread thin (a rented range, a residential proxy pool), whose bots send
// 1-3 requests each, so that no address bursts and none is found by
// ReasonNewIPWave. Observed: the network's new addresses on the route in the
// last minute, at least a third of them on devices other new addresses hit at
// once (swarm.go: a flood's few targets); Expected: Config.PrefixNewIPs-1.
// It blocks the network (scope cidr), under the devices' per-minute cap,
// allowlist, dry-run and escalation.
//
// Why a benign network does not: an address is new once (it keeps its
// record for Config.IdleTTL), and a benign new address is one device's (a
// carrier NAT moving a vehicle, a household renumbered into a new /48, a new
// customer's devices provisioned from one office network), which its device
// sees alone. A carrier NAT whose addresses change every ~45 minutes makes a
// few new addresses a minute in one /24; a renumbered household or a new
// customer may make dozens at once, but each on its own device, so none is
// swarmed. Only the start-up, when every address is new, is not judged
// (waveWarm). What it misses: a thin flood whose every bot addresses a
// device of its own (no device swarmed).
const ReasonPrefixWave = "prefix_new_ip_wave"

// netSlots is the size of an owner's table of new addresses per network and
// route: a power of two, many times the networks with a new address in one
// minute at one owner.
const netSlots = 4096

// netWave counts, per network (the prefix's key) and route, the addresses
// first seen at this owner in the current and the previous minute of event
// time, and how many of them addressed a swarmed device. It is fixed-size,
// pointer-free and transient (not checkpointed: it spans two minutes, and a
// restart only delays a finding by the minute it missed); a slot is keyed by
// a hash of network and route with a 32-bit tag, and a slot shared by two
// pairs keeps the one with the larger count.
type netWave struct {
	slot [netSlots]netSlot
}

type netSlot struct {
	tag           uint32
	minute        int32 // minutes since the epoch, event time
	cur, prev     uint16
	swCur, swPrev uint16
	_             uint32
}

// count counts one more new address of network net on route at t (swarmed:
// it addressed a device other new addresses hit at once) and returns the
// network's new addresses on the route in the last minute (this minute's
// and the share of the minute before that the last minute still spans), and
// how many of them were swarmed.
func (w *netWave) count(net, route uint64, t int64, swarmed bool) (n, sw float64) {
	h := mix(net ^ route*0xc2b2ae3d27d4eb4f)
	sl := &w.slot[h&(netSlots-1)]
	tag := uint32(h >> 32)
	m := int32(floorMinute(t))
	if sl.minute != m {
		switch {
		case sl.minute == m-1:
			sl.prev, sl.cur, sl.swPrev, sl.swCur = sl.cur, 0, sl.swCur, 0
		case sl.minute < m:
			*sl = netSlot{tag: sl.tag}
		default: // an event older than the slot's minute: count it in the slot's
			m = sl.minute
		}
		sl.minute = m
	}
	if sl.tag != tag {
		if sl.cur+sl.prev > 1 {
			return 1, 0 // another pair's slot: keep the wave, not the newcomer
		}
		*sl = netSlot{tag: tag, minute: m}
	}
	if sl.cur < math.MaxUint16 {
		sl.cur++
		if swarmed {
			sl.swCur++
		}
	}
	frac := 1 - float64(t-int64(m)*swarmMinute)/float64(swarmMinute)
	frac = max(0, min(1, frac))
	return float64(sl.cur) + float64(sl.prev)*frac, float64(sl.swCur) + float64(sl.swPrev)*frac
}

// JudgePrefixWave appends to out a ReasonPrefixWave finding when a network's
// new addresses on one route in the last minute (n, sw of them swarmed: see
// netWave.count) are a wave: at least Config.PrefixNewIPs, at least a third of
// them swarmed. warm reports whether the owner is past its start-up
// (before, every address is new and nothing is found). c must have its
// defaults. It is pure and does not allocate; it reports whether it found.
func JudgePrefixWave(n, sw float64, warm bool, c *Config, out *schemas.Scored) bool {
	if !warm || n < c.PrefixNewIPs || 3*sw < n {
		return false
	}
	out.Add(schemas.Finding{Detector: Name, Reason: ReasonPrefixWave, Score: 0.95,
		Observed: math.Round(n), Expected: c.PrefixNewIPs - 1, ObservedLabel: labelNewLastMin, ExpectedLabel: labelBenignNet})
	return true
}

var (
	labelNewLastMin = schemas.LabelString("new IPs in 1m")
	labelBenignNet  = schemas.LabelString("benign net most")
	labelUsualNet   = schemas.LabelString(LabelUsualNet)
)

// LabelUsualNet is the expected label of a ReasonPrefixWave finding on a
// new address (scope ip) rather than its network: the network holds usual
// addresses (a household's, a carrier NAT's), which its block would block.
const LabelUsualNet = "usual IPs in net"
