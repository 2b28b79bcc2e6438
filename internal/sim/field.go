package sim

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// The field model (ModelField): a second fleet, independent of the basic one
// in its generating assumptions, for judging the detectors on traffic they
// were never tuned on. Where the basic model has one Markov grammar per class
// with uniform jitter around fixed gaps, one address per device and a fleet
// that exists from the first minute, the field model has:
//
//   - traffic processes per class (fieldclasses.go): periodic reports (smart
//     meters aligned to the quarter hour, so the fleet reports in bursts),
//     non-homogeneous Poisson processes thinned by a daily profile, and
//     sessions (a camera's motion clips, a vehicle's trips) starting as a
//     Poisson process, with exponential gaps inside and log-normal,
//     heavy-tailed lengths; sizes are log-normal (camera clips: a median of
//     1.8 MB in);
//   - daily peaks per country (fieldPeaks): the morning and evening peaks of
//     each country at their local hours; the owner's own commands (setting a
//     temperature, unlocking, asking for a live view) never between 00:30 and
//     05:30 local time;
//   - household NAT: devices of one tenant and country share a home's public
//     address (one to four devices per home, on one of two broadband
//     providers of the country); about 2% of homes get a new address mid-run;
//   - mobile carrier NAT: vehicles and 30% of the meters are behind their
//     carrier's CGNAT, whose public address changes every 35-55 minutes;
//   - vehicles crossing into the neighbouring country (DE↔FR, US↔CA, BR↔AR)
//     for 40-180 minutes, on the neighbour's carrier;
//   - about 6% of the devices join mid-run, starting with a provisioning call;
//   - a firmware rollout across the thermostats within 40 minutes, after the
//     warm-up: a manifest, a 2.4 MB image, a report, then a new periodic
//     command and a config document 2.6 times larger, each from its usual
//     network;
//   - backend incidents: twice per run the backend answers 75% of HTTP
//     requests with 503 for 6-15 minutes, and devices retry with exponential
//     backoff;
//   - the usual background of failures: 0.15% 5xx, retried; expired tokens.
//
// The attacks (fieldattack.go) are the basic types plus clones, odd-hours
// commands, upload exfiltration, slow download growth and a stolen key used
// from a hosting network whose lines carry no country or ASN. Benign events
// that look like attacks are labelled as near misses (NearMissKinds).

// fieldPeaks are the morning and evening peak hours (local time) per country.
var fieldPeaks = map[string][2]float64{
	"DE": {6.5, 19.5}, "FR": {7.5, 20.5}, "US": {7, 18.5}, "CA": {7, 18},
	"JP": {7.5, 21.5}, "BR": {8, 20}, "AR": {8.5, 21.5},
}

// fieldPlace is what the field model knows of a country beyond countries: its
// second broadband provider and its own hosting range (indexes into networks).
type fieldPlace struct {
	broadband2 int
	hosting    int
}

var fieldPlaces = map[string]fieldPlace{}

func init() {
	for _, c := range countries {
		var p fieldPlace
		for i := fieldNetworks; i < len(networks); i++ {
			n := &networks[i]
			if n.Country != c.code {
				continue
			}
			switch n.Kind {
			case KindResidential:
				p.broadband2 = i
			case KindHosting:
				p.hosting = i
			}
		}
		if p.broadband2 == 0 || p.hosting == 0 {
			panic("BUG: the field model has no second broadband or hosting range for " + c.code)
		}
		fieldPlaces[c.code] = p
	}
	for _, c := range fieldClasses {
		if c.pathDevices != "" {
			c.base = "/v2/" + c.pathDevices + "/"
		}
	}
}

const maxProcs = 4

// fieldNetworks is the index of the first network added for the field model.
const fieldNetworks = 20

// household is a home's NAT: every device in it uses its address.
type household struct {
	addr    ident
	alt     ident // the new address from altAt (a new lease), if altAt > 0
	altAt   int64
	country string
	net     int
}

// qitem is a request a device will send at t (a pair, a retry, a sequence).
type qitem struct {
	t     int64
	cmd   uint8
	retry uint8 // how many times it has been retried
}

