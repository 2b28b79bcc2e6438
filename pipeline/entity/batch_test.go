package entity

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestObserveBatchJudgesAsObserve: an owner judging observations in batches
// (ObserveBatch, with its prefetches, batches of every size from 1 to past
// MaxPrefetchBatch) emits the same alerts and decisions in the same order,
// and ends with the same records, as an owner judging them one by one
// (Observe). The traffic has what each path of an owner judges: the
// distributed flood of TestDistributedFlood (new addresses, waves, blocks),
// a credential-stuffing address failing for 300 devices, a leaked API key
// used from 60 networks, the tenant and class of every event (three tenants,
// two classes each, interleaved), and redeliveries.
func TestObserveBatchJudgesAsObserve(t *testing.T) {
	obs := batchTraffic(t)
	judge := func(batched bool) (*Owner, []string) {
		var out []string
		emit := func(a *schemas.Alert, d *schemas.Decision) {
			if a != nil {
				out = append(out, fmt.Sprintf("alert %s %s %+v", a.Entity, a.ID, a.Reasons))
			}
			if d != nil {
				out = append(out, fmt.Sprintf("decision %s %s=%s %s", d.Action, d.Scope, d.Value, d.ID))
			}
		}
		o := newOwner(t, Config{}, decide.Config{})
		if !batched {
			for i := range obs {
				o.Observe(&obs[i], emit)
			}
			return o, out
		}
		for i, n := 0, 1; i < len(obs); n = n%(2*MaxPrefetchBatch+5) + 1 {
			j := min(i+n, len(obs))
			o.ObserveBatch(obs[i:j], emit)
			i = j
		}
		return o, out
	}
	one, want := judge(false)
	batched, got := judge(true)
	alerts, decisions := 0, 0
	for _, s := range want {
		if s[0] == 'a' {
			alerts++
		} else {
			decisions++
		}
	}
	t.Logf("%d observations: %d alerts and %d decisions", len(obs), alerts, decisions)
	if alerts < 100 || decisions < 100 {
		t.Fatalf("the traffic raised %d alerts and %d decisions one by one: too few to compare", alerts, decisions)
	}
	if !slices.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("batched: %d results, one by one: %d; the first difference, at %d:\nbatched:    %s\none by one: %s", len(got), len(want), i, got[i], want[i])
			}
		}
		t.Fatalf("batched: %d results, one by one: %d", len(got), len(want))
	}
	if g, w := records(batched), records(one); !slices.Equal(g, w) {
		t.Errorf("batched judging left %d records, one by one %d, or different ones", len(g), len(w))
	}
	if g, w := batched.Stats(), one.Stats(); g != w {
		t.Errorf("batched stats %+v, one by one %+v", g, w)
	}
}

// records returns o's records, each as its key and bytes, in slot order.
func records(o *Owner) []string {
	var out []string
	o.Table().Range(func(key, alt uint64, lastSeen int64, rec []byte) bool {
		out = append(out, fmt.Sprintf("%x/%x %d %x", key, alt, lastSeen, rec))
		return true
	})
	return out
}

// batchTenants and batchClasses are the tenants and classes of batchTraffic.
var batchTenants, batchClasses = [][]byte{[]byte("acme"), []byte("globex"), []byte("initech")},
	[][]byte{[]byte("meter/m1"), []byte("camera/cx-200")}

// batchTraffic returns TestObserveBatchJudgesAsObserve's observations.
func batchTraffic(t *testing.T) []Obs {
	evs, _, _ := waveFleet()
	var obs []Obs
	seq := uint64(0)
	add := func(ev *schemas.Event) {
		seq++
		ev.Seq, ev.ID = seq, seq
		// Three tenants and two classes each, interleaved within a batch:
		// each observation's tenant and class records are its own.
		ev.Tenant = batchTenants[seq%3]
		ev.SetClass(batchClasses[seq/3%2])
		if ob, ok := ObsOf(ev); ok {
			obs = append(obs, ob)
		}
		if ob, ok := KeyObsOf(ev); ok {
			obs = append(obs, ob)
		}
	}
	stuffer := netip.MustParseAddr("198.51.100.7")
	stuffAt := t0 + 30*int64(time.Minute)
	leakAt := t0 + 40*int64(time.Minute)
	stuffed, leaked := 0, 0
	for _, e := range evs {
		for stuffed < 300 && stuffAt+int64(stuffed)*int64(time.Second) <= e.at {
			var ev schemas.Event
			ev.ClientIP, ev.DeviceKey, ev.Time = stuffer, mix(uint64(50_000+stuffed)), stuffAt+int64(stuffed)*int64(time.Second)
			ev.Protocol, ev.Status, ev.Auth = schemas.ProtoHTTP, 401, schemas.AuthFailed
			add(&ev)
			stuffed++
		}
		for leaked < 60 && leakAt+int64(leaked)*int64(2*time.Second) <= e.at {
			ip := netip.AddrFrom4([4]byte{203, 0, byte(leaked), 9})
			add(keyEvent("leaked-key", mix(uint64(60_000+leaked)), ip, leakAt+int64(leaked)*int64(2*time.Second), 0))
			leaked++
		}
		var ev schemas.Event
		ev.ClientIP, ev.DeviceKey, ev.CommandID, ev.Time = e.ip, e.device, e.route, e.at
		ev.Protocol, ev.Status, ev.Auth = schemas.ProtoHTTP, 200, schemas.AuthOK
		add(&ev)
		if seq%997 == 0 { // a redelivery of a recent observation
			obs = append(obs, obs[len(obs)-3])
		}
	}
	return obs
}
