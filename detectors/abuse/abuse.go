// Package abuse is the detector of what is certain whatever the client: a
// request for a known-bad path (a scanner's /.env, /wp-login.php, /.git/config,
// a traversal or injection payload in the path), a burst of 4xx answers that
// are most of a client's requests (a path scanner, an enumeration of ids that
// do not exist), a burst of authentication failures (credential stuffing),
// and a request rate no person and no office of people reaches (a flood).
//
// Every bound is absolute, not the identity's own baseline: the detector
// judges a client from its first request, and its reasons are the ones
// (detectors.Spec.Absolute) that judge, and alone can block, a client that
// is no device identity (detectors.Subject.Device is false: an address, a
// person's or a script's login; package decide). Browsing is bursty by nature
// (a page load pulls dozens of assets within a second); nothing here counts a
// burst of successful requests below the flood bound.
//
// Counts are kept in two tumbling buckets of BucketMinutes (the current one
// and the one before, so a window covers 5-10 minutes) and, for the flood, in
// the current event-time minute. An event earlier than the current bucket
// counts in it (late lines do not rewind the buckets).
package abuse

import (
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Name is the detector's registered name. It and its reasons are
// user-facing (findings, alerts, dashboards): renaming one is a migration.
const Name = "abuse"

// Reasons.
const (
	// ReasonKnownBadRequest: a request for a path no legitimate client asks
	// for (KnownBad). Observed: such requests in the window, this one
	// included; Expected: 0.
	ReasonKnownBadRequest = "known_bad_request"
	// ReasonNotFoundBurst: at least MinNotFound answers 400, 403, 404 or 405
	// in the window, at least half of the client's requests in it.
	// Observed: those answers; Expected: MinNotFound.
	ReasonNotFoundBurst = "not_found_burst"
	// ReasonAuthFailureBurst: at least MinAuthFailures failed
	// authentications in the window. Observed: the failures; Expected:
	// MinAuthFailures.
	ReasonAuthFailureBurst = "auth_failure_burst"
	// ReasonRequestFlood: at least FloodPerMinute requests in one
	// event-time minute. Observed: the minute's requests; Expected:
	// FloodPerMinute.
	ReasonRequestFlood = "request_flood"
)

// Bounds. Each reason scores 0.7 at its bound and rises linearly to 0.95 at
// twice the bound (known-bad requests: 0.6 for the first, 0.1 more for each
// next), capped at 0.99: decide alerts at 0.6, and blocks an address at
// 0.95 (decide.AddressBlockScore).
const (
	// BucketMinutes is the length of a counting bucket; a window is the
	// current bucket and the one before.
	BucketMinutes = 5
	// MinNotFound is the fewest 4xx answers (400, 403, 404, 405) in a window
	// that can be a scan: a page with a broken image or two, a crawler's
	// stale links, a mistyped address stay far below it.
	MinNotFound = 20
	// MinAuthFailures is the fewest failed authentications in a window that
	// can be a brute-force attempt: people mistype a password once or twice.
	MinAuthFailures = 10
	// FloodPerMinute is the fewest requests in one minute that can be a
	// flood: 20 a second for a whole minute. A person's page load pulls
	// dozens of assets in a second, then reads for seconds to minutes; an
	// office of forty people browsing at once stays well below it.
	FloodPerMinute = 1200
)

// StateSize is the size of a client's state:
//
//	0:4   the flood minute (Unix minutes, uint32)
//	4:8   requests in it (uint32, saturating)
//	8:12  the current bucket (Unix minutes / BucketMinutes, uint32)
//	12:14 requests in the current bucket, 14:16 in the previous (uint16, saturating)
//	16:18 4xx answers in the current bucket, 18:20 in the previous
//	20    authentication failures in the current bucket, 21 in the previous (uint8, saturating)
//	22    known-bad requests in the current bucket, 23 in the previous
const StateSize = 24

// Doc is the detector's paragraph in the catalog.
const Doc = "What is certain whatever the client, from its first request, against fixed bounds rather than a baseline: " +
	"a request for a known-bad path (dotfiles, admin panels of software the service does not run, traversal and " +
	"injection payloads in the path: known_bad_request), at least 20 answers 400/403/404/405 in 5-10 minutes that " +
	"are at least half of the client's requests (not_found_burst), at least 10 failed authentications in 5-10 minutes " +
	"(auth_failure_burst), at least 1,200 requests in one minute (request_flood). Its reasons are absolute: they " +
	"alone judge, and alone can block, a client that is no device identity (an address, a person's or a script's login)."

// Detector is the abuse detector.
type Detector struct{}

// Observe counts ev in state and returns the strongest of its findings.
func (*Detector) Observe(ev *schemas.Event, state []byte, _ detectors.Fleet) schemas.Finding {
	b := state[:StateSize]
	minute := uint32(ev.Time / 60e9)
	bucket := minute / BucketMinutes
	if m := binary.LittleEndian.Uint32(b[0:]); minute > m {
		binary.LittleEndian.PutUint32(b[0:], minute)
		binary.LittleEndian.PutUint32(b[4:], 0)
	}
	if cur := binary.LittleEndian.Uint32(b[8:]); bucket > cur {
		if bucket == cur+1 {
			copy(b[14:16], b[12:14])
			copy(b[18:20], b[16:18])
			b[21], b[23] = b[20], b[22]
		} else {
			clear(b[14:16])
			clear(b[18:20])
			b[21], b[23] = 0, 0
		}
		clear(b[12:14])
		clear(b[16:18])
		b[20], b[22] = 0, 0
		binary.LittleEndian.PutUint32(b[8:], bucket)
	}
	perMinute := inc32(b[4:])
	requests := inc16(b[12:]) + uint32(binary.LittleEndian.Uint16(b[14:]))
	var f schemas.Finding
	consider := func(reason string, score float32, observed, expected float64) {
		if score > f.Score {
			f = schemas.Finding{Detector: Name, Reason: reason, Score: min(score, 0.99), Observed: observed, Expected: expected}
		}
	}
	if perMinute >= FloodPerMinute {
		consider(ReasonRequestFlood, ramp(perMinute, FloodPerMinute), float64(perMinute), FloodPerMinute)
	}
	switch ev.Status {
	case 400, 403, 404, 405:
		if nf := inc16(b[16:]) + uint32(binary.LittleEndian.Uint16(b[18:])); nf >= MinNotFound && 2*nf >= requests {
			consider(ReasonNotFoundBurst, ramp(nf, MinNotFound), float64(nf), MinNotFound)
		}
	}
	if ev.Auth == schemas.AuthFailed {
		if af := inc8(&b[20]) + uint32(b[21]); af >= MinAuthFailures {
			consider(ReasonAuthFailureBurst, ramp(af, MinAuthFailures), float64(af), MinAuthFailures)
		}
	}
	if knownBadMemo(ev.CommandID, ev.Command) || (ev.Resource != 0 && knownBadMemo(ev.Resource^resourceSalt, ev.ResourceText)) {
		kb := inc8(&b[22]) + uint32(b[23])
		consider(ReasonKnownBadRequest, 0.6+0.1*float32(kb-1), float64(kb), 0)
	}
	return f
}

// ramp scores n against its bound: 0.7 at the bound, 0.95 at twice it.
func ramp(n, bound uint32) float32 {
	return 0.7 + 0.25*float32(n-bound)/float32(bound)
}

func inc32(b []byte) uint32 {
	n := binary.LittleEndian.Uint32(b)
	if n < 1<<32-1 {
		n++
	}
	binary.LittleEndian.PutUint32(b, n)
	return n
}

func inc16(b []byte) uint32 {
	n := binary.LittleEndian.Uint16(b)
	if n < 1<<16-1 {
		n++
	}
	binary.LittleEndian.PutUint16(b, n)
	return uint32(n)
}

func inc8(b *byte) uint32 {
	if *b < 255 {
		*b++
	}
	return uint32(*b)
}

// knownBad lists the lower-case substrings of known-bad requests: sensitive
// files and dotfiles, admin panels and exploits of software probed for
// everywhere (WordPress, phpMyAdmin, PHPUnit, routers' CGI), and traversal
// and injection payloads that survive in a path (the query string is not
// part of a normalized command).
var knownBad = []string{
	"/.env", "/.git", "/.svn", "/.aws", "/.ds_store", "/.htpasswd", "wp-login", "wp-admin", "wp-content", "xmlrpc.php",
	"phpmyadmin", "/pma/", "phpunit", "/cgi-bin/", "/boaform", "/hnap1", "/server-status", "/actuator", "web.config",
	"eval-stdin", "shell.php", "/manager/html", "../", "..%2f", "%2e%2e", "etc/passwd", "etc/shadow", "php://",
	"%27%20or", "%27%20and", "union%20select", "union+select", "sleep(", "%3cscript", "drop%20table",
}

// verdicts memoizes KnownBad of commands by their CommandID, and of the
// identifiers taken out of paths by their hash (ev.Resource, salted), direct-mapped:
// a slot holds the id with its lowest bit replaced by the verdict (0: empty).
// A command vocabulary is small and repeats, so the search runs about once
// per command and slot, not once per event. KnownBad is a pure function of
// the command, so the cache changes no result, whatever the workers that
// share it do (each slot is one atomic word).
var verdicts [1 << 12]atomic.Uint64

// resourceSalt keeps identifiers' hashes apart from commands' in verdicts.
const resourceSalt = 0x5bd1e9955bd1e995

// knownBadMemo is KnownBad(b), memoized in verdicts under id, b's hash.
func knownBadMemo(id uint64, b []byte) bool {
	key := id | 1 // never 0
	slot := &verdicts[id%uint64(len(verdicts))]
	if v := slot.Load(); v|1 == key {
		return v&1 == 1
	}
	bad := KnownBad(b)
	v := key &^ 1
	if bad {
		v |= 1
	}
	if v != 0 {
		slot.Store(v)
	}
	return bad
}

// KnownBad reports whether b (a normalized command or a path) contains a
// known-bad substring, ignoring ASCII case; only its first 256 bytes are
// searched. It does not allocate.
func KnownBad(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	var buf [256]byte
	n := copy(buf[:], b)
	low := buf[:n]
	for i, c := range low {
		if c >= 'A' && c <= 'Z' {
			low[i] = c + 'a' - 'A'
		}
	}
	// One pass over b: at each byte, only the entries that begin with it
	// and the byte after it are compared, instead of one search of b per
	// entry. Identifiers taken out of paths are unique
	// per device, so the memo of verdicts misses for them on large fleets
	// and this search runs on most events.
	for i, c := range low[:n-1] {
		if next := low[i+1]; knownBadSecond[c][next>>6]&(1<<(next&63)) == 0 {
			continue
		}
		for _, s := range knownBadByFirst[c] {
			if len(s) <= len(low)-i && string(low[i:i+len(s)]) == s {
				return true
			}
		}
	}
	return false
}

// knownBadByFirst holds the entries of knownBad by their first byte, and
// knownBadSecond, by first byte, the set of their second bytes (every entry
// has at least two).
var knownBadByFirst, knownBadSecond = func() (first [256][]string, second [256][4]uint64) {
	for _, s := range knownBad {
		first[s[0]] = append(first[s[0]], s)
		second[s[0]][s[1]>>6] |= 1 << (s[1] & 63)
	}
	return first, second
}()

func init() {
	reasons := []string{ReasonKnownBadRequest, ReasonNotFoundBurst, ReasonAuthFailureBurst, ReasonRequestFlood}
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Version:   1,
		Reasons:   reasons,
		Absolute:  reasons,
		Shapes: []detectors.Shape{
			func(rng *rand.Rand, ev *schemas.Event) {
				ev.SetRawCommand([]byte("GET"), []byte([]string{"/.env", "/wp-login.php", "/static/../../etc/passwd"}[rng.IntN(3)]))
			},
			func(_ *rand.Rand, ev *schemas.Event) { ev.Status = 404 },
		},
		New: func() detectors.Detector { return &Detector{} },
	})
}
