package sim

import (
	"fmt"
	"time"
)

// Field attack kinds, in FieldAttackTypes order.
const (
	fkFlood = iota
	fkStolen
	fkPrivileged
	fkEnum
	fkAuth
	fkParam
	fkClone
	fkOddHours
	fkUpload
	fkGrowth
	fkNoGeo
)

// fattack is one injected attack of the field model: an event source with its
// own timing stream (exponential gaps, run once in advance for the label) and
// content stream.
type fattack struct {
	kind   int
	dev    *fdev
	start  int64
	end    int64
	meanS  float64
	tr, cr rng
	addr   ident
	fw     string
	cmd    uint8 // the device's command it uses (flood, clone, odd hours, exfiltration, growth)
	n      int
	num    int // enumeration: the next device number
	ncls   int
	mult   float64 // upload exfiltration: median bytes in
	idBuf  []byte
}

func (a *fattack) gap() int64 { return a.tr.expS(a.meanS) }

// meanOf returns the mean gap of the process of cls that sends cmd (60 s if none).
func meanOf(cls *fclass, cmd uint8) float64 {
	for _, p := range cls.procs {
		if p.cmd == cmd && !p.newFw {
			return p.mean
		}
	}
	return 60
}

func (f *Field) planAttacks(plan *rng) {
	perType := min(20, max(1, f.cfg.Devices/1000))
	span := int64(float64(f.end-f.start) * (1 - f.cfg.AttackStart))
	from := f.end - span
	home := func(d *fdev) bool { return d.carrier < 0 }
	keyed := func(d *fdev) bool { return d.apiKey != "" }
	pick := func(ok func(*fdev) bool, prefer ...*fclass) *fdev {
		var cands []int
		for pass := 0; pass < 2 && len(cands) == 0; pass++ {
			for i := range f.devs {
				d := &f.devs[i]
				if d.victim || d.joinAt > f.start || !ok(d) {
					continue
				}
				if pass == 0 {
					for _, c := range prefer {
						if d.cls == c {
							cands = append(cands, i)
						}
					}
				} else {
					cands = append(cands, i)
				}
			}
		}
		if len(cands) == 0 {
			return nil
		}
		d := &f.devs[cands[plan.Intn(len(cands))]]
		d.victim = true
		return d
	}
	for k, typ := range FieldAttackTypes {
		for inst := range perType {
			var d *fdev
			var minLen, maxLen float64 // minutes
			switch k {
			case fkFlood:
				d, minLen, maxLen = pick(home, fThermostat, fCamera, fLock, fMeter), 4, 10
			case fkStolen:
				d, minLen, maxLen = pick(keyed, fCamera, fThermostat), 12, 30
			case fkPrivileged:
				d, minLen, maxLen = pick(func(d *fdev) bool { return home(d) && (d.cls == fMeter || d.cls == fThermostat) }), 6, 15
			case fkEnum:
				d, minLen, maxLen = pick(func(d *fdev) bool { return d.cls == fVehicle }), 3, 10
			case fkAuth:
				d, minLen, maxLen = pick(keyed, fVehicle, fThermostat), 5, 15
			case fkParam:
				d, minLen, maxLen = pick(func(d *fdev) bool { return home(d) && d.cls == fThermostat }), 3, 8
			case fkClone:
				d, minLen, maxLen = pick(home, fThermostat, fCamera, fLock), 30, 60
			case fkOddHours:
				d, minLen, maxLen = f.pickNight(plan, from, span), 3, 10
			case fkUpload:
				d, minLen, maxLen = pick(func(d *fdev) bool { return home(d) && (d.cls == fThermostat || d.cls == fMeter) }), 15, 35
			case fkGrowth:
				d, minLen, maxLen = pick(func(d *fdev) bool { return home(d) && d.cls.fetch >= 0 && !d.cls.mqtt }), 60, 120
			case fkNoGeo:
				d, minLen, maxLen = pick(keyed, fThermostat, fVehicle, fCamera), 15, 30
			}
			if d == nil {
				panic("BUG: no victim for field attack " + typ) // Validate guarantees enough devices
			}
			length := min(int64(plan.uniform(minLen, maxLen)*float64(time.Minute)), span)
			a := fattack{
				kind: k, dev: d, fw: d.fw,
				tr: newRNG(f.cfg.Seed, uint64(len(f.atks))+9<<32),
				cr: newRNG(f.cfg.Seed, uint64(len(f.atks))+10<<32),
			}
			a.start = (from + int64(plan.Float()*float64(span-length))) / msNs * msNs
			if d.hh >= 0 {
				a.addr = f.homes[d.hh].addr
			}
			c := &countries[d.ctry]
			var desc string
			switch k {
			case fkFlood:
				factor := plan.uniform(15, 40)
				a.cmd = d.cls.main
				a.meanS = meanOf(d.cls, a.cmd) / factor
				desc = fmt.Sprintf("floods %s at about %.0fx its rate from its home address", d.cls.cmds[a.cmd].name, factor)
			case fkStolen:
				h := &networks[hostingNets[plan.Intn(len(hostingNets))]]
				a.addr, a.fw, a.meanS = identOf(h, plan.Next()), "python-httpx/0.27.0", plan.uniform(10, 20)
				desc = fmt.Sprintf("its API key %s is used from %s %s (AS%d) for its commands and reads of owner, history, account and network data",
					d.apiKey, a.addr.country, a.addr.ip, a.addr.asn)
			case fkPrivileged:
				a.meanS = plan.uniform(45, 90)
				desc = "issues POST " + d.cls.base + "{id}/reset and PUT " + d.cls.base + "{id}/firmware/url from its home address"
			case fkEnum:
				n := plan.between(60, 200)
				a.meanS = float64(length) / 1e9 / float64(n)
				a.ncls = f.classCount[d.cls]
				a.num = max(0, d.num-plan.Intn(40))
				a.addr, a.fw = identOf(&networks[fieldPlaces[c.code].broadband2], plan.Next()), "okhttp/4.12.0"
				desc = fmt.Sprintf("its credential requests GET /v2/vehicles/<id>/location for other vehicles' ids (from %s-%s, strides of 1-3) from %s",
					d.cls.prefix, pad6(a.num), a.addr.ip)
			case fkAuth:
				h := &networks[hostingNets[plan.Intn(len(hostingNets))]]
				a.addr, a.fw, a.meanS = identOf(h, plan.Next()), "axios/1.6.7", plan.uniform(1.5, 6)
				desc = fmt.Sprintf("credential stuffing: failed POST /v2/auth/token (401) with its key from %s %s (AS%d)", a.addr.country, a.addr.ip, a.addr.asn)
			case fkParam:
				n := plan.between(3, 7)
				a.meanS = float64(length) / 1e9 / float64(n)
				desc = fmt.Sprintf("its own key, from its home address, sets the target to 45-70 °C (its owner prefers about %.1f °C)", float64(d.pref)/10)
			case fkClone:
				net := c.residential
				if f.homes[d.hh].net == net {
					net = fieldPlaces[c.code].broadband2
				}
				a.addr = identOf(&networks[net], plan.Next())
				a.cmd = d.cls.main
				a.meanS = meanOf(d.cls, a.cmd)
				desc = fmt.Sprintf("a clone with its identity calls from %s (AS%d, same country) at its rate while the real device keeps calling from %s",
					a.addr.ip, a.addr.asn, f.homes[d.hh].addr.ip)
			case fkOddHours:
				a.cmd = uint8(d.cls.owner)
				a.start = f.nightStart(d, plan, from, span, length)
				n := plan.between(2, 4)
				a.meanS = float64(length) / 1e9 / float64(n)
				desc = fmt.Sprintf("%s at %.1f h local time, never done at night, from its home address", d.cls.cmds[a.cmd].name, d.localHour(a.start))
			case fkUpload:
				a.cmd = d.cls.main
				a.meanS, a.mult = plan.uniform(15, 40), plan.uniform(300_000, 900_000)
				desc = fmt.Sprintf("uploads about %.0f KB per request through %s (normally %.0f bytes) from its home address",
					a.mult/1000, d.cls.cmds[a.cmd].name, d.cls.cmds[a.cmd].inMed)
			case fkGrowth:
				a.cmd = uint8(d.cls.fetch)
				a.meanS = plan.uniform(60, 150)
				desc = fmt.Sprintf("its %s downloads grow from 1.5x to about 20x their size (bytes out) over the attack", d.cls.cmds[a.cmd].name)
			case fkNoGeo:
				a.addr = identOf(&networks[fieldPlaces[c.code].hosting], plan.Next())
				a.addr.country, a.addr.asn = "", 0
				a.meanS = plan.uniform(15, 30)
				desc = fmt.Sprintf("its API key %s, with its own user agent, is used from hosting range %s in its own country; the lines carry no country or ASN",
					d.apiKey, a.addr.ip)
			}
			a.end = a.start + length
			tr, last, n := a.tr, a.start, 1
			for {
				t := last + a.gap()
				if t > a.end {
					break
				}
				last, n = t, n+1
			}
			a.tr = tr
			if (k == fkStolen || k == fkNoGeo) && inst%2 == 0 {
				// Every other victim's owner is away during the attack and comes
				// home 6-42 min after it.
				d.offStart = a.start - int64(plan.uniform(0, 20)*float64(time.Minute))
				d.offEnd = last + int64(plan.uniform(6, 42)*float64(time.Minute))/msNs*msNs
				if d.offEnd < f.end {
					ip := ""
					if d.hh >= 0 {
						ip = f.homes[d.hh].addr.ip
					}
					f.near = append(f.near, f.nearLabel(NearOwnerHome, d, d.offEnd, d.offEnd+20*int64(time.Minute), ip,
						"back home after its stolen key was used elsewhere"))
				}
			}
			f.labels = append(f.labels, Label{
				ID: fmt.Sprintf("atk-%03d-%s", len(f.labels)+1, typ), Type: typ,
				Tenant: d.tenant, Device: d.id, APIKey: d.apiKey, IP: a.addr.ip,
				Start: time.Unix(0, a.start).UTC(), End: time.Unix(0, last).UTC(),
				Description: d.cls.name + " " + d.id + ": " + desc, Events: n,
			})
			f.atks = append(f.atks, a)
		}
	}
}

