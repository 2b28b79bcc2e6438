package sim

import (
	"fmt"
	"time"
)

const (
	kindFlood = iota
	kindStolen
	kindPrivileged
	kindEnumeration
	kindAuth
	kindParam
)

// Setpoints that param_tampering sets, in tenths of °C: a scalding heat in
// [tamperHeatMin, tamperHeatMax] (0.5 °C steps), or the API's freezing minimum.
const (
	tamperHeatMin = 850
	tamperHeatMax = 950
	tamperFreeze  = -400
	tamperFreezes = 0.25 // share of the attacks that freeze rather than heat
)

// attack is one injected attack: an extra event source in the heap, scheduled
// by its own timing generator (so that New can know its last event in advance)
// and shaped by its own content generator.
type attack struct {
	kind   int
	label  int
	dev    *device
	start  int64 // time of the first event
	end    int64 // no event after end
	meanS  float64
	tr     rng // timing
	cr     rng // content
	id     ident
	fw     string
	apiKey string
	n      int
	num    int  // enumeration: the next device number to try
	ncls   int  // enumeration: devices in the victim's class
	freeze bool // param_tampering: sets tamperFreeze rather than a heat
	idBuf  []byte
}

// gap returns the time to the attack's next event.
func (a *attack) gap() int64 {
	return max(msNs, int64(a.meanS*(0.5+a.tr.Float())*1e9)/msNs*msNs)
}

func (s *Sim) planAttacks(plan *rng) {
	perType := min(20, max(1, s.cfg.Devices/1000))
	span := int64(float64(s.end-s.start) * (1 - s.cfg.AttackStart))
	from := s.end - span
	used := make([]bool, len(s.devs))
	pick := func(prefer, fallback []*classSpec) *device {
		for _, set := range [][]*classSpec{prefer, fallback} {
			var cands []int
			for i := range s.devs {
				if used[i] {
					continue
				}
				for _, c := range set {
					if s.devs[i].cls == c {
						cands = append(cands, i)
					}
				}
			}
			if len(cands) > 0 {
				i := cands[plan.Intn(len(cands))]
				used[i] = true
				s.devs[i].victim = true
				return &s.devs[i]
			}
		}
		return nil
	}
	apiKeyed := []*classSpec{thermostat, camera, vehicle}
	for k := range AttackTypes {
		for range perType {
			var d *device
			var minLen, maxLen float64 // minutes
			switch k {
			case kindFlood:
				d, minLen, maxLen = pick(classes, nil), 3, 8
			case kindStolen:
				d, minLen, maxLen = pick([]*classSpec{camera}, apiKeyed), 10, 25
			case kindPrivileged:
				d, minLen, maxLen = pick([]*classSpec{meter, thermostat}, nil), 6, 15
			case kindEnumeration:
				d, minLen, maxLen = pick([]*classSpec{vehicle}, apiKeyed), 2, 6
			case kindAuth:
				d, minLen, maxLen = pick(apiKeyed, nil), 3, 10
			case kindParam:
				d, minLen, maxLen = pick([]*classSpec{thermostat}, nil), 2, 6
			}
			if d == nil {
				panic("BUG: no victim for attack " + AttackTypes[k]) // Validate guarantees enough devices
			}
			length := min(int64(plan.uniform(minLen, maxLen)*float64(time.Minute)), span)
			a := attack{
				kind: k, dev: d, fw: d.fw, apiKey: d.apiKey, id: d.home,
				start: (from + int64(plan.Float()*float64(span-length))) / msNs * msNs,
				tr:    newRNG(s.cfg.Seed, uint64(len(s.atks))+2<<32),
				cr:    newRNG(s.cfg.Seed, uint64(len(s.atks))+3<<32),
			}
			a.end = a.start + length
			var desc string
			switch k {
			case kindFlood:
				factor := plan.uniform(20, 50)
				main := &d.cls.cmds[d.cls.main]
				a.meanS = main.after / factor
				desc = fmt.Sprintf("%s %s floods the backend with %s at about %.0fx its normal rate (one every %.2fs instead of %.0fs)",
					d.cls.name, d.id, cmdText(main), factor, a.meanS, main.after)
			case kindStolen:
				h := &networks[hostingNets[plan.Intn(len(hostingNets))]]
				a.id, a.fw, a.meanS = identOf(h, plan.Next()), "python-requests/2.31.0", plan.uniform(8, 16)
				desc = fmt.Sprintf("the API key %s of %s %s (home %s) is used from %s %s (AS%d) for its normal commands and reads of owner, history and account data",
					d.apiKey, d.cls.name, d.id, d.home.country, a.id.country, a.id.ip, a.id.asn)
			case kindPrivileged:
				a.meanS = plan.uniform(40, 90)
				desc = fmt.Sprintf("telemetry-only %s %s issues POST /v1/devices/%s/unlock and POST /v1/devices/%s/firmware from its own address",
					d.cls.name, d.id, d.id, d.id)
			case kindEnumeration:
				n := plan.between(80, 300)
				a.meanS = float64(length) / 1e9 / float64(n)
				a.ncls = s.classCount[d.cls]
				a.num = max(0, d.num-plan.Intn(50))
				c := &countries[countryIndex(d.home.country)]
				a.id, a.fw = identOf(&networks[c.residential], plan.Next()), "curl/8.5.0"
				desc = fmt.Sprintf("the credential of %s %s requests GET /v1/devices/<id>/status for sequential %s-NNNNNN ids from %s-%s upwards (IDOR enumeration), mostly 403/404",
					d.cls.name, d.id, d.cls.prefix, d.cls.prefix, pad6(a.num))
			case kindAuth:
				h := &networks[hostingNets[plan.Intn(len(hostingNets))]]
				a.id, a.fw, a.meanS = identOf(h, plan.Next()), "Go-http-client/1.1", plan.uniform(0.8, 3)
				desc = fmt.Sprintf("credential stuffing: a burst of failed authentications (401) as %s %s from %s %s (AS%d)",
					d.cls.name, d.id, a.id.country, a.id.ip, a.id.asn)
			case kindParam:
				n := plan.between(3, 6)
				a.meanS = float64(length) / 1e9 / float64(n)
				a.freeze = plan.Float() < tamperFreezes
				what := fmt.Sprintf("%d-%d °C", tamperHeatMin/10, tamperHeatMax/10)
				if a.freeze {
					what = fmt.Sprintf("%d °C", tamperFreeze/10)
				}
				desc = fmt.Sprintf("the API key %s of %s %s, from its home address %s, sets PUT /v1/devices/%s/setpoint?temp= to %s (its owner prefers about %.1f °C)",
					d.apiKey, d.cls.name, d.id, d.home.ip, d.id, what, float64(d.pref)/10)
			}
			// Run the timing generator once to find the last event.
			tr, last, n := a.tr, a.start, 1
			for {
				t := last + a.gap()
				if t > a.end {
					break
				}
				last, n = t, n+1
			}
			a.tr = tr
			a.label = len(s.labels)
			s.labels = append(s.labels, Label{
				ID:     fmt.Sprintf("atk-%03d-%s", len(s.labels)+1, AttackTypes[k]),
				Type:   AttackTypes[k],
				Tenant: d.tenant, Device: d.id, APIKey: a.apiKey, IP: a.id.ip,
				Start: time.Unix(0, a.start).UTC(), End: time.Unix(0, last).UTC(),
				Description: desc, Events: n,
			})
			s.atks = append(s.atks, a)
		}
	}
}

