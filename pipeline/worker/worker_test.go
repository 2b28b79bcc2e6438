package worker

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/schemas"
)

func newWorker(tb testing.TB, devices int) *Worker {
	tb.Helper()
	layout, err := NewLayout(nil)
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := decide.NewEngine(decide.DefaultConfig(), decide.NewLimiter(0))
	if err != nil {
		tb.Fatal(err)
	}
	eng.UseCalibration(decide.NewCalibration(decide.DefaultAlertBudget)) // as score.Stack does: learned on every event
	w, err := New(layout, Config{InitialDevices: devices, IdleTTL: 24 * time.Hour}, detectors.NewClassModel(layout.Detectors, detectors.NewClassTable(1<<16, 1<<10)), eng)
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

func TestLayoutBudgetAndErrors(t *testing.T) {
	l, err := NewLayout(nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.Detectors.Size > detectors.StateBudget {
		t.Errorf("the detectors need %d bytes of state per device, budget %d", l.Detectors.Size, detectors.StateBudget)
	}
	if _, err := NewLayout([]string{"volume", "astrology"}); err == nil || !strings.Contains(err.Error(), `"astrology"`) {
		t.Errorf("unknown detector error = %v", err)
	}
	one, _ := NewLayout([]string{volume.Name})
	if one.Version == l.Version {
		t.Error("layouts of different detector sets share a version")
	}
}

func meterEvent(at time.Duration, country string) *schemas.Event {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("meter-1"))
	ev.SetClass([]byte("meter/m1"))
	cmd, res := schemas.Normalizer{}.Append(nil, []byte("POST"), []byte("/v1/devices/meter-1/readings"))
	ev.SetCommand(cmd)
	ev.Resource = res
	ev.Country = schemas.Country{country[0], country[1]}
	ev.Auth, ev.Status = schemas.AuthOK, 200
	ev.Time = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).Add(at).UnixNano()
	ev.ID = uint64(at)
	return &ev
}

// TestForeignRecordIsColdStart checks the record versioning: a record written
// under another layout reads as no history.
func TestForeignRecordIsColdStart(t *testing.T) {
	w := newWorker(t, 16)
	var out schemas.Scored
	for i := range 200 {
		w.Process(meterEvent(time.Duration(i)*time.Minute, "DE"), &out)
	}
	// A well-established device seen from another country is news...
	w.Process(meterEvent(201*time.Minute, "BR"), &out)
	if out.N == 0 {
		t.Fatal("a new country after 200 minutes of history raised nothing")
	}
	// ...but not if its record was written by another layout: cold start.
	ev := meterEvent(202*time.Minute, "AR")
	rec, _ := w.Table().Record(ev.DeviceKey, ev.DeviceAlt, ev.Time)
	binary.LittleEndian.PutUint32(rec, w.layout.Version+2)
	w.Process(ev, &out)
	if out.N != 0 {
		t.Errorf("a foreign record must read as no history, got findings %+v", out.Reasons())
	}
}

// sampleLines returns a day of a quiet simulated fleet (no attacks) as lines.
func sampleLines(tb testing.TB, devices, n int) [][]byte {
	cfg := sim.DefaultConfig()
	cfg.Devices, cfg.Duration, cfg.Attacks = devices, 24*time.Hour, false
	sim, err := sim.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var lines [][]byte
	for len(lines) < n {
		l, _, ok := sim.Next(nil)
		if !ok {
			break
		}
		lines = append(lines, l)
	}
	return lines
}

// BenchmarkEventPath is the per-event path of the pipeline in one goroutine:
// decode a canonical JSON line, pick the shard, read the device's record, run
// every detector, update the record, decide. Workers = 2 as on this machine.
// Replays wrap around with event times shifted forward, so time never goes back.
func BenchmarkEventPath(b *testing.B) { benchEventPath(b, false, 0) }

// BenchmarkEventPathEntities is BenchmarkEventPath with the entity stage
// (issue 14): each event's entity observations (entity.ObsOf, KeyObsOf),
// their owners (entity.Shard, of two as there are two workers) and the
// owners judging the client IP, its prefix and the API key (when it does
// not identify the device). In the pipeline the owners run on their own
// goroutines; here everything runs in one, so the difference from
// BenchmarkEventPath is the CPU the entity stage adds per event (the
// channel send from ingest to the owner, ~50-100 ns, is not in either).
// Each owner judges its observations as a busy pipeline's owner judges what
// waits in its input: entity.MaxPrefetchBatch at a time (ObserveBatch).
func BenchmarkEventPathEntities(b *testing.B) { benchEventPath(b, true, entity.MaxPrefetchBatch) }

