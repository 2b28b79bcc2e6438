// Package websim generates the access log of one NGINX in front of a web
// application and its IoT API: devices and people behind one gateway, in
// NGINX's "combined" format, with a label per client IP. It is the mixed log
// of issue 12 ("Know what is a device"): `iotwatch eval web` replays it
// through the scoring stack and counts the benign IPs alerted and blocked
// and the attackers caught, next to a signature baseline.
//
// It was written from what such traffic looks like, not from what the
// detectors judge: no parameter here was chosen by looking at a detector's
// output.
//
// # Benign clients (Label.Kind)
//
//   - KindHome: one to three people browsing from a home address. A person
//     opens sessions (log-normal idle gaps, longer at night) of a few to
//     dozens of page views; each page pulls 5-80 assets (scripts, styles,
//     images, fonts) within about a second, fewer once cached (304s), with
//     think times of seconds to minutes between pages. Some log in (POST
//     /login, now and then a mistyped password: one 401, then 200) and use
//     the dashboard, whose XHRs read their own devices
//     (/api/v1/devices/{id}/status).
//   - KindOffice: an office NAT: 5-40 such people behind one address, some of
//     them administrators who use /admin.
//   - KindCrawler: a search engine's crawler: robots.txt, then a steady walk
//     over the site's pages, with stale links (404) and redirects.
//   - KindIntegration: a partner's script (python-requests, Go-http-client,
//     okhttp, ...): polls the API every 1-5 minutes and runs an export at
//     the top of every hour (50-400 requests as fast as the API answers,
//     with some 429s).
//   - KindMonitor: an uptime monitor: GET or HEAD of / or /health every 30,
//     60 or 300 seconds.
//   - KindDevice: an IoT device on its own address, identified by HTTP basic
//     auth ($remote_user is its id) or only by the id in its paths, posting
//     telemetry periodically and fetching its config hourly.
//   - KindGateway: an IoT gateway forwarding the telemetry of 5-40 devices
//     behind it, each device on its own period.
//
// # Attackers (Label.Attack)
//
// AttackIPs attacking addresses (32 by default), each alone on its address,
// starting after a fifth of the run: credential stuffing (POST /login, mostly
// 401), path scanners (/.env, /wp-login.php, /.git/config, /admin, ... mostly
// 404), SQL injection and path traversal probes, an HTTP flood (tens to
// hundreds of requests a second), and slow enumeration of
// /api/v1/devices/{id} (one id every few seconds, for an hour or more).
//
// The run is fixed by Config.Seed: the same Config gives the same bytes.
package websim

import (
	"container/heap"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/iotwatch/iotwatch/internal/splitmix"
)

// Benign kinds (Label.Kind of a benign address).
const (
	KindHome        = "home_browser"
	KindOffice      = "office_nat"
	KindCrawler     = "crawler"
	KindIntegration = "integration"
	KindMonitor     = "monitor"
	KindDevice      = "iot_device"
	KindGateway     = "iot_gateway"
)

// Attack types (Label.Attack, and Label.Kind of an attacking address).
const (
	AttackStuffing    = "credential_stuffing"
	AttackScanner     = "path_scanner"
	AttackInjection   = "sqli_traversal"
	AttackFlood       = "http_flood"
	AttackEnumeration = "slow_enumeration"
)

// BenignKinds and AttackTypes list the kinds, in report order.
var (
	BenignKinds = []string{KindHome, KindOffice, KindCrawler, KindIntegration, KindMonitor, KindDevice, KindGateway}
	AttackTypes = []string{AttackStuffing, AttackScanner, AttackInjection, AttackFlood, AttackEnumeration}
)

// Defaults.
const (
	DefaultIPs       = 2000
	DefaultHours     = 4.0
	DefaultAttackIPs = 32
)

// DefaultStart is the time of the first event by default (a Monday, 06:00 UTC).
var DefaultStart = time.Date(2026, 1, 5, 6, 0, 0, 0, time.UTC)

