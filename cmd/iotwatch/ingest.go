package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// ingestFlags are the flags of 'iotwatch run' that 'iotwatch ingest' takes
// too, with the same meaning and defaults (besides every --nats* flag): the
// decoding settings, the log stream and its consumer.
var ingestFlags = []string{
	"log-level", "geoip", "identity", "log-time-zone", "max-clock-skew", "country-field", "class-field", "key-secret-file",
	"fetch-batch", "logs-max-age", "logs-max-bytes", "logs-storage", "logs-retention", "replicas", "max-ack-pending", "ack-wait",
}

func ingestCmd(ctx context.Context, args []string, stdout io.Writer) error {
	o, runFS := newRunFlags()
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(stdout)
	runFS.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "nats") || slices.Contains(ingestFlags, f.Name) {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	// The ingest role's reply inboxes (deploy/nats/ingest.conf).
	o.conn.natsInbox = schemas.InboxIngest
	fs.Lookup("nats-inbox-prefix").DefValue = schemas.InboxIngest
	partitions := fs.Int("partitions", schemas.DefaultPartitions, fmt.Sprintf("device partitions to publish events to (iotwatch.events.0 to .N-1; at most %d); every ingest instance of a deployment must use the same count", schemas.MaxPartitions))
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch ingest [flags]

The stateless ingest stage, for running iotwatch on several machines.

It consumes access logs from stream %s (subjects iotwatch.logs.<format>.<source>)
with the durable consumer %q, which any number of ingest instances share
(each log message goes to one of them), decodes every record exactly as
'iotwatch run' does (same formats, --identity and other decoding flags, same
dead letters to %s), and publishes the events, partitioned by device, as Arrow
IPC record batches to iotwatch.events.<partition> on stream %s: one batch per
partition per log message, with the message id <log sequence>.<partition>, so
that a log message redelivered after a crash is republished without
duplicates (within the streams' duplicate window, 2 minutes). Each event's
entity observations (client address and network, API key) go, in batches
of fixed-size records, to iotwatch.obs.<entity partition> on the same stream
(message id <log sequence>.o<partition>): the scorer owning that partition is
the one judge of those entities. A log message
is acked once all its batches and dead letters are stored by JetStream.
Events keep the ids of the log stream: scoring them gives the rows, alerts and
decisions that scoring the logs gives.

The partition of a device is a pure function of its tenant and id and of
--partitions (default %d): change the count only while every scorer consumes
every partition. Scorers read the events with 'iotwatch run --source events'.

Streams are created when absent (the flags below configure them as 'run' does).
Stops cleanly on SIGINT/SIGTERM: publishes and acks what it fetched, then exits.

Example (one NATS cluster, two ingest instances, one scorer):

  iotwatch ingest --nats nats://n1:4222,nats://n2:4222 --replicas 3 &
  iotwatch ingest --nats nats://n1:4222,nats://n2:4222 --replicas 3 &
  iotwatch run --source events --nats nats://n1:4222 --clickhouse clickhouse://ch:9000

Flags:
`, schemas.StreamLogs, schemas.ConsumerIngest, schemas.StreamDLQ, schemas.StreamEvents, schemas.DefaultPartitions)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *partitions < 1 || *partitions > schemas.MaxPartitions {
		return usageError{fmt.Errorf("--partitions %d must be between 1 and %d", *partitions, schemas.MaxPartitions)}
	}
	cfg, err := o.build()
	if err != nil {
		return usageError{err}
	}
	log, err := newLogger(os.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	nc, js, err := o.conn.connectNATS(ctx, o.natsURL, "iotwatch-ingest", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	cons, err := bus.EnsureIngest(ctx, js, o.streams)
	if err != nil {
		return fmt.Errorf("cannot set up JetStream streams: %w", err)
	}
	dec := ingest.Options{Formats: cfg.Formats, MaxLineBytes: cfg.MaxLineBytes}
	if cfg.GeoIP != nil {
		dec.Enrich = cfg.GeoIP.Enrich
	}
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: *partitions, FetchBatch: cfg.FetchBatch}, dec, cons, js,
		sink.NewNATSPublisher(js, nil, log), log)
	if err != nil {
		return usageError{err}
	}
	go logIngestProgress(ctx, st, log, 10*time.Second)
	log.Info("ingest stage running", "nats", bus.RedactURL(o.natsURL), "partitions", st.Partitions(),
		"consumer", schemas.ConsumerIngest, "stream", schemas.StreamEvents)
	err = st.Run(ctx)
	log.Info("ingest stage stopped", "messages", st.M.Messages.Load(), "acked", st.M.Acked.Load(), "events", st.M.Events.Load(),
		"batches", st.M.Batches.Load(), "dead_lettered", st.M.DeadLettered.Load())
	return err
}

func logIngestProgress(ctx context.Context, st *ingest.Stage, log interface{ Info(string, ...any) }, every time.Duration) {
	var last uint64
	tick(ctx, every, func() {
		n := st.M.Events.Load()
		log.Info("progress", "messages", st.M.Messages.Load(), "events", n, "events_per_s", float64(n-last)/every.Seconds(),
			"batches", st.M.Batches.Load(), "observations", st.M.Obs.Load(), "bytes", st.M.Bytes.Load(), "dead_lettered", st.M.DeadLettered.Load(),
			"publish_retries", st.M.PublishRetries.Load(), "fetch_stalls", st.M.FetchStalls.Load(), "abandoned", st.M.Abandoned.Load())
		last = n
	})
}