// BenchmarkEventPathEntitiesOneByOne is BenchmarkEventPathEntities with
// each observation judged right after its event (Observe, as the replay
// stack does, and the pipeline's owners did before they judged batches).
func BenchmarkEventPathEntitiesOneByOne(b *testing.B) { benchEventPath(b, true, 1) }

// BenchmarkEventPathSteady is BenchmarkEventPath with each replay shifted
// by its lines' span (plus a minute) instead of 48h: the fleet's time runs
// on, and its addresses stay live from one pass to the next.
func BenchmarkEventPathSteady(b *testing.B) { benchEventPathShift(b, false, 0, 0) }

// BenchmarkEventPathEntitiesSteady is BenchmarkEventPathEntities replayed
// as BenchmarkEventPathSteady is. The 48h shift of
// BenchmarkEventPathEntities expires every entity record (Config.IdleTTL,
// a day) each pass: at 20,000 devices a pass (200,000 lines) spans about
// 10 minutes, so nearly every address is new again every 10 minutes (its
// record made anew, its route's, the swarm's and the network-wave counts
// touched), a fleet renumbered six times an hour. Here an address is new
// once, in the warm-up pass, as in a fleet whose addresses change over
// days: the difference between the two is what that churn costs.
func BenchmarkEventPathEntitiesSteady(b *testing.B) {
	benchEventPathShift(b, true, entity.MaxPrefetchBatch, 0)
}

// benchEventPath runs the event path, with the entity stage if entities
// (each owner judging batch observations at a time).
func benchEventPath(b *testing.B, entities bool, batch int) {
	benchEventPathShift(b, entities, batch, 48*time.Hour)
}

// benchEventPathShift is benchEventPath with each replay's event times
// shifted by shift more than the last's; 0: by the lines' span plus a
// minute (spanOf).
func benchEventPathShift(b *testing.B, entities bool, batch int, shift time.Duration) {
	for _, devices := range []int{2000, 20000} {
		b.Run("devices="+strconv.Itoa(devices), func(b *testing.B) {
			lines := sampleLines(b, devices, 200000)
			span := shift
			if span == 0 {
				span = spanOf(b, lines) + time.Minute
			}
			step := newEventPathShift(b, lines, devices, entities, batch, entity.Config{}, span)
			b.ReportAllocs()
			cpu := threadcpu.Start()
			for b.Loop() {
				step()
			}
			cpu.Report(b)
		})
	}
}

// TestSteadyReplayJudges: the steady replay (BenchmarkEventPathSteady,
// BenchmarkEventPathEntitiesSteady) judges and learns every event of every
// pass, as a fleet's live traffic is, rather than treating the passes after
// the first as redeliveries of events their records already learned (no
// judging, no learning: what those benchmarks measured before their
// replays continued the stream's sequence); and the 48h-shifted replay,
// whose records expire, does too.
func TestSteadyReplayJudges(t *testing.T) {
	lines := sampleLines(t, 200, 4000)
	steady := spanOf(t, lines) + time.Minute
	for _, span := range []time.Duration{steady, 48 * time.Hour} {
		step, workers, owners := eventPathOf(t, lines, 200, true, entity.MaxPrefetchBatch, entity.Config{}, span)
		for range 2 * len(lines) {
			step()
		}
		for i, w := range workers {
			if n := w.Relearned(); n != 0 {
				t.Errorf("span %v: worker %d took %d events for redeliveries", span, i, n)
			}
		}
		for i, o := range owners {
			if n := o.Stats().Relearned; n != 0 {
				t.Errorf("span %v: entity owner %d took %d observations for redeliveries", span, i, n)
			}
		}
	}
}

// spanOf returns the time from the first of lines' events to the last.
func spanOf(b testing.TB, lines [][]byte) time.Duration {
	var dec schemas.Decoder
	var ev schemas.Event
	var first int64
	for i, l := range [][]byte{lines[0], lines[len(lines)-1]} {
		if err := dec.Decode(l, uint64(i), 0, 0, &ev); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			first = ev.Time
		}
	}
	return time.Duration(ev.Time - first)
}

