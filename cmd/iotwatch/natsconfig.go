package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/iotwatch/iotwatch/pipeline/bus"
)

// natsConfigFlags are the flags of 'iotwatch run' that 'iotwatch
// nats-config' takes too: what shapes the streams, consumers and buckets.
var natsConfigFlags = []string{"logs-max-age", "logs-max-bytes", "logs-storage", "logs-retention", "replicas", "max-ack-pending", "ack-wait",
	"partitions", "pinned-ttl"}

func natsConfigCmd(_ context.Context, args []string, stdout io.Writer) error {
	o, runFS := newRunFlags()
	fs := flag.NewFlagSet("nats-config", flag.ContinueOnError)
	fs.SetOutput(stdout)
	runFS.VisitAll(func(f *flag.Flag) {
		if slices.Contains(natsConfigFlags, f.Name) {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	out := fs.String("out", "", "directory to write the definitions to (created if missing); empty: list them on stdout")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch nats-config [--out DIR] [flags]

Exports the JetStream streams, durable consumers, KV buckets and Object Store
buckets that iotwatch creates (run, ingest and run --source events set them
up at start; run --checkpoint nats: the checkpoints' bucket), as JSON files,
for operators who create them themselves or review them: the same
definitions the commands apply (package bus, Define), shaped by the same
flags (--partitions: one pinned consumer iotwatch-scorer-<p> per partition).
Streams and consumers are in the JetStream API's JSON, which
'nats stream add --config FILE' and 'nats consumer add STREAM --config FILE'
read; buckets are nats.go KeyValueConfig and ObjectStoreConfig JSON (give
their fields to 'nats kv add' and 'nats object add'). deploy/nats/jetstream
holds the files of the defaults.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	d, err := bus.Define(o.streams, o.partitions, o.pinnedTTL)
	if err != nil {
		return usageError{settingError(err)}
	}
	files, err := d.Files()
	if err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(files))
	if *out == "" {
		for _, n := range names {
			fmt.Fprintf(stdout, "# %s\n%s", n, files[n])
		}
		return nil
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("cannot create --out %q: %w", *out, err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(*out, n), files[n], 0o644); err != nil {
			return fmt.Errorf("cannot write %q: %w", n, err)
		}
	}
	fmt.Fprintf(stdout, "wrote %d definitions to %s\n", len(names), *out)
	return nil
}
