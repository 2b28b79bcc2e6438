package entity

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/schemas"
)

// Obs is what an entity owner learns of one event: fixed-size and
// pointer-free, so that it travels by value on a channel and costs no
// allocation.
type Obs struct {
	Addr   [16]byte // the client address (As16)
	Is4    bool
	IPDev  bool // the device is identified by this address (schemas.IDClientIP)
	Failed bool // authentication failed
	// Outcome classifies the request's status for its tenant's error band
	// (outcomeOK, outcomeClientErr, outcomeServerErr).
	Outcome uint8
	Line    uint32 // position in the log stream: sequence and line
	Seq     uint64
	ID      uint64 // the event's id
	Time    int64  // event time, Unix ns
	// Device is the device key (schemas.Event.DeviceKey): the identity used.
	Device uint64
	// Route is the command (schemas.Event.CommandID): what a wave of new
	// addresses is counted on (wave.go).
	Route uint64
	// ASN is the client address's autonomous system (schemas.Event.ASN;
	// 0: unknown).
	ASN uint32
	// ForKey marks the observation of the event's API key (KeyObsOf)
	// rather than of its address; Key[:KeyLen] is then the key id. In an
	// address's observation Key[:KeyLen] is the event's tenant (none when
	// KeyLen is 0, or the tenant is longer than MaxKeyText), followed by
	// its device class, Key[KeyLen:KeyLen+ClassLen] (none when ClassLen is
	// 0, or tenant and class together are longer than MaxKeyText).
	ForKey   bool
	KeyLen   uint8
	ClassLen uint8
	Key      [MaxKeyText]byte
	// Class is the class's key (schemas.Event.ClassKey: tenant and class)
	// when ClassLen > 0, else 0. It is not sent (wire.go): a reader hashes
	// it from the text.
	Class uint64
}

// The fields of Obs are in the order that packs it into 128 bytes (two
// cache lines), its size before it carried a class: TestObsSize.

// ObsOf returns the observation of ev and whether ev has one: an event
// without a valid client address, or whose outcome was the enforcement
// point's doing (schemas.Verdict.Enforced), has none. It does not allocate.
func ObsOf(ev *schemas.Event) (ob Obs, ok bool) {
	// Inlined, the caller's ob is filled in place: a 128-byte Obs built
	// and returned by value was zeroed twice and copied twice.
	ok = fillObs(ev, &ob)
	return ob, ok
}

// fillObs is ObsOf, into ob (zero).
func fillObs(ev *schemas.Event, ob *Obs) bool {
	if !ev.ClientIP.IsValid() || ev.Verdict.Enforced() {
		return false
	}
	ob.Addr = ev.ClientIP.As16()
	ob.Is4 = ev.ClientIP.Is4() || ev.ClientIP.Is4In6()
	ob.IPDev = ev.IDMethod == schemas.IDClientIP
	ob.Failed = ev.FailedAuth()
	ob.Line, ob.Seq, ob.ID, ob.Time = ev.Line, ev.Seq, ev.ID, ev.Time
	ob.Device = ev.DeviceKey
	ob.Route = ev.CommandID
	ob.Outcome = outcomeOf(ev)
	ob.ASN = ev.ASN
	if len(ev.Tenant) <= MaxKeyText {
		ob.KeyLen = uint8(copy(ob.Key[:], ev.Tenant))
		if len(ev.Class) > 0 && len(ev.Tenant)+len(ev.Class) <= MaxKeyText {
			ob.ClassLen = uint8(copy(ob.Key[ob.KeyLen:], ev.Class))
			ob.Class = ev.ClassKey
			if ob.Class == 0 { // an event whose keys were not set (SetClass)
				ob.Class = schemas.Hash2(ev.Tenant, ev.Class)
			}
		}
	}
	return true
}

// prefixAddr returns ob's address masked to its prefix.
func (ob *Obs) prefixAddr() [16]byte {
	a := ob.Addr
	if ob.Is4 {
		a[15] = 0 // the /24 of ::ffff:a.b.c.d
	} else {
		clear(a[6:]) // the /48
	}
	return a
}

// prefixWords returns prefixAddr's two little-endian halves, masked in
// registers: what keyOf and keyHalf of the prefix read, without the
// prefix's copy.
func (ob *Obs) prefixWords() (lo, hi uint64) {
	lo, hi = binary.LittleEndian.Uint64(ob.Addr[:8]), binary.LittleEndian.Uint64(ob.Addr[8:])
	if ob.Is4 {
		return lo, hi &^ (0xff << 56) // a[15] = 0
	}
	return lo & (1<<48 - 1), 0 // a[6:] cleared
}

// prefixHalf is keyHalf(kindPrefix, ob.prefixAddr()): the prefix's key,
// and the owner route of ob's address and of what it makes.
func (ob *Obs) prefixHalf() uint64 {
	lo, hi := ob.prefixWords()
	return keyHalfWords(kindPrefix, lo, hi)
}