// newEventPath returns the step of benchEventPath's path over lines (one
// event a call), warmed up with a pass over them (every device has a
// record). Replays wrap around with event times shifted 48h a pass.
func newEventPath(b *testing.B, lines [][]byte, devices int, entities bool, batch int, cfg entity.Config) (step func()) {
	return newEventPathShift(b, lines, devices, entities, batch, cfg, 48*time.Hour)
}

// newEventPathShift is newEventPath with event times shifted span a pass.
func newEventPathShift(b *testing.B, lines [][]byte, devices int, entities bool, batch int, cfg entity.Config, span time.Duration) (step func()) {
	step, _, _ = eventPathOf(b, lines, devices, entities, batch, cfg, span)
	return step
}

// eventPathOf is newEventPathShift, with its workers and entity owners.
func eventPathOf(b testing.TB, lines [][]byte, devices int, entities bool, batch int, cfg entity.Config, span time.Duration) (step func(), workers []*Worker, owners []*entity.Owner) {
	workers = []*Worker{newWorker(b, devices), newWorker(b, devices)}
	if entities {
		owners = benchOwners(b, cfg)
	}
	emit := func(*schemas.Alert, *schemas.Decision) {}
	queued := make([][]entity.Obs, len(owners)) // by owner: its input
	for j := range queued {
		queued[j] = make([]entity.Obs, 0, batch)
	}
	observe := func(ob *entity.Obs) {
		s := entity.Shard(ob, len(owners))
		if batch == 1 {
			owners[s].Observe(ob, emit)
			return
		}
		if queued[s] = append(queued[s], *ob); len(queued[s]) == batch {
			owners[s].ObserveBatch(queued[s], emit)
			queued[s] = queued[s][:0]
		}
	}
	var dec schemas.Decoder
	var ev schemas.Event
	var out schemas.Scored
	// A replay shifted by less than the records' idle TTL (a day, for the
	// devices' and the entities') finds them live, learned up to the last
	// pass's positions: it continues the stream, or every event of a pass
	// after the first would be a redelivery, neither judged nor learned
	// (pass p's line i has sequence p*len(lines)+i). A replay shifted by
	// more finds them expired, and restarts at 0 as before.
	seqStep := uint64(0)
	if span < 24*time.Hour {
		seqStep = uint64(len(lines))
	}
	i, shift, seq0 := 0, int64(0), uint64(0)
	step = func() {
		if i == len(lines) {
			i, shift, seq0 = 0, shift+int64(span), seq0+seqStep
		}
		if err := dec.Decode(lines[i], seq0+uint64(i), 0, 0, &ev); err != nil {
			b.Fatal(err)
		}
		ev.Time += shift
		if !entities {
			workers[shard.Of(ev.DeviceKey, len(workers))].Process(&ev, &out)
			i++
			return
		}
		ob, ok := entity.ObsOf(&ev)
		kob, kok := entity.KeyObsOf(&ev)
		workers[shard.Of(ev.DeviceKey, len(workers))].Process(&ev, &out)
		if ok {
			observe(&ob)
		}
		if kok {
			observe(&kob)
		}
		i++
	}
	for range len(lines) {
		step()
	}
	return step, workers, owners
}

