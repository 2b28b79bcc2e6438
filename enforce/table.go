package enforce

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Request is what an enforcement point knows about one request. Empty fields
// (and an invalid IP) match nothing.
type Request struct {
	Device string
	APIKey string
	IP     netip.Addr
	Tenant string
}

// Verdict is the answer to Check. The zero Verdict allows the request.
type Verdict struct {
	// Action is "" (allow), schemas.ActionBlock or schemas.ActionThrottle.
	Action string
	// Scope and Value are the matching decision's scope and value (a CIDR for
	// a network block).
	Scope, Value string
	// DecisionID is the matching decision's id.
	DecisionID string
	// ExpiresAt is the matching decision's expiry; zero means none.
	ExpiresAt time.Time
}

// Allowed reports whether v lets the request through unconditionally.
func (v Verdict) Allowed() bool { return v.Action == "" }

// entry is one active decision in the cache. Entries are immutable once
// published in a table.
type entry struct {
	key      string // KV key
	revision uint64 // KV revision (stream sequence) of the value
	raw      []byte // the KV value, kept for the state file
	d        schemas.Decision
	expires  int64 // unix nanoseconds; 0: never
	prefix   netip.Prefix
	isPrefix bool // scope ip with a CIDR value shorter than a single address
	orphan   bool // its KV key was deleted or went missing without a signed unblock
}

func (e *entry) verdict() Verdict {
	return Verdict{Action: e.d.Action, Scope: e.d.Scope, Value: e.d.Value, DecisionID: e.d.ID, ExpiresAt: e.d.ExpiresAt}
}

// live reports whether e is enforced at now (unix nanoseconds).
func (e *entry) live(now int64) bool { return e.expires == 0 || now < e.expires }

// table is an immutable lookup snapshot of the active decisions. Check reads
// the current table through an atomic pointer, without locks; the watch loop
// builds a new table after each batch of changes.
type table struct {
	device map[string]*entry
	apiKey map[string]*entry
	tenant map[string]*entry
	ip     map[netip.Addr]*entry
	cidr   map[netip.Prefix]*entry
	// other holds the decisions Check never matches (MQTT scopes), for Active.
	other map[string]*entry
	// v4Bits and v6Bits are the distinct prefix lengths in cidr, longest first:
	// a lookup masks the address once per length.
	v4Bits, v6Bits []int
	n              int
}

// newTable indexes the entries (by KV key) of the scopes in applies; the
// others are left out: Check never matches them, Active omits them.
func newTable(entries map[string]*entry, applies map[string]bool) *table {
	t := &table{
		device: map[string]*entry{}, apiKey: map[string]*entry{}, tenant: map[string]*entry{},
		ip: map[netip.Addr]*entry{}, cidr: map[netip.Prefix]*entry{}, other: map[string]*entry{},
	}
	for key, e := range entries {
		if !applies[e.d.Scope] {
			continue
		}
		t.n++
		switch e.d.Scope {
		case schemas.ScopeDevice:
			t.device[e.d.Value] = stronger(t.device[e.d.Value], e)
		case schemas.ScopeAPIKey:
			t.apiKey[e.d.Value] = stronger(t.apiKey[e.d.Value], e)
		case schemas.ScopeTenant:
			t.tenant[e.d.Value] = stronger(t.tenant[e.d.Value], e)
		case schemas.ScopeMQTTUsername, schemas.ScopeMQTTClientID:
			t.other[key] = e
		case schemas.ScopeIP, schemas.ScopeCIDR:
			if e.isPrefix {
				t.cidr[e.prefix] = stronger(t.cidr[e.prefix], e)
				if e.prefix.Addr().Is4() {
					t.v4Bits = append(t.v4Bits, e.prefix.Bits())
				} else {
					t.v6Bits = append(t.v6Bits, e.prefix.Bits())
				}
			} else {
				a := e.prefix.Addr()
				t.ip[a] = stronger(t.ip[a], e)
			}
		}
	}
	for _, b := range []*[]int{&t.v4Bits, &t.v6Bits} {
		slices.Sort(*b)
		*b = slices.Compact(*b)
		slices.Reverse(*b)
	}
	return t
}

// stronger returns the entry to keep when two KV keys index the same value
// (such as "10.0.0.1" and "10.0.0.1/32"): a block over a throttle, then the
// later expiry.
func stronger(old, e *entry) *entry {
	if old == nil {
		return e
	}
	if (old.d.Action == schemas.ActionBlock) != (e.d.Action == schemas.ActionBlock) {
		if e.d.Action == schemas.ActionBlock {
			return e
		}
		return old
	}
	if old.expires == 0 || (e.expires != 0 && old.expires >= e.expires) {
		return old
	}
	return e
}

// check returns the verdict for r at now (unix nanoseconds, computed by
// nowFn only when a decision matches). A live block in any scope wins over a
// throttle. It does not allocate.
func (t *table) check(r *Request, nowFn func() int64) Verdict {
	var now int64
	var throttle *entry
	consider := func(e *entry) bool { // reports whether e is a live block
		if e == nil {
			return false
		}
		if now == 0 {
			now = nowFn()
		}
		if !e.live(now) {
			return false
		}
		if e.d.Action == schemas.ActionBlock {
			return true
		}
		if throttle == nil {
			throttle = e
		}
		return false
	}
	if r.Device != "" {
		if e := t.device[r.Device]; consider(e) {
			return e.verdict()
		}
	}
	if r.APIKey != "" {
		if e := t.apiKey[r.APIKey]; consider(e) {
			return e.verdict()
		}
	}
	if r.IP.IsValid() {
		ip := r.IP.Unmap()
		if e := t.ip[ip]; consider(e) {
			return e.verdict()
		}
		bits := t.v6Bits
		if ip.Is4() {
			bits = t.v4Bits
		}
		for _, b := range bits {
			p, err := ip.Prefix(b)
			if err != nil {
				continue
			}
			if e := t.cidr[p]; consider(e) {
				return e.verdict()
			}
		}
	}
	if r.Tenant != "" {
		if e := t.tenant[r.Tenant]; consider(e) {
			return e.verdict()
		}
	}
	if throttle != nil {
		return throttle.verdict()
	}
	return Verdict{}
}

// parseIPValue parses the value of an ip-scoped decision: an address or a
// CIDR. IPv4-mapped IPv6 addresses are unmapped; a prefix is masked.
func parseIPValue(v string) (p netip.Prefix, isPrefix bool, ok bool) {
	if strings.Contains(v, "/") {
		pp, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, false, false
		}
		a := pp.Addr()
		bits := pp.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return netip.Prefix{}, false, false
			}
			a, bits = a.Unmap(), bits-96
		}
		pp = netip.PrefixFrom(a.WithZone(""), bits).Masked()
		return pp, bits < a.BitLen(), true
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, false, false
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), false, true
}
