package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// A takeover's messages that no previous owner judged.
//
// A partition's new owner judges again, in its catch-up (RestorePartition),
// the messages after its restored object's position that the previous
// owner was delivered. Of those, the ones up to the last message whose
// events the previous owner stored (lookUpWritten) were judged by it: the
// catch-up re-learns them, their stored results not written again. The
// ones after it were delivered to the previous owner (its pull-ahead, up
// to two pulls and a hand-on channel per partition, about an hour of
// event time of the cluster test's partitions) and never judged: their
// judgement is a first one, and a first judgement waits for the merged
// class view like any other (ClassGate). Judged in the catch-up, at once,
// they met a class view an hour behind them, and a class-dependent alert
// moved (TestClusterKills, bench/RESULTS.md w4 C1, w6 D0 and E6).
//
// So, with a ClassGate and a partition stream of its own (IOTWATCH_EVENTS),
// the catch-up stops at that last stored message, and the rest, read from
// the stream in order, waits in the replay: the ingest loop dispatches its
// messages as if the partition's consumer had delivered them, merged in
// stream order with what the consumer delivers (a replayed message goes
// before every fetched message after it in the stream; with nothing
// fetched, up to as many as the gate admits), after admit, so that they
// are judged within the gate's limit, move the event time dispatched and
// are reported learned with their fetch's barrier, like fetched messages.
// The ingest loop stays free: other partitions keep flowing and partition
// operations run while the gate holds. The consumer's redeliveries of
// them (the previous owner's unacked messages) are acked without being
// judged (partitionDone), with their fetch: a message acked before its
// replay judged it is not lost if this instance stops or loses the
// partition first, since the partition's object is saved no further than
// the last of its messages dispatched (partSeq), and the next owner's
// catch-up starts there. While a replay is pending the instance is not
// idle (its watermark does not claim the clock or the others' coverage).
// The replay's messages do not pass the partition consumer's fence: they
// are judged only while this instance holds the partition's lease
// (leaseHolder), and a lost partition's are dropped.

// replayed is a message of a takeover's replay.
type replayed struct {
	part int
	msg  jetstream.Msg
	md   *jetstream.MsgMetadata
}

// replayMaxBytes bounds the data a takeover's replay holds in memory; a
// longer one is judged in the catch-up, as before the replay.
const replayMaxBytes = 64 << 20

// readReplay reads partition part's messages on filters from sequence from
// to upTo, in stream order, for the replay; false when they hold more than
// replayMaxBytes.
func (p *Pipeline) readReplay(ctx context.Context, part int, filters []string, from, upTo uint64) ([]replayed, bool, error) {
	var out []replayed
	bytes := 0
	_, err := p.eachMessage(ctx, filters, from, upTo, maxEmptyFetches, func(msg jetstream.Msg, md *jetstream.MsgMetadata) error {
		if bytes += len(msg.Data()); bytes > replayMaxBytes {
			return errReplayTooLong
		}
		out = append(out, replayed{part: part, msg: msg, md: md})
		return nil
	})
	if err == errReplayTooLong {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cannot read the messages to replay: %w", err)
	}
	return out, true, nil
}

var errReplayTooLong = fmt.Errorf("more than %d bytes to replay", replayMaxBytes)

// queueReplay adds msgs (one partition's, in stream order) to the replay,
// whose messages are judged up to upTo; partition part's redeliveries up to
// it are acked without being judged (partitionDone). Only the ingest loop
// calls it (a partition operation).
func (p *Pipeline) queueReplay(part int, msgs []replayed, upTo uint64) {
	p.replayTo[part], p.replayLeft[part] = upTo, len(msgs)
	p.replay = append(p.replay, msgs...)
	slices.SortStableFunc(p.replay, func(a, b replayed) int {
		return cmp.Compare(a.md.Sequence.Stream, b.md.Sequence.Stream)
	})
	if len(msgs) == 0 {
		p.replayDone(part)
	}
}

// dropReplay forgets the replay's messages of partition part (lost: its
// next owner judges them).
func (p *Pipeline) dropReplay(part int) {
	if p.replayTo == nil || p.replayTo[part] == 0 {
		return
	}
	p.replay = slices.DeleteFunc(p.replay, func(r replayed) bool { return r.part == part })
	p.replayTo[part], p.replayLeft[part] = 0, 0
}

// leaseHolder is a Source that says whether this instance may still judge
// a partition's messages (partition.Consumer.Holds).
type leaseHolder interface {
	Holds(p int) bool
}

// replayBefore dispatches the replay's messages before stream sequence seq
// (all of them with seq math.MaxUint64) and up to limit of them (< 0: no
// limit); it returns how many it dispatched. A message of a partition whose
// lease ended (leaseHolder) stays: the partition is lost, and its loss
// drops it (dropReplay); judged, it would be judged by two owners. Only the
// ingest loop calls it.
func (p *Pipeline) replayBefore(ctx context.Context, seq uint64, limit int) int {
	h, _ := p.cons.(leaseHolder)
	n, i := 0, 0
	kept := p.replay[:0] // at or before i: filtered in place
	for ; i < len(p.replay) && p.replay[i].md.Sequence.Stream < seq && (limit < 0 || n < limit); i++ {
		r := p.replay[i]
		if h != nil && !h.Holds(r.part) {
			kept = append(kept, r)
			continue
		}
		s := r.md.Sequence.Stream
		p.seen.add(s)
		before := p.dispatched
		if !p.dispatch(ctx, r.msg, r.md) {
			// Shutting down: its partition's object is saved no further
			// than the messages dispatched before it.
			p.log.Warn("cannot dead-letter a record of a replayed message", "partition", r.part, "stream_seq", s, "err", ctx.Err())
		}
		p.M.Replayed.Add(p.dispatched - before)
		n++
		if p.replayLeft[r.part]--; p.replayLeft[r.part] == 0 {
			p.replayDone(r.part)
		}
	}
	kept = append(kept, p.replay[i:]...)
	clear(p.replay[len(kept):]) // the messages dispatched are not kept alive
	p.replay = kept
	if len(p.replay) == 0 {
		p.replay = nil
	}
	return n
}

// replayDone ends partition part's replay: every message of it up to its
// end is in the state.
func (p *Pipeline) replayDone(part int) {
	p.partSeq[part] = max(p.partSeq[part], p.replayTo[part])
	p.partFloor[part] = max(p.partFloor[part], p.replayTo[part])
	p.log.Info("replayed a taken-over partition's messages no previous owner judged", "partition", part, "to_seq", p.replayTo[part])
	p.replayTo[part] = 0
}

// msgSeq is msg's stream sequence (0 when it has no metadata), read as
// decodeMessage reads it (bus.Metadata: without allocating).
func msgSeq(msg jetstream.Msg) uint64 {
	var md jetstream.MsgMetadata
	if bus.Metadata(msg, &md) != nil {
		return 0
	}
	return md.Sequence.Stream
}

// replayable reports whether a takeover's messages that no previous owner
// judged may wait for the replay: with a gate, on a stream of partitions
// (each message is of one partition).
func (p *Pipeline) replayable() bool {
	return p.gate != nil && p.cfg.Stream != nil && p.cfg.Stream.CachedInfo().Config.Name == schemas.StreamEvents
}