// BenchmarkEntityCost is the CPU the entity stage adds per event, measured
// in one process so that the machine's load falls alike on what is
// compared: four event paths over the same lines (without entities, with
// each observation judged one by one, with each owner's judged
// entity.MaxPrefetchBatch at a time, and the same batches with the entity
// tables on base pages, entity.Config.BasePages), run in turn for chunks of
// costChunk events (the order rotating each round), each chunk's thread CPU
// time taken. It reports the median over the rounds of the per-round
// differences from the path without entities (one-added-ns/event,
// batch-added-ns/event, basepages-added-ns/event), of batched from one by
// one (batch-minus-one-ns/event) and of huge pages from base pages
// (huge-minus-base-ns/event), and the medians of the paths' costs.
// Run it with -benchtime Nx: N rounds, N*costChunk events per path.
func BenchmarkEntityCost(b *testing.B) {
	for _, devices := range []int{2000, 20000} {
		b.Run("devices="+strconv.Itoa(devices), func(b *testing.B) {
			lines := sampleLines(b, devices, 200000)
			const paths = 4
			steps := [paths]func(){
				newEventPath(b, lines, devices, false, 0, entity.Config{}),
				newEventPath(b, lines, devices, true, 1, entity.Config{}),
				newEventPath(b, lines, devices, true, entity.MaxPrefetchBatch, entity.Config{}),
				newEventPath(b, lines, devices, true, entity.MaxPrefetchBatch, entity.Config{BasePages: true}),
			}
			per := interleave(b, steps[:])
			median, diff := medianOf, func(p, from int) []float64 { return diffOf(per, p, from) }
			b.ReportMetric(median(per[0]), "none-ns/event")
			b.ReportMetric(median(per[1]), "one-ns/event")
			b.ReportMetric(median(per[2]), "batch-ns/event")
			b.ReportMetric(median(per[3]), "basepages-ns/event")
			b.ReportMetric(median(diff(1, 0)), "one-added-ns/event")
			b.ReportMetric(median(diff(2, 0)), "batch-added-ns/event")
			b.ReportMetric(median(diff(3, 0)), "basepages-added-ns/event")
			b.ReportMetric(median(diff(2, 1)), "batch-minus-one-ns/event")
			b.ReportMetric(median(diff(2, 3)), "huge-minus-base-ns/event")
		})
	}
}

// interleave runs steps (paths of one event each) costChunk events at a
// time, in turn, the first path of a round rotating, for b.Loop's rounds,
// and returns the thread CPU ns per event of each path in each round: the
// paths share the machine's drift, so their difference in a round is
// what one adds to another.
func interleave(b *testing.B, steps []func()) [][]float64 {
	per := make([][]float64, len(steps))
	for p := range per {
		per[p] = make([]float64, 0, 1024) // no allocation in the loop below 1024 rounds
	}
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for round := 0; b.Loop(); round++ {
		// b.Loop counts rounds; each runs costChunk events of each path.
		for k := range steps {
			p := (round + k) % len(steps)
			t := cpu.Nanos()
			for range costChunk {
				steps[p]()
			}
			per[p] = append(per[p], float64(cpu.Nanos()-t)/costChunk)
		}
	}
	cpu.Report(b)
	return per
}

// medianOf returns the median of v.
func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// diffOf returns, round by round, what path p of per cost more than path from.
func diffOf(per [][]float64, p, from int) []float64 {
	d := make([]float64, len(per[p]))
	for r := range d {
		d[r] = per[p][r] - per[from][r]
	}
	return d
}

// BenchmarkClassCost is what class entities (entity.Config.NoClass off)
// add to the event path with the entity stage (BenchmarkEventPathEntities'
// path, batches of entity.MaxPrefetchBatch), measured as BenchmarkEntityCost
// measures the entity stage: the paths interleaved in one process, the
// median of their difference per round. Every sample event has a class.
func BenchmarkClassCost(b *testing.B) {
	for _, devices := range []int{2000, 20000} {
		b.Run("devices="+strconv.Itoa(devices), func(b *testing.B) {
			lines := sampleLines(b, devices, 200000)
			var dec schemas.Decoder
			var ev schemas.Event
			if err := dec.Decode(lines[0], 0, 0, 0, &ev); err != nil || len(ev.Class) == 0 {
				b.Fatalf("sample event without a class (%v): the benchmark would measure nothing", err)
			}
			per := interleave(b, []func(){
				newEventPath(b, lines, devices, false, 0, entity.Config{}),
				newEventPath(b, lines, devices, true, entity.MaxPrefetchBatch, entity.Config{NoClass: true}),
				newEventPath(b, lines, devices, true, entity.MaxPrefetchBatch, entity.Config{}),
			})
			b.ReportMetric(medianOf(per[0]), "none-ns/event")
			b.ReportMetric(medianOf(per[1]), "noclass-ns/event")
			b.ReportMetric(medianOf(per[2]), "class-ns/event")
			b.ReportMetric(medianOf(diffOf(per, 1, 0)), "noclass-added-ns/event")
			b.ReportMetric(medianOf(diffOf(per, 2, 0)), "class-added-ns/event")
			b.ReportMetric(medianOf(diffOf(per, 2, 1)), "class-minus-noclass-ns/event")
		})
	}
}

