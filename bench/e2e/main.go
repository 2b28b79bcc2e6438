// Command e2e measures the whole pipeline's throughput next to the raw
// JetStream consume rate, in the same run on the same machine.
//
//	go run ./bench/e2e [-events 500000] [-lines 100] [-source logs|events] [-clickhouse DSN]
//
// It starts an embedded NATS server and (unless -clickhouse is given) a private
// clickhouse-server, then:
//
//  1. ceiling: publishes messages of the same size as the pipeline's input,
//     each with a Nats-Msg-Id as the input has, to a scratch stream and
//     consumes them with Fetch + per-message Ack (the pipeline's own consume
//     pattern), giving messages/s, hence events/s at -lines events per
//     message; the same again without the header (the client then decodes
//     no header per message), as this step measured before;
//  2. sink ceiling: inserts the same events, decoded but not scored, into
//     ClickHouse in batches of -flush-rows, giving rows/s;
//  3. pipeline: publishes the simulated fleet's events (-lines per message) to
//     IOTWATCH_LOGS first, then runs the pipeline until everything is scored,
//     written to ClickHouse and acked, giving events/s end to end.
//
// With -source events the pipeline's input is what the ingest stage publishes
// instead ('iotwatch run --source events'): each log message's events as one
// Arrow IPC batch per partition (schemas.DefaultPartitions) on
// iotwatch.events.<p>, and the ceiling of step 1 is measured on messages of
// those batches' number and average size.
//
// It prints all three and the pipeline's ratio to each ceiling. On one small
// machine the servers share the cores with the pipeline, so the ceilings are
// each measured alone and the pipeline pays for all of them at once.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go/jetstream"

	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

func main() {
	events := flag.Int("events", 500000, "events to push through the pipeline")
	lines := flag.Int("lines", 100, "events per NATS message")
	devices := flag.Int("devices", 20000, "simulated devices")
	dsn := flag.String("clickhouse", "", "ClickHouse DSN; empty starts a private server")
	workers := flag.Int("workers", 0, "pipeline workers (0: GOMAXPROCS)")
	flushRows := flag.Int("flush-rows", 50000, "pipeline --flush-rows (the default)")
	maxAckPending := flag.Int("max-ack-pending", bus.DefaultStreamsConfig().MaxAckPending, "consumer MaxAckPending (the default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the pipeline phase to this file")
	memProfileFlag := flag.String("memprofile", "", "write an allocation profile of the pipeline phase to this file")
	source := flag.String("source", "logs", "pipeline input: logs (JSON lines on IOTWATCH_LOGS) or events (the ingest stage's Arrow batches on IOTWATCH_EVENTS)")
	flag.Parse()
	profile, memProfile = *cpuProfile, *memProfileFlag
	if memProfile != "" {
		runtime.MemProfileRate = 0 // sampled from the pipeline's start only
	}
	if *source != "logs" && *source != "events" {
		fmt.Fprintf(os.Stderr, "e2e: -source %q: want logs or events\n", *source)
		os.Exit(2)
	}
	arrowInput = *source == "events"
	if err := run(*events, *lines, *devices, *dsn, *workers, *flushRows, *maxAckPending); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
}

var (
	profile    string
	memProfile string
	arrowInput bool // -source events
)

// eventBatches returns, for each log message of msgs (its stream sequence
// is its index + 1), the ingest stage's Arrow batches: one per partition
// that holds events of it, with the partition.
func eventBatches(msgs [][]byte) (batches [][]byte, parts []int, err error) {
	bs := make([]*schemas.EventBatch, schemas.DefaultPartitions)
	for i := range bs {
		bs[i] = schemas.NewEventBatch(nil)
	}
	var dec schemas.Decoder
	var ev schemas.Event
	for i, m := range msgs {
		for j, l := range bytes.Split(bytes.TrimSpace(m), []byte("\n")) {
			if err := dec.Decode(l, uint64(i+1), uint32(j), 0, &ev); err != nil {
				return nil, nil, err
			}
			bs[schemas.PartitionOf(ev.DeviceAlt, len(bs))].Append(&ev)
		}
		for p, b := range bs {
			if b.Len() == 0 {
				continue
			}
			data, err := b.AppendIPC(nil)
			if err != nil {
				return nil, nil, err
			}
			batches, parts = append(batches, data), append(parts, p)
		}
	}
	return batches, parts, nil
}

