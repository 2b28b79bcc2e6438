// Command devmem measures the memory a pipeline's scoring stack takes per
// device: it feeds one event per device (or -rounds of them) for a flood of distinct device ids
// (issue 13: the workers keep a state record and, for the silence sweep, an
// identity per device) through the workers of a score.Stack, sweeping as the
// pipeline does, then reports the process's resident memory (RSS from
// /proc/self/status, not the slab's size) above what it was before the first
// event, per device: after a forced GC (what stays) and at its peak (VmHWM:
// what the machine must have, Go's GC headroom and the tables' rebuilds
// included).
//
//	go run ./bench/devmem -devices 1000000
//	go run ./bench/devmem -devices 3000000
//	go run ./bench/devmem -devices 3000000 -max-devices 1048576  # the default cap for 2 workers, with eviction
//	go run ./bench/devmem -devices 2097152 -rounds 25 -max-devices 1048576  # warm devices: each keeps an identity
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

var (
	devicesFlag = flag.Int("devices", 1_000_000, "distinct device ids, one event each")
	workersFlag = flag.Int("workers", 2, "workers (shards)")
	maxFlag     = flag.Int("max-devices", 0, "state cap per worker (worker.Config.MaxDevices; 0: unlimited)")
	rateFlag    = flag.Int("rate", 1000, "events per second of event time (the sweep runs every minute of it); with -rounds > 1, each round takes -round-time instead")
	roundsFlag  = flag.Int("rounds", 1, "events per device, one per round over all devices: 25 with the default -round-time warms every device (a baseline, so an identity for the silence sweep)")
	roundFlag   = flag.Duration("round-time", 30*time.Second, "event time a round takes when -rounds > 1")
)

// base is the virtual time origin: 2025-01-01T00:00:00Z.
var base = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

func main() {
	flag.Parse()
	st, err := score.New(score.Config{Workers: *workersFlag, Worker: worker.Config{MaxDevices: *maxFlag}})
	if err != nil {
		log.Fatal(err)
	}
	var (
		ev  schemas.Event
		sc  schemas.Scored
		buf []byte
	)
	emit := func(*schemas.Event, *schemas.Scored, *schemas.Alert, *schemas.Decision) {}
	runtime.GC()
	debug.FreeOSMemory()
	rss0, _ := procStatus("VmRSS")
	start := time.Now()
	step := int64(time.Second) / int64(*rateFlag)
	if *roundsFlag > 1 {
		step = max(int64(*roundFlag)/int64(*devicesFlag), 1)
	}
	for k := range *devicesFlag * *roundsFlag {
		i := k % *devicesFlag
		ev.Reset()
		buf = strconv.AppendInt(append(buf[:0], "meter-"...), int64(i), 10)
		ev.SetDevice([]byte("acme-utilities"), buf)
		ev.SetClass([]byte("smart-meter"))
		ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
		ev.SetText(&ev.SourceID, []byte("gateway-eu-1"))
		ev.SetText(&ev.Firmware, []byte("fw-2.4.1"))
		ev.ClientIP = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		ev.Country = schemas.Country{'D', 'E'}
		ev.Time = base + int64(k)*step
		ev.Seq = uint64(k + 1)
		w := st.Workers[shard.Of(ev.DeviceKey, len(st.Workers))]
		w.Process(&ev, &sc)
		if now, ok := w.SweepDue(); ok {
			w.Sweep(now, emit)
		}
	}
	elapsed := time.Since(start)
	hwm, _ := procStatus("VmHWM")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapPeak := ms.HeapSys
	runtime.GC()
	debug.FreeOSMemory()
	rss, _ := procStatus("VmRSS")
	var devices, slab, ids, idBytes int
	var evicted uint64
	for _, w := range st.Workers {
		s := w.Stats()
		devices += s.Devices
		slab += s.Bytes
		evicted += s.LiveEvictions
		sw := w.SweepStats()
		ids += sw.Identities
		idBytes += sw.IdentityBytes
	}
	n := float64(*devicesFlag)
	fmt.Printf("devices fed %d, held %d (evicted %d), workers %d, max-devices/worker %d, record %d bytes, %.1f s\n",
		*devicesFlag, devices, evicted, *workersFlag, *maxFlag, st.Layout.Size, elapsed.Seconds())
	fmt.Printf("RSS after GC: %d MB above start = %.0f bytes per device fed (%.0f per device held)\n",
		(rss-rss0)>>20, float64(rss-rss0)/n, float64(rss-rss0)/float64(max(devices, 1)))
	fmt.Printf("RSS peak (VmHWM): %d MB above start = %.0f bytes per device fed\n", (hwm-rss0)>>20, float64(hwm-rss0)/n)
	fmt.Printf("state slabs %d MB (%.0f B/device held), identities %d (%d MB, %.0f B/identity), Go heap sys at peak %d MB\n",
		slab>>20, float64(slab)/float64(max(devices, 1)), ids, idBytes>>20, float64(idBytes)/float64(max(ids, 1)), heapPeak>>20)
}

// procStatus returns a /proc/self/status field in bytes.
func procStatus(field string) (int, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}
