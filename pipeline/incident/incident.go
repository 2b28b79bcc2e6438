// Package incident groups alerts into incidents, so that an analyst sees one
// incident for one credential-stuffing run rather than 300 device alerts.
//
// Alerts are grouped when they share a key (Keys): an entity (the device, the
// client IP, its /24 or /48, the API key, and an entity alert's entity: so
// the credential_stuffing alert on 198.51.100.7 and the device alerts whose
// client IP is 198.51.100.7 are one incident), or a campaign signature (the
// same detector/reason on the same command, across devices). Each key has
// sessions: alerts carrying it no further apart than a window of event time
// (Config.IdleGap for an entity, Config.CampaignSpan for a campaign signature
// and for a one-way key) are one session. An alert joins every open incident one of its keys'
// sessions reaches (by the window either side, so an alert that arrives late
// still finds its session); when it reaches several, they merge into one; when
// it reaches none, it opens a new incident.
//
// Most keys are mutual: an alert looks its keys up and is found by them. A
// device class is a one-way tie (Role): a class alert (class_rate_spike on
// acme/camera/cx-200) joins the incidents holding alerts of devices of that
// class within Config.CampaignSpan of it, and a device alert joins a class
// alert of its class within that span, whichever comes first; but two device
// alerts of one class never join through their class (a fleet has many
// devices of a class, and their unrelated alerts are not one case). Each
// open incident keeps its own session of each one-way key it offers, so a
// class alert finds every incident of its class's devices, not only the
// latest. Within the span of a class alert, the incidents of its class's
// devices become one.
//
// The grouping does not depend on the order alerts arrive in, only on the
// set of alerts, so the interleaving of device workers and entity owners
// feeding the collector does not change it. An incident is named after its
// earliest alert (ID; by event time, then alert id), whichever arrives
// first; every other field is a function of the set too (samples are the
// smallest values, entities addresses first). An id that stops naming a live
// incident (its incident merged into another, or an alert earlier than its
// first joined it) is retired: OnRetire gets its last state with MergedInto
// set and a higher version, so the incidents table (ReplacingMergeTree by
// id, highest version kept) ends with one live row per incident and the
// retired ids pointing at it. Every update carries the number of alerts
// folded in as its version. An alert id seen recently (RecentAlerts) is a
// redelivery and changes nothing.
//
// Order independence assumes alerts arrive less out of event-time order than
// the windows (minutes, where the pipeline's sources differ by seconds): an
// alert later than its key's window, or one arriving after its incident
// closed, or once the bounds below are hit, is grouped by what is still open.
//
// Time is the alerts' event time: a Grouper never reads the wall clock, so a
// replay groups exactly as the live pipeline did for the same alert order.
// Memory is bounded: incidents close once no alert joined them for
// Config.IdleGap of event time (the latest alert time seen is the clock); at
// most Config.MaxOpen are open (the one idle longest is closed early, counted
// in Stats.Evicted); at most Config.MaxKeys keys are indexed (beyond, new keys
// are not indexed, counted in Stats.KeysDropped); and each incident counts
// distinct devices and entities exactly up to MaxDistinct and keeps bounded
// samples of them.
//
// A Grouper has one writer: the pipeline's collector goroutine (or a replay's
// loop). It is not safe for concurrent use.
package incident

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Defaults of Config.
const (
	DefaultIdleGap      = 30 * time.Minute
	DefaultCampaignSpan = 10 * time.Minute
	DefaultMaxOpen      = 1024
	DefaultMaxKeys      = 1 << 18
)

// Bounds of one incident.
const (
	// MaxDistinct bounds the distinct devices and entities an incident counts
	// exactly; beyond it the counts are lower bounds.
	MaxDistinct = 4096
	// MaxSample bounds Incident.DeviceSample, Entities and Decisions.
	MaxSample = 20
	// MaxReasons bounds Incident.Reasons.
	MaxReasons = 32
	// RecentAlerts is how many recent alert ids are remembered to recognise
	// a redelivered alert.
	RecentAlerts = 1 << 16
)

// Breadth escalation: an incident whose devices or entities reach these
// counts is raised one or two severity levels above its highest alert.
const (
	WideBreadth     = 10
	VeryWideBreadth = 100
)