func cmdText(c *cmdSpec) string {
	if c.pre != "" {
		return c.method + " " + c.pre + "{id}" + c.post
	}
	return c.method + " " + c.post
}

// attackEvent emits a's event at t and returns its next time (-1 when done).
func (s *Sim) attackEvent(dst []byte, a *attack, t int64) ([]byte, int64, bool) {
	d := a.dev
	r := &s.rec
	var c *cmdSpec
	cr := &a.cr
	switch a.kind {
	case kindFlood:
		c = &d.cls.cmds[d.cls.main]
	case kindStolen:
		if cr.Float() < 0.4 {
			edges := d.cls.cmds[d.cls.start].next
			c = &d.cls.cmds[edges[cr.Intn(len(edges))].to]
		} else {
			reads := atkReads
			if d.cls != camera {
				reads = reads[:len(reads)-1] // recordings are a camera's
			}
			c = &reads[cr.Intn(len(reads))]
		}
	case kindPrivileged:
		c = &atkUnlock
		if a.n%2 == 1 {
			c = &atkFirmware
		}
	case kindEnumeration:
		c = &atkEnumStatus
	case kindAuth:
		c = &atkToken
	case kindParam:
		c = &d.cls.cmds[thermSetpoint] // the class's own command: only its argument is wrong
	}
	r.reset(d, t, &a.id, c)
	r.fw = a.fw
	r.status = c.status
	r.in, r.out = cr.between(int64(c.in[0]), int64(c.in[1])), cr.between(int64(c.out[0]), int64(c.out[1]))
	r.latUs = int64(cr.uniform(c.latMs[0], c.latMs[1]) * 1000)
	switch a.kind {
	case kindFlood:
		u := cr.Float()
		switch {
		case t-a.start > 60*secNs && u < 0.3:
			r.status, r.out = 429, cr.between(60, 120) // the gateway's rate limit kicks in
		case u < 0.33:
			r.status, r.out = 503, cr.between(80, 200)
		}
	case kindPrivileged:
		u := cr.Float()
		if c == &atkUnlock {
			r.status = 200
			if u < 0.6 {
				r.status = 403
			}
		} else {
			r.status = 202
			if u < 0.3 {
				r.status = 403
			}
		}
	case kindEnumeration:
		if a.num == d.num {
			a.num++
		}
		a.idBuf = appendPad6(append(append(a.idBuf[:0], d.cls.prefix...), '-'), a.num)
		r.pathID, r.pathIDb = "", a.idBuf
		switch {
		case a.num >= a.ncls:
			r.status = 404
		case cr.Float() < 0.07:
			r.status, r.out = 200, cr.between(400, 1200) // the IDOR works: another owner's device
		default:
			r.status = 403
		}
		a.num++
	case kindAuth:
		r.auth = "failed"
	case kindParam:
		v := tamperFreeze
		if !a.freeze {
			v = int(cr.between(tamperHeatMin/setpointStep, tamperHeatMax/setpointStep)) * setpointStep
		}
		s.setArg(r, c.arg, v) // accepted (200): the API does not bound the value
	}
	dst = s.appendRec(dst, r)
	a.n++
	next := t + a.gap()
	if next > a.end {
		return dst, -1, true
	}
	return dst, next, true
}