// prefixKey returns the state key of ob's prefix.
func (ob *Obs) prefixKey() (key, alt uint64) {
	lo, hi := ob.prefixWords()
	return keyHalfWords(kindPrefix, lo, hi), keyAltWords(kindPrefix, lo, hi)
}

// routeOf returns the owner route of a new record of the entity of kind with
// key that ob made: the key itself for an API key or a prefix, else ob's
// prefix's key (which Shard maps to this owner), so that a checkpoint restores the record
// to the owner of its observations. Computed only when a record is made:
// the prefix's key is not hashed on every event.
func (ob *Obs) routeOf(kind byte, key uint64) uint64 {
	if kind == kindKey || kind == kindPrefix {
		return key
	}
	return ob.prefixHalf()
}

// addrHash is a hash of ob's address (a prefix's distinct addresses).
func (ob *Obs) addrHash() uint64 {
	return keyHalf(kindIP, ob.Addr)
}

// keyOf returns the 128-bit state key of the entity of kind with address a.
func keyOf(kind byte, a [16]byte) (key, alt uint64) {
	lo, hi := binary.LittleEndian.Uint64(a[:8]), binary.LittleEndian.Uint64(a[8:])
	return keyHalfWords(kind, lo, hi), keyAltWords(kind, lo, hi)
}

// keyHalf returns the first half of keyOf (what Shard picks an owner by),
// without the second.
func keyHalf(kind byte, a [16]byte) uint64 {
	return keyHalfWords(kind, binary.LittleEndian.Uint64(a[:8]), binary.LittleEndian.Uint64(a[8:]))
}

// keyHalfWords and keyAltWords are keyOf's halves of the address whose
// little-endian halves are lo and hi.
func keyHalfWords(kind byte, lo, hi uint64) uint64 {
	return mix(mix(uint64(kind)*0x9e3779b97f4a7c15^lo) ^ hi)
}

func keyAltWords(kind byte, lo, hi uint64) uint64 {
	return mix(mix(hi^0xd6e8feb86659fd93^uint64(kind)) ^ lo*0xbf58476d1ce4e5b9)
}

// mix is a 64-bit finalizer (splitmix64's).
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// Shard returns the owner (in [0, n)) of ob's entities: a pure function of
// its prefix, so that an address and its prefix share an owner, or, for an
// API key's observation, of the key.
func Shard(ob *Obs, n int) int {
	if ob.ForKey {
		k, _ := ob.keyKey()
		return shard.Of(k, n)
	}
	return shard.Of(ob.prefixHalf(), n)
}

// ShardOf returns the owner (in [0, n)) of the entity whose record is rec
// (a checkpoint's), as Shard chose it for its observations.
func ShardOf(rec []byte, n int) int {
	return shard.Of(binary.LittleEndian.Uint64(rec[offRoute:]), n)
}

// Stats counts an owner's entities and what became of them.
type Stats struct {
	state.Stats
	Relearned uint64 // redelivered observations, neither judged nor learned
	Skipped   uint64 // observations of entities under their own block (Config.SkipBlocked)
}

// Owner keeps and judges the entities of one shard. Driven by one goroutine:
// it is the only writer of its records. Not safe for concurrent use.
type Owner struct {
	cfg       Config
	table     *state.Table
	engine    *decide.Engine
	scratchRt []byte  // a route record's copy, for a redelivery
	waveFloor float64 // Config.WaveNewIPs, this owner's share
	swarm     swarm   // new addresses per route and device (swarm.go)
	nets      netWave // new addresses per network and route (netwave.go)
	// Set by judge for an address's first observation (newAddr), with
	// whether its device was swarmed: what netWave counts.
	newAddr, newSwarmed bool
	netText             [netTextSlots]netTextSlot // the texts of networks (prefixText)
	// usualNets marks, by a hash of the network, the networks a usual
	// address was observed in (a household's, a carrier NAT's), when it
	// became usual or was restored: a wave of new addresses there blocks
	// the new addresses, not the network. Marks are never cleared.
	usualNets [usualNetWords]uint64
	start     *Start         // shared with the other owners (ShareStart); nil: its own
	since     int64          // event time of the first observation since the owner started (0: none)
	ev        schemas.Event  // the entity's synthetic event, for the engine
	sc        schemas.Scored // findings of one entity
	relearned uint64
	skipped   uint64 // observations of blocked entities (Config.SkipBlocked)
	// The text of the last entity that reached the engine, so that an
	// attack's events do not format it again each.
	// Index 0 for addresses, 2 for API keys, 3 for tenants, 4 for
	// autonomous systems, 5 for classes (1, for networks, unused: see
	// prefixText).
	lastKey  [6][2]uint64
	lastText [6]string
	asName   func(netip.Addr) string // an AS's name (NameAS); nil: none
	share    float64                 // this owner's share of a tenant's traffic (1/owners)
	// The keys of the tenants last observed (tenantSlots of them), so
	// that an event's tenant key is not hashed again when a few tenants'
	// events interleave; tenantNext is the slot a new tenant takes.
	tenants    [tenantSlots]tenantSlot
	tenantNext uint8
	tenantText [MaxKeyText]byte // a class alert's tenant (class)
	bands      [2]band          // the tenant's and the class's (judgeBand)
	// keys holds ObserveBatch's observations' first keys (firstKey),
	// computed once for the prefetch and the judging.
	keys [MaxPrefetchBatch][2]uint64
	// prefetch holds the keys of the records ObserveBatch prefetches.
	prefetch [][2]uint64
}