// Config bounds a Grouper. Zero fields take the defaults.
type Config struct {
	// IdleGap closes an incident no alert joined for this long (event time).
	IdleGap time.Duration
	// CampaignSpan is how close (event time) to an incident's latest alert an
	// alert must be to join it by its campaign signature alone.
	CampaignSpan time.Duration
	// MaxOpen caps the open incidents.
	MaxOpen int
	// MaxKeys caps the keys indexed over all open incidents.
	MaxKeys int
}

func (c *Config) defaults() {
	if c.IdleGap <= 0 {
		c.IdleGap = DefaultIdleGap
	}
	if c.CampaignSpan <= 0 {
		c.CampaignSpan = DefaultCampaignSpan
	}
	if c.MaxOpen <= 0 {
		c.MaxOpen = DefaultMaxOpen
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = DefaultMaxKeys
	}
}

// Stats counts what a Grouper did.
type Stats struct {
	Opened      uint64 // incidents opened
	Closed      uint64 // incidents closed after their idle gap
	Evicted     uint64 // incidents closed early because MaxOpen were open
	Updates     uint64 // incident updates returned by Add
	Duplicates  uint64 // redelivered alerts ignored
	KeysDropped uint64 // keys not indexed because MaxKeys were
	Merged      uint64 // incidents merged into another by an alert joining both
	Retired     uint64 // ids retired (OnRetire): merged, or renamed by an earlier alert
	Open        int    // incidents open now
}

// Key kinds (the part of a key before the colon). The entity kinds are those
// of schemas.Alert's entity (after entity alerts land) and name the entities
// of an incident.
const (
	KindDevice   = "device"
	KindIP       = "ip"
	KindPrefix   = "prefix"
	KindAPIKey   = "api_key"
	KindCampaign = "campaign"
	// KindClassDevice is offered by a device alert of a device class
	// (schemas.ClassEntity of its tenant and class) and sought by that
	// class's alert (Seeks): an incident holding it holds alerts of devices
	// of the class. It names no entity of the incident.
	KindClassDevice = "class_device"
)

// Role is how Add uses a key.
type Role uint8

const (
	// Mutual keys are looked up and indexed: alerts carrying one find each
	// other.
	Mutual Role = iota
	// Seeks keys are looked up among the keys the open incidents offer
	// (Offers), and neither indexed nor offered: an alert seeking a key
	// joins the incidents offering it within the span, and is not found by
	// the alerts that seek it too.
	Seeks
	// Offers keys are held by the alert's incident (each incident its own
	// session of the key) for the alerts that seek them, and not looked up:
	// alerts offering the same key do not find each other by it.
	Offers
)

// Key is one grouping key of an alert.
type Key struct {
	Kind  string
	Value string
	Role  Role
}

// String returns kind:value.
func (k Key) String() string { return k.Kind + ":" + k.Value }

// entity reports whether k names an entity of the incident (not the device,
// which is counted apart, nor the campaign signature).
// A one-way key (Seeks, Offers) names none: an incident's entities are its
// alerts' own.
func (k Key) entity() bool {
	return k.Role == Mutual && k.Kind != KindDevice && k.Kind != KindCampaign && k.Kind != KindClassDevice
}

// EntityOf returns the entity an alert is about when it is not its device:
// its kind (schemas.EntityIP, EntityPrefix, EntityAPIKey, ...) and value, or
// "", "" for a device alert. It is the one place that reads the alert's
// entity: the incidents (Keys) and the evaluation (internal/eval, which counts
// an attack detected when an alert names its entity) go through it.
func EntityOf(a *schemas.Alert) (kind, value string) {
	if a.EntityKind == schemas.EntityDevice {
		return "", ""
	}
	return a.EntityKind, a.Entity
}

