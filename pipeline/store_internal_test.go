package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/schemas"
)

// checkpointStore starts an embedded NATS server and returns its checkpoint
// bucket.
func checkpointStore(t testing.TB) jetstream.ObjectStore {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatalf("cannot start the embedded NATS server: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	nc, js, err := bus.Connect(context.Background(), ns.URL(), "store-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := bus.EnsureCheckpoints(context.Background(), js, bus.DefaultStreamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// syncBuffer is a log destination the test reads while pipelines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type devKey struct{ key, alt uint64 }

// fillDevices gives p n devices, each record's body a pattern of its index
// and salt (the restore, not the detectors, is under test).
func fillDevices(p *Pipeline, n int, salt byte) {
	now := time.Now().UnixNano()
	for i := range n {
		key, alt := mix64(uint64(i)+1), mix64(uint64(i)+1<<40)
		rec, _ := p.workers[shard.Of(key, len(p.workers))].Table().Record(key, alt, now)
		binary.LittleEndian.PutUint32(rec, p.layout.Version)
		for j := 4; j < len(rec); j++ {
			rec[j] = byte(i*7+j) ^ salt
		}
	}
}

func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	return x ^ x>>33
}

// devicesOf returns every record of p's tables.
func devicesOf(p *Pipeline) map[devKey]string {
	out := map[devKey]string{}
	for _, w := range p.workers {
		w.Table().Range(func(key, alt uint64, _ int64, rec []byte) bool {
			out[devKey{key, alt}] = string(rec)
			return true
		})
	}
	return out
}

// TestStorePartitions: the Object Store checkpoint round-trips every
// partition with its position; a partition restored alone brings its own
// devices back and leaves the other partitions' records as they are; an
// object cut short or corrupt is refused with an error naming it, and that
// partition alone cold-starts, logged as an error, while the others are
// restored; objects split by another partition count are not used.
func TestStorePartitions(t *testing.T) {
	const devices, partitions = 3000, 4
	ctx := context.Background()
	st := checkpointStore(t)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	cfg := Config{Workers: 2, CheckpointStore: st, Partitions: partitions}

	a, err := New(cfg, nil, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if a.Restored().StreamSeq != 0 {
		t.Fatalf("an empty store restored position %d", a.Restored().StreamSeq)
	}
	fillDevices(a, devices, 0)
	want := devicesOf(a)
	a.lastSeq.Store(77)
	if err := a.saveStore(ctx); err != nil {
		t.Fatal(err)
	}
	inPart := make([]int, partitions)
	for k := range want {
		inPart[schemas.PartitionOf(k.alt, partitions)]++
	}
	for part, n := range inPart {
		if n == 0 {
			t.Fatalf("partition %d has no device: the test checks nothing of it", part)
		}
	}

	// Everything, at its position.
	b, err := New(cfg, nil, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Restored(); got.StreamSeq != 77 || got.Records != devices {
		t.Fatalf("restored %d devices at position %d, want %d at 77", got.Records, got.StreamSeq, devices)
	}
	if got := devicesOf(b); !maps.Equal(got, want) {
		t.Fatalf("restored records differ from the saved ones (%d restored, %d saved)", len(got), len(want))
	}

	// One partition alone: the others keep what b made of them since.
	for _, w := range b.workers {
		w.Table().Range(func(_, _ uint64, _ int64, rec []byte) bool {
			rec[len(rec)-1] ^= 0xff
			return true
		})
	}
	others := devicesOf(b)
	if n := dropPartition(b.workers[0].Table(), 2, partitions) + dropPartition(b.workers[1].Table(), 2, partitions); n != inPart[2] {
		t.Fatalf("dropped %d devices of partition 2, it has %d", n, inPart[2])
	}
	m, err := b.loadPartition(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if m.Records != uint64(inPart[2]) || m.StreamSeq != 77 {
		t.Fatalf("partition 2: %d devices at position %d, want %d at 77", m.Records, m.StreamSeq, inPart[2])
	}
	for k, rec := range devicesOf(b) {
		exp := others[k]
		if schemas.PartitionOf(k.alt, partitions) == 2 {
			exp = want[k]
		}
		if rec != exp {
			t.Fatalf("device %x of partition %d: record is not the expected one after restoring partition 2", k.key, schemas.PartitionOf(k.alt, partitions))
		}
	}

	// Object devices.1 cut short, then with one byte flipped.
	name := schemas.CheckpointDevicesObject(1)
	good, err := st.GetBytes(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.GetInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	put := func(data []byte) {
		t.Helper()
		if _, err := st.Put(ctx, info.ObjectMeta, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	// A flipped bit in compressed data may decode to the same bytes (a copy
	// from another run of zeros): flip the first byte from the middle on
	// whose flip changes what the object decodes to, or breaks its framing.
	decoded := func(data []byte) ([]byte, error) { return io.ReadAll(s2.NewReader(bytes.NewReader(data))) }
	plain, err := decoded(good)
	if err != nil {
		t.Fatal(err)
	}
	var flipped []byte
	for i := len(good) / 2; i < len(good) && flipped == nil; i++ {
		f := bytes.Clone(good)
		f[i] ^= 1
		if d, err := decoded(f); err != nil || !bytes.Equal(d, plain) {
			flipped = f
		}
	}
	if flipped == nil {
		t.Fatal("no flipped byte in the second half of the object changes what it decodes to")
	}
	for _, c := range []struct {
		what string
		data []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"corrupt", flipped},
	} {
		put(c.data)
		// The S2 stream's own checks (a block's CRC, its framing) or the
		// checkpoint's (its length, its checksum) refuse it.
		_, err := b.loadPartition(ctx, 1)
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "corrupt") && !strings.Contains(err.Error(), "unexpected EOF") {
			t.Fatalf("%s object: err = %v, want one naming %q and saying it is corrupt or cut short", c.what, err, name)
		}
		t.Logf("%s object refused: %v", c.what, err)
		before := logs.String()
		d, err := New(cfg, nil, nil, nil, log)
		if err != nil {
			t.Fatalf("%s object: the pipeline did not start: %v", c.what, err)
		}
		if got := d.Restored().Records; got != uint64(devices-inPart[1]) {
			t.Fatalf("%s object: restored %d devices, want the %d of the other partitions", c.what, got, devices-inPart[1])
		}
		for k := range devicesOf(d) {
			if schemas.PartitionOf(k.alt, partitions) == 1 {
				t.Fatalf("%s object: a device of partition 1 was restored", c.what)
			}
		}
		if l := strings.TrimPrefix(logs.String(), before); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "cold start of the partition") {
			t.Fatalf("%s object: the cold start of partition 1 was not logged as an error:\n%s", c.what, l)
		}
	}

	// Another partition count: nothing is used.
	other := cfg
	other.Partitions = 8
	e, err := New(other, nil, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Restored().Records; got != 0 {
		t.Fatalf("objects of 4 partitions restored %d devices into a pipeline of 8", got)
	}
	if _, err := e.loadPartition(ctx, 0); !errors.Is(err, checkpoint.ErrIncompatible) {
		t.Fatalf("an object of 4 partitions loaded into a pipeline of 8: err = %v", err)
	}
}

// TestFencedOwnerKeepsLaterCheckpoint: with partition ownership, an owner
// whose position in a partition is behind the stored object's (it was
// fenced off after a stall, and the next owner saved since) does not
// overwrite it; one at or past it does.
func TestFencedOwnerKeepsLaterCheckpoint(t *testing.T) {
	ctx := context.Background()
	st := checkpointStore(t)
	cfg := Config{Workers: 2, CheckpointStore: st, Partitions: 4, PartitionOwnership: true}
	p, err := New(cfg, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fillDevices(p, 400, 0)
	name := schemas.CheckpointDevicesObject(1)
	stored := func() string {
		t.Helper()
		info, err := st.GetInfo(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return info.Metadata[schemas.CheckpointMetaStreamSeq]
	}
	for _, c := range []struct {
		seq  uint64
		want string
	}{{100, "100"}, {50, "100"}, {100, "100"}, {120, "120"}} {
		if _, err := p.savePartition(ctx, 1, c.seq); err != nil {
			t.Fatal(err)
		}
		if got := stored(); got != c.want {
			t.Fatalf("saved at position %d: the stored object is at %s, want %s", c.seq, got, c.want)
		}
	}
}

// partitionInfos is a Source whose partition consumers have the given ack
// floors (err: unreadable).
type partitionInfos struct {
	Source
	ackFloor uint64
	err      error
	// within, when set, receives how long the read was given (its
	// context's deadline from now; 0 for none).
	within *time.Duration
}

func (partitionInfos) FirstRedelivered(int) bool { return false }

func (s partitionInfos) PartitionInfo(ctx context.Context, _ int) (*jetstream.ConsumerInfo, error) {
	if s.within != nil {
		if dl, ok := ctx.Deadline(); ok {
			*s.within = time.Until(dl)
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	return &jetstream.ConsumerInfo{AckFloor: jetstream.SequenceInfo{Stream: s.ackFloor}}, nil
}

// TestSavePositionHasNoGap: with partition ownership, a partition's objects
// are saved at a position at or below which every message of the partition
// is in the state: not the last message dispatched (30 here) when the
// partition's consumer has a message below it unacked (a message never
// judged here, redelivered after later ones), but its ack floor; never
// below what the restore covered (10), and that when the consumer cannot
// be read. (Saved at the last message dispatched, the next owner acked the
// unjudged message's redelivery without judging it: no row.)
func TestSavePositionHasNoGap(t *testing.T) {
	st := checkpointStore(t)
	for _, c := range []struct {
		name string
		src  Source
		want uint64
	}{
		{"a message after the floor unacked", partitionInfos{ackFloor: 20}, 20},
		{"all acked", partitionInfos{ackFloor: 40}, 30},
		{"floor below the restore", partitionInfos{ackFloor: 5}, 10},
		{"consumer unreadable", partitionInfos{err: errors.New("no responders")}, 10},
	} {
		p, err := New(Config{Workers: 1, CheckpointStore: st, Partitions: 4, PartitionOwnership: true}, c.src, nil, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		p.partSeq[1], p.partFloor[1] = 30, 10
		if got := p.savePosition(context.Background(), 1, 50); got != c.want {
			t.Errorf("%s: saved at %d, want %d", c.name, got, c.want)
		}
	}
	// The read of the consumer is bounded by partitionInfoWait, whatever
	// the caller's context (a save's is storeTimeout, 5 min): an
	// unanswered request held the ingest loop that long.
	var within time.Duration
	p, err := New(Config{Workers: 1, CheckpointStore: st, Partitions: 4, PartitionOwnership: true},
		partitionInfos{ackFloor: 20, within: &within}, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	p.savePosition(ctx, 1, 50)
	if within <= 0 || within > partitionInfoWait {
		t.Errorf("the consumer's read was given %s, want at most %s", within, partitionInfoWait)
	}
}