// costChunk is the events of one path BenchmarkEntityCost runs at a time.
const costChunk = 20000

// BenchmarkEntityStage is the entity stage of BenchmarkEventPathEntities
// alone: the same fleet's observations (taken once, before the timer), their
// owner (entity.Shard, of two) and the owners judging them, replayed as that
// benchmark replays its lines (event times shifted 48h a pass). Without the
// device path in between, the entity tables stay in the caches: it is the
// stage's own work, a floor under the end-to-end difference.
func BenchmarkEntityStage(b *testing.B) {
	for _, devices := range []int{2000, 20000} {
		b.Run("devices="+strconv.Itoa(devices), func(b *testing.B) {
			var obs []entity.Obs
			var dec schemas.Decoder
			var ev schemas.Event
			for i, l := range sampleLines(b, devices, 200000) {
				if err := dec.Decode(l, uint64(i), 0, 0, &ev); err != nil {
					b.Fatal(err)
				}
				if ob, ok := entity.ObsOf(&ev); ok {
					obs = append(obs, ob)
				}
			}
			owners := benchOwners(b, entity.Config{})
			emit := func(*schemas.Alert, *schemas.Decision) {}
			i, shift := 0, int64(0)
			step := func() {
				if i == len(obs) {
					i, shift = 0, shift+int64(48*time.Hour)
				}
				ob := obs[i]
				ob.Time += shift
				owners[entity.Shard(&ob, len(owners))].Observe(&ob, emit)
				i++
			}
			for range len(obs) {
				step()
			}
			b.ReportAllocs()
			cpu := threadcpu.Start()
			for b.Loop() {
				step()
			}
			cpu.Report(b)
		})
	}
}

// TestRedeliveryIsNotLearnedTwice checks exactly-once learning: an event at or
// before the stream position a record has learned up to is scored, but leaves
// the record and the class table as they were; Learn teaches like Process.
func TestRedeliveryIsNotLearnedTwice(t *testing.T) {
	w := newWorker(t, 16)
	var out schemas.Scored
	at := func(i int) *schemas.Event {
		ev := meterEvent(time.Duration(i)*time.Minute, "DE")
		ev.Seq, ev.Line = uint64(10+i/2), uint32(i%2) // two events per message
		return ev
	}
	for i := range 200 {
		w.Process(at(i), &out)
	}
	ev := at(0)
	rec, _ := w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt)
	before := append([]byte(nil), rec...)

	// A flood from a new country, redelivered: scored (it is surprising), not learned.
	for i := 120; i < 200; i++ {
		ev := at(i)
		ev.Country = schemas.Country{'B', 'R'}
		w.Process(ev, &out)
		if i == 120 && out.N == 0 {
			t.Error("a redelivered event from a new country was not scored")
		}
	}
	if rec, _ := w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt); string(rec) != string(before) {
		t.Error("redelivered events changed the device's record")
	}
	if got := w.Relearned(); got != 80 {
		t.Errorf("Relearned = %d, want 80", got)
	}

	// The same country on a new position is learned: the record changes, and
	// again only once.
	next := at(200)
	next.Country = schemas.Country{'B', 'R'}
	w.Learn(next)
	rec, _ = w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt)
	if string(rec) == string(before) {
		t.Fatal("Learn of a new position did not change the record")
	}
	if pos := binary.LittleEndian.Uint64(rec[hdrSeq:]); pos != next.Seq {
		t.Errorf("record position = %d, want %d", pos, next.Seq)
	}
	after := append([]byte(nil), rec...)
	w.Learn(next)
	if rec, _ := w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt); string(rec) != string(after) {
		t.Error("learning the same position twice changed the record")
	}
}