// Keys appends the grouping keys of a to dst, in the order Add tries them:
// the alert's own entity (EntityOf; for a device class's, also its tenant,
// and the one-way keys below), its client IP, that IP's /24 (IPv4) or /48
// (IPv6), its API key, its device (tenant/device), then one campaign
// signature per finding (detector/reason and command), all Mutual; and for
// a device alert of a class, that class's one-way keys: it seeks the class
// (class:acme/camera/cx-200, which the class's alerts offer) and offers
// class_device:acme/camera/cx-200 (which they seek).
func Keys(dst []Key, a *schemas.Alert) []Key {
	kind, v := EntityOf(a)
	if kind != "" && v != "" {
		dst = append(dst, Key{Kind: kind, Value: v})
		if kind == schemas.EntityClass {
			if a.Tenant != "" {
				// A class is a part of its tenant: its alerts join the
				// tenant's (an attack spread thin over a tenant alerts on
				// the tenant and on the classes it hit hardest).
				dst = append(dst, Key{Kind: schemas.EntityTenant, Value: a.Tenant})
			}
			// And it joins the campaign that hit its devices.
			dst = append(dst, Key{Kind: KindClassDevice, Value: v, Role: Seeks}, Key{Kind: kind, Value: v, Role: Offers})
		}
	}
	if a.ClientIP != "" {
		dst = append(dst, Key{Kind: KindIP, Value: a.ClientIP})
		if p, ok := PrefixOf(a.ClientIP); ok {
			dst = append(dst, Key{Kind: KindPrefix, Value: p})
		}
	}
	if a.APIKey != "" {
		dst = append(dst, Key{Kind: KindAPIKey, Value: a.APIKey})
	}
	if a.Device != "" {
		dst = append(dst, Key{Kind: KindDevice, Value: a.Tenant + "/" + a.Device})
	}
	for _, r := range a.Reasons {
		dst = append(dst, Key{Kind: KindCampaign, Value: r.Detector + "/" + r.Reason + " " + a.Command})
	}
	if kind == "" && a.Device != "" && a.Class != "" {
		c := schemas.ClassEntity(a.Tenant, a.Class)
		dst = append(dst, Key{Kind: schemas.EntityClass, Value: c, Role: Seeks}, Key{Kind: KindClassDevice, Value: c, Role: Offers})
	}
	return dst
}

// PrefixOf returns the network an IP is grouped by: its /24 for IPv4, its /48
// for IPv6; false when ip does not parse.
func PrefixOf(ip string) (string, bool) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return "", false
	}
	addr = addr.Unmap()
	bits := 24
	if addr.Is6() {
		bits = 48
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return "", false
	}
	return p.String(), true
}

// ID returns the id of an incident whose earliest alert (by event time, then
// id) has id alertID.
func ID(alertID string) string { return "inc-" + alertID }

// keyEntry is where a key leads: the incident of its latest session, and the
// event times of the first and latest alerts of that session carrying it.
type keyEntry struct {
	slot        int32
	first, last time.Time
}

// open is one open incident.
type open struct {
	inc      schemas.Incident
	rank     int // highest alert severity rank
	devices  map[string]struct{}
	entities map[string]struct{}
	keys     []string           // keys indexed to this incident
	offers   map[string]session // this incident's session of each key it offers (Offers)
}

// session is the event time of the first and latest alerts of a session of a
// key.
type session struct{ first, last time.Time }

// reaches reports whether an alert at t is within w of s.
func (s session) reaches(t time.Time, w time.Duration) bool {
	return !t.Before(s.first.Add(-w)) && !t.After(s.last.Add(w))
}

// MaxOffers bounds the keys one incident offers (Offers); beyond, an
// incident's new ones are not kept (counted in Stats.KeysDropped).
const MaxOffers = 64

// Grouper groups alerts into incidents. Create with New.
type Grouper struct {
	cfg       Config
	slots     []*open // open incidents; nil slots are free
	free      []int32
	index     map[string]keyEntry
	offered   map[string][]int32 // offered key -> the slots of the open incidents offering it
	recent    map[string]struct{}
	ring      []string // recent alert ids, oldest at ringNext once full
	ringNext  int
	clock     time.Time // latest alert time seen
	lastSweep time.Time
	keys      []Key   // scratch
	matched   []int32 // scratch
	stats     Stats
	onClose   func(*schemas.Incident)
	onRetire  func(*schemas.Incident)
}

// OnClose makes g call f with each incident as it closes (idle, evicted, or
// at Close), in its final state; f may keep it.
func (g *Grouper) OnClose(f func(*schemas.Incident)) { g.onClose = f }

