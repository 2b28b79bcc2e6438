package main

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/internal/config"
	"github.com/iotwatch/iotwatch/internal/setting"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/pipeline/receipts"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// options are the flags shared by run, replay and demo. Flag names are the
// config file's keys and the field names that errors quote.
type options struct {
	configFile  string
	printConfig bool
	fs          *flag.FlagSet  // the command's flags, which --config fills in
	src         *config.Source // where the file's values came from (nil without --config)

	natsURL    string
	clickhouse string
	database   string
	// chCluster is run's --clickhouse-cluster: the ClickHouse cluster whose
	// Distributed tables the sink writes to (empty: one server).
	chCluster  string
	logLevel   string
	metrics    string
	pprof      bool
	geoip      string
	checkpoint string
	identity   string
	countryFld string
	logTZ      string
	clockSkew  time.Duration
	classFld   string
	keySecret  string
	signingKey string
	// enforcerKeys is run's --enforcer-keys (receiptVerifier).
	enforcerKeys string
	// source is run's --source: sourceLogs or sourceEvents.
	source string
	// instance is run's --instance (empty: a random id per start).
	instance string
	// partitions and pinnedTTL are run's --partitions and --pinned-ttl
	// (--source events: the partitions this instance may own).
	partitions int
	pinnedTTL  time.Duration
	// rebalance is run's --rebalance (partition.Config.Rebalance; 0: every
	// pinnedTTL).
	rebalance time.Duration
	ckptEvery time.Duration
	// classSync and classSyncExpiry are run's --class-sync and
	// --class-sync-expiry (--source events: class statistics merged across
	// instances; 0: not merged).
	classSync, classSyncExpiry time.Duration
	// classLag is run's --class-lag (0: no event-time watermark).
	classLag time.Duration

	workers       int
	fetchBatch    int
	maxInFlight   int
	flushRows     int
	flushInterval time.Duration
	maxWaiting    int64
	detectors     string

	alertThreshold float64
	alertBudget    float64
	blockThreshold float64
	cooldown       time.Duration
	blockTTL       time.Duration
	maxBlockTTL    time.Duration
	blockScope     string
	dryRun         bool
	skipBlocked    bool
	maxBlocks      int
	maxFreshBlocks int
	allowlist      string
	// instances is run's --cluster-instances: how many instances share the
	// cluster-wide caps (the local share while NATS is unreachable).
	instances int

	stateIdleTTL     time.Duration
	stateMaxDevices  int
	stateMaxEntities int
	entityWindow     time.Duration
	entityWave       bool

	streams bus.StreamsConfig
	conn    connFlags // NATS and ClickHouse authentication and TLS (flags registered by run only)
}

