package entity

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Name is the Detector of entity findings.
const Name = "entity"

// Reasons of entity findings. They are user-facing (alerts, ClickHouse).
const (
	// ReasonCredentialStuffing: the entity failed authentication for many
	// distinct identities in one window, most of its requests failing.
	// Observed: distinct identities with failed auth; Expected: its usual
	// level (at least 2).
	ReasonCredentialStuffing = "credential_stuffing"
	// ReasonManyDevices: the entity addressed many more distinct devices in
	// one window than it does. Observed: distinct devices; Expected: its
	// usual level (at least 2).
	ReasonManyDevices = "many_devices"
	// ReasonRateSpike: the entity's requests in one window far exceed its
	// own learned rate. Observed: requests in the window; Expected: its
	// learned requests per window.
	ReasonRateSpike = "entity_rate_spike"
	// ReasonKeySpread: an API key was used by more distinct devices, or
	// from more distinct networks (/24, /48), in one window than it ever
	// was (a leaked key). Observed: the distinct devices or networks;
	// Expected: the most it had in a window before (at least 1).
	ReasonKeySpread = "key_spread"
)

// Reasons returns the reasons of entity findings.
func Reasons() []string {
	return []string{ReasonCredentialStuffing, ReasonManyDevices, ReasonRateSpike, ReasonKeySpread, ReasonNewIPWave,
		ReasonPrefixWave, ReasonTenantAuthFailures, ReasonTenantErrors, ReasonTenantRate, ReasonClassAuthFailures, ReasonClassErrors, ReasonClassRate,
		ReasonASNAuthFailures, ReasonASNManyDevices}
}

// Record layout, little-endian, RecordSize bytes:
//
//	0:4     layout version (recordVersion; a record of another reads as zeros)
//	4:8     line, 8:16 stream sequence: the position learned up to
//	16:24   window start, event time (Unix ns; 0: none yet)
//	24:28   requests in the window, 28:32 failed authentications in it
//	32:64   distinct devices addressed in the window (Distinct sketch)
//	64:96   distinct identities that failed authentication in it (Distinct);
//	        for an API key: the distinct networks it was used from
//	96:104  distinct addresses in the window (a prefix's: 64-bit bitmap)
//	104:108 learned distinct devices per window (float32; an API key's:
//	        the most in any window)
//	108:112 learned distinct failed identities per window (float32; an API
//	        key's: the most networks in any window)
//	112:116 learned requests per window (float32)
//	116:118 windows learned (uint16, saturating)
//	118     flags (flagWindow: a finding in this window; flagEver: ever one;
//	        flagFirst: an address's first window, see wave.go)
//	119     kind (kindIP, kindPrefix, kindKey)
//	120:128 route: the key its owner is chosen by (its prefix's, see Shard),
//	        so that a checkpoint restores it into the owner of any count
const (
	offLine     = 4
	offSeq      = 8
	offStart    = 16
	offEvents   = 24
	offFailures = 28
	offDevices  = 32
	offFailed   = 64
	offIPs      = 96
	offLDevices = 104
	offLFailed  = 108
	offLEvents  = 112
	offWindows  = 116
	offFlags    = 118
	offKind     = 119
	offRoute    = 120
	// RecordSize is the size of an entity record.
	RecordSize = 128

	flagWindow = 1
	flagEver   = 2

	kindIP     = 1
	kindPrefix = 2
	kindKey    = 3

	// recordVersion is the layout version in a record's first 4 bytes.
	recordVersion = 0x454e5401 // "ENT" 1
)

