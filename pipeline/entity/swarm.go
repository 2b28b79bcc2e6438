package entity

import "time"

// swarmSlots is the size of an owner's swarm table: a power of two, about
// a hundred times the devices one wave targets (20-40 in the Mirai floods),
// so that a benign new address rarely shares a slot with a target.
const swarmSlots = 4096

// swarmMin is the fewest new addresses addressing one device on one route
// within about a minute (swarm.count) for the device to be swarmed: a
// benign device moves to one new address at a time.
const swarmMin = 2

// swarmMinute is the span a swarm count covers (with the minute before).
const swarmMinute = int64(time.Minute)

// swarm counts, per route and device, the addresses first seen at this owner
// in the current and the previous minute of event time: a device that many
// new addresses address at once is a wave's target (each bot of a flood
// hits one of a few devices), while a benign new address is one device's
// (a household's new lease, a carrier's NAT moving a vehicle) and its
// device sees one new address at a time. It is fixed-size, pointer-free
// and transient (not checkpointed: it spans two minutes); a slot is keyed
// by a hash of route and device with a 32-bit tag, and a slot shared by
// two pairs keeps the one with the larger count.
type swarm struct {
	slot [swarmSlots]swarmSlot
}

type swarmSlot struct {
	tag       uint32
	minute    int32 // minutes since the epoch, event time
	cur, prev uint16
}

// count returns the new addresses that addressed (route, device) in t's
// minute and the one before; with add, it counts one more first.
func (s *swarm) count(route, device uint64, t int64, add bool) int {
	h := mix(route*0x9e3779b97f4a7c15 ^ device)
	sl := &s.slot[h&(swarmSlots-1)]
	tag := uint32(h >> 32)
	m := int32(floorMinute(t))
	if sl.minute != m {
		switch {
		case sl.minute == m-1:
			sl.prev, sl.cur = sl.cur, 0
		case sl.minute < m:
			sl.prev, sl.cur = 0, 0
		default: // an event older than the slot's minute: count it in the slot's
			m = sl.minute
		}
		sl.minute = m
	}
	if sl.tag != tag {
		if !add || sl.cur+sl.prev > 1 {
			// Another pair's slot: keep the swarm, not the newcomer.
			if add {
				return 1
			}
			return 0
		}
		sl.tag, sl.cur, sl.prev = tag, 0, 0
	}
	if add && sl.cur < 1<<15 {
		sl.cur++
	}
	return int(sl.cur) + int(sl.prev)
}

func floorMinute(t int64) int64 {
	q := t / swarmMinute
	if t%swarmMinute < 0 {
		q--
	}
	return q
}