func (o *options) register(fs *flag.FlagSet, defaultNATS, defaultClickHouse string) {
	dc := decide.DefaultConfig()
	sc := bus.DefaultStreamsConfig()
	o.fs = fs
	fs.StringVar(&o.configFile, configFlag, "", "read settings from this file: 'name = value' lines where every name is a flag of 'iotwatch run'; a flag given on the command line wins (see deploy/iotwatch.conf.example)")
	fs.BoolVar(&o.printConfig, printConfigFlag, false, "print the effective configuration (defaults, --config, command line) in --config syntax with secrets redacted, and exit")
	fs.StringVar(&o.natsURL, "nats", defaultNATS, "NATS server URL(s), comma-separated")
	fs.StringVar(&o.clickhouse, "clickhouse", defaultClickHouse, "ClickHouse DSN over the native protocol, e.g. clickhouse://user:pass@host:9000/default")
	fs.StringVar(&o.database, "database", "iotwatch", "ClickHouse database for the tables")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.metrics, "metrics-addr", "", "serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9464); empty disables")
	fs.StringVar(&o.geoip, "geoip", "", "MaxMind-format MMDB (e.g. from 'make geoip') to fill country and ASN that logs lack; empty: logs' own only")
	fs.StringVar(&o.checkpoint, "checkpoint", "", "file to restore learned baselines from at start and save them to after a clean stop (empty: every start is a cold start); "+
		checkpointStoreSpec+" for the JetStream Object Store bucket "+schemas.BucketCheckpoints+" of the NATS server, one object per partition, so that another host can restore it")
	fs.DurationVar(&o.ckptEvery, "checkpoint-every", 5*time.Minute, "also save the checkpoint this often (0: only at a clean stop); a crash then loses at most this much learning")
	fs.StringVar(&o.identity, "identity", "auto", "what identifies a device in gateway/broker logs: auto, certificate, api_key, token, mqtt_client_id, username, client_ip or header:NAME; or rules per source, comma-separated, most specific first: FORMAT.SOURCE=ID, *.SOURCE=ID, FORMAT=ID, then a bare default (e.g. auto,nginx=header:X-Device-Id,mosquitto=username). The identity decides what a block names: api_key (the key's hash), mqtt_username, mqtt_client_id, ip, or device (the id an HTTP gateway sends in X-Device-Id)")
	fs.StringVar(&o.logTZ, "log-time-zone", "", "zone of log times written without one (Mosquitto's log_timestamp_format, syslog prefixes): ZONE, or rules per source as for --identity, comma-separated, most specific first: FORMAT.SOURCE=ZONE, *.SOURCE=ZONE, FORMAT=ZONE, then a bare default (e.g. mosquitto=Europe/Berlin,*.mqtt-7=UTC); ZONE is Local, UTC or an IANA name; default: this machine's local zone")
	fs.DurationVar(&o.clockSkew, "max-clock-skew", schemas.DefaultMaxClockSkew, "how far a log line's time may be ahead of its arrival in the log stream: within it the time is clamped to the arrival, beyond it the line is dead-lettered (timestamp_out_of_range) and moves no clock; replayed files have no arrival time and are not bounded")
	fs.StringVar(&o.countryFld, "country-field", "", "header or log field with the client's country set by a CDN or gateway in front (e.g. CF-IPCountry); the MMDB (--geoip) is the fallback")
	fs.StringVar(&o.classFld, "class-field", "", "header or log field with the device class (e.g. consumer.custom_id), or user_agent_product")
	fs.StringVar(&o.keySecret, "key-secret-file", "", "file with the secret that keys the hash replacing API keys found in clear in logs (without it such keys are ignored)")
	fs.StringVar(&o.signingKey, "signing-key", "", "ed25519 private key file ('iotwatch enforce keygen') to sign decisions with; enforcement points verify them")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve Go profiles at /debug/pprof/ on --metrics-addr (keep that address private)")

	fs.IntVar(&o.workers, "workers", 0, "worker goroutines (shards); 0 means GOMAXPROCS")
	fs.IntVar(&o.fetchBatch, "fetch-batch", 256, "log messages per JetStream pull")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 16384, "decoded events in flight before fetching pauses")
	fs.IntVar(&o.flushRows, "flush-rows", 50000, "scored rows per ClickHouse insert (also flushed every --flush-interval)")
	fs.DurationVar(&o.flushInterval, "flush-interval", 500*time.Millisecond, "longest time results wait before they are written and acked")
	fs.Int64Var(&o.maxWaiting, "max-waiting-bytes", pipeline.DefaultMaxWaitingBytes, "memory for rows waiting for ClickHouse while decisions flow without it; at the bound fetching (and deciding) pauses")
	fs.StringVar(&o.detectors, "detectors", "", "comma-separated detectors to enable; empty enables every detector built in ('iotwatch detectors' lists them)")

	fs.Float64Var(&o.alertBudget, "alert-budget", dc.AlertBudget, "alert when a score is as rare as this many false alerts per 1,000 device-hours allows: the threshold is learned from the traffic per device model and cause (an alert carries its estimated rate, false_alerts_per_1000h); until enough complete device-hours are seen (the larger of 1,000 and 2,000 divided by the budget: 4,000 at 0.5), and with 0, --alert-threshold applies")
	fs.Float64Var(&o.alertThreshold, "alert-threshold", dc.AlertThreshold, "combined score in (0,1] at which an alert is raised while --alert-budget warms up; given alone, a fixed threshold instead of the budget")
	fs.Float64Var(&o.blockThreshold, "block-threshold", dc.BlockThreshold, "combined score in (0,1] at which a block is decided")
	fs.DurationVar(&o.cooldown, "cooldown", dc.Cooldown, "suppress repeat alerts for the same device and reason for this long (event time)")
	fs.DurationVar(&o.blockTTL, "block-ttl", dc.BlockTTL, "duration of a first block; repeat offenders get doubled durations")
	fs.DurationVar(&o.maxBlockTTL, "max-block-ttl", dc.MaxBlockTTL, "longest block duration for repeat offenders")
	fs.StringVar(&o.blockScope, "block-scope", dc.Scope, "what a block targets: auto (the device as its source identified it, see --identity; the client address of a request that failed authentication; the key of a suspected stolen API key), device (the device as identified, always), api_key, ip or tenant")
	fs.BoolVar(&o.dryRun, "dry-run", false, "publish would_block decisions instead of blocks")
	fs.BoolVar(&o.skipBlocked, "skip-blocked", false, "take what a device sends while a block this process issued on it is active as refused by the enforcement points, neither scored nor learned, when its log line carries no enforcement verdict (Mosquitto's never does; the shipped NGINX, Envoy, Kong and Traefik configs log one, which always decides): turn on where the enforcers apply every block, never where nothing enforces them (the traffic the blocks were meant to stop would go unseen)")
	fs.IntVar(&o.maxBlocks, "max-blocks-per-minute", dc.MaxBlocksPerMinute, "cap on new blocks per minute fleet-wide; beyond it alert only (0: no cap)")
	fs.IntVar(&o.maxFreshBlocks, "max-fresh-blocks-per-minute", dc.MaxFreshBlocksPerMinute, "cap on new blocks per minute of fresh addresses (first seen seconds before, no device's own: a botnet wave's), a budget apart from --max-blocks-per-minute since such blocks lock no device out; beyond it alert only (0: no cap)")
	fs.StringVar(&o.allowlist, "allowlist", "", "never block these: comma-separated device ids, API key ids, IPs or CIDRs, or @FILE with one per line; 'run' merges them with the shared KV bucket "+schemas.KVAllowlist+", which it watches")
	fs.IntVar(&o.instances, "cluster-instances", 1, "instances of 'run' sharing --max-blocks-per-minute through the KV bucket "+schemas.KVBudgets+"; while NATS is unreachable each grants at most the cap divided by this")

	fs.DurationVar(&o.stateIdleTTL, "state-idle-ttl", 7*24*time.Hour, "keep a silent device's baseline this long (event time)")
	fs.IntVar(&o.stateMaxDevices, "state-max-devices", 0, fmt.Sprintf("cap on devices per worker; beyond it the least recently seen is evicted and counted (0: %d shared by the workers, a 2 GiB budget at ~1 KiB per device; -1: no cap)", pipeline.DefaultMaxDevices))
	fs.IntVar(&o.stateMaxEntities, "state-max-entities", entity.DefaultMaxEntities, "cap on entity records (client IPs and their /24 or /48), all owners together; beyond it entities without a baseline are evicted first, and counted")
	fs.DurationVar(&o.entityWindow, "entity-window", 5*time.Minute, "window over which an entity's distinct devices, failed identities and requests are counted")
	fs.BoolVar(&o.entityWave, "entity-wave", true, "find botnet waves: during a wave of new addresses on one route, block each new address that bursts beyond what a benign new address of the route does (entity reason "+entity.ReasonNewIPWave+"; blocks count against --max-fresh-blocks-per-minute), and each network (/24, /48) from which 12 or more new addresses hit one route within a minute, a third of them on devices other new addresses hit at once (scope cidr, entity reason "+entity.ReasonPrefixWave+"; under --max-blocks-per-minute)")

	fs.DurationVar(&o.streams.LogsMaxAge, "logs-max-age", sc.LogsMaxAge, "how long IOTWATCH_LOGS keeps access logs (0: forever)")
	fs.Int64Var(&o.streams.LogsMaxBytes, "logs-max-bytes", sc.LogsMaxBytes, "size limit of IOTWATCH_LOGS in bytes (-1: none)")
	fs.StringVar(&o.streams.LogsStorage, "logs-storage", sc.LogsStorage, "IOTWATCH_LOGS storage: file or memory")
	fs.StringVar(&o.streams.Retention, "logs-retention", sc.Retention, "IOTWATCH_LOGS retention: limits (replayable), workqueue or interest")
	fs.IntVar(&o.streams.LogsReplicas, "replicas", sc.LogsReplicas, "replicas of every stream and the KV bucket (1 on a single server)")
	fs.IntVar(&o.streams.MaxAckPending, "max-ack-pending", sc.MaxAckPending, "unacked log messages the consumer may hold (the in-flight bound)")
	fs.DurationVar(&o.streams.AckWait, "ack-wait", sc.AckWait, "redeliver a log message not acked within this time")
	o.streams.DLQMaxAge, o.streams.AlertsMaxAge, o.streams.DecisionsMaxAge = sc.DLQMaxAge, sc.AlertsMaxAge, sc.DecisionsMaxAge
	o.streams.DuplicateWindow, o.streams.MaxDeliver = sc.DuplicateWindow, sc.MaxDeliver
}