// fdev is one device of the field model.
type fdev struct {
	id     string
	num    int
	cls    *fclass
	tenant string
	apiKey string
	fw     string
	srcID  string
	ctry   int
	hh     int // household index, -1 on a carrier
	// Carrier NAT: the carrier's network, the current address and when it
	// changes; abroad is the border crossing window.
	carrier     int
	cur         ident
	curAbroad   bool
	natNext     int64
	abroadStart int64
	abroadEnd   int64
	utcOff      int64
	peaks       [2]float64
	alignOff    int64 // meters: offset after the quarter hour
	joinAt      int64
	offStart    int64 // the owner away (a stolen-key victim): no traffic
	offEnd      int64
	upAt        int64 // when the rollout reaches the device, 0 if never
	upQueued    bool
	upgraded    bool
	pref        int16 // thermostats: preferred temperature, tenths of °C
	victim      bool
	rng         rng
	next        [maxProcs]int64
	sessEnd     [maxProcs]int64 // end of the open session, 0 when closed
	q           [8]qitem
	qlen        int
}

// Field generates the field model's event stream (ModelField). It is not safe
// for concurrent use.
type Field struct {
	cfg        Config
	start, end int64
	devs       []fdev
	homes      []household
	atks       []fattack
	camps      []campaign // Config.Entities
	labels     []Label
	near       []Label
	heap       schedule
	emitted    int
	classCount map[*fclass]int
	incidents  [][2]int64
	rec        rec
	sim        Sim // for appendRec, appendTime and setArg (their buffers)
}

// NewField returns a field-model simulator for cfg (zero fields take their
// defaults; cfg.Model may be empty). The whole plan, attacks and near misses
// included, is fixed here from the seed.
func NewField(cfg Config) (*Field, error) {
	if cfg.Model == "" {
		cfg.Model = ModelField
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot create fleet simulator: %w", err)
	}
	cfg = cfg.withDefaults()
	if cfg.Model != ModelField {
		return nil, fmt.Errorf("cannot create fleet simulator: NewField builds model %q, not %q", ModelField, cfg.Model)
	}
	f := &Field{
		cfg: cfg, start: cfg.Start.UnixNano(), end: cfg.Start.UnixNano() + int64(cfg.Duration),
		classCount: map[*fclass]int{},
	}
	f.sim.tsDay = -1
	f.sim.query = make([]byte, 0, 32)
	plan := newRNG(cfg.Seed, 7<<32)
	f.makeDevices(&plan)
	f.makeHouseholds(&plan)
	if cfg.Attacks {
		f.planAttacks(&plan)
	}
	f.planEvents(&plan)
	if cfg.Entities {
		var labels, near []Label
		f.camps, labels, near = planCampaigns(cfg, f, f.start, f.end, len(f.labels))
		f.labels = append(f.labels, labels...)
		f.near = append(f.near, near...)
	}
	f.heap = make(schedule, 0, len(f.devs)+len(f.atks)+len(f.camps))
	for i := range f.devs {
		d := &f.devs[i]
		f.startProcs(d, d.joinAt)
		if d.joinAt > f.start {
			for k, c := range d.cls.provision {
				d.push(qitem{t: d.joinAt + int64(k)*int64(d.rng.uniform(1, 5)*1e9)/msNs*msNs, cmd: c})
			}
		}
		f.heap = append(f.heap, item{d.nextFire(), int32(i)})
	}
	for i := range f.atks {
		f.heap = append(f.heap, item{f.atks[i].start, int32(len(f.devs) + i)})
	}
	for i := range f.camps {
		f.heap = append(f.heap, item{f.camps[i].start, int32(len(f.devs) + len(f.atks) + i)})
	}
	f.heap.init()
	return f, nil
}

