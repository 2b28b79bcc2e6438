package sim

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// runLines returns every line of cfg's fleet and its labels.
func runLines(t *testing.T, cfg Config) ([]string, []Label) {
	lines, labels, _ := runLinesNear(t, cfg)
	return lines, labels
}

// runLinesNear is runLines with the fleet's near misses.
func runLinesNear(t *testing.T, cfg Config) ([]string, []Label, []Label) {
	t.Helper()
	fl, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var buf []byte
	for {
		line, _, ok := fl.Next(buf[:0])
		if !ok {
			break
		}
		buf = line
		out = append(out, string(line))
	}
	return out, fl.Labels(), fl.NearMisses()
}

// TestCampaigns: with Entities, each model injects the four attacks spread
// over devices and addresses as their labels say (credential stuffing: one
// address, one failed login per device, 250+ devices; distributed flood:
// 1,000+ new addresses on one route within minutes; leaked key: one key from
// 40+ addresses; a tenant spread: two failed logins on each of 50+ devices of
// one tenant, each from its own new address), and every other line is exactly the line of the run
// without Entities, in the same order: the other figures cannot move.
func TestCampaigns(t *testing.T) {
	for _, model := range Models {
		t.Run(model, func(t *testing.T) {
			cfg := Config{Model: model, Seed: 3, Devices: 800, Duration: 2 * time.Hour, Attacks: true, AttackStart: 0.5}
			base, baseLabels, baseNear := runLinesNear(t, cfg)
			cfg.Entities = true
			lines, labels, near := runLinesNear(t, cfg)
			var outages []Label
			for _, l := range near[len(baseNear):] {
				if l.Type != NearAuthOutage {
					t.Errorf("near miss %s of type %s with Entities", l.ID, l.Type)
				}
				outages = append(outages, l)
			}
			if len(outages) != 1 {
				t.Fatalf("%d authentication outages with Entities, want 1", len(outages))
			}
			if len(labels) != len(baseLabels)+len(EntityAttackTypes) {
				t.Fatalf("%d labels with Entities, want %d", len(labels), len(baseLabels)+len(EntityAttackTypes))
			}
			extra, want, j := 0, 0, 0
			for _, l := range append(labels[len(baseLabels):], outages...) {
				want += l.Events
			}
			for _, line := range lines {
				if j < len(base) && line == base[j] {
					j++
				} else {
					extra++
				}
			}
			if j != len(base) || extra != want {
				t.Fatalf("with Entities: %d of %d lines of the run without, %d more (want all, and %d more)", j, len(base), extra, want)
			}
			evs := decodeCampaignLines(t, lines) // once for every label: decoding is most of the test's time
			for _, l := range append(labels[len(baseLabels):], outages...) {
				checkCampaign(t, l, evs)
			}
		})
	}
}

// campaignEvent is what checkCampaign reads of a line.
type campaignEvent struct {
	at                                          time.Time
	device, ip, method, path, auth, key, tenant string
}

