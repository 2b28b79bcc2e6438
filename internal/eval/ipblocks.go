package eval

import (
	"net/netip"
	"time"

	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/schemas"
)

// IPBlockWithin is how soon after an attacking address's first request its
// block counts as in time (issue 14: a distributed flood's addresses blocked
// within 30 s of their first burst).
const IPBlockWithin = 30 * time.Second

// ipAttackResult is, for one attack with many addresses (sim.Label.IPs), how
// many of its addresses were blocked (a decision of scope ip on the address,
// or cidr on a network holding it), and how many within IPBlockWithin of the
// address's first event.
type ipAttackResult struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	IPs     int    `json:"ips"`
	Seen    int    `json:"ips_seen"` // addresses with at least one event
	Blocked int    `json:"ips_blocked"`
	InTime  int    `json:"ips_blocked_within_30s"`
	// Fraction is InTime/IPs.
	Fraction float64 `json:"fraction_blocked_within_30s"`
}

// firstSeen records the first event time of each address of the labels'
// attacks spread over addresses (Label.IPs), and, when there are such
// attacks, every other address seen (other).
type firstSeen struct {
	want  map[netip.Addr]bool
	first map[netip.Addr]time.Time
	other map[netip.Addr]bool
}

func newFirstSeen(labels []sim.Label) *firstSeen {
	f := &firstSeen{want: map[netip.Addr]bool{}, first: map[netip.Addr]time.Time{}, other: map[netip.Addr]bool{}}
	for _, l := range labels {
		for _, ip := range l.IPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				f.want[a] = true
			}
		}
	}
	return f
}

// observe notes ev's address: its first time if it is one of the labels'
// and is new, else that it was seen.
func (f *firstSeen) observe(ev *schemas.Event) {
	if len(f.want) == 0 {
		return
	}
	if !f.want[ev.ClientIP] {
		if ev.ClientIP.IsValid() && !f.other[ev.ClientIP] {
			f.other[ev.ClientIP] = true
		}
		return
	}
	if _, ok := f.first[ev.ClientIP]; !ok {
		f.first[ev.ClientIP] = ev.EventTime()
	}
}

// ipBlocks measures, per attack with addresses of a type in types, the
// addresses blocked and blocked in time; and the benign blocks: decisions
// of scope ip on an address of no label, or of scope cidr on a network
// holding no label's address (distinct values); and the addresses of no
// label seen in the run (at any time) inside a network blocked (scope cidr):
// benign addresses a network's block covers, whether or not the network also
// holds an attack's.
func ipBlocks(labels []sim.Label, f *firstSeen, ds []StoredDecision, types map[string]bool) (res []ipAttackResult, benignIP, benignCIDR, benignInCIDR int) {
	// The earliest block of each address, and of each network.
	ipBlock := map[netip.Addr]time.Time{}
	var cidrs []struct {
		p netip.Prefix
		t time.Time
	}
	attackIP := map[netip.Addr]bool{}
	for _, l := range labels {
		for _, s := range append([]string{l.IP}, l.IPs...) {
			if a, err := netip.ParseAddr(s); err == nil {
				attackIP[a.Unmap()] = true
			}
		}
	}
	benign := map[string]bool{}
	for _, d := range ds {
		switch d.Scope {
		case schemas.ScopeIP:
			a, err := netip.ParseAddr(d.Value)
			if err != nil {
				continue
			}
			a = a.Unmap()
			if t, ok := ipBlock[a]; !ok || d.Time.Before(t) {
				ipBlock[a] = d.Time
			}
			if !attackIP[a] && !benign[d.Value] {
				benign[d.Value] = true
				benignIP++
			}
		case schemas.ScopeCIDR:
			p, err := netip.ParsePrefix(d.Value)
			if err != nil {
				continue
			}
			cidrs = append(cidrs, struct {
				p netip.Prefix
				t time.Time
			}{p, d.Time})
			holds := false
			for a := range attackIP {
				if p.Contains(a) {
					holds = true
					break
				}
			}
			if !holds && !benign[d.Value] {
				benign[d.Value] = true
				benignCIDR++
			}
		}
	}
	for _, l := range labels {
		if !types[l.Type] || len(l.IPs) == 0 {
			continue
		}
		r := ipAttackResult{ID: l.ID, Type: l.Type, IPs: len(l.IPs)}
		for _, s := range l.IPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			first, seen := f.first[a]
			if seen {
				r.Seen++
			}
			a = a.Unmap()
			t, blocked := ipBlock[a]
			for _, c := range cidrs {
				if c.p.Contains(a) && (!blocked || c.t.Before(t)) {
					t, blocked = c.t, true
				}
			}
			if !blocked {
				continue
			}
			r.Blocked++
			if seen && t.Sub(first) <= IPBlockWithin {
				r.InTime++
			}
		}
		if r.IPs > 0 {
			r.Fraction = float64(r.InTime) / float64(r.IPs)
		}
		res = append(res, r)
	}
	if len(cidrs) > 0 {
		for a := range f.other {
			a = a.Unmap()
			for _, c := range cidrs {
				if !attackIP[a] && c.p.Contains(a) {
					benignInCIDR++
					break
				}
			}
		}
	}
	return res, benignIP, benignCIDR, benignInCIDR
}
