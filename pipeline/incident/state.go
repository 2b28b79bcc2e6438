package incident

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// StateVersion is the layout version of a Grouper's state (AppendState):
// LoadState refuses another, but for version 1 (before one-way keys), which
// it loads with no key offered.
const StateVersion = 2

// stateMagic opens a Grouper's state.
const stateMagic = "IOTWINC"

// AppendState appends g's state to dst and returns it: its open incidents
// (with the devices, entities and keys each holds), the key index, the
// recent alert ids, its clock and its counters, so that a Grouper loaded
// from it (LoadState) goes on exactly as g would: an alert after a restart
// joins the incident it would have joined without one, and a redelivered
// alert is recognised. It is what the pipeline's checkpoint saves with the
// state of the stream position it covers. The layout, little-endian:
//
//	magic "IOTWINC" | version u32 | clock, last sweep (Unix ns, MinInt64: none) i64
//	counters: opened, closed, evicted, updates, duplicates, keys dropped, merged, retired u64
//	recent alert ids: count u32 | next u32 | ids (string: length u32 | bytes), oldest slot first
//	slots: count u32 | per slot: present u8, then for an open incident:
//	  the incident (id, version, tenant, first, last, severity, score, alerts,
//	  devices, device sample, entities, entity count, reasons, decisions,
//	  decision count, first and last alert id) | rank i32 |
//	  devices, entities, keys (count u32 | strings) |
//	  offered keys: count u32 | per key, sorted: key | first, last i64 (not in version 1)
//	free slots: count u32 | slot i32 each
//	key index: count u32 | per key, sorted: key | slot i32 | first, last i64
//
// The bytes are a function of g's state (the index is written sorted).
func (g *Grouper) AppendState(dst []byte) []byte {
	dst = append(dst, stateMagic...)
	dst = binary.LittleEndian.AppendUint32(dst, StateVersion)
	dst = appendTime(dst, g.clock)
	dst = appendTime(dst, g.lastSweep)
	s := &g.stats
	for _, v := range [...]uint64{s.Opened, s.Closed, s.Evicted, s.Updates, s.Duplicates, s.KeysDropped, s.Merged, s.Retired} {
		dst = binary.LittleEndian.AppendUint64(dst, v)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(g.ring)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(g.ringNext))
	for _, id := range g.ring {
		dst = appendString(dst, id)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(g.slots)))
	for _, o := range g.slots {
		if o == nil {
			dst = append(dst, 0)
			continue
		}
		dst = append(dst, 1)
		dst = appendIncident(dst, &o.inc)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(int32(o.rank)))
		dst = appendStrings(dst, sortedKeys(o.devices)...)
		dst = appendStrings(dst, sortedKeys(o.entities)...)
		dst = appendStrings(dst, o.keys...)
		offers := sortedKeys(o.offers)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(offers)))
		for _, k := range offers {
			dst = appendString(dst, k)
			dst = appendTime(dst, o.offers[k].first)
			dst = appendTime(dst, o.offers[k].last)
		}
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(g.free)))
	for _, s := range g.free {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(s))
	}
	keys := sortedKeys(g.index)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(keys)))
	for _, k := range keys {
		e := g.index[k]
		dst = appendString(dst, k)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(e.slot))
		dst = appendTime(dst, e.first)
		dst = appendTime(dst, e.last)
	}
	return dst
}

// LoadState replaces g's state with the one AppendState saved in b; g keeps
// its Config and callbacks. On an error (b truncated, corrupt, or of another
// StateVersion) g is left empty, as New made it: the caller goes on with no
// open incidents (a restart's alerts then open new ones).
func (g *Grouper) LoadState(b []byte) error {
	fresh := New(g.cfg)
	fresh.onClose, fresh.onRetire = g.onClose, g.onRetire
	err := fresh.load(b)
	if err != nil {
		err = fmt.Errorf("cannot load incident state: %w", err)
		fresh = New(g.cfg)
		fresh.onClose, fresh.onRetire = g.onClose, g.onRetire
	}
	*g = *fresh
	return err
}

var errTruncated = errors.New("truncated")