// decodeCampaignLines decodes lines for checkCampaign.
func decodeCampaignLines(t *testing.T, lines []string) []campaignEvent {
	t.Helper()
	evs := make([]campaignEvent, len(lines))
	for i, line := range lines {
		var ev struct {
			TS     string `json:"ts"`
			Device string `json:"device"`
			IP     string `json:"ip"`
			Method string `json:"method"`
			Path   string `json:"path"`
			Auth   string `json:"auth"`
			APIKey string `json:"api_key"`
			Tenant string `json:"tenant"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		at, _ := time.Parse(time.RFC3339, ev.TS)
		evs[i] = campaignEvent{at: at, device: ev.Device, ip: ev.IP, method: ev.Method, path: ev.Path, auth: ev.Auth, key: ev.APIKey, tenant: ev.Tenant}
	}
	return evs
}

// checkCampaign checks the lines of one campaign (decoded, in order)
// against its label.
func checkCampaign(t *testing.T, l Label, evs []campaignEvent) {
	t.Helper()
	devs, ips := map[string]bool{}, map[string]bool{}
	for _, d := range l.Devices {
		devs[d] = true
	}
	for _, ip := range l.IPs {
		ips[ip] = true
	}
	seenDevs, seenIPs, routes, keys, tenants := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	n, failed := 0, 0
	var first, last time.Time
	for _, ev := range evs {
		at := ev.at
		if !devs[ev.device] || !ips[ev.ip] || at.Before(l.Start) || at.After(l.End) {
			continue
		}
		if l.Type == NearAuthOutage && !strings.HasSuffix(ev.path, "/auth/token") {
			continue // the devices' own traffic goes on from the same addresses
		}
		n++
		if first.IsZero() {
			first = at
		}
		last = at
		seenDevs[ev.device], seenIPs[ev.ip] = true, true
		routes[ev.method+" "+strings.ReplaceAll(ev.path, ev.device, "{id}")] = true
		keys[ev.key] = true
		tenants[ev.tenant] = true
		if ev.auth == "failed" {
			failed++
		}
	}
	end := l.End
	if l.Type == NearAuthOutage {
		end = end.Add(-5 * time.Minute) // its label covers 5 minutes of retries after it
	}
	if n != l.Events || !first.Equal(l.Start) || !last.Equal(end) {
		t.Errorf("%s: %d events in [%v, %v]; label says %d in [%v, %v]", l.ID, n, first, last, l.Events, l.Start, l.End)
	}
	switch l.Type {
	case AttackCredentialStuffing:
		if len(seenIPs) != 1 || l.IP == "" || !seenIPs[l.IP] || len(seenDevs) < 250 || failed != n || len(routes) != 1 {
			t.Errorf("%s: %d addresses, %d devices, %d of %d failed, routes %v; want 1 address, 250+ devices, all failed, one route", l.ID, len(seenIPs), len(seenDevs), failed, n, routes)
		}
	case AttackDistributedFlood:
		if len(seenIPs) < 1000 || len(routes) != 1 || last.Sub(first) > 7*time.Minute || len(seenDevs) < 20 {
			t.Errorf("%s: %d addresses on %d routes (%v) over %v, %d devices; want 1000+ on one route within minutes, 20+ devices", l.ID, len(seenIPs), len(routes), routes, last.Sub(first), len(seenDevs))
		}
	case AttackLeakedKey:
		if len(seenIPs) < 40 || len(keys) != 1 || !keys[l.APIKey] || l.APIKey == "" {
			t.Errorf("%s: key %q used as %v from %d addresses; want one key from 40+", l.ID, l.APIKey, keys, len(seenIPs))
		}
	case AttackTenantSpread:
		if len(seenIPs) != n || 2*len(seenDevs) != n || failed != n || len(tenants) != 1 || !tenants[l.Tenant] || len(seenDevs) < 50 || last.Sub(first) > 7*time.Minute {
			t.Errorf("%s: %d events from %d addresses on %d devices of tenants %v, %d failed, over %v; want each from its own address, two per device, all failed, one tenant (%s), 50+ devices, within minutes",
				l.ID, n, len(seenIPs), len(seenDevs), tenants, failed, last.Sub(first), l.Tenant)
		}
	case NearAuthOutage:
		if len(seenIPs) > len(seenDevs) || 2*len(seenDevs) != n || failed != n || len(tenants) != 1 || !tenants[l.Tenant] || len(seenDevs) == 0 {
			t.Errorf("%s: %d events from %d addresses on %d devices of tenants %v, %d failed; want two per device from its usual address (a household's devices share one), all failed, one tenant (%s)",
				l.ID, n, len(seenIPs), len(seenDevs), tenants, failed, l.Tenant)
		}
	case AttackThinFlood:
		perIP := map[string]int{}
		nets := map[netip.Prefix]int{}
		for _, ev := range evs {
			if devs[ev.device] && ips[ev.ip] && !ev.at.Before(l.Start) && !ev.at.After(l.End) {
				perIP[ev.ip]++
			}
		}
		most := 0
		for ip, k := range perIP {
			most = max(most, k)
			a := netip.MustParseAddr(ip)
			bits := 48
			if a.Is4() {
				bits = 24
			}
			nets[netip.PrefixFrom(a, bits).Masked()]++
		}
		if len(seenIPs) < 1000 || most > 3 || len(nets) > 10 || len(routes) != 1 || last.Sub(first) > 7*time.Minute || len(seenDevs) < 20 {
			t.Errorf("%s: %d addresses (at most %d requests each) in %d networks, on %d routes (%v) over %v, %d devices; want 1000+, at most 3 each, in at most 10 networks, on one route within minutes, 20+ devices",
				l.ID, len(seenIPs), most, len(nets), len(routes), routes, last.Sub(first), len(seenDevs))
		}
	default:
		t.Errorf("%s: type %q is no entity attack", l.ID, l.Type)
	}
}

// TestThinFlood: Config.ThinFlood adds one distributed flood spread thin per
// 1,000 devices (1,000+ addresses in at most 10 /24 and /48 networks, 1-3
// requests each, one route, within minutes) and changes no other line or
// label of the run with Entities.
func TestThinFlood(t *testing.T) {
	for _, model := range Models {
		t.Run(model, func(t *testing.T) {
			cfg := Config{Model: model, Seed: 3, Devices: 800, Duration: 2 * time.Hour, Attacks: true, AttackStart: 0.5, Entities: true}
			base, baseLabels := runLines(t, cfg)
			cfg.ThinFlood = true
			lines, labels := runLines(t, cfg)
			if len(labels) != len(baseLabels)+1 || labels[len(labels)-1].Type != AttackThinFlood {
				t.Fatalf("%d labels with ThinFlood, want %d, the last a thin flood", len(labels), len(baseLabels)+1)
			}
			for i := range baseLabels {
				if labels[i].ID != baseLabels[i].ID || labels[i].Events != baseLabels[i].Events {
					t.Fatalf("label %d is %s (%d events) with ThinFlood, %s (%d) without", i, labels[i].ID, labels[i].Events, baseLabels[i].ID, baseLabels[i].Events)
				}
			}
			l := labels[len(labels)-1]
			j, extra := 0, 0
			for _, line := range lines {
				if j < len(base) && line == base[j] {
					j++
				} else {
					extra++
				}
			}
			if j != len(base) || extra != l.Events {
				t.Fatalf("with ThinFlood: %d of %d lines of the run without, %d more (want all, and %d more)", j, len(base), extra, l.Events)
			}
			checkCampaign(t, l, decodeCampaignLines(t, lines))
		})
	}
}