// OnRetire makes g call f with each incident id that stops naming a live
// incident: an incident merged into another, or renamed because an alert
// earlier than its first joined it. f gets the incident's last state with
// MergedInto set to the id that now holds its alerts and Version one above
// its last, so that the retirement replaces every update published under that
// id; f may keep it. A retired incident is not closed again (OnClose).
func (g *Grouper) OnRetire(f func(*schemas.Incident)) { g.onRetire = f }

// Close closes every open incident, oldest slot first (see OnClose); g stays
// usable.
func (g *Grouper) Close() {
	for i, o := range g.slots {
		if o != nil {
			g.close(int32(i))
			g.stats.Closed++
		}
	}
}

// New returns a Grouper bounded by cfg.
func New(cfg Config) *Grouper {
	cfg.defaults()
	return &Grouper{cfg: cfg, index: map[string]keyEntry{}, offered: map[string][]int32{}, recent: map[string]struct{}{}}
}

// Stats returns what g did so far.
func (g *Grouper) Stats() Stats {
	s := g.stats
	s.Open = len(g.slots) - len(g.free)
	return s
}

// window returns how far (event time) from a key's session an alert may be to
// join it by that key: a one-way key ties alerts as loosely as a campaign
// signature does.
func (g *Grouper) window(k Key) time.Duration {
	if k.Kind == KindCampaign || k.Role != Mutual {
		return g.cfg.CampaignSpan
	}
	return g.cfg.IdleGap
}

// Add groups alert a, with the decision taken on it (decisionID, "" for
// none), and returns the incident it joined or opened, updated: a copy the
// caller owns. It returns nil for an alert without an id and for a
// redelivered alert (its id was seen among the last RecentAlerts). When a
// joins several open incidents they merge into one, and when a is earlier
// than the first alert of its incident the incident is renamed: the ids that
// stop naming a live incident are handed to OnRetire first.
func (g *Grouper) Add(a *schemas.Alert, decisionID string) *schemas.Incident {
	if a.ID == "" {
		return nil
	}
	if _, dup := g.recent[a.ID]; dup {
		g.stats.Duplicates++
		return nil
	}
	g.remember(a.ID)
	if a.Time.After(g.clock) {
		g.clock = a.Time
	}
	if g.clock.Sub(g.lastSweep) >= g.cfg.IdleGap/8 {
		g.sweep()
	}
	g.keys = Keys(g.keys[:0], a)
	g.matched = g.matched[:0]
	for _, k := range g.keys {
		if k.Role == Seeks {
			g.seek(k, a.Time)
			continue
		}
		if k.Role != Mutual {
			continue
		}
		e, ok := g.index[k.String()]
		if !ok {
			continue
		}
		w := g.window(k)
		if a.Time.Before(e.first.Add(-w)) || a.Time.After(e.last.Add(w)) {
			continue
		}
		if !slices.Contains(g.matched, e.slot) {
			g.matched = append(g.matched, e.slot)
		}
	}
	var slot int32
	if len(g.matched) == 0 {
		slot = g.open(a)
	} else {
		// The survivor is the incident with the earliest first alert: its
		// id is the merged incident's (unless a is earlier still).
		slot = g.matched[0]
		for _, s := range g.matched[1:] {
			if before(&g.slots[s].inc, &g.slots[slot].inc) {
				slot = s
			}
		}
	}
	o := g.slots[slot]
	if len(g.matched) > 0 && earlier(a.Time, a.ID, o.inc.FirstSeen, o.inc.FirstAlertID) {
		g.retire(&o.inc, ID(a.ID))
	}
	g.fold(o, a, decisionID)
	for _, s := range g.matched {
		if s != slot {
			g.merge(slot, s)
		}
	}
	for _, k := range g.keys {
		if k.Role == Offers {
			g.offer(slot, k, a.Time)
		}
		if k.Role != Mutual {
			continue
		}
		ks := k.String()
		e, ok := g.index[ks]
		w := g.window(k)
		switch {
		case ok && e.slot == slot && !a.Time.Before(e.first.Add(-w)) && !a.Time.After(e.last.Add(w)):
			// The key's session goes on.
			if a.Time.Before(e.first) {
				e.first = a.Time
			}
			if a.Time.After(e.last) {
				e.last = a.Time
			}
			g.index[ks] = e
			continue
		case ok && a.Time.Before(e.first):
			// An alert later than the key's window: the key's latest
			// session stays where it is.
			continue
		case !ok && len(g.index) >= g.cfg.MaxKeys:
			g.stats.KeysDropped++
			continue
		}
		// A new session of the key, in this incident: a key of another
		// (older) incident now leads here; the other keeps the key in its
		// list, and its close deletes the key only while it still leads
		// there.
		g.index[ks] = keyEntry{slot: slot, first: a.Time, last: a.Time}
		if !ok || e.slot != slot {
			o.keys = append(o.keys, ks)
		}
	}
	g.stats.Updates++
	return clone(&o.inc)
}

