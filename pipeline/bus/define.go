package bus

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// Definitions are the JetStream objects iotwatch creates, as the Ensure
// functions create them: one source of truth for Ensure, EnsureIngest,
// EnsurePartitions, EnsureCheckpoints, EnsureClassStats and the files 'iotwatch nats-config'
// writes for operators who create them themselves (with the nats CLI,
// Terraform or their own code).
type Definitions struct {
	// Streams are every stream Ensure creates or updates.
	Streams []jetstream.StreamConfig
	// Consumers are the durable consumers: the pipeline's and the ingest
	// stage's on IOTWATCH_LOGS, the scorers' per-partition consumers on
	// IOTWATCH_EVENTS (iotwatch-scorer-<p>, one per partition, pinned:
	// nats-server 2.11 and later), and those of IOTWATCH_DECISIONS that
	// store apply receipts and unblocks (StoreConsumer, with its defaults).
	Consumers []ConsumerDefinition
	// Buckets are the KV buckets: active blocks (with per-key TTLs, as on
	// nats-server 2.11 and later), the cluster-wide caps, the shared
	// allowlist and the scorers' presence keys.
	Buckets []jetstream.KeyValueConfig
	// ObjectStores are the Object Store buckets: the checkpoints of
	// --checkpoint nats: and the scorers' class statistics contributions
	// (merged across instances).
	ObjectStores []jetstream.ObjectStoreConfig
}

// ConsumerDefinition is a durable consumer and the stream it reads.
type ConsumerDefinition struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// Define returns the definitions for cfg and the scorers' partitions
// (schemas.DefaultPartitions when 0) and pinnedTTL (DefaultPinnedTTL when
// 0), as 'run --source events --partitions --pinned-ttl' creates them, or
// the first invalid setting's error.
func Define(cfg StreamsConfig, partitions int, pinnedTTL time.Duration) (Definitions, error) {
	if err := cfg.Validate(); err != nil {
		return Definitions{}, err
	}
	if partitions == 0 {
		partitions = schemas.DefaultPartitions
	}
	if partitions < 1 || partitions > schemas.MaxPartitions {
		return Definitions{}, fmt.Errorf("cannot define partition consumers: %d partitions, want 1 to %d", partitions, schemas.MaxPartitions)
	}
	if pinnedTTL <= 0 {
		pinnedTTL = DefaultPinnedTTL
	}
	d := Definitions{
		Streams: streamConfigs(cfg),
		Consumers: []ConsumerDefinition{
			{Stream: schemas.StreamLogs, Config: pipelineConsumer(cfg)},
			{Stream: schemas.StreamLogs, Config: ingestConsumer(cfg)},
		},
		Buckets:      []jetstream.KeyValueConfig{blocksConfig(cfg), budgetsConfig(cfg), allowlistConfig(cfg), scorersConfig(cfg, pinnedTTL)},
		ObjectStores: []jetstream.ObjectStoreConfig{checkpointsConfig(cfg), classStatsConfig(cfg)},
	}
	for p := range partitions {
		d.Consumers = append(d.Consumers, ConsumerDefinition{Stream: schemas.StreamEvents, Config: partitionConsumer(cfg, p, pinnedTTL)})
	}
	d.Consumers = append(d.Consumers, storeConsumers()...)
	return d, nil
}

// Files returns d as JSON files by name, in the JetStream API's field names
// (what `nats stream add --config FILE` and `nats consumer add STREAM
// --config FILE` read): stream-<name>.json, consumer-<stream>-<durable>.json,
// kv-<bucket>.json (the nats.go KeyValueConfig; `nats kv add` takes its
// fields as flags) and obj-<bucket>.json (the nats.go ObjectStoreConfig;
// `nats object add` takes its fields as flags).
func (d Definitions) Files() (map[string][]byte, error) {
	files := map[string][]byte{}
	add := func(name string, v any) error {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("cannot encode %q: %w", name, err)
		}
		files[name] = append(b, '\n')
		return nil
	}
	for _, s := range d.Streams {
		if err := add("stream-"+s.Name+".json", s); err != nil {
			return nil, err
		}
	}
	for _, c := range d.Consumers {
		if err := add("consumer-"+c.Stream+"-"+c.Config.Durable+".json", c.Config); err != nil {
			return nil, err
		}
	}
	for _, k := range d.Buckets {
		if err := add("kv-"+k.Bucket+".json", k); err != nil {
			return nil, err
		}
	}
	for _, o := range d.ObjectStores {
		if err := add("obj-"+o.Bucket+".json", o); err != nil {
			return nil, err
		}
	}
	return files, nil
}