// TestEnforcementIsNotTheDevices: what the enforcement point does is not the
// device's behaviour. A meter with two hours of history floods and is
// blocked; while the block holds, the flood goes on and is refused (403, the
// gateway's auth failure), logged with the enforcer's verdict or without it;
// after the block expires the meter is back to normal: no new alert, no
// renewed block, and the refused requests taught its record nothing. An
// enforcer outage (500s from the gateway) on a healthy meter is no error
// burst either.
func TestEnforcementIsNotTheDevices(t *testing.T) {
	const ttl = 2 * time.Minute // the 2-minute block
	run := func(t *testing.T, verdict schemas.Verdict) {
		layout, err := NewLayout(nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := decide.DefaultConfig()
		cfg.BlockTTL = ttl
		eng, err := decide.NewEngine(cfg, decide.NewLimiter(0))
		if err != nil {
			t.Fatal(err)
		}
		w, err := New(layout, Config{InitialDevices: 16, IdleTTL: 24 * time.Hour, SkipBlocked: true}, detectors.NewClassModel(layout.Detectors, detectors.NewClassTable(1<<16, 1<<10)), eng)
		if err != nil {
			t.Fatal(err)
		}
		var out schemas.Scored
		seq := uint64(0)
		process := func(ev *schemas.Event) (*schemas.Alert, *schemas.Decision) {
			seq++
			ev.Seq = seq
			return w.Process(ev, &out)
		}
		for i := range 120 {
			if a, _ := process(meterEvent(time.Duration(i)*time.Minute, "DE")); a != nil {
				t.Fatalf("alert on the baseline at minute %d: %+v", i, a.Reasons)
			}
		}
		// The flood: 5 requests a second until the block.
		at := 120 * time.Minute
		var block *schemas.Decision
		for ; block == nil && at < 125*time.Minute; at += 200 * time.Millisecond {
			_, block = process(meterEvent(at, "DE"))
		}
		if block == nil || block.Action != schemas.ActionBlock {
			t.Fatal("the flood was not blocked")
		}
		expires := block.ExpiresAt.Sub(time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC))
		ev := meterEvent(0, "DE")
		rec, _ := w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt)
		before := append([]byte(nil), rec[headerSize:]...)
		// The flood goes on against the block: refused with 403, which the
		// gateway logs as the device's auth failure.
		denied := 0
		for ; at < expires; at += 200 * time.Millisecond {
			ev := meterEvent(at, "DE")
			ev.Status, ev.Auth, ev.Verdict = 403, schemas.AuthFailed, verdict
			a, d := process(ev)
			if a != nil || d != nil || out.N != 0 {
				t.Fatalf("a refused request at %v was judged: alert %v, decision %v, %d findings", at, a != nil, d != nil, out.N)
			}
			denied++
		}
		if rec, _ := w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt); string(rec[headerSize:]) != string(before) {
			t.Error("refused requests changed the device's record")
		}
		if got := w.Enforced(); got.Denied+got.ActiveBlock != uint64(denied) {
			t.Errorf("Enforced() = %+v, want %d refused requests counted", got, denied)
		}
		// After expiry, the meter is back to one reading a minute: nothing to say.
		for i := range 30 {
			at := expires + time.Duration(i)*time.Minute + time.Second
			if a, d := process(meterEvent(at, "DE")); a != nil || d != nil {
				t.Fatalf("a normal request %v after the block expired raised alert %+v, decision %v", at-expires, a.Reasons, d != nil)
			}
		}
	}
	t.Run("verdict_denied", func(t *testing.T) { run(t, schemas.VerdictDenied) })
	t.Run("no_verdict_in_the_log", func(t *testing.T) { run(t, schemas.VerdictNone) })

	t.Run("enforcer_unavailable", func(t *testing.T) {
		w := newWorker(t, 16)
		var out schemas.Scored
		for i := range 120 {
			w.Process(meterEvent(time.Duration(i)*time.Minute, "DE"), &out)
		}
		// The enforcer is down for a minute: the gateway answers every request 500.
		for i := range 60 {
			ev := meterEvent(120*time.Minute+time.Duration(i)*time.Second, "DE")
			ev.Status, ev.Verdict = 500, schemas.VerdictUnavailable
			if a, d := w.Process(ev, &out); a != nil || d != nil || out.N != 0 {
				t.Fatalf("a request the enforcer could not check was judged: alert %v, decision %v, %d findings", a != nil, d != nil, out.N)
			}
		}
		if got := w.Enforced().Unavailable; got != 60 {
			t.Errorf("Enforced().Unavailable = %d, want 60", got)
		}
	})
}

