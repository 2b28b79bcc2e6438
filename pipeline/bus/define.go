package bus

import (
	"encoding/json"
	"fmt"

	"github.com/iotwatch/iotwatch/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// Definitions are the JetStream objects iotwatch creates, as the Ensure
// functions create them: one source of truth for Ensure, EnsureIngest,
// EnsureScorer and the files 'iotwatch nats-config' writes for operators who
// create them themselves (with the nats CLI, Terraform or their own code).
type Definitions struct {
	// Streams are every stream Ensure creates or updates.
	Streams []jetstream.StreamConfig
	// Consumers are the durable consumers: the pipeline's and the ingest
	// stage's on IOTWATCH_LOGS, the scorers' on IOTWATCH_EVENTS (every
	// partition), and those of IOTWATCH_DECISIONS that store apply receipts
	// and unblocks (StoreConsumer, with its defaults).
	Consumers []ConsumerDefinition
	// Buckets are the KV buckets: active blocks (with per-key TTLs, as on
	// nats-server 2.11 and later), the cluster-wide caps and the shared
	// allowlist.
	Buckets []jetstream.KeyValueConfig
}

// ConsumerDefinition is a durable consumer and the stream it reads.
type ConsumerDefinition struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// Define returns the definitions for cfg, or cfg's validation error.
func Define(cfg StreamsConfig) (Definitions, error) {
	if err := cfg.Validate(); err != nil {
		return Definitions{}, err
	}
	d := Definitions{
		Streams: streamConfigs(cfg),
		Consumers: []ConsumerDefinition{
			{Stream: schemas.StreamLogs, Config: pipelineConsumer(cfg)},
			{Stream: schemas.StreamLogs, Config: ingestConsumer(cfg)},
			{Stream: schemas.StreamEvents, Config: scorerConsumer(cfg, nil)},
		},
		Buckets: []jetstream.KeyValueConfig{blocksConfig(cfg), budgetsConfig(cfg), allowlistConfig(cfg)},
	}
	d.Consumers = append(d.Consumers, storeConsumers()...)
	return d, nil
}

// Files returns d as JSON files by name, in the JetStream API's field names
// (what `nats stream add --config FILE` and `nats consumer add STREAM
// --config FILE` read): stream-<name>.json, consumer-<stream>-<durable>.json
// and kv-<bucket>.json (the nats.go KeyValueConfig; `nats kv add` takes its
// fields as flags).
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
	return files, nil
}
