package entity

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/iotwatch/iotwatch/schemas"
)

// Reasons of tenant findings. They are user-facing (alerts, ClickHouse).
const (
	// ReasonTenantAuthFailures: many more of a tenant's devices failed
	// authentication, from addresses that are not their usual ones, in one
	// window than its band (an attack spread thin over many devices, each
	// failing only once or twice). Observed: distinct devices; Expected:
	// its usual level.
	ReasonTenantAuthFailures = "tenant_auth_failures"
	// ReasonTenantErrors: a tenant's client errors (4xx other than 401 and
	// 403) in one window far beyond its band, on many of its devices
	// (enumeration spread over many devices). Observed: errors in the window; Expected: its usual level.
	ReasonTenantErrors = "tenant_client_errors"
	// ReasonTenantRate: a tenant's requests in one window far beyond its
	// band (a flood spread over many devices). Observed: requests in the
	// window; Expected: its usual level.
	ReasonTenantRate = "tenant_rate_spike"
)

// Tenant record layout (kindTenant), little-endian, RecordSize bytes: one
// owner's share of one tenant's traffic (see the package documentation).
//
//	0:16    header (version, position), as every entity record
//	16:24   window start, 24:28 requests, 28:32 failed authentications
//	32:64   distinct devices that failed authentication from an unusual
//	        address in the window (Distinct)
//	64:96   distinct devices with client errors in the window (Distinct)
//	96:100  client errors (4xx but 401, 403)
//	100:104 networks (/24, /48) of the unusual failures (32-bit bitmap)
//	104:108 learned distinct failing devices per window (float32)
//	108:112 learned client errors per window (float32)
//	112:116 learned requests per window (float32)
//	116:118 windows learned, 118 flags, 119 kind, 120:128 owner route
const (
	tOffClientErr = 96
	tOffNetworks  = 100

	kindTenant = 5
)

// Outcomes of an observation's request besides authentication (Obs.Outcome).
const (
	outcomeOK        = 0
	outcomeClientErr = 1 // an HTTP 4xx other than 401 and 403
	outcomeServerErr = 2 // an HTTP 5xx: the backend's, never an attack's sign
)

// outcomeOf classifies ev's status for the tenant's error band.
func outcomeOf(ev *schemas.Event) uint8 {
	if ev.Protocol != schemas.ProtoHTTP {
		return outcomeOK
	}
	switch s := ev.Status; {
	case s >= 500 && s < 600:
		return outcomeServerErr
	case s >= 400 && s < 500 && s != 401 && s != 403:
		return outcomeClientErr
	}
	return outcomeOK
}

// tenantNamespace keeps tenants' state keys apart from addresses' and keys'.
var tenantNamespace = []byte("iotwatch/tenant")

// tenantKey returns the state key of ob's tenant (Obs.Tenant).
func (ob *Obs) tenantKey() (key, alt uint64) {
	t := ob.Key[:ob.KeyLen]
	return schemas.Hash2(tenantNamespace, t), schemas.Hash2Alt(tenantNamespace, t)
}

// JudgeTenant adds ob to a tenant's record rec (RecordSize bytes: this
// owner's share of the tenant, share of its traffic, 1 for one owner) and
// appends to out the findings of the window so far. usual reports whether
// ob's address is a usual one (an address with a learned baseline, or its
// device's identity): a failed authentication from a usual address is a
// device failing from where it always is (a backend or a credential
// rotation gone wrong, an incident), not an attack, and is not counted
// against the band. Server errors (5xx) are never judged: they
// are the backend's (a backend incident fails every device at once from its
// usual network). Findings score at most 0.8: they alert, never block (a
// tenant is a customer). A finding's Observed and Expected are the tenant's,
// estimated from the share (divided by share). c must have its defaults. JudgeTenant is pure
// and does not allocate.
func JudgeTenant(rec []byte, ob *Obs, usual bool, share float64, c *Config, out *schemas.Scored) {
	b := tenantBand(c)
	judgeBand(rec, ob, usual, share, &b, c, out)
}