// Config configures a generated log. Zero fields take their defaults.
type Config struct {
	// Seed makes the run reproducible.
	Seed int64
	// IPs is the number of benign client addresses (default DefaultIPs).
	IPs int
	// Hours is the event-time span (default DefaultHours).
	Hours float64
	// AttackIPs is the number of attacking addresses (default
	// DefaultAttackIPs; negative: none).
	AttackIPs int
	// Start is the time of the run's beginning (default DefaultStart).
	Start time.Time
}

func (c Config) withDefaults() Config {
	if c.IPs == 0 {
		c.IPs = DefaultIPs
	}
	if c.Hours == 0 {
		c.Hours = DefaultHours
	}
	if c.AttackIPs == 0 {
		c.AttackIPs = DefaultAttackIPs
	}
	if c.AttackIPs < 0 {
		c.AttackIPs = 0
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	c.Start = c.Start.UTC().Truncate(time.Second)
	return c
}

// Validate checks c after applying defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.IPs < 1 || c.IPs > 1_000_000:
		return fmt.Errorf("invalid IPs %d: must be between 1 and 1000000", c.IPs)
	case !(c.Hours >= 0.25 && c.Hours <= 24*30):
		return fmt.Errorf("invalid Hours %v: must be between 0.25 and 720", c.Hours)
	case c.AttackIPs > 10_000:
		return fmt.Errorf("invalid AttackIPs %d: must be at most 10000", c.AttackIPs)
	}
	return nil
}

// Label describes one client address: its kind, and for an attacker the
// attack and the times of its first and last requests.
type Label struct {
	IP string `json:"ip"`
	// Kind is one of BenignKinds, or the attack type for an attacker.
	Kind string `json:"kind"`
	// Attack is the attack type ("" for a benign address).
	Attack string    `json:"attack,omitempty"`
	Start  time.Time `json:"start,omitzero"`
	End    time.Time `json:"end,omitzero"`
	// Requests is how many requests the address made.
	Requests int `json:"requests"`
}

// req is one planned request.
type req struct {
	t       int64 // Unix ns
	method  string
	path    string
	status  int
	bytes   int
	referer string
}

// actor is one client process (a person, a device, a script, an attack) on
// one address; several may share an address (an office, a gateway).
type actor struct {
	label  int // index in Log.labels
	user   string
	ua     string
	rng    rng
	queue  []req
	qi     int
	plan   func(a *actor, from int64) bool // appends the next requests from time from; false: done
	next   int64
	end    int64
	kind   string
	state  int
	n      int
	ids    []string
	period int64
	phase  int64
}

// Log is a generated log. Not safe for concurrent use.
type Log struct {
	cfg    Config
	labels []Label
	actors []*actor
	h      actorHeap
	end    int64
	n      int
}

// New plans the run of cfg.
func New(cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot generate the web log: %w", err)
	}
	cfg = cfg.withDefaults()
	l := &Log{cfg: cfg}
	start := cfg.Start.UnixNano()
	l.end = start + int64(cfg.Hours*float64(time.Hour))
	r := newRNG(cfg.Seed, 0)
	// The mix of benign addresses.
	for i := range cfg.IPs {
		u := r.Float()
		var kind string
		switch {
		case u < 0.50:
			kind = KindHome
		case u < 0.58:
			kind = KindOffice
		case u < 0.64:
			kind = KindCrawler
		case u < 0.70:
			kind = KindIntegration
		case u < 0.74:
			kind = KindMonitor
		case u < 0.94:
			kind = KindDevice
		default:
			kind = KindGateway
		}
		l.addBenign(i, kind, start)
	}
	for i := range cfg.AttackIPs {
		l.addAttacker(i, AttackTypes[attackMix[i%len(attackMix)]], start)
	}
	for _, a := range l.actors {
		if a.plan(a, a.next) {
			a.next = a.queue[0].t
			heap.Push(&l.h, a)
		}
	}
	return l, nil
}

