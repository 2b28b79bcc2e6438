package sim

import (
	"fmt"
	"strconv"
	"time"
)

const (
	msNs   = int64(time.Millisecond)
	secNs  = int64(time.Second)
	hourNs = int64(time.Hour)
	dayNs  = 24 * hourNs
)

// ident is where a request came from, as the gateway logged it.
type ident struct {
	ip      string
	country string
	asn     uint32
}

func identOf(n *Network, h uint64) ident {
	return ident{ip: hostIP(n, h).String(), country: n.Country, asn: n.ASN}
}

// device is one simulated device and its behaviour plan.
type device struct {
	id       string
	num      int // number within its class
	cls      *classSpec
	tenant   string
	apiKey   string // "" for certificate and MQTT client id devices
	fw       string
	srcID    string
	home     ident
	alt      ident // in use during [altStart, altEnd): a new DHCP lease or a trip abroad
	altStart int64
	altEnd   int64
	utcOff   int64 // ns
	rng      rng

	state     uint8 // the grammar command sent at the next fire (unless queued or retried)
	queue     [6]uint8
	qhead     uint8
	qlen      uint8
	burst     bool // the queue is a backlog: short gaps
	retry     int16
	offStart  int64 // offline window, zero if none
	offEnd    int64
	otaAt     int64 // when the vendor's OTA campaign reaches the device, zero if never
	otaQueued bool
	victim    bool
	pref      int16 // thermostats: the owner's preferred setpoint, tenths of °C
	arg       int16 // the last argument value sent, which a retry sends again
}

// setpoint draws the temperature d's owner sets next, in tenths of °C: within
// ±1 °C of the preference, or an eco setting 3-4 °C below it.
func (d *device) setpoint() int16 {
	if d.rng.Float() < setpointEco {
		return d.pref - int16(30+setpointStep*d.rng.Intn(3))
	}
	return d.pref + int16(setpointStep*(d.rng.Intn(5)-2))
}

func (d *device) identAt(t int64) *ident {
	if t >= d.altStart && t < d.altEnd {
		return &d.alt
	}
	return &d.home
}

func (d *device) hour(t int64) int {
	h := ((t+d.utcOff)/hourNs)%24 + 24
	return int(h % 24)
}

func (d *device) enqueue(cmds []uint8, burst bool) {
	d.qhead, d.qlen = 0, 0
	for _, c := range cmds {
		if int(d.qlen) < len(d.queue) {
			d.queue[d.qlen] = c
			d.qlen++
		}
	}
	d.burst = burst
}

// item is a heap entry: the next fire time of a device (id < len(devs)) or an
// attack (id - len(devs)).
type item struct {
	t  int64
	id int32
}

func (a item) less(b item) bool { return a.t < b.t || (a.t == b.t && a.id < b.id) }

// Sim generates the event stream of a fleet. It is not safe for concurrent use.
type Sim struct {
	cfg     Config
	start   int64
	end     int64
	devs    []device
	atks    []attack
	camps   []campaign // Config.Entities
	near    []Label    // the benign campaigns' near misses (Config.Entities)
	labels  []Label
	heap    schedule
	emitted int

	classCount map[*classSpec]int
	rec        rec
	tsDay      int64
	tsPrefix   []byte
	query      []byte // the query string of the current record (rec.query)
}

// New returns a simulator for cfg (zero fields take their defaults). The whole
// plan, including the attacks and their labels, is fixed here from the seed.
func New(cfg Config) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot create fleet simulator: %w", err)
	}
	cfg = cfg.withDefaults()
	if cfg.Model != ModelBasic {
		return nil, fmt.Errorf("cannot create fleet simulator: New builds model %q, not %q (use Open)", ModelBasic, cfg.Model)
	}
	s := &Sim{
		cfg:        cfg,
		start:      cfg.Start.UnixNano(),
		end:        cfg.Start.UnixNano() + int64(cfg.Duration),
		classCount: map[*classSpec]int{},
		tsDay:      -1,
		query:      make([]byte, 0, 32),
	}
	plan := newRNG(cfg.Seed, 1)
	s.makeDevices(&plan)
	if cfg.Attacks {
		s.planAttacks(&plan)
	}
	s.planIrregularities(&plan)
	if cfg.Entities {
		var labels []Label
		s.camps, labels, s.near = planCampaigns(cfg, s, s.start, s.end, len(s.labels))
		s.labels = append(s.labels, labels...)
	}
	s.heap = make(schedule, 0, len(s.devs)+len(s.atks)+len(s.camps))
	for i := range s.devs {
		d := &s.devs[i]
		first := s.start
		if i > 0 {
			first += int64(d.rng.Float()*s.interval(d, &d.cls.cmds[d.state], s.start)*1e9) / msNs * msNs
		}
		s.heap = append(s.heap, item{first, int32(i)})
	}
	for i := range s.atks {
		s.heap = append(s.heap, item{s.atks[i].start, int32(len(s.devs) + i)})
	}
	for i := range s.camps {
		s.heap = append(s.heap, item{s.camps[i].start, int32(len(s.devs) + len(s.atks) + i)})
	}
	s.heap.init()
	return s, nil
}

