package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// EnsureCheckpoints creates or updates the Object Store bucket of the
// checkpoints (schemas.BucketCheckpoints, file storage, cfg.LogsReplicas
// replicas: a checkpoint must outlive the server that took it, as the logs
// it points into do) and returns it.
func EnsureCheckpoints(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (jetstream.ObjectStore, error) {
	return ensureObjectStore(ctx, js, checkpointsConfig(cfg))
}

// checkpointsConfig is the Object Store bucket of the checkpoints
// (EnsureCheckpoints).
func checkpointsConfig(cfg StreamsConfig) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      schemas.BucketCheckpoints,
		Description: "iotwatch: checkpoints of the learned state, one object per partition",
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.LogsReplicas, 1),
	}
}

// ClassStatsTTL is how long the server keeps an object of the bucket of
// class contributions that is not rewritten (a stopped instance's): longer
// than any merge expiry.
const ClassStatsTTL = 24 * time.Hour

// EnsureClassStats creates or updates the Object Store bucket of the class
// statistics contributions (schemas.BucketClassStats, memory storage: every
// object is rewritten within seconds, and a lost one is rewritten at the
// next interval; cfg.LogsReplicas replicas) and returns it.
func EnsureClassStats(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (jetstream.ObjectStore, error) {
	return ensureObjectStore(ctx, js, classStatsConfig(cfg))
}

// ensureObjectStore creates or updates the Object Store bucket c.
func ensureObjectStore(ctx context.Context, js jetstream.JetStream, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	st, err := js.CreateOrUpdateObjectStore(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("cannot create or update object store %q: %w", c.Bucket, err)
	}
	return st, nil
}

// classStatsConfig is the Object Store bucket of the class contributions
// (EnsureClassStats).
func classStatsConfig(cfg StreamsConfig) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      schemas.BucketClassStats,
		Description: "iotwatch: class statistics each scorer contributes, one object per instance, merged by the others",
		Storage:     jetstream.MemoryStorage,
		Replicas:    max(cfg.LogsReplicas, 1),
		TTL:         ClassStatsTTL,
	}
}