// seek adds to g.matched the open incidents offering k (Offers) with a
// session of it that an alert at t reaches.
func (g *Grouper) seek(k Key, t time.Time) {
	ks := k.String()
	w := g.window(k)
	for _, s := range g.offered[ks] {
		if g.slots[s].offers[ks].reaches(t, w) && !slices.Contains(g.matched, s) {
			g.matched = append(g.matched, s)
		}
	}
}

// offer makes the incident in slot s offer k, from an alert at t: the alert
// extends the incident's session of k when it reaches it, and starts a new
// one when it is later (an earlier alert out of the window leaves it).
func (g *Grouper) offer(s int32, k Key, t time.Time) {
	o := g.slots[s]
	ks := k.String()
	cur, ok := o.offers[ks]
	switch {
	case ok && cur.reaches(t, g.window(k)):
		if t.Before(cur.first) {
			cur.first = t
		}
		if t.After(cur.last) {
			cur.last = t
		}
	case ok && t.Before(cur.first):
		return
	case !ok && len(o.offers) >= MaxOffers:
		g.stats.KeysDropped++
		return
	case ok:
		cur = session{t, t}
	default:
		cur = session{t, t}
		if o.offers == nil {
			o.offers = map[string]session{}
		}
		g.offered[ks] = append(g.offered[ks], s)
	}
	o.offers[ks] = cur
}

// unoffer removes slot s from the incidents offering ks.
func (g *Grouper) unoffer(ks string, s int32) {
	slots := slices.DeleteFunc(g.offered[ks], func(x int32) bool { return x == s })
	if len(slots) == 0 {
		delete(g.offered, ks)
		return
	}
	g.offered[ks] = slots
}

// before reports whether incident x's first alert is earlier than y's.
func before(x, y *schemas.Incident) bool {
	return earlier(x.FirstSeen, x.FirstAlertID, y.FirstSeen, y.FirstAlertID)
}

// earlier orders alerts by event time, then id: the order that names an
// incident after its earliest alert whatever order the alerts arrive in.
func earlier(t time.Time, id string, u time.Time, uid string) bool {
	if !t.Equal(u) {
		return t.Before(u)
	}
	return id < uid
}

// retire hands inc, whose id stops naming a live incident, to OnRetire, as
// merged into into.
func (g *Grouper) retire(inc *schemas.Incident, into string) {
	g.stats.Retired++
	if g.onRetire == nil {
		return
	}
	r := clone(inc)
	r.MergedInto = into
	r.Version++
	g.onRetire(r)
}