// tenantSlots is the size of an owner's cache of tenant keys: more than the
// tenants whose events interleave on one owner in a fleet of a few
// customers.
const tenantSlots = 8

// tenantSlot is a tenant's id and state key in an owner's cache.
type tenantSlot struct {
	head uint64 // the id's first 8 bytes (zero-padded), compared first
	n    uint8  // length of id; 0: empty
	id   [MaxKeyText]byte
	k    [2]uint64
}

// tenantKeyOf returns the state key of ob's tenant (ob.KeyLen > 0), from
// the owner's cache when it holds it (searched whole: a direct-mapped cache
// of 8 slots would put two of 6 tenants in one slot most of the time), and
// otherwise hashes it into the cache's oldest slot.
func (o *Owner) tenantKeyOf(ob *Obs) (key, alt uint64) {
	t := ob.Key[:ob.KeyLen]
	head := le64(ob.Key[:8])
	if ob.KeyLen < 8 {
		head &= 1<<(8*ob.KeyLen) - 1 // Key past KeyLen may hold another's bytes
	}
	for i := range o.tenants {
		sl := &o.tenants[i]
		if sl.head == head && sl.n == ob.KeyLen && string(sl.id[:sl.n]) == string(t) {
			return sl.k[0], sl.k[1]
		}
	}
	sl := &o.tenants[o.tenantNext%tenantSlots]
	o.tenantNext++
	sl.head, sl.n = head, uint8(copy(sl.id[:], t))
	sl.k[0], sl.k[1] = ob.tenantKey()
	return sl.k[0], sl.k[1]
}

// NewOwner returns an owner of one of owners shards with policy cfg (its
// MaxEntities is shared among the owners) and decision engine eng (built
// with the pipeline's decide.Config and shared limiter).
func NewOwner(cfg Config, owners int, eng *decide.Engine) (*Owner, error) {
	cfg = cfg.WithDefaults()
	perOwner := max(cfg.MaxEntities/max(owners, 1), 1)
	// Huge pages (unless BasePages): the common event reads one address's
	// record at random, and with 4 KiB pages that read was a TLB miss,
	// whose page walk a prefetch (ObserveBatch) waits for
	// (bench/RESULTS.md, e4).
	t, err := state.NewTable(state.Config{RecordSize: RecordSize, InitialDevices: min(perOwner, 4096),
		MaxDevices: perOwner, IdleTTL: cfg.IdleTTL, Keep: keep, HugePages: !cfg.BasePages})
	if err != nil {
		return nil, fmt.Errorf("cannot create entity table: %w", err)
	}
	return &Owner{cfg: cfg, table: t, engine: eng, scratchRt: make([]byte, RecordSize), prefetch: make([][2]uint64, 0, MaxPrefetchBatch),
		waveFloor: math.Max(5, cfg.WaveNewIPs/float64(max(owners, 1))), share: 1 / float64(max(owners, 1)),
		bands: [2]band{tenantBand(&cfg), classBand(&cfg)}}, nil
}

// Emit receives an entity's alert and decision (either may be nil).
type Emit func(*schemas.Alert, *schemas.Decision)

// Observe judges ob's address (unless the address is its device's identity,
// see the package documentation) and, for a failed authentication, its
// prefix (or ob's API key, for a KeyObsOf observation), and hands their alerts and
// decisions to emit. An observation at or before the stream position an
// entity learned up to (a redelivery) is not judged: it learns nothing and
// raises no alert or decision. It allocates only for an alert.
func (o *Owner) Observe(ob *Obs, emit Emit) {
	k := o.firstKey(ob)
	o.observe(ob, &k, emit)
}

