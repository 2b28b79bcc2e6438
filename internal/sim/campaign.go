package sim

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Attacks spread over many devices or addresses (Label.Type), injected with
// Config.Entities in both models. No single device's traffic shows them
// clearly: they are for judges of entities (a client IP, its network, an API
// key) and for incidents. Their labels name every device (Label.Devices) and
// address (Label.IPs) involved.
const (
	// AttackCredentialStuffing: one address from a hosting network tries one
	// failed login (401) against each of 250-350 devices' API keys, about one
	// a second: the 2019 Ring camera credential-stuffing runs, against a fleet.
	AttackCredentialStuffing = "credential_stuffing"
	// AttackDistributedFlood: 1,000-1,500 addresses never seen before, from
	// residential and mobile networks of every country (a botnet), each send
	// a burst of 4-8 requests within seconds on one route (one class's main
	// command) of 20-40 devices, all within 3-6 minutes: the Mirai floods.
	AttackDistributedFlood = "distributed_flood"
	// AttackLeakedKey: one device's API key, leaked (a public repository, a
	// decompiled app), is used from 40-80 addresses on networks of several
	// countries over 20-40 minutes, each a few times, for the device's normal
	// command.
	AttackLeakedKey = "leaked_api_key"
	// AttackTenantSpread: a credential attack spread thin over one tenant's
	// fleet: 150-250 of its keyed devices each see two failed logins (401),
	// every attempt from its own address never seen before, on residential
	// and mobile networks of every country, within 4-6 minutes. No address
	// fails for more than one identity and no network for more than a few:
	// only the tenant sees it (its label's Tenant names it).
	AttackTenantSpread = "tenant_spread_thin"
	// AttackThinFlood: a distributed flood spread thin (Config.ThinFlood):
	// 1,000-1,400 addresses never seen before, packed into 5-8 IPv4 /24s
	// and 1-2 IPv6 /48s (a rented range, a residential proxy pool), each
	// send only 1-3 requests on one route (one class's main command) of
	// 20-40 devices, all within 3-6 minutes. No address bursts: only its
	// network shows many new addresses on one route at once.
	AttackThinFlood = "distributed_flood_thin"
)

// EntityAttackTypes lists the attacks spread over devices and addresses, in
// planning order (after each model's own attack types).
var EntityAttackTypes = []string{AttackCredentialStuffing, AttackDistributedFlood, AttackLeakedKey, AttackTenantSpread}

// AttackTypesFor returns the attack types a fleet of cfg injects: its model's
// (AttackTypesOf), then EntityAttackTypes with Config.Entities, then
// AttackThinFlood with Config.ThinFlood.
func AttackTypesFor(cfg Config) []string {
	types := AttackTypesOf(cfg.Model)
	if cfg.Entities && types != nil {
		types = append(append([]string(nil), types...), EntityAttackTypes...)
		if cfg.ThinFlood {
			types = append(types, AttackThinFlood)
		}
	}
	return types
}

// Campaign kinds, in EntityAttackTypes order.
const (
	ckStuffing = iota
	ckDistFlood
	ckLeakedKey
	ckTenantSpread
	// ckAuthOutage is no attack: the benign counterpart of ckTenantSpread
	// (NearAuthOutage), planned after the attacks.
	ckAuthOutage
	// ckThinFlood is AttackThinFlood (Config.ThinFlood), planned last.
	ckThinFlood
)

// floodWave is how many bots of a distributed flood are active at once.
const floodWave = 50

// campaign is one attack spread over devices or addresses: an event source of
// the schedule like an attack, with its own timing and content streams. Event
// n targets devs[target(n)] from addrs[addr(n)].
type campaign struct {
	kind   int
	start  int64
	end    int64 // no event after end
	meanS  float64
	tr, cr rng
	devs   []int // device indexes (the model's)
	addrs  []ident
	burst  int // distributed flood: requests per bot
	// thin flood: bot i sends events [ends[i-1], ends[i]) (ends[-1] = 0)
	ends []int
	fw   string
	n    int
}