// tenantBand returns the band of a tenant under c.
func tenantBand(c *Config) band {
	return band{kind: kindTenant, failDevices: c.TenantFailDevices, errors: c.TenantErrors,
		rateEvents: c.TenantRateEvents, reasonAuth: ReasonTenantAuthFailures, reasonErrors: ReasonTenantErrors,
		reasonRate: ReasonTenantRate}
}

// band is what judgeBand judges a tenant's or a class's share against: the
// record's kind, the whole entity's floors (scaled by the owner's share) and
// the reasons of its findings.
type band struct {
	kind                                 byte
	failDevices, errors, rateEvents      float64
	reasonAuth, reasonErrors, reasonRate string
}

// judgeBand is JudgeTenant for the entity of b (a tenant, a class): its
// authentication failures from unusual addresses, client errors and
// requests against its own band, learned outside findings. It is pure and
// does not allocate.
func judgeBand(rec []byte, ob *Obs, usual bool, share float64, b *band, c *Config, out *schemas.Scored) {
	events := countShare(rec, b.kind, ob, c)
	windows := int(binary.LittleEndian.Uint16(rec[offWindows:]))
	learned := func(off int) float64 {
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(rec[off:])))
	}
	found := false
	if ob.Outcome == outcomeClientErr {
		n := binary.LittleEndian.Uint32(rec[tOffClientErr:]) + 1
		binary.LittleEndian.PutUint32(rec[tOffClientErr:], n)
		DistinctAdd(rec[offFailed:offFailed+DistinctBytes], ob.Device)
		// Spread over many devices: one device's enumeration is its own
		// detectors'.
		if windows >= c.RateWindows {
			usualErr := learned(offLFailed)
			if lo := math.Max(math.Max(b.errors*share, 10), 5*usualErr); float64(n) >= lo && float64(n) >= 0.1*float64(events) &&
				DistinctCount(rec[offFailed:offFailed+DistinctBytes]) >= math.Max(b.failDevices*share, 10) {
				out.Add(schemas.Finding{Detector: Name, Reason: b.reasonErrors, Score: 0.6,
					Observed: math.Round(float64(n) / share), Expected: math.Round(usualErr / share),
					ObservedLabel: labelWindow(c.Window), ExpectedLabel: labelUsual})
				found = true
			}
		}
	}
	if ob.Failed {
		binary.LittleEndian.PutUint32(rec[offFailures:], binary.LittleEndian.Uint32(rec[offFailures:])+1)
		if !usual {
			DistinctAdd(rec[offDevices:offDevices+DistinctBytes], ob.Device)
			k := keyHalf(kindPrefix, ob.prefixAddr())
			nets := binary.LittleEndian.Uint32(rec[tOffNetworks:]) | 1<<((k*0x9e3779b97f4a7c15)>>59)
			binary.LittleEndian.PutUint32(rec[tOffNetworks:], nets)
			// A tenant's first window is learned, not judged: at a
			// pipeline's start every address is new.
			if windows > 0 {
				usualDev := math.Max(usualFloor, learned(offLDevices))
				lo := math.Max(math.Max(b.failDevices*share, 10), 4*usualDev)
				if d := DistinctCount(rec[offDevices : offDevices+DistinctBytes]); d >= lo &&
					bits.OnesCount32(binary.LittleEndian.Uint32(rec[tOffNetworks:])) >= c.MinPrefixIPs {
					score := 0.6 + 0.2*math.Min(1, (d-lo)/(2*lo))
					out.Add(schemas.Finding{Detector: Name, Reason: b.reasonAuth, Score: float32(score),
						Observed: math.Round(d / share), Expected: math.Round(usualDev / share),
						ObservedLabel: labelWindow(c.Window), ExpectedLabel: labelUsual})
					found = true
				}
			}
		}
	}
	if windows >= c.TenantWindows {
		usualEv := learned(offLEvents)
		if lo := math.Max(math.Max(b.rateEvents*share, 100), c.TenantRateFactor*usualEv); float64(events) >= lo {
			out.Add(schemas.Finding{Detector: Name, Reason: b.reasonRate, Score: 0.6,
				Observed: math.Round(float64(events) / share), Expected: math.Round(usualEv / share),
				ObservedLabel: labelWindow(c.Window), ExpectedLabel: labelUsual})
			found = true
		}
	}
	if found {
		rec[offFlags] |= flagWindow | flagEver
	}
}