// TestBlockLiftRearms: a block shorter than the volume detector's short
// window (8 s against its 30 s) lifts while the window still holds the flood
// and the requests that got through before the block was enforced. The
// device's first request after the lift, at its normal pace, is judged
// afresh (detectors.Rearmer) and does not renew the block; a flood that
// resumes after the lift is blocked again, for twice as long (a repeat
// offender).
func TestBlockLiftRearms(t *testing.T) {
	const ttl = 8 * time.Second
	t0 := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	newW := func(t *testing.T) (process func(ev *schemas.Event) (*schemas.Alert, *schemas.Decision), flood func(from time.Duration) (*schemas.Decision, time.Duration)) {
		layout, err := NewLayout(nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := decide.DefaultConfig()
		cfg.BlockTTL = ttl
		eng, err := decide.NewEngine(cfg, decide.NewLimiter(0))
		if err != nil {
			t.Fatal(err)
		}
		w, err := New(layout, Config{InitialDevices: 16, IdleTTL: 24 * time.Hour}, detectors.NewClassModel(layout.Detectors, detectors.NewClassTable(1<<16, 1<<10)), eng)
		if err != nil {
			t.Fatal(err)
		}
		var out schemas.Scored
		seq := uint64(0)
		process = func(ev *schemas.Event) (*schemas.Alert, *schemas.Decision) {
			seq++
			ev.Seq = seq
			return w.Process(ev, &out)
		}
		// flood sends 10 requests a second from from until a block, then 2 s
		// more of them (in flight before the gateway enforces it), then the
		// gateway's refusals until the block lifts; it returns the block and
		// the time it lifts.
		flood = func(from time.Duration) (*schemas.Decision, time.Duration) {
			at := from
			var block *schemas.Decision
			for ; block == nil && at < from+5*time.Minute; at += 100 * time.Millisecond {
				_, block = process(meterEvent(at, "DE"))
			}
			if block == nil || block.Action != schemas.ActionBlock {
				t.Fatalf("the flood from %v was not blocked", from)
			}
			for end := at + 2*time.Second; at < end; at += 100 * time.Millisecond {
				process(meterEvent(at, "DE"))
			}
			lifts := block.ExpiresAt.Sub(t0)
			for ; at < lifts; at += 100 * time.Millisecond {
				ev := meterEvent(at, "DE")
				ev.Status, ev.Auth, ev.Verdict = 403, schemas.AuthFailed, schemas.VerdictDenied
				process(ev)
			}
			return block, lifts
		}
		for i := range 120 {
			if a, _ := process(meterEvent(time.Duration(i)*time.Minute, "DE")); a != nil {
				t.Fatalf("alert on the baseline at minute %d: %+v", i, a.Reasons)
			}
		}
		return process, flood
	}

	t.Run("normal_pace_after_the_lift", func(t *testing.T) {
		process, flood := newW(t)
		block, lifts := flood(120 * time.Minute)
		if got := block.ExpiresAt.Sub(block.CreatedAt); got != ttl {
			t.Fatalf("block TTL %v, want %v", got, ttl)
		}
		for i := range 10 {
			at := lifts + time.Duration(i)*time.Minute
			if a, d := process(meterEvent(at, "DE")); a != nil || d != nil {
				var why []schemas.Explanation
				if a != nil {
					why = a.Reasons
				}
				t.Fatalf("a normal request %v after the block lifted raised alert %v (%+v), decision %v", at-lifts, a != nil, why, d != nil)
			}
		}
	})
	t.Run("flood_resumes_after_the_lift", func(t *testing.T) {
		_, flood := newW(t)
		_, lifts := flood(120 * time.Minute)
		again, _ := flood(lifts)
		if got := again.ExpiresAt.Sub(again.CreatedAt); got != 2*ttl {
			t.Errorf("the repeat offence's block TTL %v, want %v (escalated)", got, 2*ttl)
		}
		if d := again.CreatedAt.Sub(t0) - lifts; d > time.Minute {
			t.Errorf("the resumed flood was blocked again %v after the lift", d)
		}
	})
}

// TestRedeliveryInventsNoAlert: a device's record moves on (two hours from
// DE, then three and a half from BR), and messages of its first hours are redelivered
// unchanged. Judged again against the later record, they are news (back in
// DE right after BR); their first judging raised no alert. They are scored for
// their rows, but raise no alert and no decision, and teach nothing.
func TestRedeliveryInventsNoAlert(t *testing.T) {
	w := newWorker(t, 16)
	var out schemas.Scored
	at := func(i int, country string) *schemas.Event {
		ev := meterEvent(time.Duration(i)*time.Minute, country)
		ev.Seq, ev.Line = uint64(10+i), 0
		return ev
	}
	first := map[int]bool{} // the DE events that alerted when first judged
	for i := range 120 {
		if a, d := w.Process(at(i, "DE"), &out); a != nil || d != nil {
			first[i] = true
		}
	}
	// Three and a half hours from BR, where the device now lives: a way
	// back to DE is travel, not its owner coming home from an excursion
	// (geo's away rule spares that, so an hour in BR showed nothing).
	for i := 120; i < 330; i++ {
		w.Process(at(i, "BR"), &out)
	}
	ev := at(0, "DE")
	rec, _ := w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt)
	before := append([]byte(nil), rec...)
	scored := 0
	for i := 60; i < 120; i++ {
		a, d := w.Process(at(i, "DE"), &out)
		if a != nil || d != nil {
			t.Fatalf("redelivered event %d raised alert %v, decision %v (first judging: alert %v)", i, a, d, first[i])
		}
		if out.N > 0 {
			scored++
		}
	}
	if scored == 0 {
		t.Error("no redelivered event had a finding against the later record: the test shows nothing")
	}
	if rec, _ := w.Table().Lookup(ev.DeviceKey, ev.DeviceAlt); string(rec) != string(before) {
		t.Error("redelivered events changed the device's record")
	}
	if got := w.Relearned(); got != 60 {
		t.Errorf("Relearned = %d, want 60", got)
	}
}