// gap returns the time to the campaign's next event.
func (c *campaign) gap() int64 { return max(msNs, int64(c.meanS*(0.5+c.tr.Float())*1e9)/msNs*msNs) }

// target returns the index in c.devs and c.addrs of event n's device and address.
func (c *campaign) target(n int) (dev, addr int) {
	switch c.kind {
	case ckStuffing: // every device once, from the one address
		return n % len(c.devs), 0
	case ckDistFlood: // waves of floodWave bots, each sending its burst
		wave, i := n/(floodWave*c.burst), n%floodWave
		bot := min(wave*floodWave+i, len(c.addrs)-1)
		return bot % len(c.devs), bot
	case ckTenantSpread: // every device twice, each attempt from its own address
		return n % len(c.devs), n % len(c.addrs)
	case ckAuthOutage: // every device twice, from its usual address
		return n % len(c.devs), n % len(c.devs)
	case ckThinFlood: // each bot in turn, its 1-3 requests
		bot, _ := slices.BinarySearch(c.ends, n+1)
		return bot % len(c.devs), bot
	default: // the leaked key's device, from each address in turn
		return 0, n % len(c.addrs)
	}
}

// events returns how many events c sends.
func (c *campaign) events() int {
	switch c.kind {
	case ckStuffing:
		return len(c.devs)
	case ckDistFlood:
		return len(c.addrs) * c.burst
	case ckTenantSpread, ckAuthOutage:
		return 2 * len(c.devs)
	case ckThinFlood:
		return c.ends[len(c.ends)-1]
	default:
		return len(c.addrs) * 3
	}
}

// campaignFleet is what planning campaigns needs of a model's devices.
type campaignFleet interface {
	numDevices() int
	// eligible: present from the start, not an attack victim.
	eligible(i int) bool
	// keyed: an HTTP device with an API key.
	keyed(i int) bool
	// floodable: an HTTP device whose main command has its id in the path.
	floodable(i int) bool
	sameClass(i, j int) bool
	deviceID(i int) string
	tenant(i int) string
	// classEntity is the device's class entity: its tenant, a slash and
	// its class (schemas.EntityClass's value).
	classEntity(i int) string
	apiKey(i int) string
	// usualAddr is the device's usual address, if it has one fixed (not a
	// carrier's NAT).
	usualAddr(i int) (ident, bool)
}