// receiptVerifier loads --enforcer-keys: each entry a key file, or a
// directory whose *.pub files are read. Without it receipts are stored
// unverified.
func (o *options) receiptVerifier() (*receipts.Verifier, error) {
	if o.enforcerKeys == "" {
		return receipts.NewVerifier(nil), nil
	}
	var paths []string
	for _, p := range splitList(o.enforcerKeys) {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, config.BadField("enforcer-keys", "%w", err)
		}
		if !fi.IsDir() {
			paths = append(paths, p)
			continue
		}
		pubs, err := filepath.Glob(filepath.Join(p, "*.pub"))
		if err != nil {
			return nil, config.BadField("enforcer-keys", "%w", err)
		}
		if len(pubs) == 0 {
			return nil, config.BadField("enforcer-keys", "directory %q holds no .pub file", p)
		}
		paths = append(paths, pubs...)
	}
	ring, err := schemas.LoadPublicKeyRing(paths...)
	if err != nil {
		return nil, config.BadField("enforcer-keys", "%w", err)
	}
	return receipts.NewVerifier(ring), nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// config applies --config to the flags the command line did not set,
// validates them and builds the pipeline configuration. Errors name the flag,
// and the file and line when the value came from the file. With
// --print-config it prints the effective configuration and returns
// errConfigPrinted.
func (o *options) config() (pipeline.Config, error) {
	if err := o.loadConfig(); err != nil {
		return pipeline.Config{}, usageError{err}
	}
	cfg, err := o.build()
	if err != nil {
		return pipeline.Config{}, usageError{o.src.Locate(err)}
	}
	if o.printConfig {
		if err := configSchema().Write(o.fs.Output(), o.fs); err != nil {
			return pipeline.Config{}, err
		}
		return pipeline.Config{}, errConfigPrinted
	}
	return cfg, nil
}

