package main

// The configuration file of run, replay and demo (--config FILE): which keys
// it holds and how they are checked and printed. The loader is package
// internal/config.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	neturl "net/url"
	"strings"
	"sync"

	"github.com/iotwatch/iotwatch/internal/config"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/schemas"
)

const (
	// The servers 'iotwatch run' connects to by default.
	defaultNATS       = "nats://127.0.0.1:4222"
	defaultClickHouse = "clickhouse://127.0.0.1:9000/default"

	configFlag      = config.Flag
	printConfigFlag = config.PrintFlag
)

// errConfigPrinted ends a command after --print-config; it wraps flag.ErrHelp
// so that the command exits with status 0.
var errConfigPrinted = fmt.Errorf("configuration printed: %w", flag.ErrHelp)

// listKeys are the comma-separated list flags, which a file may repeat.
var listKeys = map[string]bool{"nats": true, "detectors": true, "allowlist": true, "enforcer-keys": true}

// configSchema is what a config file may hold: the flags of 'iotwatch run'
// with their defaults (every command's file is run's, so that one file serves
// the live pipeline and its backtests), secrets as references only, URLs
// without credentials.
var configSchema = sync.OnceValue(func() *config.Schema {
	_, fs := newRunFlags()
	return &config.Schema{Flags: fs, Lists: listKeys, Secret: isSecretKey, Check: credentialsInURL, Display: displayURL}
})

// newRunFlags returns options bound to a flag set with the flags and defaults
// of 'iotwatch run'.
func newRunFlags() (*options, *flag.FlagSet) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	o := &options{}
	o.register(fs, defaultNATS, defaultClickHouse)
	fs.StringVar(&o.enforcerKeys, "enforcer-keys", "", "enforcement points' public receipt keys ('iotwatch enforce keygen --id ENFORCER-ID'): files or directories of .pub files, comma-separated; receipts are then stored only when signed by the key of the enforcer they name (others go to table receipts_rejected); empty: receipts are stored as unverified")
	fs.StringVar(&o.chCluster, "clickhouse-cluster", "", "ClickHouse cluster (remote_servers) holding the tables, created by 'iotwatch migrate --cluster NAME': rows go through its Distributed tables, each insert returning once every shard stored its rows (insert_distributed_sync); run then checks the tables rather than migrating them; empty: one server")
	fs.StringVar(&o.source, "source", sourceLogs, "what to score: logs (decode IOTWATCH_LOGS in this process) or events (the Arrow event batches 'iotwatch ingest' publishes to IOTWATCH_EVENTS, every partition); both give the same rows, alerts and decisions")
	fs.IntVar(&o.partitions, "partitions", schemas.DefaultPartitions, "with --source events: the event partitions of the deployment, as 'iotwatch ingest --partitions' (every instance the same count); each instance pulls every partition and the NATS server pins each partition to one instance at a time (nats-server 2.11+)")
	fs.DurationVar(&o.pinnedTTL, "pinned-ttl", bus.DefaultPinnedTTL, "with --source events: how long the NATS server keeps a partition pinned to an instance that stopped pulling it (a crashed one) before another instance takes it over")
	fs.DurationVar(&o.rebalance, "rebalance", 0, "with --source events: how often each instance checks the partitions' owners and balance (every instance then owns partitions/instances, rounded down or up): an instance that joins gets its first partition about this long after it started, plus the time its giver takes to ack what it was handed of that partition; each check reads every partition consumer's info; 0: every --pinned-ttl, which is the longest")
	fs.DurationVar(&o.classSync, "class-sync", cluster.DefaultClassSyncInterval, "with --source events: how often each instance publishes its class statistics (what the devices of its partitions taught) to the Object Store bucket "+schemas.BucketClassStats+" and merges the other instances' into what its detectors read, so that a class sees all its devices (0: no merge, each instance learns its classes from its own partitions)")
	fs.StringVar(&o.instance, "instance", "", "this instance's name, unique among the instances sharing NATS (letters, digits, '-', '_', '.'): its presence key and class statistics object with --source events, and the column "+schemas.ColScorer+" of the events it scores; empty: a random id per start")
	fs.DurationVar(&o.classSyncExpiry, "class-sync-expiry", cluster.DefaultClassSyncExpiry, "with --class-sync: an instance's class statistics not rewritten for this long (the instance stopped) are no longer merged")
	fs.DurationVar(&o.classLag, "class-lag", cluster.DefaultClassLag, "with --class-sync: an event is judged once the class statistics merged from the other instances cover its event time minus this lag, else held until they do (each instance also publishes when its event time advanced by a third of it; a partition whose owner publishes nothing new for "+cluster.DefaultClassStall.String()+" is no longer waited for); 0: judge at once whatever the merged statistics cover")
	o.conn.register(fs, schemas.InboxPipeline)
	return o, fs
}

