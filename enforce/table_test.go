package enforce

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// testEntry builds a cache entry as decode would, without a signature.
func testEntry(t testing.TB, id, action, scope, value string, expires int64) *entry {
	t.Helper()
	e := &entry{key: schemas.KVKey(scope, value), d: schemas.Decision{ID: id, Action: action, Scope: scope, Value: value}, expires: expires}
	if scope == schemas.ScopeIP {
		p, isPrefix, ok := parseIPValue(value)
		if !ok {
			t.Fatalf("bad ip value %q", value)
		}
		e.prefix, e.isPrefix = p, isPrefix
	}
	return e
}

func TestTableCheck(t *testing.T) {
	const now = int64(1_000_000)
	es := map[string]*entry{}
	add := func(id, action, scope, value string, expires int64) {
		e := testEntry(t, id, action, scope, value, expires)
		es[e.key] = e
	}
	add("dev", schemas.ActionBlock, schemas.ScopeDevice, "d-1", 0)
	add("key", schemas.ActionThrottle, schemas.ScopeAPIKey, "k-1", now+1)
	add("gone", schemas.ActionBlock, schemas.ScopeAPIKey, "k-old", now) // expires exactly now
	add("ip4", schemas.ActionBlock, schemas.ScopeIP, "192.0.2.1", 0)
	add("net16", schemas.ActionThrottle, schemas.ScopeIP, "10.1.0.0/16", 0)
	add("net24", schemas.ActionBlock, schemas.ScopeIP, "10.1.2.99/24", 0)    // masked to 10.1.2.0/24
	add("all4", schemas.ActionThrottle, schemas.ScopeIP, "0.0.0.0/0", now-1) // expired
	add("net6", schemas.ActionBlock, schemas.ScopeIP, "2001:db8::/32", 0)
	add("ip6", schemas.ActionBlock, schemas.ScopeIP, "2001:db9::1", 0)
	add("ip6-32", schemas.ActionThrottle, schemas.ScopeIP, "192.0.2.9/32", 0) // a single address
	add("ten", schemas.ActionBlock, schemas.ScopeTenant, "evil", 0)
	tab := newTable(es, checkScopeSet())
	clock := func() int64 { return now }

	f := func(r Request, want string) {
		t.Helper()
		v := tab.check(&r, clock)
		if v.DecisionID != want {
			t.Errorf("check(%+v) = %q (%+v); want %q", r, v.DecisionID, v, want)
		}
		if (v.DecisionID == "") != v.Allowed() {
			t.Errorf("check(%+v): Allowed %v with decision %q", r, v.Allowed(), v.DecisionID)
		}
	}
	a := netip.MustParseAddr
	f(Request{}, "")
	f(Request{Device: "d-1"}, "dev")
	f(Request{Device: "d-2"}, "")
	f(Request{APIKey: "k-1"}, "key")
	f(Request{APIKey: "k-old"}, "")
	f(Request{IP: a("192.0.2.1")}, "ip4")
	f(Request{IP: a("::ffff:192.0.2.1")}, "ip4")
	f(Request{IP: a("192.0.2.2")}, "")
	f(Request{IP: a("192.0.2.9")}, "ip6-32")
	f(Request{IP: a("10.1.2.3")}, "net24")
	f(Request{IP: a("10.1.3.3")}, "net16")
	f(Request{IP: a("10.2.0.1")}, "")
	f(Request{IP: a("2001:db8:ffff::1")}, "net6")
	f(Request{IP: a("2001:db9::1")}, "ip6")
	f(Request{IP: a("2001:db9::2")}, "")
	f(Request{Tenant: "evil"}, "ten")
	// A block in any scope wins over a throttle found first.
	f(Request{APIKey: "k-1", IP: a("10.1.2.3")}, "net24")
	f(Request{APIKey: "k-1", Tenant: "evil"}, "ten")
	f(Request{APIKey: "k-1", IP: a("10.1.3.3")}, "key")
}

func TestParseIPValue(t *testing.T) {
	f := func(v, want string, wantPrefix, wantOK bool) {
		t.Helper()
		p, isPrefix, ok := parseIPValue(v)
		if ok != wantOK || (ok && (p.String() != want || isPrefix != wantPrefix)) {
			t.Errorf("parseIPValue(%q) = %v %v %v; want %s %v %v", v, p, isPrefix, ok, want, wantPrefix, wantOK)
		}
	}
	f("192.0.2.1", "192.0.2.1/32", false, true)
	f("::ffff:192.0.2.1", "192.0.2.1/32", false, true)
	f("192.0.2.77/24", "192.0.2.0/24", true, true)
	f("::ffff:192.0.2.0/120", "192.0.2.0/24", true, true)
	f("::ffff:0.0.0.0/64", "", false, false)
	f("2001:db8::/32", "2001:db8::/32", true, true)
	f("2001:db8::1/128", "2001:db8::1/128", false, true)
	f("fe80::1%eth0", "fe80::1/128", false, true)
	f("10.0.0.0/33", "", false, false)
	f("not-an-ip", "", false, false)
	f("", "", false, false)
}

// BenchmarkCheck measures Check on a cache of 10000 device blocks, 10000 IP
// blocks and 200 networks of 9 prefix lengths.
func BenchmarkCheck(b *testing.B) {
	es := map[string]*entry{}
	exp := time.Now().Add(time.Hour).UnixNano()
	for i := range 10000 {
		for _, e := range []*entry{
			testEntry(b, "d", schemas.ActionBlock, schemas.ScopeDevice, fmt.Sprintf("device-%d", i), exp),
			testEntry(b, "i", schemas.ActionBlock, schemas.ScopeIP, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), exp),
		} {
			es[e.key] = e
		}
	}
	for i := range 200 {
		e := testEntry(b, "n", schemas.ActionBlock, schemas.ScopeIP, fmt.Sprintf("172.%d.%d.0/%d", 16+i%16, i, 16+i%9), exp)
		es[e.key] = e
	}
	c := &Client{nowNanos: func() int64 { return time.Now().UnixNano() }}
	c.tab.Store(newTable(es, checkScopeSet()))
	run := func(name string, r Request, blocked bool) {
		b.Run(name, func(b *testing.B) {
			if c.Check(r).Allowed() == blocked {
				b.Fatalf("Check(%+v): want blocked=%v", r, blocked)
			}
			b.ReportAllocs()
			for b.Loop() {
				c.Check(r)
			}
		})
	}
	run("allow", Request{Device: "device-x", APIKey: "key", IP: netip.MustParseAddr("192.0.2.1"), Tenant: "t"}, false)
	run("block-device", Request{Device: "device-77", IP: netip.MustParseAddr("192.0.2.1")}, true)
	run("block-cidr", Request{Device: "device-x", IP: netip.MustParseAddr("172.16.0.9")}, true)
}

// checkScopeSet is the default Options.Scopes as a set.
func checkScopeSet() map[string]bool {
	m := map[string]bool{}
	for _, s := range CheckScopes() {
		m[s] = true
	}
	return m
}