// observe is Observe, with k the key of ob's first record (firstKey).
func (o *Owner) observe(ob *Obs, k *[2]uint64, emit Emit) {
	if o.since == 0 {
		t := ob.Time
		if o.table.Len() > 0 {
			// Records restored from a checkpoint: the addresses are known,
			// this is no start-up.
			t -= waveWarm * waveBucket
			o.markRestored()
		}
		o.since = o.start.since(t)
	}
	if ob.ForKey {
		o.judge(k[0], k[1], ob, kindKey, emit)
		return
	}
	usual, skip := true, false // an address that identifies its device is its usual one
	if !ob.IPDev {
		o.newAddr = false
		usual, skip = o.judge(k[0], k[1], ob, kindIP, emit)
		if o.newAddr && !o.cfg.NoPrefixWave {
			o.prefixWave(ob, k[0], k[1], emit)
		}
	}
	if ob.KeyLen > 0 && !skip && !o.cfg.NoTenant {
		o.tenant(ob, usual, emit)
	}
	if ob.ClassLen > 0 && !skip && !o.cfg.NoClass {
		o.class(ob, usual, emit)
	}
	if ob.ASN != 0 && !usual && !skip && !o.cfg.NoASN && (ob.Failed || ob.Outcome == outcomeClientErr) {
		// Only what an attack spread over an AS's networks shows (failed
		// logins, probes answered 4xx) touches the AS's record: a success
		// from a new address (a device's new lease) costs nothing more.
		o.asn(ob, emit)
	}
	if ob.Failed && (ob.IPDev || !usual) {
		// A prefix counts failed authentications only: what it judges is
		// credential stuffing spread over its addresses, and the normal
		// path touches one record, not two. Failures from usual addresses
		// do not count: when an authentication backend fails every device
		// from its own network, the fleet's networks were found stuffing
		// and blocked (a 5-minute outage over 600 devices in 12 /24s
		// blocked 8 of them: TestAuthOutageBlocksNoNetwork). An address
		// that is its device's identity still counts: whether it is usual
		// is its device record's to say, which this owner does not see.
		pk, pa := ob.prefixKey()
		o.judge(pk, pa, ob, kindPrefix, emit)
	}
}

// firstKey returns the state key of the record ob's observation reads first:
// its API key's, or its address's unless the address is its device's
// identity (then none: zero).
func (o *Owner) firstKey(ob *Obs) (k [2]uint64) {
	switch {
	case ob.ForKey:
		k[0], k[1] = ob.keyKey()
	case !ob.IPDev:
		k[0], k[1] = keyOf(kindIP, ob.Addr)
	}
	return k
}

// ObserveBatch observes obs in order, as Observe does each, prefetching
// every one's first record (its address's, or its API key's:
// state.Table.PrefetchKeys, all of them back to back) before it judges the
// first, so that their cache misses overlap instead of following one another. The common observation,
// a request from a known address, touches one record at random in a table
// of many (the tenant's is hot), and that miss was most of the entity
// stage's cost per event (bench/RESULTS.md, e1). A prefetch changes
// nothing: ObserveBatch judges exactly as Observe, one observation after
// the other, would. Batches of up to MaxPrefetchBatch observations gain; a
// longer obs is taken MaxPrefetchBatch at a time.
func (o *Owner) ObserveBatch(obs []Obs, emit Emit) {
	for len(obs) > 0 {
		n := min(len(obs), MaxPrefetchBatch)
		pre := o.prefetch[:0]
		for i := range n {
			o.keys[i] = o.firstKey(&obs[i])
			if obs[i].ForKey || !obs[i].IPDev {
				pre = append(pre, o.keys[i])
			}
		}
		o.table.PrefetchKeys(pre)
		for i := range n {
			o.observe(&obs[i], &o.keys[i], emit)
		}
		obs = obs[n:]
	}
}

// MaxPrefetchBatch is the largest batch ObserveBatch is meant for: about the
// cache misses a core keeps in flight (its line fill buffers).
const MaxPrefetchBatch = 16

// judge judges ob on the record of the entity (key, alt) of kind (its owner
// route, if new, is ob's routeOf). It reports whether that entity is a usual one
// (a record with a learned window before ob's) and whether ob was skipped
// (its entity under its own block, Config.SkipBlocked).
func (o *Owner) judge(key, alt uint64, ob *Obs, kind byte, emit Emit) (usual, skip bool) {
	if o.cfg.SkipBlocked && ob.Time < o.engine.BlockedUntil(key) {
		o.skipped++
		return false, true
	}
	rec, _ := o.table.Record(key, alt, ob.Time)
	created := false
	if binary.LittleEndian.Uint32(rec) != recordVersion {
		clear(rec)
		binary.LittleEndian.PutUint32(rec, recordVersion)
		binary.LittleEndian.PutUint64(rec[offRoute:], ob.routeOf(kind, key))
		rec[offFlags] = flagFirst
		created = true
	}
	if o.atOrBefore(rec, ob) {
		// Judged against a record that has moved on, it would get alerts
		// its first judging did not: none, and nothing learned (as
		// worker.Process does for a device), and no wave judging either.
		o.relearned++
		return false, false
	}
	o.sc.N, o.sc.Score = 0, 0
	Judge(rec, ob, kind, &o.cfg, &o.sc)
	// Usual: learned over a window at least, and never found doing
	// anything (an attacker's address that stays is not made usual by
	// staying).
	usual = binary.LittleEndian.Uint16(rec[offWindows:]) > 0 && rec[offFlags]&flagEver == 0
	if usual && kind == kindIP && binary.LittleEndian.Uint16(rec[offWindows:]) == 1 && binary.LittleEndian.Uint32(rec[offEvents:]) == 1 {
		// The event that made the address usual (it learned its first
		// window): its network holds a usual address.
		o.markUsualNet(binary.LittleEndian.Uint64(rec[offRoute:]))
	}
	fresh := false
	if kind == kindIP && !o.cfg.NoWave {
		var n uint32
		if fresh, n = young(rec, ob, &o.cfg); fresh {
			o.newSwarmed = o.wave(ob, created, n)
			o.newAddr = created
		}
	}
	if o.sc.N == 0 {
		return usual, false
	}
	ev := &o.ev
	ev.ID, ev.Seq, ev.Line, ev.Time = ob.ID, ob.Seq, ob.Line, ob.Time
	ev.DeviceKey, ev.DeviceAlt = key, alt
	addr := netip.AddrFrom16(ob.Addr)
	if ob.Is4 {
		addr = addr.Unmap()
	}
	ent := decide.Entity{Kind: schemas.EntityIP, Scope: schemas.ScopeIP, Fresh: fresh}
	switch kind {
	case kindKey:
		ent = decide.Entity{Kind: schemas.EntityAPIKey, Scope: schemas.ScopeAPIKey}
		if o.lastKey[2] != [2]uint64{key, alt} {
			o.lastKey[2], o.lastText[2] = [2]uint64{key, alt}, string(ob.Key[:ob.KeyLen])
		}
		ent.Value = o.lastText[2]
		if !ob.hasAddr() {
			addr = netip.Addr{}
		}
	case kindPrefix:
		ent = decide.Entity{Kind: schemas.EntityPrefix, Scope: schemas.ScopeCIDR}
		ent.Value = o.prefixText(ob, key, alt)
		addr = netip.Addr{} // a network's alert has no client address
	default:
		if o.lastKey[0] != [2]uint64{key, alt} {
			o.lastKey[0], o.lastText[0] = [2]uint64{key, alt}, addr.String()
		}
		ent.Value = o.lastText[0]
	}
	ev.ClientIP = addr
	alert, dec := o.engine.DecideEntity(ev, &o.sc, ent)
	if alert != nil || dec != nil {
		emit(alert, dec)
	}
	return usual, false
}