// planCampaigns plans max(1, devices/1000) campaigns of each entity attack
// type in the attack period, from their own random stream (so that the
// fleet's other plans, and so every other figure, are those of the same seed
// without Config.Entities), and returns them with their labels, numbered
// after the first firstLabel labels, and the benign campaigns' near-miss
// labels (NearAuthOutage). Campaign devices are never attack victims; they
// may be each other's.
func planCampaigns(cfg Config, fl campaignFleet, start, end int64, firstLabel int) ([]campaign, []Label, []Label) {
	plan := newRNG(cfg.Seed, 11<<32)
	perType := min(20, max(1, cfg.Devices/1000))
	span := int64(float64(end-start) * (1 - cfg.AttackStart))
	from := end - span
	var keyed, floodable []int
	for i := range fl.numDevices() {
		if !fl.eligible(i) {
			continue
		}
		if fl.keyed(i) {
			keyed = append(keyed, i)
		}
		if fl.floodable(i) {
			floodable = append(floodable, i)
		}
	}
	// sample returns n distinct members of set (fewer if set is smaller).
	sample := func(set []int, n int) []int {
		s := append([]int(nil), set...)
		n = min(n, len(s))
		for i := range n {
			j := i + plan.Intn(len(s)-i)
			s[i], s[j] = s[j], s[i]
		}
		return s[:n]
	}
	var residential []int
	for i := range networks {
		if networks[i].Kind != KindHosting {
			residential = append(residential, i)
		}
	}
	// fresh returns n distinct addresses on networks picked from nets.
	fresh := func(nets []int, n int) []ident {
		seen := map[string]bool{}
		out := make([]ident, 0, n)
		for len(out) < n {
			id := identOf(&networks[nets[plan.Intn(len(nets))]], plan.Next())
			if !seen[id.ip] {
				seen[id.ip] = true
				out = append(out, id)
			}
		}
		return out
	}
	var cs []campaign
	var labels, near []Label
	for k, typ := range EntityAttackTypes {
		for range perType {
			c := campaign{kind: k,
				tr: newRNG(cfg.Seed, uint64(len(cs))+12<<32),
				cr: newRNG(cfg.Seed, uint64(len(cs))+13<<32)}
			var desc string
			switch k {
			case ckStuffing:
				c.devs = sample(keyed, int(plan.between(250, 350)))
				c.addrs = fresh(hostingNets, 1)
				c.meanS, c.fw = plan.uniform(0.6, 1.4), "python-requests/2.31.0"
				desc = fmt.Sprintf("credential stuffing: %s %s (AS%d) fails one login (401) against each of %d devices' API keys",
					c.addrs[0].country, c.addrs[0].ip, c.addrs[0].asn, len(c.devs))
			case ckDistFlood:
				if len(floodable) == 0 {
					continue
				}
				first := floodable[plan.Intn(len(floodable))]
				var same []int
				for _, i := range floodable {
					if fl.sameClass(i, first) {
						same = append(same, i)
					}
				}
				c.devs = sample(same, int(plan.between(20, 40)))
				bots := int(plan.between(1000/floodWave, 1500/floodWave)) * floodWave
				c.addrs = fresh(residential, bots)
				c.burst = int(plan.between(4, 8))
				length := plan.uniform(3, 6) * 60
				c.meanS, c.fw = length/float64(bots*c.burst), "Mozilla/5.0"
				desc = fmt.Sprintf("distributed flood: %d new addresses on residential and mobile networks each send %d requests within seconds on the main route of %d devices (class of %s)",
					bots, c.burst, len(c.devs), fl.deviceID(first))
			case ckTenantSpread:
				if len(keyed) == 0 {
					continue
				}
				tenant := fl.tenant(keyed[plan.Intn(len(keyed))])
				var own []int
				for _, i := range keyed {
					if fl.tenant(i) == tenant {
						own = append(own, i)
					}
				}
				c.devs = sample(own, int(plan.between(150, 250)))
				c.addrs = fresh(residential, 2*len(c.devs))
				length := plan.uniform(4, 6) * 60
				c.meanS, c.fw = length/float64(2*len(c.devs)), "python-requests/2.31.0"
				desc = fmt.Sprintf("credential attack spread thin over tenant %s: %d of its devices each fail two logins (401), every attempt from its own new address on residential and mobile networks",
					tenant, len(c.devs))
			case ckLeakedKey:
				c.devs = sample(keyed, 1)
				nets := int(plan.between(40, 80))
				c.addrs = fresh(residential, nets)
				length := plan.uniform(20, 40) * 60
				c.meanS, c.fw = length/float64(nets*3), "okhttp/4.12.0"
				desc = fmt.Sprintf("the API key %s of %s, leaked, is used from %d addresses on networks of several countries for its normal command",
					fl.apiKey(c.devs[0]), fl.deviceID(c.devs[0]), nets)
			}
			if len(c.devs) == 0 {
				continue
			}
			total := c.events()
			length := int64(float64(total) * c.meanS * 1e9)
			c.start = (from + int64(plan.Float()*float64(max(0, span-length)))) / msNs * msNs
			// Run the timing stream once to find the last event.
			tr, last := c.tr, c.start
			for range total - 1 {
				last += c.gap()
			}
			c.tr = tr
			c.end = last
			l := Label{
				ID:   fmt.Sprintf("atk-%03d-%s", firstLabel+len(labels)+1, typ),
				Type: typ, Tenant: fl.tenant(c.devs[0]), Device: fl.deviceID(c.devs[0]),
				Start: time.Unix(0, c.start).UTC(), End: time.Unix(0, last).UTC(),
				Description: desc, Events: total,
			}
			for _, i := range c.devs {
				l.Devices = append(l.Devices, fl.deviceID(i))
				l.addClass(fl.classEntity(i))
			}
			for _, a := range c.addrs {
				l.IPs = append(l.IPs, a.ip)
			}
			switch k {
			case ckStuffing:
				l.IP = c.addrs[0].ip
			case ckLeakedKey:
				l.APIKey = fl.apiKey(c.devs[0])
			}
			cs = append(cs, c)
			labels = append(labels, l)
		}
	}
	// The authentication outage: one tenant's keyed devices with a usual
	// address each fail two logins (401) from it within 5 minutes, as an
	// authentication backend failing them all would; from its own random
	// stream, after the attacks, so that they are planned as before.
	op := newRNG(cfg.Seed, 14<<32)
	if len(keyed) > 0 {
		tenant := fl.tenant(keyed[op.Intn(len(keyed))])
		c := campaign{kind: ckAuthOutage, tr: newRNG(cfg.Seed, 15<<32), cr: newRNG(cfg.Seed, 16<<32)}
		for _, i := range keyed {
			if a, ok := fl.usualAddr(i); ok && fl.tenant(i) == tenant && len(c.devs) < 300 {
				c.devs, c.addrs = append(c.devs, i), append(c.addrs, a)
			}
		}
		if len(c.devs) > 0 {
			c.meanS, c.fw = 300/float64(2*len(c.devs)), ""
			total := c.events()
			length := int64(float64(total) * c.meanS * 1e9)
			c.start = (from + int64(op.Float()*float64(max(0, span-length)))) / msNs * msNs
			tr, last := c.tr, c.start
			for range total - 1 {
				last += c.gap()
			}
			c.tr, c.end = tr, last
			l := Label{ID: fmt.Sprintf("near-auth-outage-%s", tenant), Type: NearAuthOutage, Tenant: tenant, Device: fl.deviceID(c.devs[0]),
				Start: time.Unix(0, c.start).UTC(), End: time.Unix(0, last+5*int64(time.Minute)).UTC(), Events: total,
				Description: fmt.Sprintf("the authentication backend of tenant %s fails its %d devices' logins (401) for 5 minutes; each retries from its usual address", tenant, len(c.devs))}
			for _, i := range c.devs {
				l.Devices = append(l.Devices, fl.deviceID(i))
				l.addClass(fl.classEntity(i))
			}
			for _, a := range c.addrs {
				l.IPs = append(l.IPs, a.ip)
			}
			cs = append(cs, c)
			near = append(near, l)
		}
	}
	if cfg.ThinFlood {
		for range perType {
			if c, l, ok := planThinFlood(cfg, fl, floodable, from, span, len(cs), firstLabel+len(labels)+1); ok {
				cs, labels = append(cs, c), append(labels, l)
			}
		}
	}
	return cs, labels, near
}