// benchOwners returns the two entity owners the benchmarks judge with, as a
// pipeline of two entity shards makes them.
func benchOwners(b testing.TB, cfg entity.Config) []*entity.Owner {
	var owners []*entity.Owner
	for range 2 {
		eng, err := decide.NewEngine(decide.DefaultConfig(), nil)
		if err != nil {
			b.Fatal(err)
		}
		o, err := entity.NewOwner(cfg, 2, eng)
		if err != nil {
			b.Fatal(err)
		}
		owners = append(owners, o)
	}
	return owners
}

// TestPrefetchChangesNothing: a worker that prefetches the record of each
// next event before it processes the current one (as the pipeline's
// workers do when their input holds the next) scores, alerts and decides
// exactly as one that does not, over a simulated fleet with attacks, and
// ends with the same records.
func TestPrefetchChangesNothing(t *testing.T) {
	cfg := sim.DefaultConfig()
	cfg.Devices, cfg.Duration = 300, 24*time.Hour
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		dec schemas.Decoder
		evs []schemas.Event
	)
	for i := 0; len(evs) < 30000; i++ {
		l, _, ok := s.Next(nil)
		if !ok {
			break
		}
		var ev schemas.Event
		if err := dec.Decode(l, uint64(i/100+1), uint32(i%100), 0, &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	plain, ahead := newWorker(t, 300), newWorker(t, 300)
	var sp, sa schemas.Scored
	alerts := 0
	for i := range evs {
		if i+1 < len(evs) {
			ahead.Prefetch(&evs[i+1])
		}
		ap, dp := plain.Process(&evs[i], &sp)
		aa, da := ahead.Process(&evs[i], &sa)
		if sp.Score != sa.Score || sp.N != sa.N || sp.Findings != sa.Findings {
			t.Fatalf("event %d: scored %+v with prefetch, %+v without", i, sa, sp)
		}
		if (ap == nil) != (aa == nil) || ap != nil && ap.ID != aa.ID || (dp == nil) != (da == nil) || dp != nil && dp.ID != da.ID {
			t.Fatalf("event %d: alert %v decision %v with prefetch, %v %v without", i, aa, da, ap, dp)
		}
		if ap != nil {
			alerts++
		}
	}
	if alerts == 0 {
		t.Fatal("no alert: the comparison covers only scores")
	}
	n := 0
	plain.Table().Range(func(key, alt uint64, lastSeen int64, rec []byte) bool {
		if r, ok := ahead.Table().Lookup(key, alt); !ok || !slices.Equal(r, rec) {
			t.Errorf("device %x: record differs with prefetch", key)
		}
		n++
		return true
	})
	if n != ahead.Table().Len() || n == 0 {
		t.Errorf("%d records without prefetch, %d with", n, ahead.Table().Len())
	}
	t.Logf("%d events, %d alerts, %d devices", len(evs), alerts, n)
}