// isNight reports whether t is between 01:30 and 04:30 at d's place.
func isNight(d *fdev, t int64) bool {
	h := d.localHour(t)
	return h >= 1.5 && h < 4.5
}

// pickNight picks a victim for an odd-hours command: a household device whose
// owner has a daytime command, where it is night some time in the attack
// period if there is such a device.
func (f *Field) pickNight(plan *rng, from, span int64) *fdev {
	var night, any []int
	for i := range f.devs {
		d := &f.devs[i]
		if d.victim || d.joinAt > f.start || d.carrier >= 0 || d.cls.owner < 0 {
			continue
		}
		any = append(any, i)
		for t := from; t < from+span; t += 10 * int64(time.Minute) {
			if isNight(d, t) {
				night = append(night, i)
				break
			}
		}
	}
	cands := night
	if len(cands) == 0 {
		cands = any
	}
	if len(cands) == 0 {
		return nil
	}
	d := &f.devs[cands[plan.Intn(len(cands))]]
	d.victim = true
	return d
}

// nightStart returns a start in [from, from+span-length] at d's night, or
// the start of least daytime activity when the period has no night there.
func (f *Field) nightStart(d *fdev, plan *rng, from, span, length int64) int64 {
	var ok []int64
	best, bestP := from, 1e9
	for t := from; t <= from+span-length; t += int64(time.Minute) {
		if isNight(d, t) {
			ok = append(ok, t)
		}
		if p := d.profile(profHome, t); p < bestP {
			best, bestP = t, p
		}
	}
	if len(ok) > 0 {
		return ok[plan.Intn(len(ok))] / msNs * msNs
	}
	return best / msNs * msNs
}

