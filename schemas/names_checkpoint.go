package schemas

import "strconv"

// Checkpoints in the JetStream Object Store ('iotwatch run --checkpoint
// nats:'): the learned state travels through NATS, so that a scorer on
// another host restores it. Each object is a checkpoint of format 5
// (package pipeline/checkpoint) holding a subset of the state, with the
// stream position it covers in its header; a put replaces an object whole,
// so a reader sees the old object or the new one, never a mix.
const (
	// BucketCheckpoints is the Object Store bucket holding the checkpoints.
	BucketCheckpoints = "IOTWATCH_CHECKPOINTS"
	// CheckpointGlobalObject holds the state that spans partitions: the
	// class table, the detectors' class statistics, the alert calibration,
	// the entity owners' decision engines and the collector's open incidents
	// (restored only without partition owners: each owner groups its own
	// alerts).
	CheckpointGlobalObject = "global"
	// CheckpointMetaPartitions is the object metadata key holding the
	// partition count its objects were split by.
	CheckpointMetaPartitions = "partitions"
	// CheckpointMetaStreamSeq is the object metadata key holding the stream
	// position the object covers (also in its header), for operators.
	CheckpointMetaStreamSeq = "stream_seq"
	// CheckpointMetaEncoding is the object metadata key naming how the
	// checkpoint is encoded in the object: CheckpointEncodingS2, or none
	// (absent) for the checkpoint's own bytes.
	CheckpointMetaEncoding = "encoding"
	// CheckpointMetaOwner is the object metadata key naming the scorer
	// instance (its presence key in KVScorers) that saved a partition's
	// object; CheckpointMetaReleased is "true" when that save was the
	// instance's release of the partition (its Lost: every result before it
	// durable, nothing more of the partition written by it), absent for a
	// periodic save. A new owner whose partition's object names a live
	// owner that has not released it waits for the release
	// (pipeline.Handover).
	CheckpointMetaOwner    = "owner"
	CheckpointMetaReleased = "released"
	// CheckpointEncodingS2: the checkpoint compressed as an S2 stream
	// (github.com/klauspost/compress/s2, Snappy-compatible framing).
	CheckpointEncodingS2 = "s2"
)

// CheckpointDevicesObject names the object holding the device records of
// device partition p (PartitionOf) and the decision engines' cool-downs,
// blocks and strikes of its devices: "devices.<p>".
func CheckpointDevicesObject(p int) string { return "devices." + strconv.Itoa(p) }

// CheckpointEntitiesObject names the object holding the entity records of
// entity partition p (entity.PartitionOf, by the entity's route key, not by
// device): "entities.<p>".
func CheckpointEntitiesObject(p int) string { return "entities." + strconv.Itoa(p) }

// Class statistics merged across scorer instances (package pipeline/cluster,
// ClassSync): every scorer puts its contribution, what the devices of its
// partitions taught its classes (detectors.ClassModel.AppendContribution,
// S2-compressed as CheckpointEncodingS2), as one object named after the
// instance, every --class-sync interval, and merges the others' latest objects
// into what its detectors read. An object not rewritten for the expiry is
// no longer merged; the bucket's TTL removes it from the server.
const (
	// BucketClassStats is the Object Store bucket of the contributions.
	BucketClassStats = "IOTWATCH_CLASS_STATS"
	// ClassStatsMetaVersion is the object metadata key holding the
	// contribution's encoding version, for operators.
	ClassStatsMetaVersion = "version"
	// ClassStatsMetaWatermark is the object metadata key holding the
	// instance's event-time watermark (Unix nanoseconds, decimal): every
	// event of the partitions in ClassStatsMetaPartitions up to that time
	// is in the contribution.
	ClassStatsMetaWatermark = "watermark"
	// ClassStatsMetaPartitions is the object metadata key listing the
	// partitions the instance owned when it published (decimal, comma
	// separated).
	ClassStatsMetaPartitions = "partitions"
)