// attackMix spreads attackers over the types: of 32, 8 stuffers, 8 scanners,
// 6 injection probes, 2 floods and 8 enumerations.
var attackMix = []int{0, 1, 4, 0, 1, 2, 4, 0, 1, 2, 4, 0, 1, 2, 4, 3}

// Config returns the configuration in use.
func (l *Log) Config() Config { return l.cfg }

// Labels returns one label per address; Requests and the attackers' Start
// and End are complete once Next has returned false.
func (l *Log) Labels() []Label { return l.labels }

// Emitted returns how many lines Next returned.
func (l *Log) Emitted() int { return l.n }

// Next appends the next line (no newline) to dst, in time order; ok is false
// once the run is over.
func (l *Log) Next(dst []byte) (line []byte, t time.Time, ok bool) {
	for l.h.Len() > 0 {
		a := l.h[0]
		q := a.queue[a.qi]
		a.qi++
		if a.qi == len(a.queue) {
			a.queue, a.qi = a.queue[:0], 0
			if !a.plan(a, q.t) || len(a.queue) == 0 {
				heap.Pop(&l.h)
			} else {
				a.next = a.queue[0].t
				heap.Fix(&l.h, 0)
			}
		} else {
			a.next = a.queue[a.qi].t
			heap.Fix(&l.h, 0)
		}
		if q.t >= l.end {
			continue
		}
		lb := &l.labels[a.label]
		lb.Requests++
		if lb.Attack != "" {
			tt := time.Unix(0, q.t).UTC()
			if lb.Start.IsZero() {
				lb.Start = tt
			}
			lb.End = tt
		}
		l.n++
		return appendLine(dst, lb.IP, a.user, a.ua, &q), time.Unix(0, q.t).UTC(), true
	}
	return dst, time.Time{}, false
}

// appendLine appends q in NGINX's combined format.
func appendLine(dst []byte, ip, user, ua string, q *req) []byte {
	dst = append(dst, ip...)
	dst = append(dst, " - "...)
	if user == "" {
		dst = append(dst, '-')
	} else {
		dst = append(dst, user...)
	}
	dst = append(dst, " ["...)
	dst = time.Unix(0, q.t).UTC().AppendFormat(dst, "02/Jan/2006:15:04:05 -0700")
	dst = append(dst, `] "`...)
	dst = append(dst, q.method...)
	dst = append(dst, ' ')
	dst = append(dst, q.path...)
	dst = append(dst, ` HTTP/1.1" `...)
	dst = strconv.AppendInt(dst, int64(q.status), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(q.bytes), 10)
	dst = append(dst, ` "`...)
	if q.referer == "" {
		dst = append(dst, '-')
	} else {
		dst = append(dst, q.referer...)
	}
	dst = append(dst, `" "`...)
	dst = append(dst, ua...)
	return append(dst, '"')
}

// actorHeap orders actors by their next request's time.
type actorHeap []*actor

func (h actorHeap) Len() int           { return len(h) }
func (h actorHeap) Less(i, j int) bool { return h[i].next < h[j].next }
func (h actorHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *actorHeap) Push(x any)        { *h = append(*h, x.(*actor)) }
func (h *actorHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	*h = old[:len(old)-1]
	return a
}

// rng is splitmix64 (package splitmix): a seed yields the same log forever.
type rng struct{ splitmix.RNG }

func newRNG(seed int64, stream uint64) rng { return rng{splitmix.New(seed, stream)} }

func (r *rng) between(lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + r.Intn(hi-lo+1)
}

// exp draws an exponential duration of the given mean.
func (r *rng) exp(mean float64) float64 { return -mean * math.Log(1-r.Float()) }

// lognormal draws exp(N(ln median, sigma)).
func (r *rng) lognormal(median, sigma float64) float64 {
	// Box-Muller.
	u1, u2 := 1-r.Float(), r.Float()
	z := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
	return median * math.Exp(sigma*z)
}

func pick[T any](r *rng, xs []T) T { return xs[r.Intn(len(xs))] }

func sec(s float64) int64 { return int64(s * float64(time.Second)) }