// tenant judges ob on its owner's share of ob's tenant (JudgeTenant); usual
// reports whether ob's address is a usual one. The tenant's record is made
// with owner route ob's prefix key (which Shard maps to this owner),
// as a route's record is, so that a checkpoint restores it here. A tenant's
// alert never comes with a decision: its findings score under the block
// threshold and its entity has no decision scope, since blocking a tenant
// is blocking a customer.
func (o *Owner) tenant(ob *Obs, usual bool, emit Emit) {
	key, alt := o.tenantKeyOf(ob)
	rec, ok := o.shareRecord(key, alt, ob)
	if !ok {
		return
	}
	judgeBand(rec, ob, usual, o.share, &o.bands[0], &o.cfg, &o.sc) // JudgeTenant
	if o.sc.N == 0 {
		return
	}
	if o.lastKey[3] != [2]uint64{key, alt} {
		o.lastKey[3], o.lastText[3] = [2]uint64{key, alt}, string(ob.Key[:ob.KeyLen])
	}
	o.decideShare(ob, key, alt, schemas.EntityTenant, o.lastText[3], emit)
}

// class judges ob on its owner's share of ob's class (JudgeClass), as
// tenant does ob's tenant; its alert, like a tenant's, never comes with a
// decision. The alert carries the class's tenant (schemas.Alert.Tenant), so
// that it joins its tenant's incident (incident.Keys).
func (o *Owner) class(ob *Obs, usual bool, emit Emit) {
	key, alt := ob.classKey()
	rec, ok := o.shareRecord(key, alt, ob)
	if !ok {
		return
	}
	judgeBand(rec, ob, usual, o.share, &o.bands[1], &o.cfg, &o.sc) // JudgeClass
	if o.sc.N == 0 {
		return
	}
	if o.lastKey[5] != [2]uint64{key, alt} {
		o.lastKey[5], o.lastText[5] = [2]uint64{key, alt}, ob.classText()
	}
	// A copy: a slice of ob's would make every caller's Obs escape to the
	// heap (an allocation per observation).
	o.ev.Tenant = o.tenantText[:copy(o.tenantText[:], ob.Key[:ob.KeyLen])]
	o.decideShare(ob, key, alt, schemas.EntityClass, o.lastText[5], emit)
	o.ev.Tenant = nil
}

// decideShare decides on the findings o.sc of ob about the shared entity
// (key, alt) of kind, named value (a tenant, an AS: alerted on, never
// blocked), and emits what it decides.
func (o *Owner) decideShare(ob *Obs, key, alt uint64, kind, value string, emit Emit) {
	ev := &o.ev
	ev.ID, ev.Seq, ev.Line, ev.Time = ob.ID, ob.Seq, ob.Line, ob.Time
	ev.DeviceKey, ev.DeviceAlt = key, alt
	ev.ClientIP = netip.Addr{}
	alert, dec := o.engine.DecideEntity(ev, &o.sc, decide.Entity{Kind: kind, Value: value})
	if alert != nil || dec != nil {
		emit(alert, dec)
	}
}

