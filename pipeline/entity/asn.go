package entity

import (
	"encoding/binary"
	"math"
	"strconv"

	"github.com/iotwatch/iotwatch/schemas"
)

// Reasons of autonomous-system findings. They are user-facing (alerts,
// ClickHouse).
const (
	// ReasonASNAuthFailures: many more distinct devices failed
	// authentication from unusual addresses of one autonomous system, over
	// several of its networks, in one window than the AS's band (credential
	// stuffing spread over many prefixes of one hosting AS, each too small
	// to be seen as a network). Observed: distinct devices; Expected: its
	// usual level.
	ReasonASNAuthFailures = "asn_auth_failures"
	// ReasonASNManyDevices: unusual addresses of one autonomous system, over
	// several of its networks, addressed many more distinct devices with
	// requests that failed authentication or got a client error (4xx) in
	// one window than the AS's band (enumeration spread over many
	// prefixes: probed device ids answer 404 or 401).
	// Observed: distinct devices; Expected: its usual level.
	ReasonASNManyDevices = "asn_many_devices"
)

// ASN record layout (kindASN), little-endian, RecordSize bytes: one owner's
// share of the failed and client-error requests of one autonomous system's
// unusual addresses (see the package documentation). Judge's layout, read as:
//
//	0:16    header (version, position), as every entity record
//	16:24   window start, 24:28 requests judged, 28:32 failed authentications
//	32:64   distinct devices addressed by them in the window (Distinct)
//	64:96   distinct devices that failed authentication in it (Distinct)
//	96:104  networks (/24, /48) of its addresses in the window (64-bit bitmap)
//	104:116 learned devices, failing devices, requests per window (float32)
//	116:118 windows learned, 118 flags, 119 kind, 120:128 owner route
const kindASN = 6

// asnNamespace keeps autonomous systems' state keys apart from the others'.
const asnNamespace = 0x41534e00 // "ASN"

// asnKey returns the state key of autonomous system asn.
func asnKey(asn uint32) (key, alt uint64) {
	var a [16]byte
	binary.LittleEndian.PutUint32(a[:], asn)
	binary.LittleEndian.PutUint32(a[4:], asnNamespace)
	return keyOf(kindASN, a)
}

// bitmap64Estimate estimates the distinct values added to a 64-bit bitmap
// with n bits set (linear counting).
func bitmap64Estimate(n int) float64 {
	if n >= 64 {
		n = 63 // saturated: at least this many
	}
	return -64 * math.Log(1-float64(n)/64)
}

// countShare marks rec, a share record, of kind, rolls its window when ob
// falls past it (c.Window) and counts ob: it returns the window's events.
func countShare(rec []byte, kind byte, ob *Obs, c *Config) uint32 {
	_ = rec[RecordSize-1]
	rec[offKind] = kind
	start := int64(binary.LittleEndian.Uint64(rec[offStart:]))
	if start == 0 || ob.Time >= start+int64(c.Window) {
		roll(rec)
		binary.LittleEndian.PutUint64(rec[offStart:], uint64(ob.Time))
	}
	events := binary.LittleEndian.Uint32(rec[offEvents:]) + 1
	binary.LittleEndian.PutUint32(rec[offEvents:], events)
	return events
}

// JudgeASN adds ob, a request that failed authentication or got a client
// error (4xx) from an unusual address (one with no learned baseline, or ever
// found doing something: a device's usual address is not judged here, so
// that an outage failing every device from where it always is raises
// nothing) of autonomous system ob.ASN, to the AS's record rec
// (RecordSize bytes: this owner's share of the AS, share of its traffic,
// 1 for one owner), and appends to out the findings of the window so far.
// warm reports that the owner is past its start-up (every address is new
// then): an AS is judged once it learned a window or once warm, so that an
// AS first seen in an attack is judged in its first window. Findings score
// at most 0.8: they alert, never block (see Owner.Observe). Observed and
// Expected are the AS's, estimated from the share (divided by share), and
// ObservedLabel carries its networks ("41 nets in 5m"). c must have its
// defaults. JudgeASN is pure and does not allocate.
func JudgeASN(rec []byte, ob *Obs, share float64, warm bool, c *Config, out *schemas.Scored) {
	events := countShare(rec, kindASN, ob, c)
	failures := countDevices(rec, ob)
	k := keyHalf(kindPrefix, ob.prefixAddr())
	nets := bitmap64Add(rec[offIPs:], k)
	windows := binary.LittleEndian.Uint16(rec[offWindows:])
	if nets < c.MinPrefixIPs || (windows == 0 && !warm) {
		return
	}
	// learned returns the share's usual level (at least usualFloor) and
	// the AS's, as an explanation states it.
	learned := func(off int) (float64, float64) {
		v := float64(math.Float32frombits(binary.LittleEndian.Uint32(rec[off:])))
		return math.Max(usualFloor, v), math.Round(math.Max(usualFloor, v/share))
	}
	label := labelNets(math.Round(bitmap64Estimate(nets)/share), c)
	found := false
	if lo := math.Max(c.ASNFailDevices*share, 10); float64(failures) >= lo && float64(failures) >= c.FailRatio*float64(events) {
		usual, expected := learned(offLFailed)
		lo = math.Max(lo, 4*usual)
		if d := DistinctCount(rec[offFailed : offFailed+DistinctBytes]); d >= lo {
			out.Add(schemas.Finding{Detector: Name, Reason: ReasonASNAuthFailures, Score: float32(0.6 + 0.2*math.Min(1, (d-lo)/(2*lo))),
				Observed: math.Round(d / share), Expected: expected,
				ObservedLabel: label, ExpectedLabel: labelUsual})
			found = true
		}
	}
	if lo := math.Max(c.ASNManyDevices*share, 20); !found && float64(events) >= lo {
		usual, expected := learned(offLDevices)
		lo = math.Max(lo, 4*usual)
		if d := DistinctCount(rec[offDevices : offDevices+DistinctBytes]); d >= lo {
			out.Add(schemas.Finding{Detector: Name, Reason: ReasonASNManyDevices, Score: float32(0.6 + 0.1*math.Min(1, (d-lo)/lo)),
				Observed: math.Round(d / share), Expected: expected,
				ObservedLabel: label, ExpectedLabel: labelUsual})
			found = true
		}
	}
	if found {
		rec[offFlags] |= flagWindow | flagEver
	}
}

// labelNets is the label of n networks over c's window: "41 nets in 5m".
func labelNets(n float64, c *Config) schemas.Label {
	var l schemas.Label
	var d [20]byte
	i := len(d)
	for m := uint64(n); i > 0; m /= 10 {
		i--
		d[i] = byte('0' + m%10)
		if m < 10 {
			break
		}
	}
	b := append(l[:0], d[i:]...)
	b = append(b, " nets "...)
	w := labelWindow(c.Window)
	for _, ch := range w {
		if ch == 0 || len(b) == len(l) {
			break
		}
		b = append(b, ch)
	}
	copy(l[:], b)
	return l
}

// asnText returns the text of an AS's entity: "AS64500", or
// "AS64500 (ExampleHost)" when name is known.
func asnText(asn uint32, name string) string {
	s := "AS" + strconv.FormatUint(uint64(asn), 10)
	if name != "" {
		s += " (" + name + ")"
	}
	return s
}
