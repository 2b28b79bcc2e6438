// Command statebench proves that a per-device state store keeps every live
// baseline under a skewed activity mix, and measures its cost per event and
// per device.
//
// It walks virtual seconds t = 0 .. minutes*60-1 and emits the events due in
// each second, without storing schedules: group A (0.5% of the devices)
// reports every second, group B (84.5%) every 300 s, group C (15%) every
// 3600 s; device j of a group with period P reports when t mod P == j mod P.
// For each event it reads the device's record, checks that a device seen
// before within the TTL still holds what was last written (its index and an
// update counter, at both ends of the record), then updates it.
//
// Every hourly device is seen twice only if minutes >= 120 (its phase can be
// up to 3599 s); the output reports how many devices of each group were
// checked at least once.
//
//	go run ./bench/statebench -devices 1000000 -minutes 121 -store table
//	go run ./bench/statebench -devices 1000000 -minutes 121 -store fastcache
//	go run ./bench/statebench -devices 1000000 -minutes 121 -store none   # harness cost only
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/fastcache"

	"github.com/iotwatch/iotwatch/pipeline/state"
)

var (
	devicesFlag  = flag.Int("devices", 1_000_000, "number of devices")
	minutesFlag  = flag.Int("minutes", 121, "virtual minutes to simulate; >= 120 so that every hourly device is seen twice")
	storeFlag    = flag.String("store", "table", "state store: table, fastcache, or none (harness cost only)")
	recordFlag   = flag.Int("record", 128, "record size in bytes (>= 16)")
	ttlFlag      = flag.Duration("ttl", 24*time.Hour, "idle TTL of a record")
	fastcacheMB  = flag.Int("fastcache-mb", 0, "fastcache size in MiB; 0 = 2x the live data (devices x (4-byte header + 16-byte key + record))")
	initialFlag  = flag.Int("initial", -1, "table: InitialDevices; -1 = devices (presized), 0 = default (grows by doubling)")
	progressFlag = flag.Duration("progress", 5*time.Second, "progress report interval on stderr")
)

// base is the virtual time origin: 2025-01-01T00:00:00Z.
var base = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

type group struct {
	name   string
	start  int
	size   int
	period int

	events, checked, lost, corrupt uint64
	revisited                      int // devices checked at least once
	wall                           time.Duration
}

// store is the state store under test.
type store interface {
	// record returns the device's record for update and whether it existed.
	record(key, alt uint64, now int64) (rec []byte, existed bool)
	// commit writes back the record returned by record.
	commit(key, alt uint64, rec []byte)
	report(w *bufio.Writer)
}

type tableStore struct{ t *state.Table }

func (s *tableStore) record(key, alt uint64, now int64) ([]byte, bool) {
	return s.t.Record(key, alt, now)
}
func (s *tableStore) commit(uint64, uint64, []byte) {}
func (s *tableStore) report(w *bufio.Writer) {
	st := s.t.Stats()
	fmt.Fprintf(w, "table_devices=%d table_capacity=%d table_grows=%d table_expired=%d table_live_evictions=%d\n",
		st.Devices, st.Capacity, st.Grows, st.Expired, st.LiveEvictions)
	fmt.Fprintf(w, "slab_bytes=%d slab_bytes_per_device=%.1f\n", st.Bytes, float64(st.Bytes)/float64(*devicesFlag))
}

type fastcacheStore struct {
	c       *fastcache.Cache
	maxB    int
	recSize int
	buf     []byte
	key     [16]byte
}

func (s *fastcacheStore) record(key, alt uint64, _ int64) ([]byte, bool) {
	binary.LittleEndian.PutUint64(s.key[:], key)
	binary.LittleEndian.PutUint64(s.key[8:], alt)
	buf, ok := s.c.HasGet(s.buf[:0], s.key[:])
	if !ok || len(buf) != s.recSize {
		buf = s.buf[:s.recSize]
		clear(buf)
		return buf, false
	}
	s.buf = buf[:0]
	return buf, true
}

func (s *fastcacheStore) commit(key, alt uint64, rec []byte) {
	binary.LittleEndian.PutUint64(s.key[:], key)
	binary.LittleEndian.PutUint64(s.key[8:], alt)
	s.c.Set(s.key[:], rec)
}