// run's --source values.
const (
	sourceLogs   = "logs"
	sourceEvents = "events"
)

// isSecretKey reports whether the flag holds a secret: connflags.go documents
// exactly those as taking a reference (secretRefHelp).
func isSecretKey(f *flag.Flag) bool { return strings.HasSuffix(f.Usage, secretRefHelp) }

// loadConfig applies --config to the flags the command line did not set.
func (o *options) loadConfig() error {
	if o.configFile == "" {
		return nil
	}
	var err error
	o.src, err = configSchema().Load(o.fs, o.configFile)
	return err
}

// credentialsInURL rejects a NATS URL or ClickHouse DSN that carries a user's
// credentials: a file is read by more people than a secret should be.
func credentialsInURL(key, value string) error {
	var urls []string
	switch key {
	case "nats":
		urls = strings.Split(value, ",")
	case "clickhouse":
		urls = []string{value}
	default:
		return nil
	}
	for _, u := range urls {
		p, err := neturl.Parse(strings.TrimSpace(u))
		if err != nil {
			continue // the connection reports a malformed URL, naming the flag
		}
		_, pw := p.User.Password()
		if pw || (key == "nats" && p.User != nil) || p.Query().Has("password") {
			return errors.New("credentials are not allowed in a config file's URL: use the user, password and token keys with file: or env: references")
		}
	}
	return nil
}

// displayURL is the value of --nats or --clickhouse with its credentials
// redacted; other flags' values are returned as they are.
func displayURL(f *flag.Flag) string {
	v := f.Value.String()
	switch {
	case f.Name == "nats" && credentialsInURL(f.Name, v) != nil:
		return bus.RedactURL(v)
	case f.Name == "clickhouse" && credentialsInURL(f.Name, v) != nil:
		return redactDSN(v)
	}
	return v
}

// exampleConfigHeader opens deploy/iotwatch.conf.example.
const exampleConfigHeader = `# iotwatch configuration file: iotwatch run|replay|demo --config FILE
#
# Generated from the flags of 'iotwatch run' by
#   go test ./cmd/iotwatch/ -run TestExampleConfigIsCurrent -update
# (a test fails when it is stale). Every key below is commented out and shows
# its built-in default; uncomment and change what you need.
#
# Syntax: one "name = value" per line; a line starting with # is a comment
# (values may contain #); blank lines are ignored; no quotes. Every name is a
# flag of 'iotwatch run' (see 'iotwatch run --help'). Only list keys may
# repeat; their values are joined with commas. List keys:
#   %s
# A flag given on the command line overrides the file, which overrides the
# default. replay and demo ignore the connection keys; their own flags
# (replay --format, demo --devices, ...) are command-line only.
#
# Secret keys take only a reference: file:/run/secrets/NAME (a file readable
# by the service user alone) or env:NAME, never the secret. Secret keys:
#   %s
# URLs and DSNs must not carry credentials here. 'iotwatch run --config FILE
# --print-config' checks a file and prints the effective configuration.
`

// writeExampleConfig writes the documented example config: every key with its
// usage and default, commented out.
func writeExampleConfig(w io.Writer) error {
	return configSchema().WriteExample(w, exampleConfigHeader)
}