// reader reads AppendState's layout; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.err = errTruncated
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (r *reader) time() time.Time {
	ns := int64(r.u64())
	if ns == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func (r *reader) str() string { return string(r.take(int(r.u32()))) }

// count reads a count of items of at least min bytes each, bounded by what
// is left (a corrupt count cannot make a huge allocation).
func (r *reader) count(min int) int {
	n := int(r.u32())
	if r.err == nil && n > len(r.b)/min {
		r.err = fmt.Errorf("count %d exceeds the %d bytes left", n, len(r.b))
		return 0
	}
	return n
}

func (r *reader) strs() []string {
	n := r.count(4)
	if n == 0 {
		return nil
	}
	s := make([]string, n)
	for i := range s {
		s[i] = r.str()
	}
	return s
}

func (g *Grouper) load(b []byte) error {
	r := &reader{b: b}
	if string(r.take(len(stateMagic))) != stateMagic {
		return errors.New("not an incident state (magic)")
	}
	v := r.u32()
	if r.err == nil && v != StateVersion && v != 1 {
		return fmt.Errorf("state version %d, want %d", v, StateVersion)
	}
	g.clock, g.lastSweep = r.time(), r.time()
	s := &g.stats
	for _, p := range [...]*uint64{&s.Opened, &s.Closed, &s.Evicted, &s.Updates, &s.Duplicates, &s.KeysDropped, &s.Merged, &s.Retired} {
		*p = r.u64()
	}
	n := r.count(4)
	next := int(r.u32())
	if r.err == nil && (n > RecentAlerts || next >= max(n, 1) || (n < RecentAlerts && next != 0)) {
		return fmt.Errorf("recent alerts %d, next %d", n, next)
	}
	g.ring, g.ringNext = make([]string, 0, n), next
	for range n {
		id := r.str()
		g.ring = append(g.ring, id)
		g.recent[id] = struct{}{}
	}
	slots := r.count(1)
	g.slots = make([]*open, slots)
	for i := range g.slots {
		if r.u8() == 0 {
			continue
		}
		o := &open{devices: map[string]struct{}{}, entities: map[string]struct{}{}}
		readIncident(r, &o.inc)
		o.rank = int(int32(r.u32()))
		for _, d := range r.strs() {
			o.devices[d] = struct{}{}
		}
		for _, e := range r.strs() {
			o.entities[e] = struct{}{}
		}
		o.keys = r.strs()
		if v >= 2 {
			for range r.count(20) {
				k := r.str()
				if o.offers == nil {
					o.offers = map[string]session{}
				}
				o.offers[k] = session{first: r.time(), last: r.time()}
				g.offered[k] = append(g.offered[k], int32(i))
			}
		}
		g.slots[i] = o
	}
	for range r.count(4) {
		s := int32(r.u32())
		if r.err == nil && (s < 0 || int(s) >= len(g.slots) || g.slots[s] != nil) {
			return fmt.Errorf("free slot %d of %d is not free", s, len(g.slots))
		}
		g.free = append(g.free, s)
	}
	for range r.count(24) {
		k := r.str()
		e := keyEntry{slot: int32(r.u32()), first: r.time(), last: r.time()}
		if r.err == nil && (e.slot < 0 || int(e.slot) >= len(g.slots) || g.slots[e.slot] == nil) {
			return fmt.Errorf("key %q leads to slot %d, not an open incident", k, e.slot)
		}
		g.index[k] = e
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%d bytes after the state", len(r.b))
	}
	return nil
}

func appendIncident(dst []byte, inc *schemas.Incident) []byte {
	dst = appendString(dst, inc.ID)
	dst = binary.LittleEndian.AppendUint64(dst, inc.Version)
	dst = appendString(dst, inc.Tenant)
	dst = appendTime(dst, inc.FirstSeen)
	dst = appendTime(dst, inc.LastSeen)
	dst = appendString(dst, inc.Severity)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(inc.Score))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(inc.Alerts))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(inc.Devices))
	dst = appendStrings(dst, inc.DeviceSample...)
	dst = appendStrings(dst, inc.Entities...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(inc.EntityCount))
	dst = appendStrings(dst, inc.Reasons...)
	dst = appendStrings(dst, inc.Decisions...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(inc.DecisionCount))
	dst = appendString(dst, inc.FirstAlertID)
	return appendString(dst, inc.LastAlertID)
}

func readIncident(r *reader, inc *schemas.Incident) {
	inc.ID = r.str()
	inc.Version = r.u64()
	inc.Tenant = r.str()
	inc.FirstSeen, inc.LastSeen = r.time(), r.time()
	inc.Severity = r.str()
	inc.Score = math.Float64frombits(r.u64())
	inc.Alerts = int(r.u64())
	inc.Devices = int(r.u64())
	inc.DeviceSample = r.strs()
	inc.Entities = r.strs()
	inc.EntityCount = int(r.u64())
	inc.Reasons = r.strs()
	inc.Decisions = r.strs()
	inc.DecisionCount = int(r.u64())
	inc.FirstAlertID = r.str()
	inc.LastAlertID = r.str()
	inc.SchemaV = schemas.SchemaVersion
}

func appendTime(dst []byte, t time.Time) []byte {
	ns := int64(math.MinInt64)
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	return binary.LittleEndian.AppendUint64(dst, uint64(ns))
}

func appendString(dst []byte, s string) []byte {
	return append(binary.LittleEndian.AppendUint32(dst, uint32(len(s))), s...)
}

func appendStrings(dst []byte, s ...string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s)))
	for _, v := range s {
		dst = appendString(dst, v)
	}
	return dst
}

func sortedKeys[V any](m map[string]V) []string {
	s := make([]string, 0, len(m))
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}