// build validates the flags and builds the pipeline configuration; every error
// is a config.FieldError, or names the flags it is about.
func (o *options) build() (pipeline.Config, error) {
	bad := func(field, format string, args ...any) (pipeline.Config, error) {
		return pipeline.Config{}, config.BadField(field, format, args...)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return bad("log-level", "%q: want debug, info, warn or error", o.logLevel)
	}
	switch {
	case o.workers < 0:
		return bad("workers", "%d must be >= 0", o.workers)
	case o.fetchBatch <= 0:
		return bad("fetch-batch", "%d must be > 0", o.fetchBatch)
	case o.maxInFlight <= 0:
		return bad("max-in-flight", "%d must be > 0", o.maxInFlight)
	case o.flushRows <= 0:
		return bad("flush-rows", "%d must be > 0", o.flushRows)
	case o.flushInterval <= 0:
		return bad("flush-interval", "%v must be > 0", o.flushInterval)
	case o.maxWaiting <= 0:
		return bad("max-waiting-bytes", "%d must be > 0", o.maxWaiting)
	case o.clockSkew <= 0:
		return bad("max-clock-skew", "%v must be > 0", o.clockSkew)
	case o.stateIdleTTL <= 0:
		return bad("state-idle-ttl", "%v must be > 0", o.stateIdleTTL)
	case o.ckptEvery < 0:
		return bad("checkpoint-every", "%v must be >= 0", o.ckptEvery)
	case o.stateMaxDevices < -1:
		return bad("state-max-devices", "%d must be >= -1", o.stateMaxDevices)
	case o.instances < 1:
		return bad("cluster-instances", "%d must be >= 1", o.instances)
	case o.stateMaxEntities <= 0:
		return bad("state-max-entities", "%d must be > 0", o.stateMaxEntities)
	case o.entityWindow < time.Minute:
		return bad("entity-window", "%v must be >= 1m", o.entityWindow)
	case o.source != "" && o.source != sourceLogs && o.source != sourceEvents:
		return bad("source", "%q: want %s or %s", o.source, sourceLogs, sourceEvents)
	case o.instance != "" && !validInstance(o.instance):
		return bad("instance", "%q: want letters, digits, '-', '_' and '.' only", o.instance)
	case o.source == sourceEvents && (o.partitions < 1 || o.partitions > schemas.MaxPartitions):
		return bad("partitions", "%d must be between 1 and %d", o.partitions, schemas.MaxPartitions)
	case o.classSync < 0 || o.classSyncExpiry < 0:
		return bad("class-sync", "%v and --class-sync-expiry %v must not be negative", o.classSync, o.classSyncExpiry)
	case o.classLag < 0:
		return bad("class-lag", "%v must not be negative", o.classLag)
	case o.source == sourceEvents && o.pinnedTTL < 3*time.Millisecond:
		return bad("pinned-ttl", "%v must be >= 3ms", o.pinnedTTL)
	case o.rebalance < 0 || (o.source == sourceEvents && o.rebalance > o.pinnedTTL):
		return bad("rebalance", "%v must be between 0 and --pinned-ttl %v", o.rebalance, o.pinnedTTL)
	case o.database == "" || strings.ContainsAny(o.database, " `.;'\""):
		return bad("database", "%q must be a plain identifier", o.database)
	}
	if err := o.streams.Validate(); err != nil {
		return pipeline.Config{}, settingError(err)
	}
	allow := splitList(o.allowlist)
	if strings.HasPrefix(o.allowlist, "@") {
		b, err := os.ReadFile(o.allowlist[1:])
		if err != nil {
			return bad("allowlist", "cannot read the file: %w", err)
		}
		allow = splitList(strings.ReplaceAll(string(b), "\n", ","))
	}
	given := map[string]bool{}
	if o.fs != nil {
		o.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	}
	budget := o.alertBudget
	if given["alert-threshold"] && !given["alert-budget"] {
		budget = 0 // a threshold given alone is fixed
	}
	dc := decide.Config{
		AlertThreshold: o.alertThreshold, AlertBudget: budget, MinAlertScore: decide.DefaultMinAlertScore,
		BlockThreshold: o.blockThreshold, Cooldown: o.cooldown,
		BlockTTL: o.blockTTL, MaxBlockTTL: o.maxBlockTTL, Scope: o.blockScope, DryRun: o.dryRun,
		MaxBlocksPerMinute: o.maxBlocks, Allowlist: allow, Issuer: "iotwatch@" + hostname(),
		MaxFreshBlocksPerMinute: o.maxFreshBlocks,
	}
	if err := dc.Validate(); err != nil {
		return pipeline.Config{}, settingError(err)
	}
	names := splitList(o.detectors)
	if _, err := worker.NewLayout(names); err != nil {
		return bad("detectors", "%w", err)
	}
	fo := formats.Options{Identity: o.identity, CountryField: o.countryFld, ClassField: o.classFld, TimeZone: o.logTZ, MaxClockSkew: o.clockSkew}
	if o.keySecret != "" {
		var err error
		if fo.KeySecret, err = readKeySecret(o.keySecret); err != nil {
			return bad("key-secret-file", "%w", err)
		}
	}
	// Each option alone, then together, so that the error names the option at fault.
	for _, f := range []struct {
		field string
		opts  formats.Options
	}{
		{"identity", formats.Options{Identity: fo.Identity}},
		{"country-field", formats.Options{Identity: fo.Identity, CountryField: fo.CountryField}},
		{"class-field", formats.Options{Identity: fo.Identity, CountryField: fo.CountryField, ClassField: fo.ClassField}},
		{"log-time-zone", fo},
	} {
		if _, err := formats.New(schemas.FormatNginx, f.opts); err != nil { // a format that uses every option
			return bad(f.field, "%w", err)
		}
	}
	var keyID string
	var priv ed25519.PrivateKey
	if o.signingKey != "" {
		var err error
		if keyID, priv, err = schemas.LoadPrivateKey(o.signingKey); err != nil {
			return bad("signing-key", "%w", err)
		}
	}
	var geo *geoip.Reader
	if o.geoip != "" {
		g, err := geoip.Open(o.geoip)
		if err != nil {
			return bad("geoip", "%w", err)
		}
		geo = g
	}
	return pipeline.Config{
		GeoIP:        geo,
		Formats:      fo,
		SigningKeyID: keyID, SigningKey: priv,
		Checkpoint: o.checkpointFile(), CheckpointEvery: o.ckptEvery,
		Workers: o.workers, FetchBatch: o.fetchBatch, MaxInFlight: o.maxInFlight,
		FlushRows: o.flushRows, FlushInterval: o.flushInterval, FlushMessages: max(1, o.streams.MaxAckPending/4),
		MaxWaitingBytes: o.maxWaiting,
		AckWait:         o.streams.AckWait,
		Detectors:       names,
		Worker:          worker.Config{IdleTTL: o.stateIdleTTL, MaxDevices: o.stateMaxDevices},
		Entities:        entity.Config{MaxEntities: o.stateMaxEntities, Window: o.entityWindow, NoWave: !o.entityWave},
		Decide:          dc,
		SkipBlocked:     o.skipBlocked,
	}, nil
}