// merge folds the incident in slot s into the one in slot into, retires s's
// id, and frees s; the keys leading to s lead to into.
func (g *Grouper) merge(into, s int32) {
	dst, src := g.slots[into], g.slots[s]
	g.retire(&src.inc, dst.inc.ID)
	g.stats.Merged++
	d, x := &dst.inc, &src.inc
	d.Alerts += x.Alerts
	d.Version = uint64(d.Alerts)
	if earlier(d.LastSeen, d.LastAlertID, x.LastSeen, x.LastAlertID) {
		d.LastSeen, d.LastAlertID = x.LastSeen, x.LastAlertID
	}
	d.Score = max(d.Score, x.Score)
	dst.rank = max(dst.rank, src.rank)
	for dev := range src.devices {
		addDevice(dst, dev)
	}
	for e := range src.entities {
		addEntity(dst, e)
	}
	for _, r := range x.Reasons {
		d.Reasons = insertSorted(d.Reasons, r, MaxReasons, cmp.Compare[string])
	}
	d.DecisionCount += x.DecisionCount
	for _, id := range x.Decisions {
		d.Decisions = insertSorted(d.Decisions, id, MaxSample, cmp.Compare[string])
	}
	d.Severity = severity(dst.rank, max(d.Devices, d.EntityCount))
	for _, k := range src.keys {
		if e, ok := g.index[k]; ok && e.slot == s {
			e.slot = into
			g.index[k] = e
			dst.keys = append(dst.keys, k)
		}
	}
	w := g.window(Key{Role: Offers})
	for ks, x := range src.offers {
		g.unoffer(ks, s)
		d, ok := dst.offers[ks]
		switch {
		case !ok && len(dst.offers) >= MaxOffers:
			g.stats.KeysDropped++
			continue
		case !ok:
			if dst.offers == nil {
				dst.offers = map[string]session{}
			}
			g.offered[ks] = append(g.offered[ks], into)
			d = x
		case x.last.Add(w).Before(d.first) || d.last.Add(w).Before(x.first):
			// Sessions apart: the later one goes on.
			if x.first.After(d.first) {
				d = x
			}
		default:
			d = session{first: minTime(d.first, x.first), last: maxTime(d.last, x.last)}
		}
		dst.offers[ks] = d
	}
	g.slots[s] = nil
	g.free = append(g.free, s)
}

func minTime(x, y time.Time) time.Time {
	if y.Before(x) {
		return y
	}
	return x
}

func maxTime(x, y time.Time) time.Time {
	if y.After(x) {
		return y
	}
	return x
}

// remember records an alert id among the recent ones.
func (g *Grouper) remember(id string) {
	if len(g.ring) < RecentAlerts {
		g.ring = append(g.ring, id)
	} else {
		delete(g.recent, g.ring[g.ringNext])
		g.ring[g.ringNext] = id
		g.ringNext = (g.ringNext + 1) % RecentAlerts
	}
	g.recent[id] = struct{}{}
}

// open opens an incident named after a, closing the one idle longest when
// MaxOpen are open, and returns its slot.
func (g *Grouper) open(a *schemas.Alert) int32 {
	if len(g.slots)-len(g.free) >= g.cfg.MaxOpen {
		oldest := int32(-1)
		for i, o := range g.slots {
			if o != nil && (oldest < 0 || o.inc.LastSeen.Before(g.slots[oldest].inc.LastSeen)) {
				oldest = int32(i)
			}
		}
		g.close(oldest)
		g.stats.Evicted++
	}
	o := &open{
		inc: schemas.Incident{ID: ID(a.ID), Tenant: a.Tenant, FirstSeen: a.Time, LastSeen: a.Time,
			FirstAlertID: a.ID, LastAlertID: a.ID, SchemaV: schemas.SchemaVersion},
		rank:     -1,
		devices:  map[string]struct{}{},
		entities: map[string]struct{}{},
	}
	g.stats.Opened++
	if n := len(g.free); n > 0 {
		s := g.free[n-1]
		g.free = g.free[:n-1]
		g.slots[s] = o
		return s
	}
	g.slots = append(g.slots, o)
	return int32(len(g.slots) - 1)
}

// fold adds a (and its decision) to o. Every field it sets is a function of
// the set of alerts folded in, not of their order: first and last by event
// time then id, samples the smallest values (entities by kind, then value).
func (g *Grouper) fold(o *open, a *schemas.Alert, decisionID string) {
	inc := &o.inc
	inc.Alerts++
	inc.Version = uint64(inc.Alerts)
	if earlier(a.Time, a.ID, inc.FirstSeen, inc.FirstAlertID) {
		inc.ID, inc.FirstSeen, inc.FirstAlertID, inc.Tenant = ID(a.ID), a.Time, a.ID, a.Tenant
	}
	if earlier(inc.LastSeen, inc.LastAlertID, a.Time, a.ID) {
		inc.LastSeen, inc.LastAlertID = a.Time, a.ID
	}
	inc.Score = max(inc.Score, a.Score)
	o.rank = max(o.rank, rank(a.Severity))
	if a.Device != "" {
		addDevice(o, a.Device)
	}
	for _, k := range g.keys {
		if k.entity() {
			addEntity(o, k.String())
		}
	}
	for _, r := range a.Reasons {
		inc.Reasons = insertSorted(inc.Reasons, r.Detector+"/"+r.Reason, MaxReasons, cmp.Compare[string])
	}
	if decisionID != "" {
		inc.DecisionCount++
		inc.Decisions = insertSorted(inc.Decisions, decisionID, MaxSample, cmp.Compare[string])
	}
	inc.Severity = severity(o.rank, max(inc.Devices, inc.EntityCount))
}