// planThinFlood plans one AttackThinFlood on a class of floodable devices
// (n: the campaigns planned before; id: its label's number), from random
// streams of its own (so that everything planned without Config.ThinFlood
// is as before), in the attack period [from, from+span).
func planThinFlood(cfg Config, fl campaignFleet, floodable []int, from, span int64, n, id int) (campaign, Label, bool) {
	if len(floodable) == 0 {
		return campaign{}, Label{}, false
	}
	plan := newRNG(cfg.Seed, 17<<32+uint64(n))
	c := campaign{kind: ckThinFlood, tr: newRNG(cfg.Seed, 18<<32+uint64(n)), cr: newRNG(cfg.Seed, 19<<32+uint64(n)), fw: "Mozilla/5.0"}
	first := floodable[plan.Intn(len(floodable))]
	var same []int
	for _, i := range floodable {
		if fl.sameClass(i, first) {
			same = append(same, i)
		}
	}
	k := int(plan.between(20, 40))
	for i := range min(k, len(same)) {
		j := i + plan.Intn(len(same)-i)
		same[i], same[j] = same[j], same[i]
	}
	c.devs = same[:min(k, len(same))]
	bots := int(plan.between(1000, 1400))
	n4, n6 := int(plan.between(5, 8)), int(plan.between(1, 2))
	per4 := min(200, bots/(n4+n6))
	var nets []string
	seen := map[string]bool{}
	for range n4 { // a /24 of any network, its hosts in random order
		nw := &networks[plan.Intn(len(networks))]
		base := hostIP(nw, plan.Next()).As4()
		p := netip.PrefixFrom(netip.AddrFrom4(base), 24).Masked()
		if seen[p.String()] {
			continue
		}
		seen[p.String()] = true
		nets = append(nets, p.String())
		hosts := make([]int, 254)
		for i := range hosts {
			hosts[i] = i + 1
		}
		for i := range per4 {
			j := i + plan.Intn(len(hosts)-i)
			hosts[i], hosts[j] = hosts[j], hosts[i]
			base[3] = byte(hosts[i])
			c.addrs = append(c.addrs, ident{ip: netip.AddrFrom4(base).String(), country: nw.Country, asn: nw.ASN})
		}
	}
	rest := bots - len(c.addrs)
	for i := range n6 { // a /48 (made up, in 2a0c::/16), random interface ids
		nw := &networks[plan.Intn(len(networks))]
		var a [16]byte
		a[0], a[1] = 0x2a, 0x0c
		binary.BigEndian.PutUint32(a[2:], uint32(plan.Next()))
		nets = append(nets, netip.PrefixFrom(netip.AddrFrom16(a), 48).Masked().String())
		cnt := rest / n6
		if i == 0 {
			cnt += rest % n6
		}
		for range cnt {
			binary.BigEndian.PutUint64(a[8:], plan.Next())
			binary.BigEndian.PutUint16(a[6:], uint16(plan.Next()))
			c.addrs = append(c.addrs, ident{ip: netip.AddrFrom16(a).String(), country: nw.Country, asn: nw.ASN})
		}
	}
	for i := range c.addrs { // the networks' bots interleaved
		j := i + plan.Intn(len(c.addrs)-i)
		c.addrs[i], c.addrs[j] = c.addrs[j], c.addrs[i]
	}
	total := 0
	for range c.addrs {
		total += int(plan.between(1, 3))
		c.ends = append(c.ends, total)
	}
	length := plan.uniform(3, 6) * 60
	c.meanS = length / float64(total)
	desc := fmt.Sprintf("distributed flood spread thin: %d new addresses in %d networks (%s) each send 1-3 requests on the main route of %d devices (class of %s)",
		len(c.addrs), len(nets), strings.Join(nets, ", "), len(c.devs), fl.deviceID(first))
	length = float64(total) * c.meanS * 1e9
	c.start = (from + int64(plan.Float()*float64(max(0, span-int64(length))))) / msNs * msNs
	tr, last := c.tr, c.start
	for range total - 1 {
		last += c.gap()
	}
	c.tr, c.end = tr, last
	l := Label{ID: fmt.Sprintf("atk-%03d-%s", id, AttackThinFlood), Type: AttackThinFlood,
		Tenant: fl.tenant(c.devs[0]), Device: fl.deviceID(c.devs[0]),
		Start: time.Unix(0, c.start).UTC(), End: time.Unix(0, last).UTC(), Description: desc, Events: total}
	for _, i := range c.devs {
		l.Devices = append(l.Devices, fl.deviceID(i))
		l.addClass(fl.classEntity(i))
	}
	for _, a := range c.addrs {
		l.IPs = append(l.IPs, a.ip)
	}
	return c, l, true
}

