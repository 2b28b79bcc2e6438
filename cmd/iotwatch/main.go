// Command iotwatch is the streaming anomaly detector for IoT API traffic.
//
//	iotwatch run      the pipeline against an external NATS and ClickHouse
//	iotwatch demo     a simulated fleet with attacks through embedded NATS and a private ClickHouse
//	iotwatch replay   recorded logs through the detectors and decisions, offline
//	iotwatch ingest-http  receive Kong http-log and other HTTP log pushes
//	iotwatch inspect  print what the decoders make of a log file or subject
//	iotwatch unblock  lift an active block with a signed unblock decision
//	iotwatch keyhash  print the hash that stands for an API key
//	iotwatch migrate  create or update the ClickHouse tables
//	iotwatch eval     evaluate detectors on labelled data
//	iotwatch version  print the version
//
// Every subcommand explains its flags with --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	_ "github.com/iotwatch/iotwatch/detectors/all" // register every detector
	"github.com/iotwatch/iotwatch/internal/config"
	"github.com/iotwatch/iotwatch/schemas"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands = []command{
	{"run", "run the pipeline against an external NATS JetStream and ClickHouse", runCmd},
	{"demo", "run a simulated fleet with attacks through embedded NATS and a private ClickHouse", demoCmd},
	{"replay", "run recorded logs through the detectors and decisions, without NATS or ClickHouse", replayCmd},
	{"ship", "follow log files (or stdin) and publish them to JetStream in batches", shipCmd},
	{"ingest", "the stateless ingest stage: decode logs, publish events by device partition as Arrow batches", ingestCmd},
	{"ingest-http", "receive log pushes over HTTP (Kong http-log) and publish them to JetStream, acked", ingestHTTPCmd},
	{"inspect", "print decoded events and dead letters of a log file or a NATS subject, without consuming", inspectCmd},
	{"enforce", "apply decisions at an enforcement point (forward-auth endpoint for gateways)", enforceCmd},
	{"unblock", "lift an active block with a signed unblock decision (SOC analysts)", unblockCmd},
	{"keyhash", "print the hash that stands for an API key in events, alerts and decisions", keyhashCmd},
	{"migrate", "create or update the ClickHouse tables", migrateCmd},
	{"nats-config", "export the JetStream streams, consumers and KV buckets iotwatch creates, as JSON files", natsConfigCmd},
	{"detectors", "list the detectors built in: names, state sizes, reasons, what each judges", detectorsCmd},
	{"eval", "evaluate detectors on labelled data (NAB time series, command sequences)", evalCmd},
	{"version", "print the version", versionCmd},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `iotwatch: streaming anomaly detection for IoT API traffic.

Gateway and broker access logs stream over NATS JetStream into per-device
baselines; every request is scored for volume, geography and command-pattern
anomalies; results go to ClickHouse, alerts and block decisions back over NATS.

Usage: iotwatch <command> [flags]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'iotwatch <command> --help' for the flags of a command.\n")
}

func main() {
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

func mainExit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "iotwatch %s: %v\n", c.name, err)
			if isUsageError(err) {
				return 2
			}
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "iotwatch: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// usageError marks errors in flags or configuration (exit status 2), as
// config.UsageError does for the packages the commands call.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// parseNoArgs parses a command's flags from args and refuses arguments left
// after them (a usage error naming them): every command takes flags only.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	return nil
}

// isUsageError reports whether err is an error in flags or configuration.
func isUsageError(err error) bool {
	var ue usageError
	var ce config.UsageError
	return errors.As(err, &ue) || errors.As(err, &ce)
}

func versionCmd(_ context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: iotwatch version\n\nPrints the version, the Go version and the schema version.\n")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
	}
	fmt.Fprintf(stdout, "iotwatch %s (%s, schema v%d)\n", version, goVersion, schemas.SchemaVersion)
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("cannot use --log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