// shareRecord returns the owner's record of its share of an entity (a
// tenant's, an AS's) made with owner route ob's prefix key, and false when ob is at
// or before what the record learned (a redelivery: nothing is judged). It
// resets the owner's scored findings for the judgement.
func (o *Owner) shareRecord(key, alt uint64, ob *Obs) ([]byte, bool) {
	rec, _ := o.table.Record(key, alt, ob.Time)
	if binary.LittleEndian.Uint32(rec) != recordVersion {
		clear(rec)
		binary.LittleEndian.PutUint32(rec, recordVersion)
		binary.LittleEndian.PutUint64(rec[offRoute:], ob.routeOf(kindIP, 0))
	}
	if o.atOrBefore(rec, ob) {
		o.relearned++
		return nil, false
	}
	o.sc.N, o.sc.Score = 0, 0
	return rec, true
}

// asn judges ob, a failed or client-error request of an unusual address, on its owner's share of
// ob's autonomous system (JudgeASN); its record is made with owner route
// ob's prefix key, as a tenant's is. An AS's alert never comes with
// a decision: an AS holds many customers' networks (a hosting provider's,
// a mobile carrier's, the fleet's own backends'), enforcement points match
// addresses and CIDRs rather than AS numbers, and the attack's own
// addresses and networks are judged, and blocked, as entities of their
// own. The alert names the AS so that an analyst (and the incident
// grouper) sees the campaign behind them.
func (o *Owner) asn(ob *Obs, emit Emit) {
	key, alt := asnKey(ob.ASN)
	rec, ok := o.shareRecord(key, alt, ob)
	if !ok {
		return
	}
	JudgeASN(rec, ob, o.share, ob.Time-o.since >= waveWarm*waveBucket, &o.cfg, &o.sc)
	if o.sc.N == 0 {
		return
	}
	if o.lastKey[4] != [2]uint64{key, alt} {
		name := ""
		if o.asName != nil {
			addr := netip.AddrFrom16(ob.Addr)
			if ob.Is4 {
				addr = addr.Unmap()
			}
			name = o.asName(addr)
		}
		o.lastKey[4], o.lastText[4] = [2]uint64{key, alt}, asnText(ob.ASN, name)
	}
	o.decideShare(ob, key, alt, schemas.EntityASN, o.lastText[4], emit)
}

// NameAS makes o name an autonomous system in its alerts by name(addr), addr
// an address of it ("AS64500 (ExampleHost)"; "" from name: the number
// alone), such as geoip.Reader.ASOrg. name is called only when an AS
// alerts, from o's goroutine. Call it before the first Observe.
func (o *Owner) NameAS(name func(netip.Addr) string) { o.asName = name }

// atOrBefore reports whether ob is at or before the stream position rec
// learned up to (a redelivery, judged against a copy), and otherwise
// advances rec's position to ob's.
func (o *Owner) atOrBefore(rec []byte, ob *Obs) bool {
	if ob.Seq == 0 {
		return false
	}
	seq, line := binary.LittleEndian.Uint64(rec[offSeq:]), binary.LittleEndian.Uint32(rec[offLine:])
	if ob.Seq < seq || ob.Seq == seq && ob.Line <= line {
		return true
	}
	binary.LittleEndian.PutUint64(rec[offSeq:], ob.Seq)
	binary.LittleEndian.PutUint32(rec[offLine:], ob.Line)
	return false
}

// wave judges a young address's observation ob (n requests since it was
// first seen; created: this is its first) on its route's record
// (JudgeWave), adding a finding to o.sc, and reports whether ob's device
// is swarmed (on its route, other new addresses address it at once). The
// route's record is made only for an address's first observation: an
// address's later requests on other routes cannot make records. Its owner route is the address's prefix key
// (which Shard maps to this owner), so that a checkpoint restores it here.
func (o *Owner) wave(ob *Obs, created bool, n uint32) bool {
	key, alt := routeKey(ob.Route)
	var rt []byte
	if created {
		rt, _ = o.table.Record(key, alt, ob.Time)
		if binary.LittleEndian.Uint32(rt) != recordVersion {
			clear(rt)
			binary.LittleEndian.PutUint32(rt, recordVersion)
			binary.LittleEndian.PutUint64(rt[offRoute:], ob.routeOf(kindIP, 0))
		}
	} else {
		if _, ok := o.table.Lookup(key, alt); !ok {
			return false
		}
		rt, _ = o.table.Record(key, alt, ob.Time)
	}
	if o.atOrBefore(rt, ob) {
		copy(o.scratchRt, rt)
		rt = o.scratchRt
	}
	warm := ob.Time-o.since >= waveWarm*waveBucket
	swarmed := o.swarm.count(ob.Route, ob.Device, ob.Time, created) >= swarmMin
	JudgeWave(rt, ob, created, n, o.waveFloor, warm, swarmed, &o.cfg, &o.sc)
	return swarmed
}

// usualNetWords is the size in words of an owner's marks of networks that
// hold usual addresses (1M bits, 128 KiB): a network is a bit chosen by its
// key's hash, so a network that never held one may share another's bit (a
// few percent of them with 50,000 marked), and is then treated as holding
// one: its new addresses are blocked one by one.
const usualNetWords = 1 << 14