// next returns the time of c's event after the one at t, -1 when done.
func (c *campaign) next(t int64) int64 {
	c.n++
	if c.n >= c.events() {
		return -1
	}
	return t + c.gap()
}

// Basic model.

func (s *Sim) numDevices() int               { return len(s.devs) }
func (s *Sim) eligible(i int) bool           { return !s.devs[i].victim }
func (s *Sim) keyed(i int) bool              { return s.devs[i].apiKey != "" && !s.devs[i].cls.mqtt }
func (s *Sim) sameClass(i, j int) bool       { return s.devs[i].cls == s.devs[j].cls }
func (s *Sim) deviceID(i int) string         { return s.devs[i].id }
func (s *Sim) tenant(i int) string           { return s.devs[i].tenant }
func (s *Sim) classEntity(i int) string      { return s.devs[i].tenant + "/" + s.devs[i].cls.class }
func (s *Sim) apiKey(i int) string           { return s.devs[i].apiKey }
func (s *Sim) usualAddr(i int) (ident, bool) { return s.devs[i].home, true }
func (s *Sim) floodable(i int) bool {
	d := &s.devs[i]
	return !d.cls.mqtt && d.cls.cmds[d.cls.main].pre != ""
}

// campaignEvent emits c's event at t and returns its next time (-1 when done).
func (s *Sim) campaignEvent(dst []byte, c *campaign, t int64) ([]byte, int64, bool) {
	di, ai := c.target(c.n)
	d := &s.devs[c.devs[di]]
	cr := &c.cr
	cmd := &atkToken
	if c.kind != ckStuffing && c.kind != ckTenantSpread && c.kind != ckAuthOutage {
		cmd = &d.cls.cmds[d.cls.main]
	}
	r := &s.rec
	r.reset(d, t, &c.addrs[ai], cmd)
	r.status = cmd.status
	if c.fw != "" { // an outage's requests are the device's own
		r.fw = c.fw
	}
	r.in, r.out = cr.between(int64(cmd.in[0]), int64(cmd.in[1])), cr.between(int64(cmd.out[0]), int64(cmd.out[1]))
	r.latUs = int64(cr.uniform(cmd.latMs[0], cmd.latMs[1]) * 1000)
	switch c.kind {
	case ckStuffing, ckTenantSpread, ckAuthOutage:
		r.auth = "failed"
	case ckDistFlood, ckThinFlood:
		if u := cr.Float(); u < 0.3 {
			r.status, r.out = 429, cr.between(60, 120)
		} else if u < 0.45 {
			r.status, r.out = 503, cr.between(80, 200)
		}
	}
	return s.appendRec(dst, r), c.next(t), true
}

