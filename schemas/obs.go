package schemas

import (
	"strconv"
	"strings"
)

// Entity observations between the ingest stage and the entity owners.
//
// One writer per entity across instances (issue 15): an address that
// attacks devices of every device partition must be judged by one owner,
// not by each scorer that owns some of its devices. So the ingest stage
// publishes, next to each event batch, the entity observations of its
// events (package pipeline/entity, Obs: the client address, its prefix, the
// API key; fixed size, taken from the event alone, nothing of the device's
// state) partitioned by ENTITY partition (entity.ObsPartition, a pure
// function of the address's prefix or the key) to iotwatch.obs.<q> in the
// same stream IOTWATCH_EVENTS. The consumer of partition q
// (ScorerConsumer(q)) filters both EventsSubject(q) and ObsSubject(q), so
// the one pinned owner of partition q gets its devices' events and its
// entities' observations in one stream order: ownership, the redelivery
// guard, the per-partition checkpoints (devices.<q>, entities.<q>) and their
// handover carry over with no coordination of their own.
//
// An event batch whose observations were published this way carries the
// header HeaderObs (HeaderObsPublished); a scorer takes the observations
// of a batch without it (an older ingest stage, a producer publishing
// Arrow batches itself) from its events, as one process does: those
// entities then have a writer per scorer.
//
// Batch layout, version ObsBatchVersion (all integers little-endian): a
// header of ObsHeaderSize bytes (byte 0: the version; byte 1: zero; bytes
// 2-3: the record size, ObsRecordSize), then records of ObsRecordSize
// bytes, one per observation, in the order of the log lines:
//
//	offset size field
//	0      16   client address (16-byte form; an IPv4 address as ::ffff:a.b.c.d)
//	16     8    log stream sequence of the event's message
//	24     8    event id
//	32     8    event time, Unix ns (signed)
//	40     8    device key (Event.DeviceKey)
//	48     8    route (Event.CommandID)
//	56     4    line within the log message
//	60     1    flags: 1 IPv4, 2 the device is identified by the address,
//	            4 authentication failed, 8 an API key's observation
//	61     1    outcome class (entity package: ok, client error, server error)
//	62     1    key length (at most 48)
//	63     48   key text: the API key id (flag 8), else the event's tenant
//	            followed by its device class
//	111    1    class length (0: none; a version-1 writer left it zero)
//
// A reader rejects a batch of another version or record size, or whose
// length is not the header plus whole records.
const (
	// ObsBatchVersion is the layout version of an observation batch.
	ObsBatchVersion = 1
	// ObsHeaderSize is the size of an observation batch's header.
	ObsHeaderSize = 4
	// ObsRecordSize is the size of one observation in a batch.
	ObsRecordSize = 112
)

// Subjects of entity observations in IOTWATCH_EVENTS.
const (
	// SubjectObsPrefix is followed by ".<entity partition>" (ObsSubject).
	SubjectObsPrefix = "iotwatch.obs"
	SubjectObsAll    = "iotwatch.obs.>"
)

// HeaderObs on an event batch says where its events' entity observations
// are: HeaderObsPublished when the ingest stage published them to
// ObsSubject of their entity partitions (the scorer does not take them from
// the events); absent, the scorer takes them from the events.
const (
	HeaderObs          = "Iotwatch-Obs"
	HeaderObsPublished = "published"
)

// ObsSubject returns the subject of entity partition q's observations:
// iotwatch.obs.<q>.
func ObsSubject(q int) string {
	return SubjectObsPrefix + "." + strconv.Itoa(q)
}

// ObsMsgID returns the Nats-Msg-Id of the observation batch of log message
// logSeq for entity partition q: "<logSeq>.o<q>" (apart from the event
// batches' EventsMsgID), so that a re-run of the log message republishes
// nothing twice.
func ObsMsgID(logSeq uint64, q int) string {
	return strconv.FormatUint(logSeq, 10) + ".o" + strconv.Itoa(q)
}

// SubjectPartition returns the partition whose consumer (ScorerConsumer)
// filters subject, an EventsSubject or an ObsSubject, and false for any
// other subject.
func SubjectPartition(subject string) (int, bool) {
	if p, ok := EventsSubjectPartition(subject); ok {
		return p, true
	}
	rest, ok := strings.CutPrefix(subject, SubjectObsPrefix+".")
	if !ok {
		return 0, false
	}
	q, err := strconv.Atoi(rest)
	return q, err == nil && q >= 0
}

// PartitionSubjects returns the subjects partition p's consumer filters
// (ScorerConsumer(p)): its devices' events and its entities' observations.
func PartitionSubjects(p int) []string {
	return []string{EventsSubject(p), ObsSubject(p)}
}