func (f *Field) makeDevices(plan *rng) {
	n := f.cfg.Devices
	f.devs = make([]fdev, n)
	var wheel []*fclass
	for _, c := range fieldClasses {
		for range c.weight {
			wheel = append(wheel, c)
		}
	}
	totalW := 0
	for _, t := range tenants {
		totalW += t.weight
	}
	for i := range f.devs {
		cls := wheel[plan.Intn(len(wheel))] // drawn, not dealt: class shares vary by seed
		num := f.classCount[cls]
		f.classCount[cls] = num + 1
		w := plan.Intn(totalW)
		ti := 0
		for w >= tenants[ti].weight {
			w -= tenants[ti].weight
			ti++
		}
		t := &tenants[ti]
		ci := countryIndex(t.countries[plan.Intn(len(t.countries))])
		c := &countries[ci]
		d := &f.devs[i]
		d.id = cls.prefix + "-" + pad6(num)
		d.num, d.cls, d.tenant, d.ctry, d.hh, d.carrier = num, cls, t.name, ci, -1, -1
		d.rng = newRNG(f.cfg.Seed, uint64(i)+8<<32)
		if cls.idBy == idByAPIKey {
			d.apiKey = "ak_" + strconv.FormatUint(d.rng.Next()|1<<63, 36)[:12]
		}
		d.fw = cls.fws[d.rng.Intn(len(cls.fws))]
		if cls.mqtt {
			d.srcID = brokerIDs[c.region]
		} else {
			d.srcID = gatewayIDs[c.region][d.rng.Intn(2)]
		}
		d.utcOff = int64(c.utcOffset) * hourNs
		d.peaks = fieldPeaks[c.code]
		d.alignOff = int64(d.rng.uniform(0, 120)*1e9) / msNs * msNs
		if d.rng.Float() < cls.carrier {
			d.carrier = c.mobile
			d.cur = identOf(&networks[c.mobile], d.rng.Next())
			d.natNext = f.start + int64(d.rng.uniform(0, 55)*float64(time.Minute))
		}
		d.pref = int16(170 + 5*d.rng.Intn(17))
		d.joinAt = f.start
		if plan.Float() < 0.06 {
			d.joinAt = f.start + int64(plan.uniform(0.05, 0.9)*float64(f.end-f.start))/msNs*msNs
		}
	}
}