// markUsualNet marks the network of key (its keyHalf, an address record's
// owner route) as holding a usual address.
func (o *Owner) markUsualNet(key uint64) {
	o.usualNets[key%usualNetWords] |= 1 << (key >> 58)
}

// markRestored marks the networks of the usual addresses among the records
// in the table (restored from a checkpoint: the marks are not in it).
func (o *Owner) markRestored() {
	o.table.Range(func(_, _ uint64, _ int64, rec []byte) bool {
		if binary.LittleEndian.Uint32(rec) == recordVersion && rec[offKind] == kindIP &&
			binary.LittleEndian.Uint16(rec[offWindows:]) > 0 && rec[offFlags]&flagEver == 0 {
			o.markUsualNet(binary.LittleEndian.Uint64(rec[offRoute:]))
		}
		return true
	})
}

// usualNet reports whether the network of key (its keyHalf) was marked as
// holding a usual address (markUsualNet).
func (o *Owner) usualNet(key uint64) bool {
	return o.usualNets[key%usualNetWords]&(1<<(key>>58)) != 0
}

// prefixWave counts ob, an address's first observation (its record's key
// ipKey, ipAlt), on its network's new addresses on its route (netWave)
// and, when they are a wave (JudgePrefixWave), decides on the network
// (scope cidr) and emits what it decides. The network is owned here (Shard
// picks an address's owner by its network), so its count is whole. A
// network that holds a usual address (a household's, a carrier NAT's:
// usualNet) is not blocked, since its block would be theirs too: the new
// address is, as a fresh address (scope ip, the fresh-address budget),
// and so is each new address of the network after it during the wave.
func (o *Owner) prefixWave(ob *Obs, ipKey, ipAlt uint64, emit Emit) {
	key, alt := ob.prefixKey()
	n, sw := o.nets.count(key, ob.Route, ob.Time, o.newSwarmed)
	o.sc.N, o.sc.Score = 0, 0
	if !JudgePrefixWave(n, sw, ob.Time-o.since >= waveWarm*waveBucket, &o.cfg, &o.sc) {
		return
	}
	if o.cfg.SkipBlocked && ob.Time < o.engine.BlockedUntil(key) {
		o.skipped++
		return
	}
	ev := &o.ev
	ev.ID, ev.Seq, ev.Line, ev.Time = ob.ID, ob.Seq, ob.Line, ob.Time
	ev.DeviceKey, ev.DeviceAlt = key, alt
	ev.ClientIP = netip.Addr{} // a network's alert has no client address
	ent := decide.Entity{Kind: schemas.EntityPrefix, Scope: schemas.ScopeCIDR, Value: o.prefixText(ob, key, alt)}
	if o.usualNet(key) {
		addr := netip.AddrFrom16(ob.Addr)
		if ob.Is4 {
			addr = addr.Unmap()
		}
		ev.DeviceKey, ev.DeviceAlt, ev.ClientIP = ipKey, ipAlt, addr
		o.sc.Findings[0].ExpectedLabel = labelUsualNet
		ent = decide.Entity{Kind: schemas.EntityIP, Scope: schemas.ScopeIP, Fresh: true, Value: addr.String()}
	}
	alert, dec := o.engine.DecideEntity(ev, &o.sc, ent)
	if alert != nil || dec != nil {
		emit(alert, dec)
	}
}

// prefixText returns the text of ob's network (key, alt): "203.0.113.0/24",
// formatted only when the owner's cache of the networks that last reached
// the engine (netTextSlots, direct-mapped) does not hold it: a thin flood's
// networks interleave, and each of their events reaches the engine.
func (o *Owner) prefixText(ob *Obs, key, alt uint64) string {
	sl := &o.netText[key%netTextSlots]
	if sl.key != [2]uint64{key, alt} || sl.text == "" {
		addr := netip.AddrFrom16(ob.Addr)
		bitsLen := schemas.EntityPrefixBits6
		if ob.Is4 {
			addr, bitsLen = addr.Unmap(), schemas.EntityPrefixBits4
		}
		sl.key, sl.text = [2]uint64{key, alt}, netip.PrefixFrom(addr, bitsLen).Masked().String()
	}
	return sl.text
}

// netTextSlots is the size of an owner's cache of network texts: more than
// the networks of one thin flood at one owner.
const netTextSlots = 32

// netTextSlot is a network's key and text in an owner's cache.
type netTextSlot struct {
	key  [2]uint64
	text string
}

// Start is the event time the owners of a pipeline first observed
// something: its start-up, during which every address is new and no wave
// is found (waveWarm). An owner whose table holds records before its first
// observation (restored from a checkpoint) counts it as waveWarm earlier:
// its addresses are known, and a restart is no start-up. Safe for
// concurrent use.
type Start struct{ t atomic.Int64 }

// since returns the start, set to t if none yet; a nil Start returns t.
func (s *Start) since(t int64) int64 {
	if s == nil {
		return t
	}
	if s.t.CompareAndSwap(0, t) {
		return t
	}
	return s.t.Load()
}