// Config tunes entity judging and state. Zero values take the defaults.
type Config struct {
	// Window is the tumbling window counts are kept over (default 5m).
	Window time.Duration
	// IdleTTL is how long a silent entity keeps its record (event time,
	// default 24h).
	IdleTTL time.Duration
	// MaxEntities caps the records kept, all owners together (default
	// DefaultMaxEntities); beyond it entities are evicted (see the package
	// documentation for which).
	MaxEntities int
	// FailIdentities is the fewest distinct identities failing
	// authentication in a window for a credential-stuffing finding (default
	// 10), and FailRatio the least share of the window's requests that
	// fail (default 0.5).
	FailIdentities float64
	FailRatio      float64
	// ManyDevices is the fewest distinct devices in a window for a
	// many-devices finding (default 50).
	ManyDevices float64
	// RateEvents is the fewest requests in a window for a rate-spike
	// finding (default 1000), which also needs 10 times the learned rate
	// and RateWindows learned windows (default 3).
	RateEvents  float64
	RateWindows int
	// PrefixFactor multiplies the floors above for a prefix (default 2),
	// and MinPrefixIPs is the fewest distinct addresses of a prefix in a
	// window for it to be judged (default 4).
	PrefixFactor float64
	MinPrefixIPs int
	// KeySpread is the fewest distinct devices, or networks, using one API
	// key in a window for a key-spread finding (default 10), which also
	// needs twice the most the key had in a window before (and a window
	// before: a key's first window is learned, not judged).
	KeySpread float64
	// WaveNewIPs is the fewest addresses first seen within a minute on one
	// route (schemas.Event.CommandID), all owners together, for a wave
	// (default 30; each owner judges its share, at least 5), which also
	// needs 4 times the route's learned new addresses a minute and 8 of
	// their mean deviations above it. WaveHold is how long a wave lasts
	// after its count last exceeded that (default 2m). During a wave, an
	// address in its first BurstWindow (default 30s) since first seen that
	// sent more requests than a benign new address of the route does (the
	// most learned outside waves, at least BurstFloor-1; BurstFloor
	// default 4: a device's first contact, a provisioning call and a report
	// or two, stays under it) is found (ReasonNewIPWave). NoWave turns
	// this off.
	WaveNewIPs  float64
	WaveHold    time.Duration
	BurstWindow time.Duration
	BurstFloor  int
	NoWave      bool
	// PrefixNewIPs is the fewest addresses first seen within a minute from
	// one network (/24, /48) on one route for a network's wave
	// (ReasonPrefixWave, netwave.go: a flood spread thin), which also needs
	// at least a third of them on devices other new addresses hit at once
	// (default 12). NoPrefixWave turns it off (so does NoWave).
	PrefixNewIPs float64
	NoPrefixWave bool
	// SkipBlocked ignores an entity's observations while a block its
	// owner's engine issued on it is active (worker.Config.SkipBlocked's
	// rule, for logs that do not carry the enforcement point's verdict):
	// the refusals the block causes are the enforcement's doing, and must
	// neither renew the block when it expires nor teach the baseline.
	SkipBlocked bool
	// Tenant judging (tenant.go), over each owner's share of a tenant's
	// traffic, floors for the whole tenant scaled by that share:
	// TenantFailDevices is the fewest distinct devices failing
	// authentication from unusual addresses in a window (default 50; also 4
	// times the usual level, and failures from MinPrefixIPs networks);
	// TenantErrors the fewest client errors in a window (default 200; also
	// 5 times the usual level, a tenth of the requests, and on
	// TenantFailDevices distinct devices); TenantRateEvents
	// the fewest requests (default 2000) and TenantRateFactor the multiple
	// of the usual level (default 5) for a rate finding, which needs
	// TenantWindows learned windows (default 12: an hour). NoTenant turns
	// tenant judging off.
	TenantFailDevices float64
	TenantErrors      float64
	TenantRateEvents  float64
	TenantRateFactor  float64
	TenantWindows     int
	NoTenant          bool
	// Class judging (class.go), as a tenant's, per tenant and device class
	// (schemas.Event.ClassKey), with the tenant's TenantRateFactor and
	// TenantWindows and floors of its own: ClassFailDevices (default 20),
	// ClassErrors (default 100) and ClassRateEvents (default 1000). NoClass
	// turns class judging off.
	ClassFailDevices float64
	ClassErrors      float64
	ClassRateEvents  float64
	NoClass          bool
	// Autonomous-system judging (asn.go), over each owner's share of the
	// requests of an AS's unusual addresses, floors for the whole AS scaled
	// by that share: ASNFailDevices is the fewest distinct devices failing
	// authentication in a window (default 30; also 4 times the usual
	// level, most of the requests failing and MinPrefixIPs networks), and
	// ASNManyDevices the fewest distinct devices addressed (default 100;
	// also 4 times the usual level). Only events whose ASN is known (a
	// GeoIP database with ASNs, or the log) are judged. NoASN turns it off.
	ASNFailDevices float64
	ASNManyDevices float64
	NoASN          bool
	// BasePages keeps the entity tables on base pages: without it they ask
	// for transparent huge pages (state.Config.HugePages), which spares
	// the common event a TLB miss on its address's record. For measuring
	// what that saves (worker's BenchmarkEntityCost), or for a host where
	// huge pages' compaction stalls hurt more.
	BasePages bool
}