// makeHouseholds puts the devices that are not on a carrier into homes of one
// to four devices of one tenant and country.
func (f *Field) makeHouseholds(plan *rng) {
	type key struct {
		tenant string
		ctry   int
	}
	groups := map[key][]int{}
	var order []key
	for i := range f.devs {
		d := &f.devs[i]
		if d.carrier >= 0 {
			continue
		}
		k := key{d.tenant, d.ctry}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	for _, k := range order {
		g := groups[k]
		for j := len(g) - 1; j > 0; j-- {
			m := plan.Intn(j + 1)
			g[j], g[m] = g[m], g[j]
		}
		for len(g) > 0 {
			size := 1
			switch u := plan.Float(); {
			case u < 0.3:
			case u < 0.6:
				size = 2
			case u < 0.85:
				size = 3
			default:
				size = 4
			}
			size = min(size, len(g))
			c := &countries[k.ctry]
			net := c.residential
			if plan.Float() < 0.35 {
				net = fieldPlaces[c.code].broadband2
			}
			f.homes = append(f.homes, household{addr: identOf(&networks[net], plan.Next()), country: c.code, net: net})
			for _, i := range g[:size] {
				f.devs[i].hh = len(f.homes) - 1
			}
			g = g[size:]
		}
	}
}

// planEvents plans the benign events: border crossings, household address
// changes, the rollout, the backend incidents, and labels them (and the
// devices joining mid-run) as near misses.
func (f *Field) planEvents(plan *rng) {
	dur := f.end - f.start
	at := func(lo, hi float64) int64 { return f.start + int64(plan.uniform(lo, hi)*float64(dur))/msNs*msNs }
	attackFrom := f.start + int64(float64(dur)*f.cfg.AttackStart)
	// Backend incidents: one in the warm-up, one after it.
	for _, w := range [][2]float64{{0.15, f.cfg.AttackStart - 0.05}, {f.cfg.AttackStart + 0.05, 0.95}} {
		s := at(w[0], w[1])
		e := min(f.end, s+int64(plan.uniform(6, 15)*float64(time.Minute)))
		f.incidents = append(f.incidents, [2]int64{s, e})
		f.near = append(f.near, Label{Type: NearBackendIncident, Start: time.Unix(0, s).UTC(), End: time.Unix(0, e+5*int64(time.Minute)).UTC(),
			Description: "the backend answers 75% of HTTP requests with 503 fleet-wide; devices retry with exponential backoff"})
	}
	// Rollout across the thermostats, after the warm-up, within 40 minutes.
	ro := attackFrom + int64(plan.uniform(0.1, 0.5)*float64(f.end-attackFrom))/msNs*msNs
	for i := range f.devs {
		d := &f.devs[i]
		if d.cls != fThermostat || d.victim || d.joinAt > ro || plan.Float() >= 0.85 {
			continue
		}
		d.upAt = ro + int64(plan.uniform(0, 40)*float64(time.Minute))/msNs*msNs
		f.near = append(f.near, f.nearLabel(NearRollout, d, d.upAt, d.upAt+int64(time.Hour), f.homes[d.hh].addr.ip,
			"firmware rollout to "+d.cls.newFw+" across the class: manifest, image, report, then a new /health command and a larger config"))
	}
	// Border crossings: 8% of the vehicles of countries with a neighbour.
	for i := range f.devs {
		d := &f.devs[i]
		if d.cls != fVehicle || d.victim || countries[d.ctry].neighbor == "" || plan.Float() >= 0.08 {
			continue
		}
		d.abroadStart = max(d.joinAt, at(0.05, 0.85))
		d.abroadEnd = d.abroadStart + int64(plan.uniform(40, 180)*float64(time.Minute))
		f.near = append(f.near, f.nearLabel(NearBorderCrossing, d, d.abroadStart, d.abroadEnd+10*int64(time.Minute), "",
			"drives from "+countries[d.ctry].code+" into "+countries[d.ctry].neighbor+" on the neighbour's carrier"))
	}
	// Household address changes: about 2% of the homes without a victim.
	victimHome := map[int]bool{}
	for i := range f.devs {
		if f.devs[i].victim && f.devs[i].hh >= 0 {
			victimHome[f.devs[i].hh] = true
		}
	}
	for h := range f.homes {
		if victimHome[h] || plan.Float() >= 0.02 {
			continue
		}
		hm := &f.homes[h]
		hm.altAt = at(0.05, 0.95)
		hm.alt = identOf(&networks[hm.net], plan.Next())
		for i := range f.devs {
			if f.devs[i].hh == h {
				f.near = append(f.near, f.nearLabel(NearHouseholdIPChange, &f.devs[i], hm.altAt, hm.altAt+30*int64(time.Minute), hm.alt.ip,
					"the home's NAT gets a new public address "+hm.alt.ip))
			}
		}
	}
	for i := range f.devs {
		d := &f.devs[i]
		if d.joinAt > f.start {
			f.near = append(f.near, f.nearLabel(NearJoined, d, d.joinAt, d.joinAt+30*int64(time.Minute), "",
				"provisioned mid-run: its first half hour"))
		}
	}
}

func (f *Field) nearLabel(kind string, d *fdev, s, e int64, ip, desc string) Label {
	return Label{ID: fmt.Sprintf("near-%04d-%s", len(f.near)+1, kind), Type: kind, Tenant: d.tenant, Device: d.id,
		APIKey: d.apiKey, IP: ip, Start: time.Unix(0, s).UTC(), End: time.Unix(0, min(e, f.end)).UTC(),
		Description: d.cls.name + " " + d.id + ": " + desc}
}

// Labels returns every attack the run injects, known from the start. The
// caller may modify the returned slice.
func (f *Field) Labels() []Label { return append([]Label(nil), f.labels...) }

// NearMisses returns the labelled near misses (NearMissKinds), known from the
// start. The caller may modify the returned slice.
func (f *Field) NearMisses() []Label { return append([]Label(nil), f.near...) }

// Config returns the configuration in use, with defaults applied.
func (f *Field) Config() Config { return f.cfg }

// Emitted returns how many events Next has returned.
func (f *Field) Emitted() int { return f.emitted }

// Next appends the next event, in non-decreasing event-time order, to dst as
// one canonical JSON line without a newline, and returns the extended slice and
// the event time. ok is false (and line is dst) once the run is over.
func (f *Field) Next(dst []byte) (line []byte, t time.Time, ok bool) {
	for len(f.heap) > 0 {
		top := f.heap[0]
		if top.t >= f.end {
			break
		}
		var next int64
		var emitted bool
		if int(top.id) < len(f.devs) {
			dst, next, emitted = f.deviceEvent(dst, &f.devs[top.id], top.t)
		} else if i := int(top.id) - len(f.devs); i < len(f.atks) {
			dst, next, emitted = f.attackEvent(dst, &f.atks[i], top.t)
		} else {
			dst, next, emitted = f.campaignEvent(dst, &f.camps[i-len(f.atks)], top.t)
		}
		f.heap.reschedule(next, "field")
		if emitted {
			f.emitted++
			return dst, time.Unix(0, top.t).UTC(), true
		}
	}
	return dst, time.Time{}, false
}

// Random draws.

func (r *rng) expS(meanS float64) int64 {
	return max(msNs, int64(-meanS*math.Log(1-r.Float())*1e9)/msNs*msNs)
}

func (r *rng) normal() float64 {
	u1, u2 := 1-r.Float(), r.Float()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

func (r *rng) lognormal(med, sigma float64) int64 {
	if med == 0 {
		return 0
	}
	return max(1, int64(med*math.Exp(sigma*r.normal())))
}

// localHour returns d's local time of day at t, in hours.
func (d *fdev) localHour(t int64) float64 {
	ns := ((t+d.utcOff)%dayNs + dayNs) % dayNs
	return float64(ns) / float64(hourNs)
}

// bump is a daily bump centred on hour c with width w (hours), on the circle.
func bump(h, c, w float64) float64 {
	x := math.Abs(h - c)
	x = min(x, 24-x)
	return math.Exp(-x * x / (2 * w * w))
}

// profMax bounds each profile, for thinning.
var profMax = [...]float64{profFlat: 1, profHome: 0.25 + 1.2 + 1.6, profDay: 0.25 + 1.2 + 1.6, profCommute: 0.05 + 1.6 + 1.6 + 0.35}

func (d *fdev) profile(p uint8, t int64) float64 {
	if p == profFlat {
		return 1
	}
	h := d.localHour(t)
	switch p {
	case profDay:
		if h >= 0.5 && h < 5.5 {
			return 0
		}
		fallthrough
	case profHome:
		return 0.25 + 1.2*bump(h, d.peaks[0], 1.2) + 1.6*bump(h, d.peaks[1], 2)
	}
	v := 0.05 + 1.6*bump(h, d.peaks[0]+0.5, 1) + 1.6*bump(h, d.peaks[1]-1, 1.4)
	if h > 9 && h < 21 {
		v += 0.35
	}
	return v
}

// poissonNext returns the next time of a Poisson process of mean gap meanS
// (at profile 1) after t, thinned by the profile; end when there is none
// before end.
func (f *Field) poissonNext(d *fdev, p *fproc, t int64) int64 {
	mix := p.mix
	if p.prof == profFlat {
		mix = 0
	}
	bound := (1 - mix) + mix*profMax[p.prof]
	for {
		t += d.rng.expS(p.mean / bound)
		if t >= f.end {
			return f.end
		}
		if d.rng.Float()*bound < (1-mix)+mix*d.profile(p.prof, t) {
			return t
		}
	}
}

func (f *Field) periodicNext(d *fdev, p *fproc, t int64) int64 {
	period := int64(p.mean * 1e9)
	if p.align {
		// The next quarter hour (or whatever the period is) plus the device's
		// offset and a few seconds of clock noise.
		base := (t-d.alignOff)/period*period + period + d.alignOff
		return max(t+msNs, base+d.rng.expS(3))
	}
	g := p.mean * (1 + p.jitter*(2*d.rng.Float()-1))
	if d.rng.Float() < 0.01 {
		g *= 2 // a missed report
	}
	return t + max(msNs, int64(g*1e9)/msNs*msNs)
}

// startProcs schedules d's processes from t.
func (f *Field) startProcs(d *fdev, t int64) {
	for i := range d.cls.procs {
		p := &d.cls.procs[i]
		d.next[i] = math.MaxInt64
		if p.newFw && !d.upgraded {
			continue
		}
		switch p.kind {
		case procPeriodic:
			if p.align {
				d.next[i] = f.periodicNext(d, p, t)
			} else {
				d.next[i] = t + int64(d.rng.Float()*p.mean*1e9)/msNs*msNs
			}
		default:
			d.next[i] = f.poissonNext(d, p, t)
		}
	}
	for i := len(d.cls.procs); i < maxProcs; i++ {
		d.next[i] = math.MaxInt64
	}
}

func (d *fdev) push(q qitem) {
	if d.qlen == len(d.q) {
		return // a full queue drops the request, as a device's bounded retry buffer does
	}
	i := d.qlen
	for i > 0 && d.q[i-1].t > q.t {
		d.q[i] = d.q[i-1]
		i--
	}
	d.q[i] = q
	d.qlen++
}

func (d *fdev) nextFire() int64 {
	n := int64(math.MaxInt64)
	if d.qlen > 0 {
		n = d.q[0].t
	}
	for i := range d.cls.procs {
		n = min(n, d.next[i])
	}
	return n
}

// addrAt returns d's public address at t (household or carrier NAT), moving
// the carrier NAT on when it is time.
func (f *Field) addrAt(d *fdev, t int64) *ident {
	if d.carrier < 0 {
		h := &f.homes[d.hh]
		if h.altAt > 0 && t >= h.altAt {
			return &h.alt
		}
		return &h.addr
	}
	abroad := t >= d.abroadStart && t < d.abroadEnd
	if t >= d.natNext || abroad != d.curAbroad {
		net := d.carrier
		if abroad {
			net = countries[countryIndex(countries[d.ctry].neighbor)].mobile
		}
		d.cur = identOf(&networks[net], d.rng.Next())
		d.curAbroad = abroad
		d.natNext = t + int64(d.rng.uniform(35, 55)*float64(time.Minute))
	}
	return &d.cur
}

func (f *Field) inIncident(t int64) bool {
	for _, w := range f.incidents {
		if t >= w[0] && t < w[1] {
			return true
		}
	}
	return false
}

// deviceEvent emits d's next request at t, if any, and returns d's next fire
// time (-1 when it has none left).
func (f *Field) deviceEvent(dst []byte, d *fdev, t int64) ([]byte, int64, bool) {
	if t >= d.offStart && t < d.offEnd {
		// The owner (and the device) is away: everything resumes on return.
		d.qlen = 0
		for i := range d.cls.procs {
			if d.next[i] < d.offEnd {
				d.next[i] = d.offEnd + d.rng.expS(60)
			}
			d.sessEnd[i] = 0
		}
		return dst, f.fireAfter(d, t), false
	}
	var cmd uint8
	var retries uint8
	pi := -1
	if d.qlen > 0 && d.q[0].t <= t {
		cmd, retries = d.q[0].cmd, d.q[0].retry
		copy(d.q[:], d.q[1:d.qlen])
		d.qlen--
	} else {
		for i := range d.cls.procs {
			if d.next[i] <= t {
				pi = i
				break
			}
		}
		if pi < 0 {
			panic("BUG: field device fired with nothing due")
		}
		var send bool
		cmd, send = f.stepProc(d, pi, t)
		if !send {
			return dst, f.fireAfter(d, t), false
		}
	}
	cls := d.cls
	c := &cls.cmds[cmd]
	r := &f.rec
	f.fill(r, d, &d.rng, t, f.addrAt(d, t), c, d.fw)
	if c.outUp > 0 && d.upgraded {
		r.out = d.rng.lognormal(c.outMed*c.outUp, c.outSig)
	}
	if c.arg != "" {
		v := int(d.pref) + 5*(d.rng.Intn(7)-3)
		if d.rng.Float() < 0.2 {
			v = int(d.pref) - 30 - 5*d.rng.Intn(4) // away / night setting
		}
		f.sim.setArg(r, c.arg, v)
	}
	// Failures: a backend incident, the background 5xx, an expired token.
	if !cls.mqtt {
		u := d.rng.Float()
		switch {
		case f.inIncident(t) && u < 0.75:
			r.status, r.out, r.latUs = 503, d.rng.lognormal(120, 0.2), d.rng.lognormal(3000, 0.5)
		case u < 0.0015:
			r.status, r.out = [...]uint16{500, 502, 503, 504}[d.rng.Intn(4)], d.rng.lognormal(150, 0.2)
		case u < 0.0018:
			r.status, r.auth, r.out = 401, "failed", d.rng.lognormal(60, 0.1)
		}
		if r.status >= 500 || r.status == 401 {
			if retries < 6 {
				back := float64(int(1)<<retries) * d.rng.uniform(1, 2)
				d.push(qitem{t: t + int64(back*1e9)/msNs*msNs + msNs, cmd: cmd, retry: retries + 1})
			}
		}
	}
	if r.status < 300 && cls.rollout != nil && len(cls.rollout) > 0 && cmd == cls.rollout[len(cls.rollout)-1] && d.upQueued && !d.upgraded {
		d.upgraded = true
		d.fw = cls.newFw // the report is the last request with the old version (r holds it)
		for i := range cls.procs {
			if cls.procs[i].newFw {
				d.next[i] = t + d.rng.expS(cls.procs[i].mean/2)
			}
		}
	}
	if d.upAt > 0 && !d.upQueued && t >= d.upAt && d.qlen == 0 {
		d.upQueued = true
		gap := t
		for _, c := range cls.rollout {
			gap += int64(d.rng.uniform(2, 40)*1e9) / msNs * msNs
			d.push(qitem{t: gap, cmd: c})
		}
	}
	dst = f.sim.appendRec(dst, r)
	return dst, f.fireAfter(d, t), true
}

func (f *Field) fireAfter(d *fdev, t int64) int64 {
	n := d.nextFire()
	if n >= f.end {
		return -1
	}
	return max(n, t+msNs)
}

// stepProc advances process pi of d, due at t, and returns the command it
// sends (send false when it sends nothing this time).
func (f *Field) stepProc(d *fdev, pi int, t int64) (cmd uint8, send bool) {
	p := &d.cls.procs[pi]
	switch p.kind {
	case procPeriodic:
		d.next[pi] = f.periodicNext(d, p, t)
		return p.cmd, !p.quiet || !d.inSession()
	case procPoisson:
		d.next[pi] = f.poissonNext(d, p, t)
		if p.quiet && d.inSession() {
			return 0, false
		}
		if p.pair >= 0 {
			d.push(qitem{t: t + int64(d.rng.uniform(p.pairS[0], p.pairS[1])*1e9)/msNs*msNs, cmd: uint8(p.pair)})
		}
		for k := range p.batch {
			if d.rng.Float() < 0.4 {
				d.push(qitem{t: t + int64(k+1)*int64(d.rng.uniform(3, 20)*1e9)/msNs*msNs, cmd: p.cmd})
			}
		}
		return p.cmd, true
	}
	// Session.
	switch {
	case d.sessEnd[pi] == 0:
		d.sessEnd[pi] = t + max(secNs, d.rng.lognormal(p.lenMed*1e9, p.lenSig)/msNs*msNs)
		d.next[pi] = t + d.rng.expS(p.inGap)
		if p.open >= 0 {
			return uint8(p.open), true
		}
		return p.cmd, true
	case t >= d.sessEnd[pi]:
		d.sessEnd[pi] = 0
		d.next[pi] = f.poissonNext(d, p, t)
		if p.close >= 0 {
			return uint8(p.close), true
		}
		return 0, false
	}
	n := t + d.rng.expS(p.inGap)
	if n >= d.sessEnd[pi] {
		n = d.sessEnd[pi]
	}
	d.next[pi] = n
	return p.cmd, true
}

func (d *fdev) inSession() bool {
	for i := range d.cls.procs {
		if d.sessEnd[i] != 0 {
			return true
		}
	}
	return false
}

// fill sets r to d's request c at t from addr, with sizes and latency drawn
// from rg.
func (f *Field) fill(r *rec, d *fdev, rg *rng, t int64, addr *ident, c *fcmd, fw string) {
	*r = rec{
		t: t, mqtt: d.cls.mqtt, srcID: d.srcID, tenant: d.tenant, device: d.id, idBy: d.cls.idBy,
		apiKey: d.apiKey, class: d.cls.class, fw: fw, id: addr,
		method: c.method, pre: c.pre, post: c.post, auth: "ok", status: c.status,
	}
	if c.pre != "" {
		r.pathID = d.id
	}
	r.in = rg.lognormal(c.inMed, c.inSig)
	r.out = rg.lognormal(c.outMed, c.outSig)
	r.latUs = rg.lognormal(c.latMs*1000, 0.5)
}
