package worker

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

var sweepT0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).UnixNano()

// deviceEvent returns an event of device name at offset at, with an identity
// that the name determines (so that a test can check every field).
func deviceEvent(name string, at time.Duration) *schemas.Event {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte(name))
	ev.SetClass([]byte("meter/m1"))
	ev.SetText(&ev.APIKey, []byte("key-"+name))
	ev.SetText(&ev.Firmware, []byte("fw/2.1"))
	ev.SetText(&ev.SourceID, []byte("gw-eu-1"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	ev.Source, ev.IDMethod, ev.Protocol = schemas.SourceGateway, schemas.IDAPIKey, schemas.ProtoHTTP
	ev.ClientIP = netip.AddrFrom4([4]byte{10, 0, 1, byte(len(name))})
	ev.Country, ev.ASN = schemas.Country{'D', 'E'}, 3320
	ev.Auth, ev.Status, ev.BytesOut = schemas.AuthOK, 200, 120
	ev.Time = sweepT0 + int64(at)
	ev.ID = uint64(ev.Time) ^ ev.DeviceKey
	return &ev
}

// swept is a copy of one result of a sweep.
type swept struct {
	ev    schemas.Event
	sc    schemas.Scored
	alert bool
}

// runSweeping processes evs in order, sweeping whenever one is due, as the
// pipeline does, and returns what the sweeps reported.
func runSweeping(w *Worker, evs []*schemas.Event) []swept {
	var out []swept
	emit := func(ev *schemas.Event, sc *schemas.Scored, alert *schemas.Alert, _ *schemas.Decision) {
		var s swept
		s.ev.CopyFrom(ev)
		s.sc, s.alert = *sc, alert != nil
		out = append(out, s)
	}
	var sc schemas.Scored
	for _, ev := range evs {
		w.Process(ev, &sc)
		if now, ok := w.SweepDue(); ok {
			w.Sweep(now, emit)
		}
	}
	return out
}

// every returns the events of device name every step from start, until end.
func every(name string, step, start, end time.Duration) []*schemas.Event {
	var evs []*schemas.Event
	for at := start; at < end; at += step {
		evs = append(evs, deviceEvent(name, at))
	}
	return evs
}

// byTime merges event lists in time order.
func byTime(lists ...[]*schemas.Event) []*schemas.Event {
	var all []*schemas.Event
	for _, l := range lists {
		all = append(all, l...)
	}
	for i := 1; i < len(all); i++ { // insertion sort: stable, and the lists are short
		for j := i; j > 0 && all[j].Time < all[j-1].Time; j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	return all
}

// TestSweepReportsASilenceOnce: a meter reporting every minute for two hours
// stops while others go on. The sweep reports it once, 30 minutes (volume's
// MinSilence: its mean gap is short) after its last event, named as its last
// event named it, scored below the alert threshold. A device that pauses for
// less than that, devices that never stop, and a device too young to have a
// baseline are not reported.
func TestSweepReportsASilenceOnce(t *testing.T) {
	w := newWorker(t, 64)
	stop := every("meter-000157", time.Minute, 0, 2*time.Hour)
	pause := byTime(every("meter-pause", time.Minute, 0, 90*time.Minute), every("meter-pause", time.Minute, 115*time.Minute, 5*time.Hour))
	young := every("meter-young", time.Minute, 0, 10*time.Minute)
	var others [][]*schemas.Event
	for i := range 3 {
		others = append(others, every("meter-"+strconv.Itoa(i), 47*time.Second, 0, 5*time.Hour))
	}
	got := runSweeping(w, byTime(append(others, stop, pause, young)...))
	if len(got) != 1 {
		for _, s := range got {
			t.Logf("reported %s at %v: %+v", s.ev.Device, time.Duration(s.ev.Time-sweepT0), s.sc.Reasons())
		}
		t.Fatalf("the sweeps reported %d silences, want 1", len(got))
	}
	s, last := got[0], stop[len(stop)-1]
	if gap := s.ev.Time - last.Time; gap < int64(volume.MinSilence*1e9) || gap > int64(volume.MinSilence*1e9)+4 {
		t.Errorf("silence reported at %v after the last event, want %v", time.Duration(gap), time.Duration(volume.MinSilence*1e9))
	}
	want := deviceEvent("meter-000157", 0)
	for _, c := range []struct{ field, got, want string }{
		{"tenant", string(s.ev.Tenant), string(want.Tenant)},
		{"device", string(s.ev.Device), string(want.Device)},
		{"api key", string(s.ev.APIKey), string(want.APIKey)},
		{"class", string(s.ev.Class), string(want.Class)},
		{"firmware", string(s.ev.Firmware), string(want.Firmware)},
		{"source id", string(s.ev.SourceID), string(want.SourceID)},
		{"source", s.ev.Source.String(), want.Source.String()},
		{"id method", s.ev.IDMethod.String(), want.IDMethod.String()},
		{"client ip", s.ev.ClientIP.String(), want.ClientIP.String()},
		{"country", s.ev.Country.String(), want.Country.String()},
		{"asn", strconv.Itoa(int(s.ev.ASN)), strconv.Itoa(int(want.ASN))},
		{"command", string(s.ev.Command), ""},
	} {
		if c.got != c.want {
			t.Errorf("silence event %s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if s.ev.DeviceKey != want.DeviceKey || s.ev.DeviceAlt != want.DeviceAlt || s.ev.ClassKey != want.ClassKey {
		t.Error("the silence event's keys are not the device's and its class's")
	}
	if s.sc.N != 1 || s.sc.Findings[0].Reason != volume.ReasonSilence || s.sc.Findings[0].Detector != volume.Name {
		t.Fatalf("silence event findings %+v, want one volume silence", s.sc.Reasons())
	}
	if f := s.sc.Findings[0]; f.Observed != float64(s.ev.Time-last.Time)/1e9 || f.Expected < 40 || f.Expected > 80 ||
		s.sc.Score != f.Score || f.Score < volume.SilenceMinScore || f.Score > volume.SilenceMaxScore || s.alert {
		t.Errorf("silence finding %+v, combined %v, alert %v: want the gap against a mean gap near 60 s, score %v-%v, no alert",
			f, s.sc.Score, s.alert, volume.SilenceMinScore, volume.SilenceMaxScore)
	}
	if st := w.SweepStats(); st.Silences != 1 || st.Unnamed != 0 {
		t.Errorf("SweepStats = %+v, want 1 silence, none unnamed", st)
	}
}

// TestSweepWindowsTileEventTime: one sweep over a long stretch of event time
// reports the silences inside it once, and sweeping the same time again, or
// an earlier one, reports nothing.
func TestSweepWindowsTileEventTime(t *testing.T) {
	w := newWorker(t, 64)
	var sc schemas.Scored
	emitted := 0
	emit := func(*schemas.Event, *schemas.Scored, *schemas.Alert, *schemas.Decision) { emitted++ }
	for _, ev := range byTime(every("a", time.Minute, 0, time.Hour), every("b", time.Minute, 0, 2*time.Hour),
		every("c", time.Minute, 0, 5*time.Hour)) {
		w.Process(ev, &sc)
		if ev.Time == sweepT0 {
			w.Sweep(ev.Time, emit) // the first sweep starts the windows
		}
	}
	if n := w.Sweep(sweepT0+int64(6*time.Hour), emit); n != 2 || emitted != 2 {
		t.Errorf("one sweep over 5 hours reported %d (emitted %d), want the 2 silences", n, emitted)
	}
	if n := w.Sweep(sweepT0+int64(5*time.Hour), emit); n != 0 {
		t.Errorf("sweeping the same time again reported %d", n)
	}
}

// TestIdentitiesFollowTheTable: identities of devices the table dropped
// (expired or evicted) go, and the store stays bounded by the table under a
// churn of new devices, between sweeps too.
func TestIdentitiesFollowTheTable(t *testing.T) {
	layout, err := NewLayout(nil)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := decide.NewEngine(decide.DefaultConfig(), decide.NewLimiter(0))
	if err != nil {
		t.Fatal(err)
	}
	const maxDevices = 500
	w, err := New(layout, Config{MaxDevices: maxDevices, IdleTTL: time.Hour}, detectors.NewClassModel(layout.Detectors, detectors.NewClassTable(1<<16, 1<<10)), eng)
	if err != nil {
		t.Fatal(err)
	}
	gone := deviceEvent("meter-gone", 0)
	runSweeping(w, byTime(every("meter-gone", time.Minute, 0, 10*time.Minute), every("meter-stays", time.Minute, 0, 3*time.Hour)))
	if _, ok := w.ids.index[[2]uint64{gone.DeviceKey, gone.DeviceAlt}]; ok {
		t.Error("the identity of a device expired from the table is still held")
	}
	if w.ids.len() != 1 {
		t.Errorf("%d identities held, want the one live device", w.ids.len())
	}
	// Churn: 20,000 devices of one event each, no sweep due (same minute).
	var sc schemas.Scored
	for i := range 20000 {
		ev := deviceEvent("churn-"+strconv.Itoa(i), 3*time.Hour)
		w.Process(ev, &sc)
		if limit := 2*w.Table().Len() + minPruneAt + 1; w.ids.len() > limit {
			t.Fatalf("after %d new devices: %d identities for %d records (limit %d)", i+1, w.ids.len(), w.Table().Len(), limit)
		}
	}
	if w.Table().Len() > maxDevices {
		t.Fatalf("table holds %d > %d devices", w.Table().Len(), maxDevices)
	}
	live := 0
	for k := range w.ids.index {
		if _, ok := w.Table().Lookup(k[0], k[1]); ok {
			live++
		}
	}
	if perEntry := w.ids.bytes() / max(w.ids.len(), 1); perEntry > 4*(idFixed+12+64) && w.ids.bytes() > 2*minCompact {
		t.Errorf("identity arena holds %d bytes for %d identities (%d live)", w.ids.bytes(), w.ids.len(), live)
	}
}

// TestIdentityRoundTrip: what the sweep names a device with is what its last
// event said, for IPv4, IPv6, no address, and fields beyond the stored length.
func TestIdentityRoundTrip(t *testing.T) {
	f := func(name string, change func(*schemas.Event)) {
		t.Helper()
		ev := deviceEvent("meter-1", 0)
		change(ev)
		s := newIdentities()
		s.see(ev)
		var got schemas.Event
		if !s.load([2]uint64{ev.DeviceKey, ev.DeviceAlt}, &got) {
			t.Fatalf("%s: no identity after see", name)
		}
		clip := func(b []byte) string { return string(b[:min(len(b), maxIdentityField)]) }
		if clip(ev.Tenant) != string(got.Tenant) || clip(ev.Device) != string(got.Device) || clip(ev.APIKey) != string(got.APIKey) ||
			clip(ev.Class) != string(got.Class) || clip(ev.Firmware) != string(got.Firmware) || clip(ev.SourceID) != string(got.SourceID) ||
			ev.ClientIP != got.ClientIP || ev.Country != got.Country || ev.ASN != got.ASN || ev.Source != got.Source ||
			ev.IDMethod != got.IDMethod || ev.Protocol != got.Protocol || ev.DeviceKey != got.DeviceKey || ev.DeviceAlt != got.DeviceAlt {
			t.Errorf("%s: identity %+v, want that of %+v", name, got, *ev)
		}
		if len(got.Command) != 0 || got.Time != 0 {
			t.Errorf("%s: a loaded identity carries a command or a time", name)
		}
		before := s.bytes()
		s.see(ev)
		if s.bytes() != before {
			t.Errorf("%s: an unchanged identity was written again", name)
		}
	}
	f("ipv4", func(*schemas.Event) {})
	f("ipv6", func(ev *schemas.Event) { ev.ClientIP = netip.MustParseAddr("2001:db8::17") })
	f("4in6", func(ev *schemas.Event) { ev.ClientIP = netip.MustParseAddr("::ffff:10.0.0.1") })
	f("no address", func(ev *schemas.Event) { ev.ClientIP = netip.Addr{} })
	f("empty texts", func(ev *schemas.Event) { ev.APIKey, ev.Firmware, ev.SourceID = nil, nil, nil })
	f("long firmware", func(ev *schemas.Event) { ev.SetText(&ev.Firmware, []byte(strings.Repeat("x", 3*maxIdentityField))) })
}

// TestIdentityRewritesCompact: a device whose identity keeps changing (a
// roaming client address) leaves garbage that compaction reclaims.
func TestIdentityRewritesCompact(t *testing.T) {
	s := newIdentities()
	for i := range 100 {
		s.see(deviceEvent("meter-"+strconv.Itoa(i), 0))
	}
	live := s.bytes()
	for i := range 100000 {
		ev := deviceEvent("meter-"+strconv.Itoa(i%100), 0)
		ev.ClientIP = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		s.see(ev)
	}
	if s.len() != 100 || s.bytes() > 2*live+2*minCompact {
		t.Errorf("after 100,000 rewrites of 100 identities: %d identities, %d arena bytes (live %d)", s.len(), s.bytes(), live)
	}
	ev := deviceEvent("meter-7", 0)
	ev.ClientIP = netip.MustParseAddr("192.0.2.7")
	s.see(ev)
	var got schemas.Event
	if !s.load([2]uint64{ev.DeviceKey, ev.DeviceAlt}, &got) || got.ClientIP != ev.ClientIP || string(got.Device) != "meter-7" {
		t.Errorf("after compactions, meter-7 reads as %s at %v", got.Device, got.ClientIP)
	}
}

// TestProcessWithIdentitiesDoesNotAllocate: remembering identities costs no
// allocation per event, for a device whose identity is stable and for one
// whose address changes with every event.
func TestProcessWithIdentitiesDoesNotAllocate(t *testing.T) {
	w := newWorker(t, 64)
	var sc schemas.Scored
	stable, roaming := deviceEvent("meter-1", 0), deviceEvent("meter-2", 0)
	i := 0
	step := func() {
		i++
		stable.Time = sweepT0 + int64(i)*int64(time.Second)
		roaming.Time = stable.Time
		roaming.ClientIP = netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		w.Process(stable, &sc)
		w.Process(roaming, &sc)
	}
	for range 20000 { // warm: records, arena capacity
		step()
	}
	if n := testing.AllocsPerRun(2000, step); n != 0 {
		t.Errorf("Process allocates %v times per pair of events", n)
	}
}

// TestColdDevicesKeepNoIdentity: a flood of device ids that send one event
// each (issue 13: 3M of them took 4.35 GB, the identities a big part) keeps
// no identities, since no Sweeper can report a device without history; a
// device with a baseline keeps its identity and is named when it goes silent.
func TestColdDevicesKeepNoIdentity(t *testing.T) {
	w := newWorker(t, 64)
	var sc schemas.Scored
	for i := range 5000 {
		w.Process(deviceEvent("flood-"+strconv.Itoa(i), time.Duration(i)*time.Millisecond), &sc)
	}
	if st := w.SweepStats(); st.Identities != 0 {
		t.Fatalf("%d identities (%d bytes) kept for 5000 devices of one event each, want none", st.Identities, st.IdentityBytes)
	}
	got := runSweeping(w, byTime(every("meter-warm", time.Minute, 0, 2*time.Hour), every("meter-other", time.Minute, 0, 4*time.Hour)))
	if len(got) != 1 || string(got[0].ev.Device) != "meter-warm" {
		t.Fatalf("the sweeps reported %d silences, want meter-warm's alone", len(got))
	}
	if st := w.SweepStats(); st.Identities != 2 || st.Unnamed != 0 {
		t.Fatalf("SweepStats %+v: want the identities of the 2 warm devices and no unnamed silence", st)
	}
}
