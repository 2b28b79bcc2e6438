package pipeline

// Checkpoints in the JetStream Object Store (Config.CheckpointStore): the
// state a file checkpoint holds, split so that a partition's owner saves and
// restores its own part.
//
// What is per partition and what is global:
//   - devices.<p> (schemas.CheckpointDevicesObject): the records of the
//     devices of device partition p (schemas.PartitionOf of the record's
//     DeviceAlt, which the state table keeps as the record's alt key), and
//     the saving instance's decision engines (cool-downs, blocks, strikes).
//     The engines' entries are keyed by DeviceKey, which does not say its
//     partition: each object carries the engines whole (they hold only
//     devices that alerted recently: small), and a restore keeps the entries
//     of the devices whose records the object holds.
//   - entities.<q> (schemas.CheckpointEntitiesObject): the entity records
//     of entity partition q (entity.PartitionOf, by the entity's route key:
//     an IP and its prefix share it).
//   - global (schemas.CheckpointGlobalObject): the class table and the
//     detectors' class statistics (a class spans partitions), the alert
//     calibration, and the entity owners' decision engines (keyed by entity
//     key, which does not name its partition either).
//
// Each object is a format-4 checkpoint (package checkpoint) with the
// stream position it covers in its header (and, for operators, in its
// metadata with the partition count). A put replaces an object whole: a
// get sees the old object or the new one, or fails when the put purged the
// old object's chunks under it, and is then made again (loadAgain,
// store_reread.go). Objects of one
// save need not all land (a crash between puts): each is used at its own
// position, and the catch-up judges again, for each partition, only the
// messages after its own object's position (catchSkip).
//
// One writer per device holds across instances as long as one instance owns
// a partition at a time (the ownership's job, Config.PartitionOwnership):
// only the owner of device partition p saves devices.<p>, at p's own
// position (savePosition: the partition consumer's ack floor, bounded by
// the last of p's messages dispatched; the other partitions' messages may
// be ahead of p's not fetched yet, and p's own do not all come in stream
// order). Handover
// connects the ownership's hooks to SavePartition, RestorePartition and
// DropPartition. After a crash, one thing does not travel exactly: a
// worker's silence sweep window is the worker's, not a partition's, so a
// silence that falls between a restored object's position and the event
// time the new owner's worker reached (catching up another partition first)
// is not reported (TestHandoverAfterCrash logs it when it happens).
// One writer per entity holds the same way: the ingest stage publishes each event's entity
// observations to their entity partition's subject (schemas.ObsSubject),
// which partition q's consumer filters with its events, so the owner of
// partition q is the one writer of entity partition q's records: it saves
// entities.<q> with devices.<q>, restores it when it acquires q, and drops
// its records when it loses q. (Observations a scorer takes from events
// without schemas.HeaderObs, a producer's own Arrow batches, have a writer
// per scorer, and only those of owned partitions are saved.) The class
// statistics are merged across instances by pipeline/cluster.ClassSync, not
// here: partition 0's owner writes the global object (its own view of the
// classes, and its entity owners' decision engines); a single instance (no
// ownership) owns everything.
//
// Objects are compressed with S2 (schemas.CheckpointEncodingS2): the
// detectors' class statistics are dense, mostly zero tables (80 MB raw).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/schemas"
)

// ErrNoCheckpointObject reports that the Object Store holds no checkpoint
// object of that name (never saved): a cold start of what it would hold.
var ErrNoCheckpointObject = errors.New("no checkpoint object")

// catchSkip holds, during a catch-up, the position each partition's restored
// state covers: an event of a message at or below its partition's position
// is in that state already and is not judged again. A partition that
// cold-started has math.MaxUint64: its events before the restart are not
// judged against a state that never learned what preceded them.
type catchSkip struct {
	devices  []uint64 // by device partition
	entities []uint64 // by entity partition; nil: no entity observation is fed
}

func (s *catchSkip) device(alt, seq uint64) bool {
	return seq > s.devices[schemas.PartitionOf(alt, len(s.devices))]
}

func (s *catchSkip) entity(ob *entity.Obs, seq uint64) bool {
	return s.entities != nil && seq > s.entities[entity.ObsPartition(ob, len(s.entities))]
}

// checkpointing reports whether the pipeline saves checkpoints (to a file
// or to the Object Store).
func (p *Pipeline) checkpointing() bool {
	return p.cfg.Checkpoint != "" || p.cfg.CheckpointStore != nil
}

// objectName is how logs and errors name an object of the store.
func (p *Pipeline) objectName(name string) string {
	return "nats:" + schemas.BucketCheckpoints + "/" + name
}

// putObject saves a checkpoint of meta's subset (checkpoint.Encode) as the
// object name, streamed, and returns its size. The tables and model must not
// change during the call.
func (p *Pipeline) putObject(ctx context.Context, name string, meta checkpoint.Meta, tables []*state.Table, model *detectors.ClassModel) (uint64, error) {
	return p.putObjectAs(ctx, name, meta, tables, model, false)
}

// putObjectAs is putObject naming this instance as the object's saver
// (schemas.CheckpointMetaOwner, with a partition Source that has
// instances), and marking the save its release of the partition
// (schemas.CheckpointMetaReleased) when released is set.
func (p *Pipeline) putObjectAs(ctx context.Context, name string, meta checkpoint.Meta, tables []*state.Table, model *detectors.ClassModel, released bool) (uint64, error) {
	pr, pw := io.Pipe()
	encoded := make(chan struct{})
	go func() {
		defer close(encoded)
		// Compressed (S2): the detectors' class statistics are dense tables,
		// mostly zeros (80 MB raw, bench/RESULTS.md), and records hold many
		// zeros.
		zw := s2.NewWriter(pw, s2.WriterConcurrency(1))
		err := checkpoint.Encode(zw, meta, tables, model)
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	md := map[string]string{
		schemas.CheckpointMetaPartitions: strconv.Itoa(p.cfg.Partitions),
		schemas.CheckpointMetaStreamSeq:  strconv.FormatUint(meta.StreamSeq, 10),
		schemas.CheckpointMetaEncoding:   schemas.CheckpointEncodingS2,
	}
	if src, ok := p.cons.(releaseSource); ok && src.Instance() != "" {
		md[schemas.CheckpointMetaOwner] = src.Instance()
		if released {
			md[schemas.CheckpointMetaReleased] = "true"
		}
	}
	info, err := p.cfg.CheckpointStore.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: md}, pr)
	pr.CloseWithError(errors.New("the put ended")) // unblocks the encoder when the put stopped early
	<-encoded                                      // the tables are not read after this returns
	if err != nil {
		return 0, fmt.Errorf("cannot put checkpoint %q: %w", p.objectName(name), err)
	}
	return info.Size, nil
}