// DefaultMaxEntities is the default cap on entity records: at
// RecordSize 128 (a 152-byte slot, at most 4/3 of them per record at the
// cap), about 210 MB at the cap.
const DefaultMaxEntities = 1 << 20

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Window <= 0 {
		c.Window = 5 * time.Minute
	}
	if c.IdleTTL <= 0 {
		c.IdleTTL = 24 * time.Hour
	}
	if c.MaxEntities <= 0 {
		c.MaxEntities = DefaultMaxEntities
	}
	def(&c.FailIdentities, 10)
	def(&c.FailRatio, 0.5)
	def(&c.ManyDevices, 50)
	def(&c.RateEvents, 1000)
	def(&c.PrefixFactor, 2)
	def(&c.KeySpread, 10)
	if c.RateWindows <= 0 {
		c.RateWindows = 3
	}
	if c.MinPrefixIPs <= 0 {
		c.MinPrefixIPs = 4
	}
	def(&c.WaveNewIPs, 30)
	def(&c.PrefixNewIPs, 12)
	def(&c.TenantFailDevices, 50)
	def(&c.TenantErrors, 200)
	def(&c.TenantRateEvents, 2000)
	def(&c.TenantRateFactor, 5)
	def(&c.ClassFailDevices, 20)
	def(&c.ClassErrors, 100)
	def(&c.ClassRateEvents, 1000)
	def(&c.ASNFailDevices, 30)
	def(&c.ASNManyDevices, 100)
	if c.TenantWindows <= 0 {
		c.TenantWindows = 12
	}
	if c.WaveHold <= 0 {
		c.WaveHold = 2 * time.Minute
	}
	if c.BurstWindow <= 0 {
		c.BurstWindow = 30 * time.Second
	}
	if c.BurstFloor <= 0 {
		c.BurstFloor = 4
	}
	return c
}

// usualFloor is the least "expected" an explanation states: one address
// normally speaks for one or two identities.
const usualFloor = 2