func run(events, lines, devices int, dsn string, workers, flushRows, maxAckPending int) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ns, err := natsserver.Start(natsserver.Options{Log: log})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	if dsn == "" {
		chs, err := chserver.Start(ctx, chserver.Options{Log: log})
		if err != nil {
			return err
		}
		defer chs.Stop()
		dsn = chs.DSN()
	}
	nc, js, err := bus.Connect(ctx, ns.URL(), "e2e", log)
	if err != nil {
		return err
	}
	defer nc.Close()

	// Build the input first, so both measurements use the same message sizes.
	fc := sim.DefaultConfig()
	fc.Devices = devices
	fc.Duration = 24 * time.Hour
	fl, err := sim.New(fc)
	if err != nil {
		return err
	}
	var msgs [][]byte
	var buf []byte
	n, total, bytes := 0, 0, 0
	for total < events {
		l, _, ok := fl.Next(buf)
		if !ok {
			break
		}
		buf = append(l, '\n')
		n++
		total++
		if n == lines {
			msgs = append(msgs, append([]byte(nil), buf...))
			bytes += len(buf)
			buf, n = buf[:0], 0
		}
	}
	if n > 0 {
		msgs = append(msgs, append([]byte(nil), buf...))
		bytes += len(buf)
	}
	avg := bytes / len(msgs)
	fmt.Printf("input: %d events in %d messages of %d lines (%d bytes on average), %d devices\n", total, len(msgs), lines, avg, devices)
	fmt.Printf("machine: %d CPUs, GOMAXPROCS %d, %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())

	// The pipeline's messages: the log messages, or their Arrow batches.
	in, inAvg := msgs, avg
	var parts []int
	if arrowInput {
		if in, parts, err = eventBatches(msgs); err != nil {
			return err
		}
		size := 0
		for _, b := range in {
			size += len(b)
		}
		inAvg = size / len(in)
		fmt.Printf("events: %d Arrow batches on %d partitions (%d bytes on average, %.1f events per batch)\n",
			len(in), schemas.DefaultPartitions, inAvg, float64(total)/float64(len(in)))
	}

	// 1. Ceiling, of messages with a Nats-Msg-Id as the pipeline's input
	// has (step 3), and without (what this line measured before p6).
	perMsg := float64(total) / float64(len(in))
	rawBare, err := bus.RawConsumeRate(ctx, js, len(in), inAvg, 256)
	if err != nil {
		return fmt.Errorf("cannot measure the raw consume rate: %w", err)
	}
	rawMsgs, err := bus.RawConsumeRateWith(ctx, js, len(in), inAvg, 256, bus.RawOptions{MsgIDs: true})
	if err != nil {
		return fmt.Errorf("cannot measure the raw consume rate: %w", err)
	}
	rawEvents, rawBareEvents := rawMsgs*perMsg, rawBare*perMsg
	fmt.Printf("raw JetStream consume (Fetch 256 + Ack each, Nats-Msg-Id as the input): %.0f msgs/s = %.0f events/s at %.1f events/msg\n", rawMsgs, rawEvents, perMsg)
	fmt.Printf("raw JetStream consume (Fetch 256 + Ack each, no header): %.0f msgs/s = %.0f events/s\n", rawBare, rawBareEvents)

	// 2. The sink's ceiling: the same rows, decoded but not scored, inserted in
	// batches of flushRows into a scratch database.
	chRate, err := clickHouseCeiling(ctx, dsn, log, msgs, flushRows)
	if err != nil {
		return fmt.Errorf("cannot measure the ClickHouse insert rate: %w", err)
	}
	fmt.Printf("raw ClickHouse insert (%d-row batches of scored-event rows, no detectors): %.0f rows/s\n", flushRows, chRate)

	// 3. Pipeline.
	sc := bus.DefaultStreamsConfig()
	sc.MaxAckPending = maxAckPending
	var cons jetstream.Consumer
	var kv jetstream.KeyValue
	if arrowInput {
		cons, kv, err = bus.EnsureScorer(ctx, js, sc, nil)
	} else {
		cons, kv, err = bus.Ensure(ctx, js, sc)
	}
	if err != nil {
		return err
	}
	subject := bus.LogSubject(schemas.FormatJSON, "bench")
	for i, m := range in {
		subj := subject
		if arrowInput {
			subj = schemas.EventsSubject(parts[i])
		}
		if _, err := js.PublishAsync(subj, m, jetstream.WithMsgID(fmt.Sprint("b-", i))); err != nil {
			return err
		}
		if i%1000 == 999 { // stay under the client's async window on a loaded machine
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: dsn, Database: "bench", Log: log})
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Migrate(ctx); err != nil {
		return err
	}
	p, err := pipeline.New(pipeline.Config{Workers: workers, FlushRows: flushRows, FlushMessages: maxAckPending / 4}, cons, ch, sink.NewNATSPublisher(js, kv, log), log)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if memProfile != "" {
		runtime.MemProfileRate = 512 * 1024 // the default
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := processCPU()
	start := time.Now()
	go func() { done <- p.Run(runCtx) }()
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && p.M.Acked.Load() >= uint64(len(in)) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	stop()
	if err := <-done; err != nil {
		return err
	}
	if memProfile != "" {
		f, err := os.Create(memProfile)
		if err != nil {
			return err
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			return err
		}
		f.Close()
	}
	rate := float64(p.M.Events.Load()) / elapsed.Seconds()
	fmt.Printf("pipeline end to end (decode, detect, decide, ClickHouse, ack): %d events in %.2fs = %.0f events/s; %d rows, %d alerts, %d decisions\n",
		p.M.Events.Load(), elapsed.Seconds(), rate, p.M.Rows.Load(), p.M.Alerts.Load(), p.M.Decisions.Load())
	fmt.Printf("flushes: %d taking %.2fs in all (ClickHouse inserts, NATS publishes, acks)\n", p.M.FlushLatency.Count(), p.M.FlushLatency.Sum())
	// The process's CPU (the pipeline and the embedded NATS server, not
	// ClickHouse) and allocations per event: on a loaded machine, where the
	// rates follow the share of the cores the process gets, these are what
	// a change to the pipeline's own cost moves.
	ev := float64(max(p.M.Events.Load(), 1))
	fmt.Printf("process during the pipeline: %.2fs CPU (%.2f cores) = %.1f µs/event; %.1f allocations/event; %d GC cycles\n",
		cpu.Seconds(), cpu.Seconds()/elapsed.Seconds(), cpu.Seconds()*1e6/ev, float64(ms1.Mallocs-ms0.Mallocs)/ev, ms1.NumGC-ms0.NumGC)
	fmt.Printf("allocated %.0f bytes/event\n", float64(ms1.TotalAlloc-ms0.TotalAlloc)/ev)
	fmt.Printf("ratio pipeline/raw JetStream: %.2f   pipeline/raw ClickHouse: %.2f   pipeline/min(both): %.2f   pipeline/raw JetStream without header: %.2f\n",
		rate/rawEvents, rate/chRate, rate/min(rawEvents, chRate), rate/rawBareEvents)
	return nil
}

// processCPU returns the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func clickHouseCeiling(ctx context.Context, dsn string, log *slog.Logger, msgs [][]byte, batchRows int) (float64, error) {
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: dsn, Database: "bench_ceiling", Log: log})
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	if err := ch.Migrate(ctx); err != nil {
		return 0, err
	}
	var dec schemas.Decoder
	var ev schemas.Event
	var sc schemas.Scored
	b := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer b.Release()
	var recs []arrow.RecordBatch
	rows := 0
	for seq, m := range msgs {
		for i, l := range bytes.Split(bytes.TrimSpace(m), []byte("\n")) {
			if dec.Decode(l, uint64(seq+1), uint32(i), 0, &ev) != nil {
				continue
			}
			b.Append(&ev, &sc)
			rows++
			if b.Len() == batchRows {
				recs = append(recs, b.NewRecord())
			}
		}
	}
	if b.Len() > 0 {
		recs = append(recs, b.NewRecord())
	}
	start := time.Now()
	for _, r := range recs {
		if err := ch.WriteScored(ctx, r); err != nil {
			return 0, err
		}
		r.Release()
	}
	return float64(rows) / time.Since(start).Seconds(), nil
}