// getObject restores the object name (checkpoint.Decode) into to and model.
// A missing object is ErrNoCheckpointObject; an object split by another
// partition count is checkpoint.ErrIncompatible; a get that receives
// nothing for objectStall is errObjectStalled. A read that fails once the
// get has the object's info (other than checkpoint.ErrIncompatible: a
// stall, a short read, a wrong digest, what the decoder refuses) is a
// *readFailure carrying that info, which loadAgain compares with the
// object's info now.
func (p *Pipeline) getObject(ctx context.Context, name string, to checkpoint.Target, model *detectors.ClassModel) (checkpoint.Meta, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := newStallWatch(objectStall, cancel)
	defer w.stop()
	w.waiting(true)
	r, err := p.cfg.CheckpointStore.Get(ctx, name)
	w.waiting(false)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return checkpoint.Meta{}, fmt.Errorf("cannot restore %q: %w", p.objectName(name), ErrNoCheckpointObject)
	}
	if err != nil {
		return checkpoint.Meta{}, fmt.Errorf("cannot get checkpoint %q: %w", p.objectName(name), w.cause(err))
	}
	info, err := r.Info()
	if err != nil {
		r.Close()
		return checkpoint.Meta{}, fmt.Errorf("cannot get checkpoint %q: %w", p.objectName(name), err)
	}
	w.watchReplaced(func() bool {
		ictx, cancel := context.WithTimeout(ctx, objectStall/8)
		defer cancel()
		replaced, _ := p.objectReplaced(ictx, name, info)
		return replaced
	})
	body := w.reader(r) // closes r
	defer body.Close()
	failed := func(err error) error {
		if err == nil || errors.Is(err, checkpoint.ErrIncompatible) {
			return err
		}
		return &readFailure{info: info, err: err}
	}
	if got := info.Metadata[schemas.CheckpointMetaPartitions]; got != strconv.Itoa(p.cfg.Partitions) {
		return checkpoint.Meta{}, fmt.Errorf("cannot restore %q: saved with %q partitions, this scorer uses %d: %w",
			p.objectName(name), got, p.cfg.Partitions, checkpoint.ErrIncompatible)
	}
	// The object reader checks the object's digest at its end; Decode checks
	// the checkpoint's own checksum and reads to the end.
	var in io.Reader = body
	switch enc := info.Metadata[schemas.CheckpointMetaEncoding]; enc {
	case "":
	case schemas.CheckpointEncodingS2:
		in = s2.NewReader(body)
	default:
		return checkpoint.Meta{}, fmt.Errorf("cannot restore %q: encoding %q, this build reads %q: %w",
			p.objectName(name), enc, schemas.CheckpointEncodingS2, checkpoint.ErrIncompatible)
	}
	m, err := checkpoint.Decode(ctx, in, p.objectName(name), checkpoint.MetaOf(p.layout), to, model)
	if err == nil {
		// The digest is checked when the object's reader reaches its end.
		if _, err = io.Copy(io.Discard, body); err != nil {
			err = fmt.Errorf("cannot restore %q: %w", p.objectName(name), err)
		}
	}
	return m, failed(w.cause(err))
}

// objectStall bounds how long a checkpoint object's get may wait for the
// server without receiving a byte (the get's request, then each read of its
// chunks): after a NATS node was killed, a restore's get whose chunks'
// consumer was lost with the node waited for its whole timeout
// (storeTimeout, 5 min) in the 3-node cluster test, the scorer's ingest
// loop waiting with it (bench/RESULTS.md, c2 run 10). Time the decoder
// spends is not counted: a large object that keeps arriving is never cut.
// A get that stalls fails with errObjectStalled; loadPartition,
// loadEntities and the global object's restore get the object once more (a
// new get, a new consumer; loadAgain), then the partition cold-starts
// (RestorePartition: learned from the stream when its previous owner judged
// messages; for the global object, its class statistics start cold). The
// goroutine of a stalled read ends at the get's deadline.
var objectStall = 30 * time.Second

// errObjectStalled reports a checkpoint object's get that received nothing
// for objectStall.
var errObjectStalled = errors.New("the object store sent nothing")

// stallWatch cancels a get (and ends its reader with errObjectStalled) once
// it has waited for the server for longer than its bound; and, once the get
// has the object's info, as soon as a wait of more than a sixteenth of the
// bound meets the object replaced (errObjectReplaced: the put purged the
// chunks the get waits for, which will not come).
type stallWatch struct {
	since    atomic.Int64 // when the wait under way began (Unix ns), 0 when none
	stalled  atomic.Bool
	gone     atomic.Bool                 // the object was replaced during a wait
	replaced atomic.Pointer[func() bool] // whether the object was replaced since the get read its info
	cancel   context.CancelFunc
	pw       atomic.Pointer[io.PipeWriter]
	done     chan struct{}
}

func newStallWatch(bound time.Duration, cancel context.CancelFunc) *stallWatch {
	w := &stallWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		t := time.NewTicker(bound / 16)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case now := <-t.C:
				at := w.since.Load()
				if at == 0 {
					continue
				}
				if now.UnixNano()-at > bound.Nanoseconds() {
					w.stalled.Store(true)
					if pw := w.pw.Load(); pw != nil {
						pw.CloseWithError(fmt.Errorf("nothing for %s: %w", bound, errObjectStalled))
					}
					w.cancel()
					return
				}
				if f := w.replaced.Load(); f != nil && now.UnixNano()-at >= (bound/16).Nanoseconds() && (*f)() {
					w.gone.Store(true)
					if pw := w.pw.Load(); pw != nil {
						pw.CloseWithError(errObjectReplaced)
					}
					w.cancel()
					return
				}
			}
		}
	}()
	return w
}