// Judge adds ob to the entity record rec (RecordSize bytes) of kind (an
// address's, its prefix's, or an API key's) and appends to out the findings
// of the entity's window so far. When ob opens a new window, the previous one is
// learned into the entity's baseline first, unless it had a finding. c must
// have its defaults (Config.WithDefaults). Judge is pure (a function of rec,
// ob and c), never reads the clock and does not allocate.
func Judge(rec []byte, ob *Obs, kind byte, c *Config, out *schemas.Scored) {
	_ = rec[RecordSize-1]
	rec[offKind] = kind
	window := int64(c.Window)
	start := int64(binary.LittleEndian.Uint64(rec[offStart:]))
	if start == 0 || ob.Time >= start+window {
		roll(rec)
		binary.LittleEndian.PutUint64(rec[offStart:], uint64(ob.Time))
	}
	events := binary.LittleEndian.Uint32(rec[offEvents:]) + 1
	binary.LittleEndian.PutUint32(rec[offEvents:], events)
	if kind == kindKey {
		judgeKey(rec, ob, events, c, out)
		return
	}
	prefix := kind == kindPrefix
	failures := countDevices(rec, ob)
	factor := 1.0
	if prefix {
		factor = c.PrefixFactor
		if bitmap64Add(rec[offIPs:], ob.addrHash()) < c.MinPrefixIPs {
			return
		}
	}
	found := false
	// Credential stuffing. The distinct count is at most the failures:
	// below the floor, no sketch is read.
	if lo := c.FailIdentities * factor; float64(failures) >= lo && float64(failures) >= c.FailRatio*float64(events) {
		usual := math.Max(usualFloor, float64(math.Float32frombits(binary.LittleEndian.Uint32(rec[offLFailed:]))))
		lo = math.Max(lo, 4*usual)
		if d := DistinctCount(rec[offFailed : offFailed+DistinctBytes]); d >= lo {
			score := 0.6 + 0.4*math.Min(1, (d-lo)/(2*lo))
			out.Add(schemas.Finding{Detector: Name, Reason: ReasonCredentialStuffing, Score: float32(math.Min(score, 0.99)),
				Observed: math.Round(d), Expected: math.Round(usual),
				ObservedLabel: labelWindow(c.Window), ExpectedLabel: labelUsual})
			found = true
		}
	}
	// Many devices, for an address only (a network's addresses each speak
	// for their own devices), and unless they are the identities it
	// stuffed: alert only (0.6 to 0.7).
	if lo := c.ManyDevices; !prefix && !found && float64(events) >= lo {
		usual := math.Max(usualFloor, float64(math.Float32frombits(binary.LittleEndian.Uint32(rec[offLDevices:]))))
		lo = math.Max(lo, 4*usual)
		if d := DistinctCount(rec[offDevices : offDevices+DistinctBytes]); d >= lo {
			out.Add(schemas.Finding{Detector: Name, Reason: ReasonManyDevices, Score: float32(0.6 + 0.1*math.Min(1, (d-lo)/lo)),
				Observed: math.Round(d), Expected: math.Round(usual),
				ObservedLabel: labelWindow(c.Window), ExpectedLabel: labelUsual})
			found = true
		}
	}
	// Rate spike against the entity's own rate: alert only.
	if lo := c.RateEvents * factor; float64(events) >= lo && int(binary.LittleEndian.Uint16(rec[offWindows:])) >= c.RateWindows {
		usual := float64(math.Float32frombits(binary.LittleEndian.Uint32(rec[offLEvents:])))
		if float64(events) >= math.Max(lo, 10*usual) {
			out.Add(schemas.Finding{Detector: Name, Reason: ReasonRateSpike, Score: 0.6,
				Observed: float64(events), Expected: math.Round(usual),
				ObservedLabel: labelWindow(c.Window), ExpectedLabel: labelUsual})
			found = true
		}
	}
	if found {
		rec[offFlags] |= flagWindow | flagEver
	}
}

// judgeKey is Judge for an API key: the distinct devices using it and the
// distinct networks it is used from, against the most it ever had.
func judgeKey(rec []byte, ob *Obs, events uint32, c *Config, out *schemas.Scored) {
	DistinctAdd(rec[offDevices:offDevices+DistinctBytes], ob.Device)
	if ob.hasAddr() {
		k := keyHalf(kindPrefix, ob.prefixAddr())
		DistinctAdd(rec[offFailed:offFailed+DistinctBytes], k)
	}
	if float64(events) < c.KeySpread || binary.LittleEndian.Uint16(rec[offWindows:]) == 0 {
		// The distinct counts are at most the requests; and a key with no
		// past window has no "ever" to exceed (its first window is learned).
		return
	}
	found := false
	for _, f := range [2]struct {
		sketch, learned int
		label           schemas.Label
	}{{offDevices, offLDevices, labelDevices}, {offFailed, offLFailed, labelNetworks}} {
		most := math.Max(1, float64(math.Float32frombits(binary.LittleEndian.Uint32(rec[f.learned:]))))
		lo := math.Max(c.KeySpread, 2*most)
		if d := DistinctCount(rec[f.sketch : f.sketch+DistinctBytes]); d >= lo {
			score := 0.6 + 0.35*math.Min(1, (d-lo)/(2*lo))
			out.Add(schemas.Finding{Detector: Name, Reason: ReasonKeySpread, Score: float32(score),
				Observed: math.Round(d), Expected: math.Round(most), ObservedLabel: f.label, ExpectedLabel: labelMost})
			found = true
		}
	}
	if found {
		rec[offFlags] |= flagWindow | flagEver
	}
}