func (s *fastcacheStore) report(w *bufio.Writer) {
	var st fastcache.Stats
	s.c.UpdateStats(&st)
	fmt.Fprintf(w, "fastcache_max_bytes=%d fastcache_entries=%d fastcache_bytes_size=%d fastcache_max_bytes_per_device=%.1f\n",
		s.maxB, st.EntriesCount, st.BytesSize, float64(s.maxB)/float64(*devicesFlag))
}

// noneStore keeps nothing: it measures the harness's own cost per event.
type noneStore struct{ buf []byte }

func (s *noneStore) record(uint64, uint64, int64) ([]byte, bool) { clear(s.buf); return s.buf, false }
func (s *noneStore) commit(uint64, uint64, []byte)               {}
func (s *noneStore) report(*bufio.Writer)                        {}

func main() {
	flag.Parse()
	log.SetFlags(0)
	devices, recSize := *devicesFlag, *recordFlag
	if devices < 1000 || devices > 1<<31 {
		log.Fatalf("cannot run statebench: -devices %d must be in [1000, 2^31]", devices)
	}
	if recSize < 16 {
		log.Fatalf("cannot run statebench: -record %d must be >= 16", recSize)
	}
	seconds := *minutesFlag * 60
	ttlSec := uint32(min(int64(*ttlFlag/time.Second), 1<<31))

	nA := devices * 5 / 1000
	nB := devices * 845 / 1000
	groups := []*group{
		{name: "A", start: 0, size: nA, period: 1},
		{name: "B", start: nA, size: nB, period: 300},
		{name: "C", start: nA + nB, size: devices - nA - nB, period: 3600},
	}
	groupOf := func(i int) *group {
		for _, g := range groups {
			if i < g.start+g.size {
				return g
			}
		}
		panic("BUG: device outside every group")
	}

	// Harness bookkeeping, pointer-free: seen[i] = 1 + virtual second of the
	// last event (0 = never), count[i] = updates written so far. Touch the
	// pages now so that they are part of the RSS baseline.
	seen := make([]uint32, devices)
	count := make([]uint32, devices)
	for i := range seen {
		seen[i], count[i] = 0, 0
	}

	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	rss0 := rss()
	resetPeak()

	var st store
	switch *storeFlag {
	case "table":
		initial := *initialFlag
		if initial < 0 {
			initial = devices
		}
		t, err := state.NewTable(state.Config{RecordSize: recSize, InitialDevices: initial, IdleTTL: *ttlFlag})
		if err != nil {
			log.Fatalf("cannot run statebench: %s", err)
		}
		st = &tableStore{t: t}
	case "fastcache":
		maxB := *fastcacheMB << 20
		if maxB == 0 {
			maxB = 2 * devices * (4 + 16 + recSize)
		}
		st = &fastcacheStore{c: fastcache.New(maxB), maxB: maxB, recSize: recSize, buf: make([]byte, 0, recSize)}
	case "none":
		st = &noneStore{buf: make([]byte, recSize)}
	default:
		log.Fatalf("cannot run statebench: unknown -store %q (want table, fastcache or none)", *storeFlag)
	}
	checkStore := *storeFlag != "none"

	var events, phantom uint64
	start := time.Now()
	lastReport, lastEvents := start, uint64(0)
	for t := 0; t < seconds; t++ {
		now := base + int64(t)*int64(time.Second)
		for _, g := range groups {
			gStart := time.Now()
			for j := t % g.period; j < g.size; j += g.period {
				i := g.start + j
				key, alt := splitmix(uint64(i)), splitmix(uint64(i)^0x5bd1e9955bd1e995)
				rec, existed := st.record(key, alt, now)
				if last := seen[i]; last != 0 && uint32(t)-(last-1) <= ttlSec && checkStore {
					g.checked++
					switch {
					case !existed:
						g.lost++
					case binary.LittleEndian.Uint32(rec) != uint32(i) || binary.LittleEndian.Uint32(rec[4:]) != count[i] ||
						binary.LittleEndian.Uint64(rec[len(rec)-8:]) != uint64(count[i])<<32|uint64(i):
						g.lost++
						g.corrupt++
					}
				} else if existed && last == 0 {
					phantom++
				}
				count[i]++
				binary.LittleEndian.PutUint32(rec, uint32(i))
				binary.LittleEndian.PutUint32(rec[4:], count[i])
				binary.LittleEndian.PutUint64(rec[len(rec)-8:], uint64(count[i])<<32|uint64(i))
				st.commit(key, alt, rec)
				seen[i] = uint32(t) + 1
				g.events++
				events++
			}
			g.wall += time.Since(gStart)
		}
		if now := time.Now(); now.Sub(lastReport) >= *progressFlag {
			fmt.Fprintf(os.Stderr, "statebench: virtual minute %d/%d events=%d rate=%.0f events/s\n",
				t/60, *minutesFlag, events, float64(events-lastEvents)/now.Sub(lastReport).Seconds())
			lastReport, lastEvents = now, events
		}
	}
	wall := time.Since(start)

	rss1 := rss()
	peak := peakRSS()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	gcStart := time.Now()
	runtime.GC()
	forcedGC := time.Since(gcStart)

	for i := range seen {
		if seen[i] != 0 && count[i] > 1 {
			groupOf(i).revisited++
		}
	}

	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "store=%s devices=%d minutes=%d record=%d ttl=%s go=%s\n", *storeFlag, devices, *minutesFlag, recSize, *ttlFlag, runtime.Version())
	var lost, corrupt, checked uint64
	for _, g := range groups {
		fmt.Fprintf(w, "group=%s period=%ds devices=%d events=%d devices_seen_twice=%d checks=%d lost=%d ns_per_event=%.1f\n",
			g.name, g.period, g.size, g.events, g.revisited, g.checked, g.lost, float64(g.wall.Nanoseconds())/float64(max(g.events, 1)))
		lost += g.lost
		corrupt += g.corrupt
		checked += g.checked
	}
	fmt.Fprintf(w, "events=%d checks=%d lost_live_baselines=%d (%.3f%% of checks) corrupt=%d phantom=%d\n",
		events, checked, lost, 100*float64(lost)/float64(max(checked, 1)), corrupt, phantom)
	fmt.Fprintf(w, "wall=%s ns_per_event=%.1f events_per_s=%.0f\n", wall.Round(time.Millisecond), float64(wall.Nanoseconds())/float64(events), float64(events)/wall.Seconds())
	st.report(w)
	fmt.Fprintf(w, "rss_delta_bytes=%d rss_bytes_per_device=%.1f peak_rss_delta_bytes_per_device=%.1f heap_sys_delta_bytes_per_device=%.1f\n",
		rss1-rss0, float64(rss1-rss0)/float64(devices), float64(peak-rss0)/float64(devices),
		float64(int64(ms1.HeapSys)-int64(ms0.HeapSys))/float64(devices))
	fmt.Fprintf(w, "gc_cycles=%d gc_pause_total=%s forced_gc_with_store_live=%s\n",
		ms1.NumGC-ms0.NumGC, time.Duration(ms1.PauseTotalNs-ms0.PauseTotalNs), forcedGC.Round(time.Microsecond))
	runtime.KeepAlive(st)
	runtime.KeepAlive(seen)
	runtime.KeepAlive(count)
}

// splitmix is the splitmix64 finalizer: device index -> 64-bit key.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// rss returns the resident set size in bytes, from /proc/self/statm.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		log.Fatalf("cannot read RSS: %s", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		log.Fatalf("cannot parse /proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		log.Fatalf("cannot parse /proc/self/statm: %s", err)
	}
	return pages * int64(os.Getpagesize())
}

// resetPeak resets VmHWM (Linux >= 4.0); failures leave the peak as it was.
func resetPeak() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS returns VmHWM in bytes, from /proc/self/status.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		log.Fatalf("cannot read peak RSS: %s", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				log.Fatalf("cannot parse VmHWM %q: %s", rest, err)
			}
			return kb << 10
		}
	}
	log.Fatalf("cannot find VmHWM in /proc/self/status")
	return 0
}