// waiting marks the start (and the end) of a wait for the server.
func (w *stallWatch) waiting(on bool) {
	if on {
		w.since.Store(time.Now().UnixNano())
	} else {
		w.since.Store(0)
	}
}

func (w *stallWatch) stop() { close(w.done) }

// cause returns errObjectStalled or errObjectReplaced (wrapped) for an
// error of a get w cut.
func (w *stallWatch) cause(err error) error {
	if err != nil && w.stalled.Load() && !errors.Is(err, errObjectStalled) {
		return fmt.Errorf("nothing for %s: %w", objectStall, errors.Join(errObjectStalled, err))
	}
	if err != nil && w.gone.Load() && !errors.Is(err, errObjectReplaced) {
		return errors.Join(errObjectReplaced, err)
	}
	return err
}

// watchReplaced makes w check, during a wait of its get's reads, whether
// the object was replaced since the get read its info (replaced must
// return within an eighth of w's bound).
func (w *stallWatch) watchReplaced(replaced func() bool) { w.replaced.Store(&replaced) }

// reader returns r's bytes through a pipe filled by a goroutine, so that a
// read blocked on the server can be given up: the object's reader does not
// return before its context's deadline however it is cancelled, and its
// Close waits for that read. The goroutine closes r once its read returns
// (at the latest at the get's deadline, storeTimeout).
func (w *stallWatch) reader(r io.ReadCloser) io.ReadCloser {
	pr, pw := io.Pipe()
	w.pw.Store(pw)
	go func() {
		defer r.Close()
		buf := make([]byte, 64<<10)
		for {
			w.waiting(true)
			n, err := r.Read(buf)
			w.waiting(false)
			if n > 0 {
				if _, werr := pw.Write(buf[:n]); werr != nil {
					return // the reader is closed
				}
			}
			if err != nil {
				pw.CloseWithError(err) // io.EOF: a clean end
				return
			}
		}
	}()
	return pr
}

// saveStore saves every partition's objects, the entities' and the global
// one at the position of everything dispatched so far; the workers must be
// stopped or paused.
func (p *Pipeline) saveStore(ctx context.Context) error {
	start := time.Now()
	seq := max(p.lastSeq.Load(), p.restored.StreamSeq)
	var bytes uint64
	for part := range p.cfg.Partitions {
		if !p.owned[part] {
			continue
		}
		at := p.savePosition(ctx, part, seq)
		n, err := p.savePartition(ctx, part, at)
		if err != nil {
			return err
		}
		bytes += n
		if len(p.owners) == 0 {
			continue
		}
		if n, err = p.saveEntities(ctx, part, at); err != nil {
			return err
		}
		bytes += n
	}
	if !p.owned[0] {
		// The global object's writer is partition 0's owner.
		p.log.Info("wrote checkpoint", "checkpoint", p.objectName("*"), "global", false, "partitions", p.cfg.Partitions, "stream_seq", seq,
			"bytes", bytes, "seconds", time.Since(start).Seconds())
		return nil
	}
	global := checkpoint.MetaOf(p.layout)
	global.StreamSeq = seq
	for _, o := range p.owners {
		global.EntityEngines = append(global.EntityEngines, o.Engine().AppendState(nil))
	}
	if c := p.stack.Calibration; c != nil {
		global.Calibration = c.AppendSnapshot(nil)
	}
	global.Incidents = p.incidentState
	n, err := p.putObject(ctx, schemas.CheckpointGlobalObject, global, nil, p.model)
	if err != nil {
		return err
	}
	bytes += n
	p.log.Info("wrote checkpoint", "checkpoint", p.objectName("*"), "partitions", p.cfg.Partitions, "stream_seq", seq,
		"bytes", bytes, "seconds", time.Since(start).Seconds())
	return nil
}

// savePosition returns the stream position at which partition part's
// objects are saved when everything dispatched up to seq is durable: seq
// (or the partition's restored position, if further on) for a pipeline that
// owns every partition, which reads one stream in order.
//
// With Config.PartitionOwnership, the position must be one at or below
// which every message of the partition is in this instance's state: the
// next owner restores the object, judges again only the messages after it,
// and acks their redeliveries at or below it without judging them. The last
// message of the partition dispatched (partSeq) is not such a position: a
// partition's messages do not all come in stream order (a message given
// back, or delivered to a pull that had given up, comes back after the ack
// wait, after later ones), so one below it may never have been judged here.
// The position is the partition consumer's ack floor (every message of the
// partition at or below it acked: judged, and its results durable), taken
// after the results before the save were made durable and their acks
// confirmed (Pipeline.durable), bounded by partSeq, and never below what
// this instance's restore covered (partFloor). Without the consumer's state
// (a Source that does not give it, or an error), it is partFloor.
func (p *Pipeline) savePosition(ctx context.Context, part int, seq uint64) uint64 {
	if !p.cfg.PartitionOwnership {
		return max(seq, p.partSeq[part])
	}
	src, ok := p.cons.(partitionSource)
	if !ok {
		return p.partSeq[part]
	}
	ictx, cancel := context.WithTimeout(ctx, partitionInfoWait)
	info, err := src.PartitionInfo(ictx, part)
	cancel()
	if err != nil {
		p.log.Warn("cannot read a partition's ack floor: its checkpoint is saved at its restored position", "partition", part,
			"stream_seq", p.partFloor[part], "err", err)
		return p.partFloor[part]
	}
	return max(p.partFloor[part], min(info.AckFloor.Stream, p.partSeq[part]))
}