var (
	labelUsual    = schemas.LabelString("usual")
	labelMost     = schemas.LabelString("most before")
	labelDevices  = schemas.LabelString("devices")
	labelNetworks = schemas.LabelString("networks")
)

// labelWindow is the label of a count over window w: "in 5m".
func labelWindow(w time.Duration) schemas.Label {
	if w == 5*time.Minute {
		return labelFiveMin
	}
	var l schemas.Label
	b := append(l[:0], "in "...)
	m := int(w / time.Minute)
	if m <= 0 {
		b = append(b, "<1m"...)
	} else {
		var d [8]byte
		i := len(d)
		for ; m > 0 && i > 0; m /= 10 {
			i--
			d[i] = byte('0' + m%10)
		}
		b = append(b, d[i:]...)
		b = append(b, 'm')
	}
	copy(l[:], b)
	return l
}

var labelFiveMin = schemas.LabelString("in 5m")

// roll ends the record's window: it is learned into the baseline when it
// had requests and no finding, and the counts start again.
func roll(rec []byte) {
	events := binary.LittleEndian.Uint32(rec[offEvents:])
	if events > 0 && rec[offFlags]&flagWindow == 0 {
		n := binary.LittleEndian.Uint16(rec[offWindows:])
		key := rec[offKind] == kindKey
		learn := func(off int, x float64) {
			old := float64(math.Float32frombits(binary.LittleEndian.Uint32(rec[off:])))
			v := x
			if key && off != offLEvents {
				v = math.Max(old, x) // the most it ever had
			} else if n > 0 {
				// A slow average up, a slower one down: a usual level, not a
				// peak an attacker could raise in one window.
				if x > old {
					v = old + (x-old)/8
				} else {
					v = old + (x-old)/16
				}
			}
			binary.LittleEndian.PutUint32(rec[off:], math.Float32bits(float32(v)))
		}
		learn(offLDevices, DistinctCount(rec[offDevices:offDevices+DistinctBytes]))
		if rec[offKind] == kindTenant || rec[offKind] == kindClass {
			learn(offLFailed, float64(binary.LittleEndian.Uint32(rec[tOffClientErr:])))
		} else {
			learn(offLFailed, DistinctCount(rec[offFailed:offFailed+DistinctBytes]))
		}
		learn(offLEvents, float64(events))
		if n < math.MaxUint16 {
			binary.LittleEndian.PutUint16(rec[offWindows:], n+1)
		}
	}
	rec[offFlags] &^= flagWindow
	if events > 0 {
		rec[offFlags] &^= flagFirst // a window of its own ended: no longer new
	}
	clear(rec[offEvents : offIPs+8])
}

// keep reports whether an entity record is worth keeping over others at the
// cap: it has a learned baseline or was flagged.
// A route's record is worth keeping once it has learned its band.
func keep(rec []byte) bool {
	if binary.LittleEndian.Uint32(rec) != recordVersion {
		return false
	}
	if rec[offKind] == kindRoute {
		return binary.LittleEndian.Uint16(rec[rOffBuckets:]) >= waveWarm
	}
	return binary.LittleEndian.Uint16(rec[offWindows:]) > 0 || rec[offFlags]&flagEver != 0
}

// countDevices adds ob's device to rec's distinct devices, and to its
// distinct failed devices and failure count when ob failed authentication;
// it returns the failures counted.
func countDevices(rec []byte, ob *Obs) uint32 {
	failures := binary.LittleEndian.Uint32(rec[offFailures:])
	if ob.Failed {
		failures++
		binary.LittleEndian.PutUint32(rec[offFailures:], failures)
		DistinctAdd(rec[offFailed:offFailed+DistinctBytes], ob.Device)
	}
	DistinctAdd(rec[offDevices:offDevices+DistinctBytes], ob.Device)
	return failures
}