func (s *Sim) makeDevices(plan *rng) {
	n := s.cfg.Devices
	s.devs = make([]device, n)
	var wheel []*classSpec
	for _, c := range classes {
		for range c.weight {
			wheel = append(wheel, c)
		}
	}
	totalW := 0
	for _, t := range tenants {
		totalW += t.weight
	}
	order := make([]*classSpec, len(wheel))
	for i := range s.devs {
		if i%len(wheel) == 0 {
			copy(order, wheel)
			for j := len(order) - 1; j > 0; j-- {
				k := plan.Intn(j + 1)
				order[j], order[k] = order[k], order[j]
			}
		}
		cls := order[i%len(wheel)]
		num := s.classCount[cls]
		s.classCount[cls] = num + 1

		w := plan.Intn(totalW)
		ti := 0
		for w >= tenants[ti].weight {
			w -= tenants[ti].weight
			ti++
		}
		t := &tenants[ti]
		ci := countryIndex(t.countries[plan.Intn(len(t.countries))])
		c := &countries[ci]
		netIdx := c.residential
		if cls.mobile {
			netIdx = c.mobile
		}
		d := &s.devs[i]
		d.id = cls.prefix + "-" + pad6(num)
		d.num = num
		d.cls = cls
		d.tenant = t.name
		d.rng = newRNG(s.cfg.Seed, uint64(i)+1<<32)
		if cls.idBy == idByAPIKey {
			d.apiKey = "key-" + strconv.FormatUint(d.rng.Next()|1<<63, 16)[:16]
		}
		d.fw = cls.fws[d.rng.Intn(len(cls.fws))]
		if cls.mqtt {
			d.srcID = brokerIDs[c.region]
		} else {
			d.srcID = gatewayIDs[c.region][d.rng.Intn(2)]
		}
		d.home = identOf(&networks[netIdx], d.rng.Next())
		d.utcOff = int64(c.utcOffset) * hourNs
		d.state = cls.start
		d.retry = -1
		if cls == thermostat {
			d.pref = int16(setpointMin + setpointStep*d.rng.Intn((setpointMax-setpointMin)/setpointStep+1))
		}
		if cls == vehicle {
			m := cls.daily[d.hour(s.start)]
			if d.rng.Float() < min(0.5, 0.15*m) {
				d.state = vehTelemetry
			}
		}
	}
}

func pad6(n int) string { return string(appendPad6(nil, n)) }