// partitionInfoWait bounds savePosition's read of a partition's consumer:
// a request sent during a consumer leader's election after a NATS node was
// killed was never answered, and under the save's storeTimeout it held the
// ingest loop 5 minutes in a fenced partition's release (TestClusterKills,
// bench/RESULTS.md w8: G5 and H7). Past it the position is partFloor,
// a lower one: the next owner judges more again, never less.
var partitionInfoWait = 10 * time.Second

// partitionSource is a Source whose partitions' consumers can be read one
// by one (partition.Consumer).
type partitionSource interface {
	PartitionInfo(ctx context.Context, p int) (*jetstream.ConsumerInfo, error)
	FirstRedelivered(p int) bool
}

// savePartition saves object devices.<part> at position at (savePosition):
// the records of the partition's devices and the decision engines.
func (p *Pipeline) savePartition(ctx context.Context, part int, at uint64) (uint64, error) {
	return p.savePartitionAs(ctx, part, at, false)
}

// savePartitionAs is savePartition, marked as this instance's release of
// the partition when released is set (putObjectAs).
func (p *Pipeline) savePartitionAs(ctx context.Context, part int, at uint64, released bool) (uint64, error) {
	tables := make([]*state.Table, len(p.workers))
	meta := checkpoint.MetaOf(p.layout)
	meta.StreamSeq = at
	if p.cfg.PartitionOwnership {
		// An object further on was saved by a later owner (this instance
		// stalled and was fenced off the partition, see partition): it is
		// not overwritten with older state.
		name := schemas.CheckpointDevicesObject(part)
		if info, err := p.cfg.CheckpointStore.GetInfo(ctx, name); err == nil {
			if at, err := strconv.ParseUint(info.Metadata[schemas.CheckpointMetaStreamSeq], 10, 64); err == nil && at > meta.StreamSeq {
				p.log.Warn("partition checkpoint not saved: the stored one is further on (a later owner's)", "checkpoint", p.objectName(name), "stored_seq", at, "this_seq", meta.StreamSeq)
				return 0, nil
			}
		}
	}
	for i, w := range p.workers {
		tables[i] = w.Table()
		meta.Engines = append(meta.Engines, w.Engine().AppendState(nil))
	}
	meta.Keep = func(_, alt uint64) bool { return schemas.PartitionOf(alt, p.cfg.Partitions) == part }
	return p.putObjectAs(ctx, schemas.CheckpointDevicesObject(part), meta, tables, nil, released)
}

// saveEntities saves object entities.<q> at position at (savePosition: the
// observations of entity partition q come through partition q's consumer,
// with its devices' events): the records of entity partition q. The entity
// owners must be stopped or paused.
func (p *Pipeline) saveEntities(ctx context.Context, q int, at uint64) (uint64, error) {
	ents := checkpoint.MetaOf(p.layout)
	ents.StreamSeq, ents.EntityRecordSize = at, entity.RecordSize
	for _, o := range p.owners {
		ents.EntityTables = append(ents.EntityTables, o.Table())
	}
	ents.KeepEntity = func(rec []byte) bool { return entity.PartitionOf(rec, p.cfg.Partitions) == q }
	return p.putObject(ctx, schemas.CheckpointEntitiesObject(q), ents, nil, nil)
}

// loadPartition restores object devices.<part> into the workers' tables and
// engines; the workers must be stopped or paused. The records it put are
// taken out again when the object cannot be used (the partition then
// cold-starts); records of the partition already in the tables are
// overwritten by the object's. A get whose read fails (the object replaced
// while it was read, a stall, a misread) is made again as loadAgain says.
func (p *Pipeline) loadPartition(ctx context.Context, part int) (checkpoint.Meta, error) {
	return p.loadAgain(ctx, schemas.CheckpointDevicesObject(part), func() (checkpoint.Meta, error) { return p.loadPartitionOnce(ctx, part) })
}

func (p *Pipeline) loadPartitionOnce(ctx context.Context, part int) (checkpoint.Meta, error) {
	type dev struct{ key, alt uint64 }
	var put []dev
	misplaced := 0
	n := len(p.workers)
	m, err := p.getObject(ctx, schemas.CheckpointDevicesObject(part), checkpoint.Target{
		Reserve: func(records uint64) {
			per := reservePerWorker(records, n)
			for _, w := range p.workers {
				w.Table().Reserve(w.Table().Len() + per)
			}
		},
		Put: func(key, alt uint64, lastSeen int64, rec []byte) {
			if schemas.PartitionOf(alt, p.cfg.Partitions) != part {
				misplaced++
				return
			}
			r, _ := p.workers[shard.Of(key, n)].Table().Record(key, alt, lastSeen)
			copy(r, rec)
			put = append(put, dev{key, alt})
		},
	}, nil)
	if err == nil && misplaced > 0 {
		err = fmt.Errorf("cannot restore %q: %d of its %d records are of other partitions", p.objectName(schemas.CheckpointDevicesObject(part)), misplaced, m.Records)
	}
	if err != nil {
		for _, d := range put {
			p.workers[shard.Of(d.key, n)].Table().Delete(d.key, d.alt)
		}
		return m, err
	}
	if len(m.Engines) > 0 {
		mine := make(map[uint64]struct{}, len(put))
		for _, d := range put {
			mine[d.key] = struct{}{}
		}
		for j, snap := range m.Engines {
			for i, w := range p.workers {
				owns := func(device uint64) bool {
					_, ok := mine[device]
					return ok && shard.Of(device, n) == i
				}
				if err := w.Engine().LoadState(snap, owns); err != nil {
					p.log.Warn("cannot restore a decision engine of a partition: its devices' cool-downs and blocks start empty",
						"checkpoint", p.objectName(schemas.CheckpointDevicesObject(part)), "engine", j, "err", err)
				}
			}
		}
	}
	return m, nil
}

// loadEntities restores object entities.<q> into the entity owners' tables,
// taking the records out again when the object cannot be used. A get whose
// read fails is made again as loadAgain says.
func (p *Pipeline) loadEntities(ctx context.Context, q int) (checkpoint.Meta, error) {
	return p.loadAgain(ctx, schemas.CheckpointEntitiesObject(q), func() (checkpoint.Meta, error) { return p.loadEntitiesOnce(ctx, q) })
}