// ShareStart makes o count its start-up from s, shared with the other
// owners of its pipeline: an owner whose first observation comes late (its
// addresses were quiet) is not in a start-up of its own. Call it before
// the first Observe.
func (o *Owner) ShareStart(s *Start) { o.start = s }

// Stats returns the owner's counters.
func (o *Owner) Stats() Stats {
	return Stats{Stats: o.table.Stats(), Relearned: o.relearned, Skipped: o.skipped}
}

// RecordVersion is the layout version in an entity record's first four
// bytes: a checkpoint's records of another version are not restored.
const RecordVersion = recordVersion

// Table exposes the entity table (for checkpoints and tests).
func (o *Owner) Table() *state.Table { return o.table }

// Engine exposes the owner's decision engine.
func (o *Owner) Engine() *decide.Engine { return o.engine }

// Sentence renders an entity alert's strongest reason as an analyst reads
// it: "198.51.100.7 failed auth for 212 distinct devices in 5m; expected <= 2".
// For another alert it returns "".
func Sentence(a *schemas.Alert) string {
	if a.Entity == "" || len(a.Reasons) == 0 {
		return ""
	}
	r := a.Reasons[0]
	what := ""
	switch r.Reason {
	case ReasonCredentialStuffing:
		what = "failed auth for %d distinct devices %s; expected <= %d"
	case ReasonManyDevices:
		what = "addressed %d distinct devices %s; expected <= %d"
	case ReasonRateSpike:
		what = "sent %d requests %s; expected about %d"
	case ReasonNewIPWave:
		if r.ExpectedLabel == LabelSwarmed {
			return fmt.Sprintf("%s, first seen during a wave of new addresses on its route, sent %d requests in its %s to a device other new addresses hit at once",
				a.Entity, int(r.Observed), r.ObservedLabel)
		}
		return fmt.Sprintf("%s, first seen during a wave of new addresses on its route, sent %d requests in its %s; a new address there sends at most %d",
			a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	case ReasonPrefixWave:
		if r.ExpectedLabel == LabelUsualNet {
			return fmt.Sprintf("%s, new in a network from which %d new addresses hit one route in the last minute (expected <= %d); the network holds usual addresses, so the address is blocked, not the network",
				a.Entity, int(r.Observed), int(r.Expected))
		}
		return fmt.Sprintf("%s: %d new addresses on one route in the last minute; expected <= %d",
			a.Entity, int(r.Observed), int(r.Expected))
	case ReasonTenantAuthFailures:
		return fmt.Sprintf("tenant %s: %d distinct devices failed auth from unusual addresses %s; expected about %d",
			a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	case ReasonTenantErrors:
		return fmt.Sprintf("tenant %s: %d client errors %s; expected about %d", a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	case ReasonTenantRate:
		return fmt.Sprintf("tenant %s: %d requests %s; expected about %d", a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	case ReasonClassAuthFailures:
		return fmt.Sprintf("class %s: %d distinct devices failed auth from unusual addresses %s; expected about %d",
			a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	case ReasonClassErrors:
		return fmt.Sprintf("class %s: %d client errors %s; expected about %d", a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	case ReasonClassRate:
		return fmt.Sprintf("class %s: %d requests %s; expected about %d", a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	case ReasonASNAuthFailures, ReasonASNManyDevices:
		verb := "failed auth for"
		if r.Reason == ReasonASNManyDevices {
			verb = "addressed"
		}
		return fmt.Sprintf("%s %s %d distinct devices from %s; expected <= %d", a.Entity, verb, int(r.Observed),
			strings.Replace(r.ObservedLabel, " nets ", " networks ", 1), int(r.Expected))
	case ReasonKeySpread:
		return fmt.Sprintf("API key %s used by %d distinct %s in one window; most before: %d", a.Entity, int(r.Observed), r.ObservedLabel, int(r.Expected))
	default:
		return ""
	}
	return a.Entity + " " + fmt.Sprintf(what, int(r.Observed), r.ObservedLabel, int(r.Expected))
}

// PartitionOf returns the entity partition (in [0, n)) of the entity whose
// record is rec: the unit in which entity records are checkpointed (object
// schemas.CheckpointEntitiesObject). It is a pure function of the record's
// route (the key Shard chooses its owner by, so an IP and its prefix share
// a partition), from the route's low bits, independent of the owner.
func PartitionOf(rec []byte, n int) int {
	return routePartition(binary.LittleEndian.Uint64(rec[offRoute:]), n)
}

// ObsPartition returns the entity partition of ob's entities: PartitionOf of
// the records its observation writes.
func ObsPartition(ob *Obs, n int) int {
	if ob.ForKey {
		k, _ := ob.keyKey()
		return routePartition(k, n)
	}
	return routePartition(ob.prefixHalf(), n)
}

func routePartition(route uint64, n int) int {
	return schemas.PartitionOf(bits.RotateLeft64(route, 32), n)
}
