package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/pipeline/receipts"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

func runCmd(ctx context.Context, args []string, stdout io.Writer) error {
	o, fs := newRunFlags()
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch run [flags]

Runs the pipeline against an external NATS JetStream server and ClickHouse:
consumes access logs from stream IOTWATCH_LOGS (subjects iotwatch.logs.<format>.<source>,
canonical JSON lines) or, with --source events, the Arrow event batches of
'iotwatch ingest' from stream IOTWATCH_EVENTS (every partition), scores every event, writes results to ClickHouse and publishes
alerts (iotwatch.alerts.<severity>) and decisions (iotwatch.decisions.<action>, KV bucket
iotwatch_blocks). Streams, the consumer and the tables are created when absent.
Stops cleanly on SIGINT/SIGTERM: stops fetching, drains, flushes and acks.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	verifier, err := o.receiptVerifier()
	if err != nil {
		return err
	}
	log, err := newLogger(os.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	if o.enforcerKeys == "" {
		log.Warn("apply receipts are stored unverified: anyone who can publish on "+schemas.SubjectDecisionsApplied+" can write them; give --enforcer-keys",
			"table", schemas.TableReceipts)
	}
	if lit := o.conn.literalSecretFlags(); len(lit) > 0 {
		log.Warn("secrets given literally on the command line are visible in ps: use file: or env:", "flags", lit)
	}
	st, err := openStack(ctx, o, cfg, log)
	if err != nil && ctx.Err() != nil {
		// SIGINT/SIGTERM during start-up (a long checkpoint restore): nothing
		// was consumed and the checkpoint is untouched.
		log.Info("stopped during start-up", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	defer st.Close()
	st.receipts = verifier
	if o.metrics != "" {
		stopMetrics, err := serveMetrics(o.metrics, st, o.pprof, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	go logProgress(ctx, st.p, log, 10*time.Second)
	go func() {
		if err := receipts.RunVerified(ctx, st.js, st.ch, verifier, log); err != nil {
			log.Error("apply receipts are not stored", "err", err)
		}
	}()
	go func() {
		if err := receipts.RunUnblocks(ctx, st.js, st.ch, log); err != nil {
			log.Error("unblocks are not stored", "err", err)
		}
	}()
	log.Info("pipeline running", "instance", st.p.Instance(), "nats", bus.RedactURL(o.natsURL), "clickhouse", redactDSN(o.clickhouse), "detectors", len(st.p.Layout().Detectors.Specs), "record_bytes", st.p.Layout().Size)
	runCtx := ctx
	if st.handover != nil {
		// A clean stop hands the partitions over with nothing pulled left
		// unscored (the next owners would catch it up out of the stream's
		// order): no more pulls, score what was pulled, then drain.
		var stop context.CancelFunc
		runCtx, stop = context.WithCancel(context.WithoutCancel(ctx))
		defer stop()
		go func() {
			select {
			case <-ctx.Done():
			case <-runCtx.Done():
				return
			}
			qctx, cancel := context.WithTimeout(context.Background(), quiesceTimeout)
			if err := st.parts.Quiesce(qctx); err != nil {
				log.Warn("stopping with pulled messages not scored: the next owners catch them up", "err", err)
			}
			cancel()
			stop()
		}()
	}
	return st.p.Run(runCtx)
}

// quiesceTimeout bounds how long a clean stop of a scorer that moves state
// with its partitions waits for the messages it pulled to be scored
// (partition.Consumer.Quiesce: at most a pull expiry, then the pipeline's
// pace) before it drains anyway.
const quiesceTimeout = time.Minute

// checkpointStoreSpec is the --checkpoint value that keeps the checkpoint in
// the NATS server's Object Store (schemas.BucketCheckpoints) rather than a
// file.
const checkpointStoreSpec = "nats:"

// checkpointFile returns the checkpoint file of --checkpoint: none when the
// checkpoint is in the Object Store.
func (o *options) checkpointFile() string {
	if o.checkpoint == checkpointStoreSpec {
		return ""
	}
	return o.checkpoint
}

// stack is a connected pipeline with its servers' clients.
type stack struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cons jetstream.Consumer
	// parts is --source events' partitions this instance owns (nil otherwise).
	parts *partition.Consumer
	// handover moves the partitions' state with their ownership (--source
	// events with --checkpoint nats:; nil otherwise).
	handover *pipeline.Handover
	ch       *sink.ClickHouse
	p        *pipeline.Pipeline
	// receipts verifies apply receipts (run's --enforcer-keys); nil where
	// receipts are not stored.
	receipts *receipts.Verifier
	// budget counts the block cap for the cluster; nil without a cap.
	budget *cluster.KVBudget
	// classes merges the class statistics across instances (--source
	// events with --class-sync); nil otherwise.
	classes *cluster.ClassSync
}

// openStack connects to NATS and ClickHouse, creates what is missing and
// builds the pipeline. Errors name the server and setting at fault.
func openStack(ctx context.Context, o *options, cfg pipeline.Config, log *slog.Logger) (*stack, error) {
	st := &stack{}
	var err error
	if o.source == sourceEvents && o.conn.natsInbox == schemas.InboxPipeline {
		// A scorer connects as the scorer role (deploy/nats/scorer.conf),
		// with its reply inboxes, unless given another prefix.
		o.conn.natsInbox = schemas.InboxScorer
	}
	st.nc, st.js, err = o.conn.connectNATS(ctx, o.natsURL, "iotwatch", log)
	if err != nil {
		return nil, err // names the (redacted) URL and, for auth/TLS refusals, the flags to check
	}
	stream := schemas.StreamLogs
	var cons jetstream.Consumer
	var kv jetstream.KeyValue
	var src pipeline.Source
	var parts []jetstream.Consumer
	var presence jetstream.KeyValue
	if o.source == sourceEvents {
		// One consumer per partition; the server pins each to one instance.
		stream = schemas.StreamEvents
		parts, presence, kv, err = bus.EnsurePartitions(ctx, st.js, o.streams, o.partitions, o.pinnedTTL)
	} else {
		cons, kv, err = bus.Ensure(ctx, st.js, o.streams)
		src = cons
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("cannot set up JetStream streams: %w", err)
	}
	st.cons = cons
	chCfg, err := o.conn.clickhouseConfig(o.clickhouse, o.database, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	chCfg.Cluster = o.chCluster
	st.ch, err = sink.OpenClickHouse(ctx, chCfg)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("cannot connect to ClickHouse at --clickhouse %q: %w", redactDSN(o.clickhouse), err)
	}
	// One server: create or update the tables. A cluster: check them; its
	// DDL is the operator's (iotwatch migrate --cluster), not N instances'.
	prepare := st.ch.Migrate
	if o.chCluster != "" {
		prepare = st.ch.CheckCluster
	}
	if err := prepare(ctx); err != nil {
		st.Close()
		return nil, err
	}
	pub := sink.NewNATSPublisher(st.js, kv, log)
	if cfg.SigningKey != nil { // allowlist lifts are unblocks the publisher creates: sign them too
		if err := pub.SetSigner(cfg.SigningKeyID, cfg.SigningKey); err != nil {
			st.Close()
			return nil, err
		}
	}
	if cfg.Decide.MaxBlocksPerMinute > 0 {
		budgets, err := st.js.KeyValue(ctx, schemas.KVBudgets)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("cannot open KV bucket %q: %w", schemas.KVBudgets, err)
		}
		st.budget = cluster.NewKVBudget(budgets, cluster.BudgetConfig{
			Name: schemas.BudgetBlocks, Max: cfg.Decide.MaxBlocksPerMinute, Instances: o.instances}, log)
		cfg.BlockBudget = st.budget
	}
	if o.checkpoint == checkpointStoreSpec {
		if cfg.CheckpointStore, err = bus.EnsureCheckpoints(ctx, st.js, o.streams); err != nil {
			st.Close()
			return nil, err
		}
	}
	if cfg.Stream, err = st.js.Stream(ctx, stream); err != nil { // to catch up learning after a crash
		st.Close()
		return nil, fmt.Errorf("cannot open stream %s: %w", stream, err)
	}
	instance := o.instance // its presence key, its class statistics' object and its rows' scorer
	if instance == "" {
		instance = nuid.Next()
	}
	cfg.Instance = instance
	if parts != nil {
		warnPartitionsBeyond(ctx, cfg.Stream, o.partitions, log)
		pcfg := partition.Config{PinnedTTL: o.pinnedTTL, Rebalance: o.rebalance, FetchWait: cfg.FetchWait, Presence: presence, Log: log, Instance: instance}
		cfg.Partitions = o.partitions
		if cfg.CheckpointStore != nil {
			// Each partition's object travels with its ownership: restored
			// and caught up when acquired, saved and dropped when lost.
			cfg.PartitionOwnership = true
			st.handover = pipeline.NewHandover(log)
			pcfg.Owner = st.handover
		}
		// Stopped by Close; a crash leaves the partitions to the others after --pinned-ttl.
		st.parts, err = partition.New(context.WithoutCancel(ctx), cfg.Stream, parts, pcfg)
		if err != nil {
			st.Close()
			return nil, err
		}
		src = st.parts
	}
	st.p, err = pipeline.NewContext(ctx, cfg, src, st.ch, pub, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	if st.handover != nil {
		st.handover.Attach(st.p)
	}
	if err := watchAllowlist(ctx, st, kv, cfg, log); err != nil {
		st.Close()
		return nil, err
	}
	if parts != nil && o.classSync > 0 {
		if err := syncClasses(ctx, st, o, instance, log); err != nil {
			st.Close()
			return nil, err
		}
	}
	return st, nil
}

// syncClasses publishes the pipeline's class statistics every --class-sync
// and merges the other instances' (cluster.ClassSync), until ctx ends.
func syncClasses(ctx context.Context, st *stack, o *options, instance string, log *slog.Logger) error {
	store, err := bus.EnsureClassStats(ctx, st.js, o.streams)
	if err != nil {
		return err
	}
	cfg := cluster.ClassSyncConfig{Store: store, Instance: instance, Interval: o.classSync, Expiry: o.classSyncExpiry, Log: log}
	if o.classLag > 0 {
		// Event-time watermarks: the pipeline holds events the merged view
		// does not cover yet (cluster.ClassSync's doc).
		cfg.Partitions, cfg.Owned, cfg.Lag = o.partitions, st.parts.Owned, o.classLag
		// A partition whose coverage stalled is still waited for while its
		// owner lives or a takeover of it is under way.
		cfg.Awaited = st.parts.Awaited
	}
	st.classes, err = cluster.NewClassSync(st.p.ClassModel(), cfg)
	if err != nil {
		return err
	}
	if o.classLag > 0 {
		st.p.GateClasses(st.classes)
	}
	go st.classes.Run(ctx)
	return nil
}

// allowlistReadTimeout bounds how long start-up waits for the shared
// allowlist's first reading; beyond it the pipeline starts with its own
// --allowlist and applies the bucket once the watch has read it.
const allowlistReadTimeout = 30 * time.Second

// watchAllowlist keeps the pipeline's allowlist equal to --allowlist merged
// with the shared bucket (schemas.KVAllowlist) until ctx ends, and lifts the
// active blocks (in blocks, the bucket of active blocks) that each new
// allowlist covers, with a publisher of its own. It returns once the bucket
// was read (or allowlistReadTimeout passed).
func watchAllowlist(ctx context.Context, st *stack, blocks jetstream.KeyValue, cfg pipeline.Config, log *slog.Logger) error {
	kv, err := st.js.KeyValue(ctx, schemas.KVAllowlist)
	if err != nil {
		return fmt.Errorf("cannot open KV bucket %q: %w", schemas.KVAllowlist, err)
	}
	pub := sink.NewNATSPublisher(st.js, blocks, log)
	if cfg.SigningKey != nil { // allowlist lifts are unblocks: sign them too
		if err := pub.SetSigner(cfg.SigningKeyID, cfg.SigningKey); err != nil {
			return err
		}
	}
	lift := func(allow *decide.Allowlist) {
		lctx, cancel := context.WithTimeout(ctx, allowlistReadTimeout)
		defer cancel()
		lifted, err := sink.LiftAllowlisted(lctx, blocks, allow, pub, cfg.Decide.Issuer, time.Now())
		if err != nil {
			log.Error("cannot lift allowlisted blocks", "err", err)
		} else if lifted > 0 {
			log.Info("allowlisted blocks lifted", "blocks", lifted)
		}
	}
	w := cluster.NewAllowlist(kv, cfg.Decide.Allowlist, st.p.Allowlist(), lift, log)
	ready := make(chan struct{})
	go func() {
		if err := w.Run(ctx, ready); err != nil {
			log.Error("the shared allowlist is not watched", "bucket", schemas.KVAllowlist, "err", err)
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
	case <-time.After(allowlistReadTimeout):
		log.Warn("the shared allowlist is not read yet: starting with --allowlist alone", "bucket", schemas.KVAllowlist)
	}
	return nil
}

func (s *stack) Close() {
	if s.handover != nil {
		s.handover.Close() // hooks still waiting for a pipeline give up
	}
	if s.parts != nil {
		// After the pipeline drained: nak what was pulled and not scored,
		// unpin the partitions so that the others take them at once.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.parts.Stop(ctx)
		cancel()
	}
	if s.ch != nil {
		s.ch.Close()
	}
	if s.nc != nil {
		s.nc.Close()
	}
}

// redactDSN hides a password in a DSN for logs and errors.
func redactDSN(dsn string) string {
	for i := 0; i+3 < len(dsn); i++ {
		if dsn[i:i+3] == "://" {
			rest := dsn[i+3:]
			at := -1
			for j := 0; j < len(rest) && rest[j] != '/'; j++ {
				if rest[j] == '@' {
					at = j
				}
			}
			if at < 0 {
				return dsn
			}
			userinfo := rest[:at]
			for j := 0; j < len(userinfo); j++ {
				if userinfo[j] == ':' {
					return dsn[:i+3] + userinfo[:j] + ":***" + rest[at:]
				}
			}
			return dsn
		}
	}
	return dsn
}

func logProgress(ctx context.Context, p *pipeline.Pipeline, log *slog.Logger, every time.Duration) {
	var last uint64
	tick(ctx, every, func() {
		n := p.M.Events.Load()
		lag, _ := p.Lag()
		log.Info("progress", "events", n, "lag_messages", lag, "events_per_s", float64(n-last)/every.Seconds(),
			"alerts", p.M.Alerts.Load(), "decisions", p.M.Decisions.Load(), "dead_lettered", p.M.DeadLettered.Load(),
			"rows", p.M.Rows.Load(), "devices", p.M.Devices.Load(), "sink_errors", p.SinkErrors())
		last = n
	})
}

// tick calls f every interval until ctx is done.
func tick(ctx context.Context, every time.Duration, f func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// registerPprof serves Go's profiles under /debug/pprof/, except
// /debug/pprof/cmdline: the command line may carry secrets (a NATS or
// ClickHouse password in a URL), and a profile needs none of it.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not served: the command line may hold secrets", http.StatusNotFound)
	})
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// serveMetrics serves /metrics (Prometheus text format), /healthz (the process
// is alive), /readyz (503 when NATS is disconnected, acks are not confirmed,
// publishing decisions has stalled (a full NATS store) or the rows waiting for
// ClickHouse reached their bound, which pauses decisions; 200 "degraded" while
// ClickHouse is down or behind and decisions still flow; else 200 "ok") and, with
// --pprof, /debug/pprof/.
func serveMetrics(addr string, st *stack, withPprof bool, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("cannot listen on --metrics-addr %q: %w", addr, err)}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		st.p.WriteMetrics(w)
		if st.parts != nil {
			st.parts.WriteMetrics(w)
		}
		if st.receipts != nil {
			st.receipts.WriteMetrics(w)
		}
		if st.budget != nil {
			st.budget.WriteMetrics(w)
		}
		if st.classes != nil {
			st.classes.WriteMetrics(w)
		}
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !st.nc.IsConnected() {
			http.Error(w, "not ready: NATS disconnected", http.StatusServiceUnavailable)
			return
		}
		// Decisions flow without ClickHouse until the rows waiting for it reach
		// their bound: ready, but degraded, until then.
		h := st.p.Health()
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		chErr := st.ch.Ping(ctx)
		waiting := fmt.Sprintf("%d rows (%d of %d bytes) wait for ClickHouse, the oldest for %s", h.RowsWaiting, h.BytesWaiting, h.BytesLimit, h.OldestWaiting.Round(time.Second))
		switch {
		case h.Full:
			http.Error(w, "not ready: fetching and decisions paused: "+waiting, http.StatusServiceUnavailable)
		case h.NotReady() != "":
			http.Error(w, "not ready: "+h.NotReady(), http.StatusServiceUnavailable)
		case chErr != nil:
			fmt.Fprintf(w, "degraded: decisions flow; ClickHouse: %v; %s\n", chErr, waiting)
		case h.StoreBehind():
			fmt.Fprintf(w, "degraded: decisions flow; ClickHouse is behind: %s\n", waiting)
		default:
			io.WriteString(w, "ok\n")
		}
	})
	if withPprof {
		registerPprof(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

func migrateCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("clickhouse", defaultClickHouse, "ClickHouse DSN over the native protocol")
	db := fs.String("database", "iotwatch", "database to create the tables in")
	cluster := fs.String("cluster", "", "create the tables on this ClickHouse cluster (a name in the servers' remote_servers): for every table T, on every host, a local table T"+schemas.TableLocalSuffix+" and a Distributed table T over them")
	replicated := fs.Bool("replicated", false, "with --cluster: the local tables are ReplicatedReplacingMergeTree (needs ZooKeeper and the macros {shard} and {replica} on every host)")
	ddlMode := fs.String("cluster-ddl", sink.ClusterDDLAuto, "with --cluster, how the DDL reaches the hosts: "+sink.ClusterDDLOnCluster+" (ON CLUSTER: the server runs it on every host; needs ZooKeeper and distributed_ddl), "+sink.ClusterDDLPerHost+" (connect to each host system.clusters lists, with the same credentials and TLS), or "+sink.ClusterDDLAuto+" ("+sink.ClusterDDLOnCluster+" when the server has a ZooKeeper and distributed DDL, else "+sink.ClusterDDLPerHost+")")
	zkPath := fs.String("zookeeper-path", schemas.DefaultZooKeeperPath, "with --replicated: ZooKeeper path of each local table; {shard} and {replica} are the servers' macros, {database} and {table} are replaced by iotwatch")
	replica := fs.String("replica-name", schemas.DefaultReplicaName, "with --replicated: replica name of each local table")
	var conn connFlags
	conn.registerClickHouse(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch migrate [flags]

Creates the database and the tables (scored_events, alerts, decisions, receipts,
receipts_rejected) when absent, and adds the columns a later release introduced.
The DDL adapts to the server's version: it runs on ClickHouse 18.16 and on current
releases, using newer features only where the server has them. Safe to run again;
it never drops, renames or retypes anything.

With --cluster NAME, every table T becomes, on every host of the cluster, a local
table T`+schemas.TableLocalSuffix+` (ReplacingMergeTree, or ReplicatedReplacingMergeTree with
--replicated) and a Distributed table T over them, sharded by the device key
(cityHash64(tenant, device) for scored_events and alerts; see deploy/clickhouse), so
queries keep the names above. How the DDL reaches the hosts (--cluster-ddl auto):
when the server at --clickhouse has a ZooKeeper (its system.zookeeper table exists)
and distributed DDL (the distributed_ddl section), each statement is sent once with
ON CLUSTER and the servers run it everywhere; otherwise iotwatch connects to each host
that system.clusters lists for NAME (host_name:port, with these credentials and TLS
settings) and runs it there, as it also does to add columns to the Distributed tables.
Then run 'iotwatch run --clickhouse-cluster NAME'.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *cluster == "" && *replicated {
		return usageError{fmt.Errorf("--replicated needs --cluster")}
	}
	log, _ := newLogger(os.Stderr, "info")
	chCfg, err := conn.clickhouseConfig(*dsn, *db, log)
	if err != nil {
		return err
	}
	chCfg.Cluster, chCfg.ClusterDDL = *cluster, *ddlMode
	chCfg.DDL.Replicated, chCfg.DDL.ZooKeeperPath, chCfg.DDL.ReplicaName = *replicated, *zkPath, *replica
	ch, err := sink.OpenClickHouse(ctx, chCfg)
	if err != nil {
		return fmt.Errorf("cannot connect to ClickHouse at --clickhouse %q: %w", redactDSN(*dsn), err)
	}
	defer ch.Close()
	if *cluster == "" {
		if err := ch.Migrate(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "migrated database %q on ClickHouse %s\n", *db, ch.Version())
		return nil
	}
	m, err := ch.MigrateCluster(ctx)
	if err != nil {
		return err
	}
	engine := "ReplacingMergeTree"
	if *replicated {
		engine = "ReplicatedReplacingMergeTree"
	}
	fmt.Fprintf(stdout, "migrated database %q on ClickHouse cluster %q (%s, %d hosts: %s): local %s tables *%s, Distributed tables by the documented names\n",
		*db, *cluster, m.Mode, len(m.Hosts), strings.Join(m.Hosts, ", "), engine, schemas.TableLocalSuffix)
	return nil
}

// warnPartitionsBeyond warns when stream (IOTWATCH_EVENTS) holds events of
// partitions at or above n: an ingest stage with a higher --partitions
// publishes there, and no scorer with this --partitions reads them.
func warnPartitionsBeyond(ctx context.Context, stream jetstream.Stream, n int, log *slog.Logger) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(schemas.SubjectEventsAll))
	if err != nil {
		log.Warn("cannot list the partitions holding events", "err", err)
		return
	}
	for subj, msgs := range info.State.Subjects {
		p, err := strconv.Atoi(strings.TrimPrefix(subj, schemas.SubjectEventsPrefix+"."))
		if err == nil && p >= n {
			log.Warn("events of a partition beyond --partitions are not scored: give every instance ingest's --partitions",
				"subject", subj, "messages", msgs, "partitions", n)
		}
	}
}
