package schemas

import (
	"strconv"
	"strings"
)

// Device partitions: the unit in which events travel between the ingest
// stage and the scorers (subject iotwatch.events.<partition> of stream
// IOTWATCH_EVENTS) and in which scorers will own devices.
//
// Invariant (one writer per device, across machines): every event of a
// device is published to the same partition, because the partition is a pure
// function of the device (its tenant and id, through Event.DeviceAlt) and of
// the partition count. Every stage that partitions calls PartitionOf; a
// producer that publishes Arrow batches itself must too.

// DefaultPartitions is the default partition count (ingest's --partitions):
// enough for 16 scorer instances, few enough that a log message of 100 lines
// still makes batches of several events per partition. Changing it moves
// devices between partitions: change it only with every scorer consuming
// every partition (today's one-machine scorer does).
const DefaultPartitions = 16

// MaxPartitions bounds the partition count.
const MaxPartitions = 4096

// PartitionOf returns the partition (in [0, n)) of the device whose
// Event.DeviceAlt is deviceAlt. It uses DeviceAlt's high bits (Lemire's
// multiply-shift), so it is independent of the worker a scorer assigns the
// device to (shard.Of takes DeviceKey's high bits) and of the state table's
// probing (DeviceKey's low bits): a scorer owning one partition still spreads
// its devices over all its workers.
func PartitionOf(deviceAlt uint64, n int) int {
	return int(((deviceAlt >> 32) * uint64(n)) >> 32)
}

// EventsSubject returns the subject of partition p: iotwatch.events.<p>.
func EventsSubject(p int) string {
	return SubjectEventsPrefix + "." + strconv.Itoa(p)
}

// EventsSubjectPartition returns the partition of an EventsSubject, and
// false for any other subject.
func EventsSubjectPartition(subject string) (int, bool) {
	rest, ok := strings.CutPrefix(subject, SubjectEventsPrefix+".")
	if !ok {
		return 0, false
	}
	p, err := strconv.Atoi(rest)
	return p, err == nil && p >= 0
}

// EventsMsgID returns the Nats-Msg-Id of the Arrow batch holding the events
// of log message logSeq (its sequence in IOTWATCH_LOGS) for partition p:
// "<logSeq>.<p>". A re-run of the same log message (a crash before its ack)
// republishes under the same ids, and the stream's duplicate window drops
// them.
func EventsMsgID(logSeq uint64, p int) string {
	return strconv.FormatUint(logSeq, 10) + "." + strconv.Itoa(p)
}

// ScorerConsumer returns the name of partition p's durable consumer on
// IOTWATCH_EVENTS ("iotwatch-scorer-<p>"), filtered to EventsSubject(p), with
// the pinned-client priority policy: every scorer instance pulls from every
// partition's consumer, in priority group ScorerGroup, and the server
// delivers each partition to one instance at a time (package
// pipeline/partition).
func ScorerConsumer(p int) string {
	return ConsumerScorer + "-" + strconv.Itoa(p)
}

// ScorerGroup is the priority group the scorers pull partitions' consumers
// in (ScorerConsumer). The server pins one client per consumer and group.
const ScorerGroup = "scorers"