func (p *Pipeline) loadEntitiesOnce(ctx context.Context, q int) (checkpoint.Meta, error) {
	type ent struct {
		owner    int
		key, alt uint64
	}
	var put []ent
	misplaced := 0
	m, err := p.getObject(ctx, schemas.CheckpointEntitiesObject(q), checkpoint.Target{
		Put: func(uint64, uint64, int64, []byte) {},
		PutEntity: func(key, alt uint64, lastSeen int64, rec []byte) {
			// Records of another size or layout are a cold start of the entity.
			if len(rec) != entity.RecordSize || binary.LittleEndian.Uint32(rec) != entity.RecordVersion {
				return
			}
			if entity.PartitionOf(rec, p.cfg.Partitions) != q {
				misplaced++
				return
			}
			o := entity.ShardOf(rec, len(p.owners))
			r, _ := p.owners[o].Table().Record(key, alt, lastSeen)
			copy(r, rec)
			put = append(put, ent{owner: o, key: key, alt: alt})
		},
	}, nil)
	if err == nil && misplaced > 0 {
		err = fmt.Errorf("cannot restore %q: %d of its %d entity records are of other partitions", p.objectName(schemas.CheckpointEntitiesObject(q)), misplaced, m.Entities)
	}
	if err != nil {
		for _, e := range put {
			p.owners[e.owner].Table().Delete(e.key, e.alt)
		}
	}
	return m, err
}

// restoreStore restores the checkpoint of the Object Store: the global
// object, then every device partition's and entity partition's object,
// each at its own position. An object that is missing is a cold start of
// its part (logged); one that cannot be used (corrupt, truncated, of
// another partition count or layout) too, logged as an error: the rest is
// restored. Only ctx ending is an error.
func (p *Pipeline) restoreStore(ctx context.Context) error {
	start := time.Now()
	P := p.cfg.Partitions
	// A failed read puts nothing into the model (Decode restores it after
	// the checksum), so it may be got again.
	global, err := p.loadAgain(ctx, schemas.CheckpointGlobalObject, func() (checkpoint.Meta, error) {
		return p.getObject(ctx, schemas.CheckpointGlobalObject, checkpoint.Target{Put: func(uint64, uint64, int64, []byte) {}}, p.model)
	})
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("cannot restore the checkpoint: %w", err)
	case errors.Is(err, ErrNoCheckpointObject):
		p.log.Info("no global checkpoint object: class statistics and the calibration start cold", "checkpoint", p.objectName(schemas.CheckpointGlobalObject))
	case err != nil:
		p.log.Error("cannot use the global checkpoint object: class statistics and the calibration start cold", "checkpoint", p.objectName(schemas.CheckpointGlobalObject), "err", err)
	default:
		if err := p.restoreOwnerEngines(global.EntityEngines); err != nil {
			p.log.Warn("cannot restore the entity owners' decision state: their cool-downs and blocks start empty", "err", err)
			for _, o := range p.owners {
				o.Engine().Reset()
			}
		}
		if global.Calibration != nil {
			if err := p.stack.Calibration.LoadSnapshot(global.Calibration); err != nil {
				p.log.Warn("cannot restore the alert calibration: it warms up again", "err", err)
			}
		}
		if !p.cfg.PartitionOwnership {
			// With partition owners, each instance's collector groups its
			// own alerts: partition 0's owner's open incidents are not
			// another instance's.
			p.restoreIncidents(global.Incidents)
		}
	}
	if p.cfg.PartitionOwnership {
		// The partitions come with their owner's hooks.
		p.log.Info("restored global checkpoint: partitions are restored as they are acquired", "checkpoint", p.objectName(schemas.CheckpointGlobalObject),
			"stream_seq", global.StreamSeq, "seconds", time.Since(start).Seconds())
		return nil
	}
	skip := &catchSkip{devices: make([]uint64, P)}
	restored := checkpoint.Meta{StreamSeq: math.MaxUint64, Created: global.Created, Cold: global.Cold}
	var cold []int
	load := func(part int, what string, get func() (checkpoint.Meta, error)) (uint64, error) {
		m, err := get()
		switch {
		case ctx.Err() != nil:
			return 0, fmt.Errorf("cannot restore the checkpoint: %w", err)
		case errors.Is(err, ErrNoCheckpointObject):
			cold = append(cold, part)
			return math.MaxUint64, nil
		case err != nil:
			p.log.Error("cannot use a partition's checkpoint: cold start of the partition", "partition", part, "state", what, "err", err)
			cold = append(cold, part)
			return math.MaxUint64, nil
		}
		if what == "devices" {
			p.partSeq[part] = m.StreamSeq
		}
		restored.StreamSeq = min(restored.StreamSeq, m.StreamSeq)
		restored.Records += m.Records
		restored.Entities += m.Entities
		return m.StreamSeq, nil
	}
	for part := range P {
		if skip.devices[part], err = load(part, "devices", func() (checkpoint.Meta, error) { return p.loadPartition(ctx, part) }); err != nil {
			return err
		}
	}
	if len(p.owners) > 0 {
		skip.entities = make([]uint64, P)
		for q := range P {
			if skip.entities[q], err = load(q, "entities", func() (checkpoint.Meta, error) { return p.loadEntities(ctx, q) }); err != nil {
				return err
			}
		}
	}
	for _, w := range p.workers {
		p.report(w, workerCounts{})
	}
	for _, o := range p.owners {
		p.reportOwner(o, ownerCounts{})
	}
	if restored.StreamSeq == math.MaxUint64 {
		p.log.Info("no checkpoint yet: cold start", "checkpoint", p.objectName("*"))
		return nil
	}
	restored.Engines = [][]byte{} // the device engines came with the partitions
	p.restored, p.skip, p.doneUpTo = restored, skip, restored.StreamSeq
	p.log.Info("restored checkpoint", "checkpoint", p.objectName("*"), "devices", restored.Records, "entities", restored.Entities,
		"stream_seq", restored.StreamSeq, "cold_partitions", len(cold), "cold_detectors", restored.Cold, "seconds", time.Since(start).Seconds())
	return nil
}