// planIrregularities gives some non-victim devices benign irregularities:
// an offline hour, a new DHCP lease, the vendor's OTA update, a trip abroad.
func (s *Sim) planIrregularities(plan *rng) {
	dur := s.end - s.start
	at := func(lo, hi float64) int64 {
		return s.start + int64(plan.uniform(lo, hi)*float64(dur))/msNs*msNs
	}
	var otaCands, travelCands []int
	for i := range s.devs {
		d := &s.devs[i]
		if d.victim {
			continue
		}
		if d.cls.ota != nil {
			otaCands = append(otaCands, i)
		}
		if d.cls == vehicle && countries[countryIndex(d.home.country)].neighbor != "" {
			travelCands = append(travelCands, i)
		}
	}
	used := make([]bool, len(s.devs))
	pick := func(cands []int, k int) []int {
		var out []int
		for tries := 0; len(out) < k && tries < 20*k+20 && len(cands) > 0; tries++ {
			i := cands[plan.Intn(len(cands))]
			if !used[i] {
				used[i] = true
				out = append(out, i)
			}
		}
		return out
	}
	// OTA: the vendor updates a few devices during the run (about 0.5%).
	for _, i := range pick(otaCands, max(1, len(s.devs)/200)) {
		s.devs[i].otaAt = at(0.1, 0.9)
	}
	// Trips abroad: about 1% of the vehicles that live near a border.
	for _, i := range pick(travelCands, max(1, len(travelCands)/100)) {
		d := &s.devs[i]
		nb := &countries[countryIndex(countries[countryIndex(d.home.country)].neighbor)]
		d.alt = identOf(&networks[nb.mobile], plan.Next())
		d.altStart = at(0.1, 0.8)
		d.altEnd = d.altStart + int64(plan.uniform(40, 120)*float64(time.Minute))
	}
	var all []int
	for i := range s.devs {
		if !s.devs[i].victim {
			all = append(all, i)
		}
	}
	// New DHCP lease in the same network: about 1% of the fleet.
	for _, i := range pick(all, max(1, len(s.devs)/100)) {
		d := &s.devs[i]
		n := &networks[countries[countryIndex(d.home.country)].residential]
		if d.cls.mobile {
			n = &networks[countries[countryIndex(d.home.country)].mobile]
		}
		d.alt = identOf(n, plan.Next())
		d.altStart = at(0.05, 0.95)
		d.altEnd = s.end + 1
	}
	// Offline for 20-90 minutes, then back with a reconnect or a backlog: about 2%.
	for _, i := range pick(all, max(1, len(s.devs)/50)) {
		d := &s.devs[i]
		d.offStart = at(0.05, 0.85)
		d.offEnd = d.offStart + int64(plan.uniform(20, 90)*float64(time.Minute))/msNs*msNs
	}
}

// interval returns the mean-jittered gap in seconds after cmd at time t.
func (s *Sim) interval(d *device, c *cmdSpec, t int64) float64 {
	after := c.after
	if c.cyclic {
		after /= d.cls.daily[d.hour(t)]
	}
	return after * (1 + c.jitter*(2*d.rng.Float()-1))
}

// Labels returns every attack the run injects, known from the start. The
// caller may modify the returned slice.
func (s *Sim) Labels() []Label { return append([]Label(nil), s.labels...) }

// NearMisses returns the basic model's near misses: only, with
// Config.Entities, the authentication outage (NearAuthOutage).
func (s *Sim) NearMisses() []Label { return append([]Label(nil), s.near...) }

// Emitted returns how many events Next has returned.
func (s *Sim) Emitted() int { return s.emitted }

// Config returns the configuration in use, with defaults applied.
func (s *Sim) Config() Config { return s.cfg }

// Next appends the next event, in non-decreasing event-time order, to dst as
// one canonical JSON line without a newline, and returns the extended slice and
// the event time. ok is false (and line is dst) once the run is over.
func (s *Sim) Next(dst []byte) (line []byte, t time.Time, ok bool) {
	for len(s.heap) > 0 {
		top := s.heap[0]
		if top.t >= s.end {
			break
		}
		var next int64
		var emitted bool
		if int(top.id) < len(s.devs) {
			dst, next = s.deviceEvent(dst, &s.devs[top.id], top.t)
			emitted = true
		} else if i := int(top.id) - len(s.devs); i < len(s.atks) {
			dst, next, emitted = s.attackEvent(dst, &s.atks[i], top.t)
		} else {
			dst, next, emitted = s.campaignEvent(dst, &s.camps[i-len(s.atks)], top.t)
		}
		s.heap.reschedule(next, "fleet")
		if emitted {
			s.emitted++
			return dst, time.Unix(0, top.t).UTC(), true
		}
	}
	return dst, time.Time{}, false
}

// schedule is the min-heap of next-fire times through which both traffic
// models merge their sources (devices and attacks).
type schedule []item

// init orders h as a heap.
func (h schedule) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// reschedule moves the earliest source to next, or removes it when next < 0
// (its run is over). A source must advance: model names the traffic model in
// the panic when it does not.
func (h *schedule) reschedule(next int64, model string) {
	q := *h
	if next < 0 {
		n := len(q) - 1
		q[0] = q[n]
		q = q[:n]
		*h = q
	} else {
		if next <= q[0].t {
			panic("BUG: " + model + " schedule does not advance")
		}
		q[0].t = next
	}
	if len(q) > 0 {
		q.down(0)
	}
}

// down restores the heap order of h below i (item.less).
func (h schedule) down(i int) {
	n := len(h)
	x := h[i]
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && h[r].less(h[l]) {
			c = r
		}
		if !h[c].less(x) {
			break
		}
		h[i] = h[c]
		i = c
	}
	h[i] = x
}