// addDevice counts a distinct device of o and samples it.
func addDevice(o *open, dev string) {
	if _, ok := o.devices[dev]; ok || len(o.devices) >= MaxDistinct {
		return
	}
	o.devices[dev] = struct{}{}
	o.inc.Devices++
	o.inc.DeviceSample = insertSorted(o.inc.DeviceSample, dev, MaxSample, cmp.Compare[string])
}

// addEntity counts a distinct entity (kind:value) of o and samples it.
func addEntity(o *open, e string) {
	if _, ok := o.entities[e]; ok || len(o.entities) >= MaxDistinct {
		return
	}
	o.entities[e] = struct{}{}
	o.inc.EntityCount++
	o.inc.Entities = insertSorted(o.inc.Entities, e, MaxSample, compareEntities)
}

// entityRank orders entity kinds in an incident's sample: addresses, then
// networks, then keys, then the rest.
func entityRank(e string) int {
	kind, _, _ := strings.Cut(e, ":")
	switch kind {
	case KindIP:
		return 0
	case KindPrefix:
		return 1
	case KindAPIKey:
		return 2
	}
	return 3
}

// compareEntities orders entities (kind:value) by entityRank, then value.
func compareEntities(x, y string) int {
	if c := cmp.Compare(entityRank(x), entityRank(y)); c != 0 {
		return c
	}
	return cmp.Compare(x, y)
}

// insertSorted inserts v into s, kept sorted by compare and at most n long
// (the n smallest), unless v is there already.
func insertSorted(s []string, v string, n int, compare func(string, string) int) []string {
	i, found := slices.BinarySearchFunc(s, v, compare)
	if found || i >= n {
		return s
	}
	s = slices.Insert(s, i, v)
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// sweep closes the incidents idle for IdleGap of the clock.
func (g *Grouper) sweep() {
	g.lastSweep = g.clock
	for i, o := range g.slots {
		if o != nil && g.clock.Sub(o.inc.LastSeen) > g.cfg.IdleGap {
			g.close(int32(i))
			g.stats.Closed++
		}
	}
}

// close removes the incident in slot s and the keys that lead to it.
func (g *Grouper) close(s int32) {
	o := g.slots[s]
	for _, k := range o.keys {
		if e, ok := g.index[k]; ok && e.slot == s {
			delete(g.index, k)
		}
	}
	for ks := range o.offers {
		g.unoffer(ks, s)
	}
	g.slots[s] = nil
	g.free = append(g.free, s)
	if g.onClose != nil {
		g.onClose(&o.inc)
	}
}

// severities in rank order.
var severities = []string{schemas.SeverityLow, schemas.SeverityMedium, schemas.SeverityHigh, schemas.SeverityCritical}

// rank returns a severity's rank (low 0 ... critical 3); unknown is low.
func rank(sev string) int { return max(0, slices.Index(severities, sev)) }

// severity is the incident's severity: its highest alert's, one level higher
// from WideBreadth devices or entities, two from VeryWideBreadth.
func severity(r, breadth int) string {
	switch {
	case breadth >= VeryWideBreadth:
		r += 2
	case breadth >= WideBreadth:
		r++
	}
	return severities[min(max(r, 0), len(severities)-1)]
}

// clone returns a copy of inc that shares no slice with it.
func clone(inc *schemas.Incident) *schemas.Incident {
	c := *inc
	c.DeviceSample = slices.Clone(inc.DeviceSample)
	c.Entities = slices.Clone(inc.Entities)
	c.Reasons = slices.Clone(inc.Reasons)
	c.Decisions = slices.Clone(inc.Decisions)
	return &c
}
