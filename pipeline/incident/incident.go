// Package incident groups alerts into incidents, so that an analyst sees one
// incident for one credential-stuffing run rather than 300 device alerts.
//
// Alerts are grouped when they share a key (Keys): an entity (the device, the
// client IP, its /24 or /48, the API key, and, once entity alerts exist, the
// alert's entity), or a campaign signature (the same detector/reason on the
// same command, across devices) within a short span (Config.CampaignSpan of
// the incident's latest alert). An alert joins the open incident of its first
// key that has one (keys in Keys order: entities before the campaign
// signature), adds its keys to it, and otherwise opens a new incident. Open
// incidents never merge, so an incident keeps the id it was opened with.
//
// The id derives from the alert that opened the incident (ID), and every
// update carries the number of alerts folded in as its version, so that a
// redelivery, which brings the same alerts in the same order, names the same
// incident, and the incidents table (ReplacingMergeTree by id, highest version
// kept) collapses the rewrites. An alert id seen recently (RecentAlerts) is a
// redelivery and changes nothing.
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
	"net/netip"
	"slices"
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
)

// Key is one grouping key of an alert.
type Key struct {
	Kind  string
	Value string
}

// String returns kind:value.
func (k Key) String() string { return k.Kind + ":" + k.Value }

// entity reports whether k names an entity of the incident (not the device,
// which is counted apart, nor the campaign signature).
func (k Key) entity() bool { return k.Kind != KindDevice && k.Kind != KindCampaign }

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
// the alert's own entity (EntityOf), its client IP, that IP's /24 (IPv4) or
// /48 (IPv6), its API key, its device (tenant/device), then one campaign
// signature per finding (detector/reason and command).
func Keys(dst []Key, a *schemas.Alert) []Key {
	if kind, v := EntityOf(a); kind != "" && v != "" {
		dst = append(dst, Key{kind, v})
	}
	if a.ClientIP != "" {
		dst = append(dst, Key{KindIP, a.ClientIP})
		if p, ok := PrefixOf(a.ClientIP); ok {
			dst = append(dst, Key{KindPrefix, p})
		}
	}
	if a.APIKey != "" {
		dst = append(dst, Key{KindAPIKey, a.APIKey})
	}
	if a.Device != "" {
		dst = append(dst, Key{KindDevice, a.Tenant + "/" + a.Device})
	}
	for _, r := range a.Reasons {
		dst = append(dst, Key{KindCampaign, r.Detector + "/" + r.Reason + " " + a.Command})
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

// ID returns the id of the incident opened by the alert with id alertID.
func ID(alertID string) string { return "inc-" + alertID }

// open is one open incident.
type open struct {
	inc      schemas.Incident
	rank     int // highest alert severity rank
	devices  map[string]struct{}
	entities map[string]struct{}
	keys     []string // keys indexed to this incident
}

// Grouper groups alerts into incidents. Create with New.
type Grouper struct {
	cfg       Config
	slots     []*open // open incidents; nil slots are free
	free      []int32
	index     map[string]int32 // key -> slot
	recent    map[string]struct{}
	ring      []string // recent alert ids, oldest at ringNext once full
	ringNext  int
	clock     time.Time // latest alert time seen
	lastSweep time.Time
	keys      []Key // scratch
	stats     Stats
	onClose   func(*schemas.Incident)
}

// OnClose makes g call f with each incident as it closes (idle, evicted, or
// at Close), in its final state; f may keep it.
func (g *Grouper) OnClose(f func(*schemas.Incident)) { g.onClose = f }

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
	return &Grouper{cfg: cfg, index: map[string]int32{}, recent: map[string]struct{}{}}
}

// Stats returns what g did so far.
func (g *Grouper) Stats() Stats {
	s := g.stats
	s.Open = len(g.slots) - len(g.free)
	return s
}

// Add groups alert a, with the decision taken on it (decisionID, "" for
// none), and returns the incident it joined or opened, updated: a copy the
// caller owns. It returns nil for an alert without an id and for a
// redelivered alert (its id was seen among the last RecentAlerts).
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
	slot := int32(-1)
	for _, k := range g.keys {
		s, ok := g.index[k.String()]
		if !ok {
			continue
		}
		o := g.slots[s]
		window := g.cfg.IdleGap
		if k.Kind == KindCampaign {
			window = g.cfg.CampaignSpan
		}
		if d := a.Time.Sub(o.inc.LastSeen); d <= window {
			slot = s
			break
		}
	}
	if slot < 0 {
		slot = g.open(a)
	}
	o := g.slots[slot]
	g.fold(o, a, decisionID)
	for _, k := range g.keys {
		ks := k.String()
		if s, ok := g.index[ks]; ok && s == slot {
			continue
		}
		if len(g.index) >= g.cfg.MaxKeys {
			if _, ok := g.index[ks]; !ok {
				g.stats.KeysDropped++
				continue
			}
		}
		// A key of another incident now leads to this one, the latest to
		// use it; the other keeps the key in its list, and its close
		// deletes the key only while it still leads there.
		g.index[ks] = slot
		o.keys = append(o.keys, ks)
	}
	g.stats.Updates++
	return clone(&o.inc)
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
			FirstAlertID: a.ID, SchemaV: schemas.SchemaVersion},
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

// fold adds a (and its decision) to o.
func (g *Grouper) fold(o *open, a *schemas.Alert, decisionID string) {
	inc := &o.inc
	inc.Alerts++
	inc.Version = uint64(inc.Alerts)
	if a.Time.After(inc.LastSeen) {
		inc.LastSeen = a.Time
	}
	inc.LastAlertID = a.ID
	inc.Score = max(inc.Score, a.Score)
	o.rank = max(o.rank, rank(a.Severity))
	if a.Device != "" {
		if _, ok := o.devices[a.Device]; !ok && len(o.devices) < MaxDistinct {
			o.devices[a.Device] = struct{}{}
			inc.Devices++
			if len(inc.DeviceSample) < MaxSample {
				inc.DeviceSample = append(inc.DeviceSample, a.Device)
			}
		}
	}
	for _, k := range g.keys {
		if !k.entity() {
			continue
		}
		ks := k.String()
		if _, ok := o.entities[ks]; !ok && len(o.entities) < MaxDistinct {
			o.entities[ks] = struct{}{}
			inc.EntityCount++
			if len(inc.Entities) < MaxSample {
				inc.Entities = append(inc.Entities, ks)
			}
		}
	}
	for _, r := range a.Reasons {
		k := r.Detector + "/" + r.Reason
		if len(inc.Reasons) < MaxReasons && !slices.Contains(inc.Reasons, k) {
			inc.Reasons = append(inc.Reasons, k)
		}
	}
	if decisionID != "" {
		inc.DecisionCount++
		if len(inc.Decisions) < MaxSample {
			inc.Decisions = append(inc.Decisions, decisionID)
		}
	}
	inc.Severity = severity(o.rank, max(inc.Devices, inc.EntityCount))
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
		if g.index[k] == s {
			delete(g.index, k)
		}
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