// deviceEvent emits d's legitimate event at t and returns its next fire time.
func (s *Sim) deviceEvent(dst []byte, d *device, t int64) ([]byte, int64) {
	cls := d.cls
	var ci uint8
	fromQueue, isRetry := false, false
	switch {
	case d.retry >= 0:
		ci, isRetry = uint8(d.retry), true
		d.retry = -1
	case d.qlen > 0:
		ci = d.queue[d.qhead]
		d.qhead++
		d.qlen--
		fromQueue = true
	default:
		ci = d.state
		d.state = s.step(d, ci, t)
	}
	c := &cls.cmds[ci]
	r := &s.rec
	r.reset(d, t, d.identAt(t), c)
	if c.arg != "" {
		if !isRetry {
			d.arg = d.setpoint()
		}
		s.setArg(r, c.arg, int(d.arg))
	}
	r.status = c.status
	r.in, r.out = d.rng.between(int64(c.in[0]), int64(c.in[1])), d.rng.between(int64(c.out[0]), int64(c.out[1]))
	r.latUs = int64(d.rng.uniform(c.latMs[0], c.latMs[1]) * 1000)

	// Benign noise: server errors and rate limits with retries, expired tokens.
	var gap float64 // seconds; 0 means the command's own interval
	if !isRetry {
		u := d.rng.Float()
		switch {
		case cls.mqtt && u < 0.001:
			r.status = 128 // unspecified error
			d.retry, gap = int16(ci), d.rng.uniform(1, 4)
		case cls.mqtt && ci == lockConnect && u < 0.05:
			r.status, r.auth = 134, "failed" // bad user name or password: an expired token, refreshed
			d.retry, gap = int16(ci), d.rng.uniform(1, 3)
		case cls.mqtt:
		case u < 0.002:
			r.status = [...]uint16{503, 503, 503, 502, 502, 500, 504}[d.rng.Intn(7)]
			r.out = d.rng.between(80, 200)
			switch r.status {
			case 503:
				r.latUs = d.rng.between(2_000, 20_000)
			case 504:
				r.latUs = d.rng.between(29_000_000, 30_000_000)
			default:
				r.latUs = d.rng.between(20_000, 500_000)
			}
			d.retry, gap = int16(ci), d.rng.uniform(1, 4)
		case u < 0.0028:
			r.status = [...]uint16{400, 404, 409, 429}[d.rng.Intn(4)]
			r.out = d.rng.between(80, 200)
			if r.status == 429 {
				d.retry, gap = int16(ci), d.rng.uniform(10, 30)
			}
		case u < 0.0033:
			r.status, r.auth = 401, "failed"
			r.out = d.rng.between(40, 80)
			d.retry, gap = int16(ci), d.rng.uniform(1, 3)
		}
	}
	if fromQueue && d.qlen == 0 && d.otaQueued && ci == cls.ota[len(cls.ota)-1] {
		d.fw = cls.newFw // the status report is the last event with the old version (r holds it)
	}
	dst = s.appendRec(dst, r)

	if gap == 0 {
		if d.qlen > 0 && d.burst {
			gap = d.rng.uniform(1, 3)
		} else {
			gap = s.interval(d, c, t)
		}
	}
	next := t + max(msNs, int64(gap*1e9)/msNs*msNs)
	if d.offEnd > 0 && next >= d.offStart && next < d.offEnd {
		next = d.offEnd + int64(d.rng.uniform(0, 30)*1e9)/msNs*msNs
		d.retry = -1
		d.enqueue(cls.reconnect, !cls.mqtt)
	} else if d.otaAt > 0 && !d.otaQueued && next >= d.otaAt && d.qlen == 0 && d.retry < 0 {
		d.otaQueued = true
		d.enqueue(cls.ota, false)
	}
	return dst, next
}

// step picks the grammar command after ci at t.
func (s *Sim) step(d *device, ci uint8, t int64) uint8 {
	edges := d.cls.cmds[ci].next
	if len(edges) == 1 {
		return edges[0].to
	}
	m := d.cls.daily[d.hour(t)]
	var sum float64
	for _, e := range edges {
		if e.day {
			sum += e.w * m
		} else {
			sum += e.w
		}
	}
	u := d.rng.Float() * sum
	for _, e := range edges {
		w := e.w
		if e.day {
			w *= m
		}
		if u < w {
			return e.to
		}
		u -= w
	}
	return edges[len(edges)-1].to
}
