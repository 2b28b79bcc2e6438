package pipeline

// Getting a checkpoint object again when its read fails.
//
// The Object Store replaces an object under a reader: a put writes the new
// object's chunks under a new NUID, then its info (the meta message), then
// purges the chunks of the NUID it replaced; a get reads the info, then
// streams the chunks of that info's NUID. A get that read the info before a
// put's and has not received all its chunks when the put purges them gets
// no more of them: the read fails although a whole object, the newer one,
// is there (the likely cause of TestClusterKills E6's cold start, a new
// owner's "header: s2: corrupt input" 0.7 s after a put; that text was not
// reproduced: bench/RESULTS.md, w7). The server pushes a get's chunks ahead
// of its reader up to its flow control window (2 MB at first), so an
// object larger than that can be read from under a reader that is slow or
// paused (TestRestoreReplacedObject), by a periodic save of a live owner or
// any put while a new owner restores. A get waiting for chunks that will
// not come is given up as soon as a wait of more than a sixteenth of
// objectStall meets the object replaced (stallWatch), else at objectStall;
// loadAgain then gets the object again.

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
)

// objectRereads bounds how many times a load gets a checkpoint object again
// after its read failed (the object replaced meanwhile, or a get stalled):
// past it, the object's part cold-starts. An owner saves a partition every
// checkpoint interval, so more than one put overlapping a restore's gets
// in a row is already rare.
const objectRereads = 3

// readFailure is a checkpoint object's read that failed after its get had
// read the object's info (getObject).
type readFailure struct {
	info *jetstream.ObjectInfo // the info the get read
	err  error
}

func (e *readFailure) Error() string { return e.err.Error() }
func (e *readFailure) Unwrap() error { return e.err }

// loadAgain returns load's results, calling it again when its get of
// object name failed and either the object was replaced since that get
// read its info (its NUID, digest or modification time differ now: the
// put purged the chunks the get streamed; a new get reads the new object),
// or, once, the get stalled (errObjectStalled: a new get has a new
// consumer of the object's chunks) or the object's read failed although
// the object did not change (a stream the reader got wrong, which a new
// get reads again; an object that is corrupt is refused twice);
// objectRereads times at most. Each is logged at Warn with the object's
// name and counted (Metrics.CheckpointRereads). A missing object or an
// incompatible one is not got again: its part cold-starts, as it does
// when the gets made again fail too.
//
// load must leave nothing of a failed load behind: what it put into the
// tables is taken out before it returns an error, so that a load made again
// starts from the tables as they were.
func (p *Pipeline) loadAgain(ctx context.Context, name string, load func() (checkpoint.Meta, error)) (checkpoint.Meta, error) {
	m, err := load()
	once := false
	for again := 0; err != nil && again < objectRereads && ctx.Err() == nil; again++ {
		var read *readFailure
		failed := errors.As(err, &read)
		switch {
		case failed && p.replacedSince(ctx, name, read.info):
			p.log.Warn("a checkpoint object was replaced while it was read: getting it again", "checkpoint", p.objectName(name), "err", err)
		case once:
			return m, err
		case errors.Is(err, errObjectStalled):
			once = true
			p.log.Warn("a checkpoint object's get stalled: getting it again", "checkpoint", p.objectName(name), "err", err)
		case failed:
			once = true
			p.log.Warn("a checkpoint object's read failed: getting it again", "checkpoint", p.objectName(name), "err", err)
		default:
			return m, err
		}
		p.M.CheckpointRereads.Add(1)
		m, err = load()
	}
	return m, err
}

// replacedSince reports whether object name was replaced since a get read
// its info, read (objectReplaced); an error reading the info (or none
// within an eighth of objectStall) is logged and is not a replacement.
func (p *Pipeline) replacedSince(ctx context.Context, name string, read *jetstream.ObjectInfo) bool {
	ctx, cancel := context.WithTimeout(ctx, objectStall/8)
	defer cancel()
	replaced, err := p.objectReplaced(ctx, name, read)
	if err != nil {
		p.log.Warn("cannot read a checkpoint object's info after its read failed", "checkpoint", p.objectName(name), "err", err)
	}
	return replaced
}

// objectReplaced reports whether object name's info differs from read, the
// info a get of it read (its NUID, digest or modification time): another
// put replaced it since.
func (p *Pipeline) objectReplaced(ctx context.Context, name string, read *jetstream.ObjectInfo) (bool, error) {
	now, err := p.cfg.CheckpointStore.GetInfo(ctx, name)
	if err != nil {
		return false, fmt.Errorf("cannot get the info of checkpoint %q: %w", p.objectName(name), err)
	}
	return now.NUID != read.NUID || now.Digest != read.Digest || !now.ModTime.Equal(read.ModTime), nil
}

// errObjectReplaced reports a checkpoint object's get that waited for
// chunks of an object replaced since it read the object's info
// (stallWatch).
var errObjectReplaced = errors.New("the object was replaced during the get")
