package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// EnsureCheckpoints creates or updates the Object Store bucket of the
// checkpoints (schemas.BucketCheckpoints, file storage, cfg.LogsReplicas
// replicas: a checkpoint must outlive the server that took it, as the logs
// it points into do) and returns it.
func EnsureCheckpoints(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (jetstream.ObjectStore, error) {
	st, err := js.CreateOrUpdateObjectStore(ctx, checkpointsConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("cannot create or update object store %q: %w", schemas.BucketCheckpoints, err)
	}
	return st, nil
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