// storeTimeout bounds one save to or restore of a partition from the Object
// Store, so that a NATS outage cannot hold the workers paused for ever.
const storeTimeout = 5 * time.Minute

// partOp is a partition operation that Run's ingest loop runs between
// fetches, where everything fetched so far has been dispatched.
type partOp struct {
	run  func(ctx context.Context) error
	done chan error
}

// do hands op to the ingest loop and waits for its result: the partition
// hooks may be called from any goroutine while Run runs (an op sent before
// Run starts waits for its ingest loop), but not from the ingest loop
// itself (a RowWriter or Publisher call), which would wait for itself.
func (p *Pipeline) do(ctx context.Context, run func(ctx context.Context) error) error {
	if p.cfg.CheckpointStore == nil {
		return errors.New("cannot checkpoint a partition: no checkpoint store (Config.CheckpointStore)")
	}
	op := partOp{run: run, done: make(chan error, 1)}
	select {
	case p.ops <- op:
	case <-p.stopped:
		return errors.New("cannot run a partition operation: the pipeline stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the op still runs to its end
	}
}

// runOps runs the partition operations waiting (ingest's loop calls it).
func (p *Pipeline) runOps(ctx context.Context) {
	for {
		select {
		case op := <-p.ops:
			op.done <- op.run(ctx)
		default:
			return
		}
	}
}

// pauseWorkers stops every worker and entity owner after the events
// dispatched so far; the returned function resumes them. Only the ingest
// loop (the one sender to the shards) may call it.
func (p *Pipeline) pauseWorkers() (resume func()) {
	ps := &pause{resume: make(chan struct{})}
	ps.reached.Add(len(p.shards) + len(p.entityIn))
	for _, ch := range p.shards {
		ch <- &item{pause: ps}
	}
	for _, ch := range p.entityIn {
		ch <- entityItem{ctl: &item{pause: ps}}
	}
	ps.reached.Wait()
	return func() { close(ps.resume) }
}

// SavePartition saves the state of device partition part (its devices'
// records and the decision engines) to object devices.<part> of the
// checkpoint store, and entity partition part's records to
// entities.<part>, at the position of every message fetched so far: the
// workers pause after the events dispatched so far, and the save waits
// until every result before it is published and stored (as a periodic
// checkpoint does), so that the object is never ahead of the durable
// results. A partition owner calls it periodically and before it lets a
// partition go. It may be called from any goroutine while Run runs.
func (p *Pipeline) SavePartition(ctx context.Context, part int) error {
	return p.savePartitionOp(ctx, part, false)
}

// releasePartition is SavePartition for an owner that lost part (Handover.Lost):
// the object is marked as its release (schemas.CheckpointMetaReleased), which
// the partition's next owner waits for (awaitRelease). After it, this
// instance writes nothing more of the partition: every result before it is
// durable, and the partition's messages are no longer handed on to it.
func (p *Pipeline) releasePartition(ctx context.Context, part int) error {
	return p.savePartitionOp(ctx, part, true)
}

func (p *Pipeline) savePartitionOp(ctx context.Context, part int, released bool) error {
	if part < 0 || part >= p.cfg.Partitions {
		return fmt.Errorf("cannot save partition %d: there are %d", part, p.cfg.Partitions)
	}
	return p.do(ctx, func(context.Context) error {
		resume := p.pauseWorkers()
		defer resume()
		if err := p.durable(p.cfg.DrainTimeout); err != nil {
			return fmt.Errorf("cannot save partition %d: results before it are not durable: %w", part, err)
		}
		sctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		at := p.savePosition(sctx, part, max(p.lastSeq.Load(), p.restored.StreamSeq))
		n, err := p.savePartitionAs(sctx, part, at, released)
		if err == nil && len(p.owners) > 0 {
			var m uint64
			m, err = p.saveEntities(sctx, part, at)
			n += m
		}
		if err == nil {
			p.log.Info("wrote partition checkpoint", "checkpoint", p.objectName(schemas.CheckpointDevicesObject(part)), "stream_seq", at, "bytes", n)
		}
		if released {
			// Lost: no periodic save writes the partition any more (one
			// between this op and DropPartition's rewrote the object
			// unmarked, and the next owner waited for a release it had
			// had), and what its replay still held is its next owner's
			// to judge (after this object's position).
			p.owned[part] = false
			p.dropReplay(part)
		}
		return err
	})
}

// RestorePartition makes device partition part's state this instance's, for
// an owner that acquired it: it loads object devices.<part> (its devices'
// records, and the engines' entries of those devices) into the workers, with
// the workers paused, then judges again, exactly once and in stream order,
// the partition's messages after the object's position up to upTo, read
// from Config.Stream: on the partition's subject when that is
// IOTWATCH_EVENTS, else (log messages mixing partitions) on the consumer's
// subjects, keeping only the partition's events. Afterwards a redelivery of
// one of the partition's messages at or below upTo is acked without being
// judged again (partitionDone). The partition's records must not be in the
// tables already (DropPartition, or a fresh instance), and none of the
// partition's messages after upTo may be dispatched before RestorePartition
// returns. With Config.PartitionOwnership, it also restores entity
// partition part (object entities.<part>), whose one writer the
// partition's owner is, and catches its observations up from that object's
// own position.
//
// upTo is at least the last sequence before the first one the owner's
// consumer delivers (firstSeq-1): every message delivered before to a
// previous owner is below it when that first message is a first delivery
// (a partition's first deliveries are in stream order). When it is a
// redelivery (partition.Consumer.FirstRedelivered: the previous owner gave
// it back, or crashed with it unacked), other messages the previous owner
// was delivered may still be unacked (they went to a pull of its that had
// given up, or their ack wait has not passed yet) and come back to this
// owner after their ack wait, after later ones: judged then, they would
// meet records that moved on, and acked unjudged (as at or below the last
// message dispatched) they would have no results at all. So upTo is then
// raised to the highest sequence the partition's consumer has delivered,
// and the catch-up judges them in stream order. (It judges this owner's
// first pull of the partition too, ahead of the other partitions' messages
// before it in the stream: what spans partitions, the class statistics
// and the calibration, sees them in another order than one instance
// would.)
//
// A missing object is a cold start of the partition: nil. An object that
// cannot be used (corrupt, truncated, of another partition count or
// layout) is a cold start of the partition too, logged as an error and
// returned (wrapped) for the caller to report: the pipeline goes on. A cold
// start judges, against the empty state, the messages after the consumer's
// ack floor (every message at or below it was judged by a previous owner,
// with its results durable) up to upTo; without the consumer's state, none
// up to upTo is judged again. When the ack floor is past 0 (a previous
// owner judged messages and never saved: killed before its first save)
// and the row writer can tell what is stored (WrittenReader), it judges
// instead every message of the partition the stream holds up to upTo, so
// that the records learn what the previous owner's did, without writing
// again what is stored (written.go).
//
// Before the catch-up, the results the previous owner stored of the events
// it judges again are looked up (written.go): they are not written again.
// With a ClassGate, the catch-up stops at the last message whose events
// the previous owner stored (or the objects' positions, if further on):
// the messages after it, up to upTo, no owner judged, and they wait in the
// replay, judged by the ingest loop within the gate's limit, in stream
// order with the fetched messages (replay.go); the partition's
// redeliveries up to upTo are acked unjudged meanwhile. Before anything is
// read, a previous owner that is alive and has not released the partition
// yet is waited for (awaitRelease), so that its last rows are among them.
// It may be called from any goroutine while Run runs.
func (p *Pipeline) RestorePartition(ctx context.Context, part int, upTo uint64) error {
	if part < 0 || part >= p.cfg.Partitions {
		return fmt.Errorf("cannot restore partition %d: there are %d", part, p.cfg.Partitions)
	}
	p.awaitRelease(ctx, part)
	if p.gate != nil {
		// Not idle any more: an idle instance's class contribution claims
		// the clock's time for the partitions it owns, this one's backlog
		// included (ClassGate.Learned).
		p.gate.Learned(math.MinInt64, false)
	}
	return p.do(ctx, func(ctx context.Context) error {
		acked, consumerKnown := uint64(0), false
		if src, ok := p.cons.(partitionSource); ok {
			ictx, cancel := context.WithTimeout(ctx, storeTimeout)
			info, err := src.PartitionInfo(ictx, part)
			cancel()
			if err != nil {
				p.log.Warn("cannot read a partition's delivered position: messages the previous owner left unacked are judged when they are redelivered",
					"partition", part, "err", err)
			} else {
				if src.FirstRedelivered(part) {
					upTo = max(upTo, info.Delivered.Stream)
				}
				acked, consumerKnown = info.AckFloor.Stream, true
			}
		}
		resume := p.pauseWorkers()
		lctx, cancel := context.WithTimeout(ctx, storeTimeout)
		m, err := p.loadPartition(lctx, part)
		entSeq, entCold := uint64(0), true // the entities' position
		if p.cfg.PartitionOwnership && len(p.owners) > 0 {
			// Partition part's owner is entity partition part's one writer.
			em, eerr := p.loadEntities(lctx, part)
			switch {
			case eerr == nil:
				entSeq, entCold = em.StreamSeq, false
			case !errors.Is(eerr, ErrNoCheckpointObject):
				p.log.Error("cannot use an entity partition's checkpoint: cold start of its entities", "partition", part, "err", eerr)
			}
		}
		cancel()
		resume()
		p.owned[part] = true
		name := p.objectName(schemas.CheckpointDevicesObject(part))
		// pos is the position the restored devices' state covers.
		var pos uint64
		learn := false // a cold start that learns what a previous owner judged
		switch {
		case err == nil:
			pos = m.StreamSeq
			p.log.Info("restored partition checkpoint", "partition", part, "checkpoint", name, "devices", m.Records, "stream_seq", m.StreamSeq)
			if consumerKnown && acked < pos {
				// Saved past the ack floor: not by savePosition (an
				// object of a build that saved every partition at the
				// position of all it had fetched): the messages after the
				// ack floor are judged again; what the records learned
				// already is not learned twice (worker.Process).
				p.log.Warn("partition checkpoint ahead of its consumer's ack floor: the messages after the ack floor are judged again",
					"partition", part, "stream_seq", pos, "ack_floor", acked)
				pos = acked
			}
		case !consumerKnown:
			// Nothing says which messages up to upTo were judged: none is
			// judged again, here or by a later owner.
			pos = upTo
		default:
			// Every message at or below the ack floor has its results;
			// those after it are judged again against the empty state.
			// A previous owner that judged some and never saved (killed
			// before its first save) leaves them to be learned from the
			// stream's start, their stored results not written again.
			pos = min(acked, upTo)
			learn = acked > 0
		}
		if p.cfg.Stream == nil || upTo <= min(pos, entSeq) && !learn {
			learn = false
		}
		var filters []string
		if learn || upTo > min(pos, entSeq) && p.cfg.Stream != nil {
			var ferr error
			if filters, ferr = p.partitionSubjects(ctx, part); ferr != nil {
				return errors.Join(err, ferr)
			}
		}
		// What the previous owner stored of the events judged again is
		// not written again (written.go).
		looked := false
		// judged is the last message up to which the catch-up judges:
		// the last one whose events the previous owner stored, when the
		// messages after it can wait for the replay (replay.go); else upTo.
		judged := upTo
		if learn {
			p.log.Info("learning a never-saved partition from the stream's start", "partition", part, "ack_floor", acked, "to_seq", upTo)
			if n, last, lerr := p.lookUpWritten(ctx, part, filters, 1, upTo, 0); lerr == nil {
				pos, looked, judged = 0, true, last
			} else {
				p.log.Warn("cannot tell which of a never-saved partition's events are stored: cold start from its ack floor",
					"partition", part, "ack_floor", acked, "events", n, "err", lerr)
			}
		}
		if errors.Is(err, ErrNoCheckpointObject) {
			p.log.Info("no checkpoint of the partition: cold start of the partition", "partition", part, "checkpoint", name, "from_seq", pos+1)
			err = nil
		} else if err != nil {
			p.log.Error("cannot use a partition's checkpoint: cold start of the partition", "partition", part, "checkpoint", name, "from_seq", pos+1, "err", err)
		}
		if entCold {
			entSeq = pos // cold entities learn from where the devices do
		}
		from := min(pos, entSeq)
		// Until the catch-up is done, only what the objects hold.
		p.partSeq[part], p.partFloor[part] = from, from
		if upTo <= from {
			// The object is at or past every message delivered so far.
			p.partSeq[part], p.partFloor[part] = max(pos, entSeq), max(pos, entSeq)
			return err
		}
		if p.cfg.Stream == nil {
			return err
		}
		skip := &catchSkip{devices: make([]uint64, p.cfg.Partitions)}
		for i := range skip.devices {
			skip.devices[i] = math.MaxUint64
		}
		skip.devices[part] = pos
		if p.cfg.PartitionOwnership && len(p.owners) > 0 {
			skip.entities = make([]uint64, p.cfg.Partitions)
			for i := range skip.entities {
				skip.entities[i] = math.MaxUint64
			}
			skip.entities[part] = entSeq
		}
		p.skip = skip
		defer func() { p.skip = nil }()
		if !looked {
			n, last, lerr := p.lookUpWritten(ctx, part, filters, from+1, upTo, pos)
			if lerr != nil {
				p.M.CatchUpUnchecked.Add(uint64(n))
				p.log.Warn("cannot tell which caught-up events are stored already: their results are written again (FINAL collapses the copies)",
					"partition", part, "from_seq", pos+1, "to_seq", upTo, "events", n, "err", lerr)
			} else {
				judged = last
			}
		}
		// Up to the restored objects' positions the catch-up judges,
		// whatever was stored (the replay judges with no skip). Not up to
		// the ack floor: a previous owner's replay acks the redeliveries
		// of messages it has not judged yet (replay.go), and one that lost
		// the partition before judging them leaves them after its
		// object's position, above the ack floor, and unstored.
		judged = min(upTo, max(judged, pos, entSeq))
		var replay []replayed
		if judged < upTo {
			if !p.replayable() {
				judged = upTo
			} else if msgs, ok, rerr := p.readReplay(ctx, part, filters, judged+1, upTo); rerr != nil || !ok {
				p.log.Warn("cannot hold a taken-over partition's messages no previous owner judged for the class gate: judged in the catch-up",
					"partition", part, "from_seq", judged+1, "to_seq", upTo, "err", rerr)
				judged = upTo
			} else {
				replay = msgs
			}
		}
		defer p.written.clearEvents()
		if cerr := p.catchUpRange(ctx, filters, from+1, judged, false); cerr != nil {
			// The messages after from that come again are judged then.
			return errors.Join(err, fmt.Errorf("cannot catch up partition %d: %w", part, cerr))
		}
		p.partSeq[part], p.partFloor[part] = max(p.partSeq[part], judged), judged
		if judged < upTo {
			p.log.Info("holding a taken-over partition's messages no previous owner judged for the class gate", "partition", part,
				"from_seq", judged+1, "to_seq", upTo, "messages", len(replay))
			p.queueReplay(part, replay, upTo)
		}
		return err
	})
}

// partitionSubjects returns the subjects a catch-up of partition part reads.
func (p *Pipeline) partitionSubjects(ctx context.Context, part int) ([]string, error) {
	if p.cfg.Stream.CachedInfo().Config.Name == schemas.StreamEvents {
		return schemas.PartitionSubjects(part), nil // its devices' events, its entities' observations
	}
	info, err := p.cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read the consumer's subjects: %w", err)
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	return filters, nil
}

// DropPartition removes the records of device partition part from the
// workers' tables (and, with Config.PartitionOwnership, entity partition
// part's from the entity owners'), for an owner that lost it (after
// SavePartition when it lets it go in order): another owner writes them now. The decision
// engines' entries of its devices stay until they expire. It may be called
// from any goroutine while Run runs.
func (p *Pipeline) DropPartition(ctx context.Context, part int) error {
	if part < 0 || part >= p.cfg.Partitions {
		return fmt.Errorf("cannot drop partition %d: there are %d", part, p.cfg.Partitions)
	}
	return p.do(ctx, func(context.Context) error {
		resume := p.pauseWorkers()
		defer resume()
		p.owned[part] = false
		p.dropReplay(part)
		n := 0
		for _, w := range p.workers {
			n += dropPartition(w.Table(), part, p.cfg.Partitions)
		}
		ents := 0
		if p.cfg.PartitionOwnership {
			// Entity partition part's writer is the partition's new owner.
			for _, o := range p.owners {
				ents += dropEntities(o.Table(), part, p.cfg.Partitions)
			}
		}
		p.log.Info("dropped partition", "partition", part, "devices", n, "entities", ents)
		return nil
	})
}

// dropEntities deletes the entity table t's records of entity partition
// part and returns how many.
func dropEntities(t *state.Table, part, partitions int) int {
	return deleteWhere(t, func(_ uint64, rec []byte) bool { return entity.PartitionOf(rec, partitions) == part })
}

// dropPartition deletes t's records of partition part and returns how many.
func dropPartition(t *state.Table, part, partitions int) int {
	return deleteWhere(t, func(alt uint64, _ []byte) bool { return schemas.PartitionOf(alt, partitions) == part })
}

// deleteWhere deletes t's records for which drop holds and returns how many.
func deleteWhere(t *state.Table, drop func(alt uint64, rec []byte) bool) int {
	var keys [][2]uint64
	t.Range(func(key, alt uint64, _ int64, rec []byte) bool {
		if drop(alt, rec) {
			keys = append(keys, [2]uint64{key, alt})
		}
		return true
	})
	for _, k := range keys {
		t.Delete(k[0], k[1])
	}
	return len(keys)
}
