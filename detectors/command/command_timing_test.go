package command

import (
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device on its usual command and its class (120 peers)
// on that command, its repetition and a config fetch, then measures Observe on
// events of raw commands in turn (numeric query parameters are arguments; the
// usual command carries temp=19-23, and the class knows its range).
func benchObserve(b *testing.B, raw ...string) { benchObserveOut(b, 0, raw...) }

// benchObserveOut is benchObserve with responses of out bytes (status 200);
// the class knows the config fetch's sizes (800-1,000 bytes, 120 peers).
func benchObserveOut(b *testing.B, out uint64, raw ...string) {
	fleet := newTestStats(1<<16, 1<<10)
	var d Detector
	state := make([]byte, StateSize)
	mk := func(raw string) *schemas.Event {
		ev := new(schemas.Event)
		ev.SetDevice([]byte("acme"), []byte("d-1"))
		ev.SetClass([]byte("meter/x"))
		ev.SetRawCommand(nil, []byte(raw))
		return ev
	}
	t := int64(1736121600e9)
	usual := mk("POST /v1/devices/d-1/readings")
	config := mk("GET /v1/devices/d-1/config")
	for i := range 120 {
		peer := *usual
		peer.DeviceKey = uint64(i+1) * 0x9e3779b97f4a7c15
		fleet.learn(&peer, usual.CommandID)
		peer.SetCommand(config.Command)
		peer.Status, peer.BytesOut = 200, uint64(800+200*(i%3)/2)
		fleet.learn(&peer, 0)
	}
	for i := range 2000 {
		t += 60e9
		usual.Time = t
		usual.SetArg([]byte("temp"), 19+float64(i%5))
		d.Observe(usual, state, fleet)
		fleet.learn(usual, 0)
		peer := *usual // the argument's range, from 8 devices
		peer.DeviceKey = uint64(i%8+1) * 0x9e3779b97f4a7c15
		fleet.learn(&peer, 0)
	}
	evs := make([]*schemas.Event, len(raw))
	for i, r := range raw {
		evs[i] = mk(r)
		evs[i].Status, evs[i].BytesOut = 200, out
	}
	b.ReportAllocs()
	i := 0
	cpu := threadcpu.Start()
	for b.Loop() {
		ev := evs[i%len(evs)]
		i++
		t += 1e8
		ev.Time = t
		d.Observe(ev, state, fleet)
	}
	cpu.Report(b)
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, "POST /v1/devices/d-1/readings") })
	b.Run("args", func(b *testing.B) { benchObserve(b, "POST /v1/devices/d-1/readings?temp=21&fan=2") })
	b.Run("out_of_range", func(b *testing.B) { benchObserve(b, "POST /v1/devices/d-1/readings?temp=90") })
	// A config fetch of the usual size (the class's range read), and one
	// twenty times it (response_size_out_of_range).
	b.Run("response", func(b *testing.B) { benchObserveOut(b, 900, "GET /v1/devices/d-1/config") })
	b.Run("response_out_of_range", func(b *testing.B) { benchObserveOut(b, 18000, "GET /v1/devices/d-1/config") })
	b.Run("privileged", func(b *testing.B) { benchObserve(b, "POST /v1/devices/d-1/firmware-update") })
	// config is known to the class, but no peer went from readings to config
	// or back: every other event is a rare_transition (the step after it is
	// part of the same finding).
	b.Run("transition", func(b *testing.B) {
		benchObserve(b, "POST /v1/devices/d-1/readings", "GET /v1/devices/d-1/config")
	})
	b.Run("enumeration", func(b *testing.B) {
		b.StopTimer()
		var raw []string
		for i := range 64 {
			raw = append(raw, "GET /v1/devices/d-"+string(rune('a'+i%26))+string(rune('a'+i/26))+"9/status")
		}
		b.StartTimer()
		benchObserve(b, raw...)
	})
}

func BenchmarkPrivileged(b *testing.B) {
	cmd := []byte("POST /v1/devices/{id}/telemetry/batch")
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		Privileged(cmd)
	}
	cpu.Report(b)
}

// BenchmarkStatsLearn measures what a worker's class model adds per event
// for the command detector: learning the command, the transition and, when
// the device adopts a command from its home network, the adoption (new: a
// command the warm device never issued, one of 1,024 in turn).
func BenchmarkStatsLearn(b *testing.B) {
	for _, name := range []string{"known", "new"} {
		b.Run(name, func(b *testing.B) {
			fleet := newTestStats(1<<16, 1<<10)
			var d Detector
			state := make([]byte, StateSize)
			ev := new(schemas.Event)
			ev.SetDevice([]byte("acme"), []byte("d-1"))
			ev.SetClass([]byte("meter/x"))
			ev.SetRawCommand(nil, []byte("POST /v1/devices/d-1/readings"))
			ev.ClientIP = netip.MustParseAddr("192.0.2.10")
			t := int64(1736121600e9)
			for range 100 {
				t += 60e9
				ev.Time = t
				d.Observe(ev, state, fleet)
			}
			ids := [...]uint64{ev.CommandID, 0}
			b.ReportAllocs()
			i := uint64(0)
			cpu := threadcpu.Start()
			for b.Loop() {
				i++
				if name == "new" {
					ids[1] = (i%1024 + 1) * 0x9e3779b97f4a7c15 // within the table's slots
					ev.CommandID = ids[1]
				}
				t += 1e8
				ev.Time = t
				fleet.Learn(ev, state)
			}
			cpu.Report(b)
			if name == "new" && fleet.ClassAdopters(ev.ClassKey, ev.CommandID, 1, t) == 0 {
				b.Fatal("no adoption learned")
			}
		})
	}
}