// attackEvent emits a's event at t and returns its next time (-1 when done).
func (f *Field) attackEvent(dst []byte, a *fattack, t int64) ([]byte, int64, bool) {
	d := a.dev
	cr := &a.cr
	r := &f.rec
	cls := d.cls
	var c *fcmd
	switch a.kind {
	case fkFlood, fkClone, fkUpload, fkGrowth, fkOddHours:
		c = &cls.cmds[a.cmd]
		if a.kind == fkOddHours && cls == fLock && a.n%2 == 1 {
			c = &cls.cmds[flLocked]
		}
		if a.kind == fkClone && cr.Float() < 0.1 {
			p := &cls.procs[cr.Intn(len(cls.procs))]
			if !p.newFw {
				c = &cls.cmds[p.cmd]
			}
		}
	case fkStolen, fkNoGeo:
		if cr.Float() < 0.4 {
			p := &cls.procs[cr.Intn(len(cls.procs))]
			c = &cls.cmds[p.cmd]
		} else {
			c = &fAtkReads[cr.Intn(len(fAtkReads))]
		}
	case fkPrivileged:
		c = &fAtkReset
		if a.n%2 == 1 {
			c = &fAtkFwURL
		}
	case fkEnum:
		c = &fAtkLocation
	case fkAuth:
		c = &fAtkToken
	case fkParam:
		c = &cls.cmds[ftTarget]
	}
	f.fill(r, d, cr, t, &a.addr, c, a.fw)
	if c.pre == "/v2/devices/" && cls.base != "" {
		r.pre = cls.base // the attack's reads and commands address the class's collection
	}
	switch a.kind {
	case fkFlood:
		if !cls.mqtt && t-a.start > 90*secNs && cr.Float() < 0.35 {
			r.status, r.out = 429, cr.lognormal(90, 0.2)
		}
	case fkPrivileged:
		if cr.Float() < 0.4 {
			r.status = 403
		}
	case fkEnum:
		if a.num == d.num {
			a.num++
		}
		a.idBuf = appendPad6(append(append(a.idBuf[:0], cls.prefix...), '-'), a.num)
		r.pathID, r.pathIDb = "", a.idBuf
		switch {
		case a.num >= a.ncls:
			r.status = 404
		case cr.Float() < 0.08:
			r.status, r.out = 200, cr.lognormal(600, 0.3)
		}
		a.num += 1 + cr.Intn(3)
	case fkAuth:
		r.auth = "failed"
	case fkParam:
		f.sim.setArg(r, c.arg, 450+5*int(cr.between(0, 50)))
	case fkOddHours:
		if c.arg != "" {
			f.sim.setArg(r, c.arg, int(d.pref))
		}
	case fkUpload:
		r.in = cr.lognormal(a.mult, 0.5)
	case fkGrowth:
		p := float64(t-a.start) / float64(max(1, a.end-a.start))
		r.out = cr.lognormal(c.outMed*(1.5+20*p), 0.2)
	}
	dst = f.sim.appendRec(dst, r)
	a.n++
	next := t + a.gap()
	if next > a.end {
		return dst, -1, true
	}
	return dst, next, true
}