// Field model.

func (f *Field) numDevices() int          { return len(f.devs) }
func (f *Field) eligible(i int) bool      { return !f.devs[i].victim && f.devs[i].joinAt <= f.start }
func (f *Field) keyed(i int) bool         { return f.devs[i].apiKey != "" && !f.devs[i].cls.mqtt }
func (f *Field) sameClass(i, j int) bool  { return f.devs[i].cls == f.devs[j].cls }
func (f *Field) deviceID(i int) string    { return f.devs[i].id }
func (f *Field) tenant(i int) string      { return f.devs[i].tenant }
func (f *Field) classEntity(i int) string { return f.devs[i].tenant + "/" + f.devs[i].cls.class }
func (f *Field) apiKey(i int) string      { return f.devs[i].apiKey }
func (f *Field) usualAddr(i int) (ident, bool) {
	if d := &f.devs[i]; d.carrier < 0 {
		return f.homes[d.hh].addr, true
	}
	return ident{}, false
}
func (f *Field) floodable(i int) bool {
	d := &f.devs[i]
	return !d.cls.mqtt && d.cls.cmds[d.cls.main].pre != ""
}

// campaignEvent emits c's event at t and returns its next time (-1 when done).
func (f *Field) campaignEvent(dst []byte, c *campaign, t int64) ([]byte, int64, bool) {
	di, ai := c.target(c.n)
	d := &f.devs[c.devs[di]]
	cr := &c.cr
	cmd := &fAtkToken
	if c.kind != ckStuffing && c.kind != ckTenantSpread && c.kind != ckAuthOutage {
		cmd = &d.cls.cmds[d.cls.main]
	}
	r := &f.rec
	fw := c.fw
	if fw == "" { // an outage's requests are the device's own
		fw = d.fw
	}
	f.fill(r, d, cr, t, &c.addrs[ai], cmd, fw)
	switch c.kind {
	case ckStuffing, ckTenantSpread, ckAuthOutage:
		r.auth = "failed"
	case ckDistFlood, ckThinFlood:
		if u := cr.Float(); u < 0.3 {
			r.status, r.out = 429, cr.lognormal(90, 0.2)
		} else if u < 0.45 {
			r.status, r.out = 503, cr.lognormal(150, 0.2)
		}
	}
	return f.sim.appendRec(dst, r), c.next(t), true
}