// settingFlags maps the config keys of decide.Config and bus.StreamsConfig,
// which their validation errors name, to the flags that set them.
var settingFlags = map[string]string{
	"logs.max_age": "logs-max-age", "logs.max_bytes": "logs-max-bytes", "logs.storage": "logs-storage",
	"logs.replicas": "replicas", "logs.retention": "logs-retention", "consumer.max_ack_pending": "max-ack-pending",
	"consumer.ack_wait": "ack-wait",
	"alert_threshold":   "alert-threshold", "block_threshold": "block-threshold", "alert_budget": "alert-budget",
	"cooldown": "cooldown", "max_block_ttl": "max-block-ttl", "block_ttl": "block-ttl",
	"scope": "block-scope", "max_blocks_per_minute": "max-blocks-per-minute", "allowlist": "allowlist",
	"max_fresh_blocks_per_minute": "max-fresh-blocks-per-minute",
}

// settingName names a config key of decide or bus as its flag (--name), or
// as itself when no flag sets it.
func settingName(key string) string {
	if f, ok := settingFlags[key]; ok {
		return "--" + f
	}
	return key
}

// settingError turns a validation error of decide.Config or
// bus.StreamsConfig (a *setting.Error) into a config.FieldError naming the
// flag at fault, other fields named as flags too. An error about a field no
// flag sets keeps its package's wording, the fields it names written as
// flags where they have one.
func settingError(err error) error {
	var se *setting.Error
	if !errors.As(err, &se) {
		return err
	}
	problem := se.Problem(settingName)
	if f, ok := settingFlags[se.Field]; ok {
		return config.FieldError{Field: f, Err: errors.New(problem)}
	}
	return errors.New("cannot use " + se.Config + " config: " + se.Field + " " + problem)
}

// readKeySecret reads the secret of --key-secret-file, which the pipeline and
// enforce http must read alike to hash API keys alike.
func readKeySecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b = bytes.TrimSpace(b); len(b) < 16 {
		return nil, fmt.Errorf("the secret in %q must be at least 16 bytes", path)
	}
	return b, nil
}

// validInstance reports whether name fits in a KV key and an object name.
func validInstance(name string) bool {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}
