package worker

import (
	"io"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// sourceInput is a simulated fleet's day as log messages of 100 canonical
// JSON lines and, the same events, as the ingest stage's Arrow batches: per
// message, one batch per partition (schemas.DefaultPartitions). Each line
// and batch is labelled with its device partition, so that a worker reads
// only the input of the partitions it owns.
type sourceInput struct {
	lines      [][]byte // line i is record i%100 of message i/100 (stream sequence i/100+1)
	lineParts  []uint8  // the partition of line i's device
	batches    [][]byte
	batchParts []uint8 // the partition of batch i
	events     int
}

func newSourceInput(b *testing.B, devices, n int) *sourceInput {
	in := &sourceInput{lines: sampleLines(b, devices, n)}
	parts := make([]*schemas.EventBatch, schemas.DefaultPartitions)
	for i := range parts {
		parts[i] = schemas.NewEventBatch(nil)
	}
	var dec schemas.Decoder
	var ev schemas.Event
	flush := func() {
		for k, p := range parts {
			if p.Len() > 0 {
				data, err := p.AppendIPC(nil)
				if err != nil {
					b.Fatal(err)
				}
				in.batches = append(in.batches, data)
				in.batchParts = append(in.batchParts, uint8(k))
			}
		}
	}
	for i, l := range in.lines {
		if err := dec.Decode(l, uint64(i/100+1), uint32(i%100), 0, &ev); err != nil {
			b.Fatal(err)
		}
		part := schemas.PartitionOf(ev.DeviceAlt, len(parts))
		parts[part].Append(&ev)
		in.lineParts = append(in.lineParts, uint8(part))
		if i%100 == 99 {
			flush()
		}
	}
	flush()
	in.events = len(in.lines)
	return in
}

// source feeds one worker's events from JSON lines or Arrow batches, in
// rounds over the input with event times and stream positions moved on, so
// that time never goes back and every event is learned. It reads only the
// lines and batches of the partitions the worker owns: every event is read
// once, by the worker that scores it, as a partition's owner reads only its
// partitions' batches (iotwatch.events.<partition>).
type source struct {
	in    *sourceInput
	arrow bool
	owns  func(part int) bool // the worker's partitions
	dec   schemas.Decoder
	r     *schemas.EventReader
	i     int // next line or batch
	open  bool
	round int64
}

const roundSpan = int64(48 * time.Hour)

// next reads the next event of the worker's partitions into ev.
func (s *source) next(b *testing.B, ev *schemas.Event) {
	for {
		if s.arrow {
			if !s.open {
				if s.i == len(s.in.batches) {
					s.i, s.round = 0, s.round+1
				}
				if !s.owns(int(s.in.batchParts[s.i])) {
					s.i++
					continue
				}
				if err := s.r.Open(s.in.batches[s.i]); err != nil {
					b.Fatal(err)
				}
				s.i++
				s.open = true
			}
			if err := s.r.Next(ev); err == io.EOF {
				s.open = false
				continue
			} else if err != nil {
				b.Fatal(err)
			}
		} else {
			if s.i == len(s.in.lines) {
				s.i, s.round = 0, s.round+1
			}
			if !s.owns(int(s.in.lineParts[s.i])) {
				s.i++
				continue
			}
			if err := s.dec.Decode(s.in.lines[s.i], uint64(s.i/100+1), uint32(s.i%100), 0, ev); err != nil {
				b.Fatal(err)
			}
			s.i++
		}
		ev.Time += s.round * roundSpan
		ev.Seq += uint64(s.round) * uint64(len(s.in.lines)/100+1)
		return
	}
}

// cpuTime returns the CPU time (user and system) the process has used: on a
// shared, oversubscribed machine, events per CPU-second is the per-core
// figure, where events per wall-clock second depends on the other load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScoreSource scores a fleet's events into the collector's
// columnar batch (decode, shard, the device's record, every detector,
// decide, ScoredBatch.Append), once from the canonical JSON lines ('run'
// decoding logs) and once from the ingest stage's Arrow batches ('run
// --source events'), in the same run. workers=1 is one core; workers=2 runs
// two workers on their own goroutines and reports events/s for the two
// cores: each worker owns half the partitions and reads only their lines
// or batches (source), and the workers share the class model and the
// calibration, as score.Stack builds them. Each worker reads one event
// ahead and prefetches its record (Worker.Prefetch), as the pipeline's
// workers do when their input holds the next. events/cpu-s divides by the
// CPU time the process used instead of the wall-clock time.
func BenchmarkScoreSource(b *testing.B) {
	const devices = 20000
	in := newSourceInput(b, devices, 200000)
	for _, workers := range []int{1, 2} {
		for _, arrow := range []bool{false, true} {
			name := "json"
			if arrow {
				name = "arrow"
			}
			b.Run(name+"/workers="+strconv.Itoa(workers), func(b *testing.B) {
				type lane struct {
					w   *Worker
					src *source
					sb  *schemas.ScoredBatch
					out schemas.Scored
					// evs[cur] is the event to score, evs[cur^1] the next,
					// read ahead and its record prefetched, as the
					// pipeline's workers do when their input holds it
					evs [2]schemas.Event
					cur int
				}
				lanes := make([]*lane, workers)
				for k, w := range sharedWorkers(b, workers, devices) {
					l := &lane{w: w, sb: schemas.NewScoredBatch(nil)}
					l.src = &source{in: in, arrow: arrow, r: schemas.NewEventReader(nil),
						owns: func(p int) bool { return p%workers == k }}
					lanes[k] = l
				}
				for _, l := range lanes {
					l.src.next(b, &l.evs[0])
				}
				step := func(l *lane) {
					ev, next := &l.evs[l.cur], &l.evs[l.cur^1]
					l.src.next(b, next)
					l.w.Prefetch(next)
					l.w.Process(ev, &l.out)
					l.sb.Append(ev, &l.out)
					if l.sb.Len() == 50000 {
						l.sb.NewRecord().Release()
					}
					l.cur ^= 1
				}
				for _, l := range lanes { // warm up: every device has a record
					for range in.events / workers {
						step(l)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				start, cpu0 := time.Now(), cpuTime()
				var wg sync.WaitGroup
				per := b.N / workers
				for _, l := range lanes {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							step(l)
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(per*workers)/time.Since(start).Seconds(), "events/s")
				b.ReportMetric(float64(per*workers)/(cpuTime()-cpu0).Seconds(), "events/cpu-s")
			})
		}
	}
}

// sharedWorkers returns n workers built as score.Stack builds them: one
// layout, one class model and one calibration shared by all, a decision
// engine each.
func sharedWorkers(tb testing.TB, n, devices int) []*Worker {
	layout, err := NewLayout(nil)
	if err != nil {
		tb.Fatal(err)
	}
	model := detectors.NewClassModel(layout.Detectors, detectors.NewClassTable(1<<16, 1<<10))
	cal := decide.NewCalibration(decide.DefaultAlertBudget)
	ws := make([]*Worker, n)
	for i := range ws {
		eng, err := decide.NewEngine(decide.DefaultConfig(), decide.NewLimiter(0))
		if err != nil {
			tb.Fatal(err)
		}
		eng.UseCalibration(cal)
		if ws[i], err = New(layout, Config{InitialDevices: devices, IdleTTL: 24 * time.Hour}, model, eng); err != nil {
			tb.Fatal(err)
		}
	}
	return ws
}
