package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// stallingStore is a checkpoint store whose first gets of object name stall
// (stalls of them) after after bytes: their reads then wait for the get's
// deadline, however the get is cancelled, as a get whose chunks' consumer
// was lost with a killed NATS node does (its reader waits for the
// context's deadline, jetstream's objResult.Read).
type stallingStore struct {
	jetstream.ObjectStore
	name   string
	after  int
	stalls atomic.Int32
}

func (s *stallingStore) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	r, err := s.ObjectStore.Get(ctx, name, opts...)
	if err != nil || name != s.name || s.stalls.Add(-1) < 0 {
		return r, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	return &stallingResult{ObjectResult: r, left: s.after, deadline: deadline}, nil
}

type stallingResult struct {
	jetstream.ObjectResult
	left     int
	deadline time.Time
}

func (r *stallingResult) Read(p []byte) (int, error) {
	if r.left == 0 {
		time.Sleep(time.Until(r.deadline))
		return 0, context.DeadlineExceeded
	}
	n, err := r.ObjectResult.Read(p[:min(len(p), r.left)])
	r.left -= n
	return n, err
}

// TestRestoreStalledGet: a partition restore whose object's get stops
// receiving data (a NATS node killed under the object's consumer) gives the
// get up after objectStall without a byte and gets the object once more;
// when that one stalls too, the partition cold-starts: an error that says
// so, and nothing of the object left in the tables (the first get stalled
// half-way through). Without the bound, each waited for the restore's
// deadline (5 minutes in RestorePartition; here the test's hang bound).
func TestRestoreStalledGet(t *testing.T) {
	const devices, partitions = 3000, 4
	defer func(d time.Duration) { objectStall = d }(objectStall)
	objectStall = 5 * time.Second // the stall bound under test (a get that works sends its first bytes long before it on a busy machine), not a speed check
	st := checkpointStore(t)
	logs := &syncBuffer{}
	cfg := Config{Workers: 2, CheckpointStore: st, Partitions: partitions}
	a, err := New(cfg, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fillDevices(a, devices, 0)
	want := devicesOf(a)
	a.lastSeq.Store(77)
	if err := a.saveStore(context.Background()); err != nil {
		t.Fatal(err)
	}
	inPart := 0
	for k := range want {
		if schemas.PartitionOf(k.alt, partitions) == 2 {
			inPart++
		}
	}
	name := schemas.CheckpointDevicesObject(2)
	info, err := st.GetInfo(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}

	stalling := &stallingStore{ObjectStore: st, name: name}
	b, err := New(Config{Workers: 2, Partitions: partitions}, nil, nil, nil, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.cfg.CheckpointStore = stalling
	// A hang bound: a get that is not given up waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The first get stalls before its first byte, the second one arrives.
	stalling.after = 0
	stalling.stalls.Store(1)
	m, err := b.loadPartition(ctx, 2)
	if err != nil {
		t.Fatalf("a get that stalled once: %v; want the object from the second get", err)
	}
	if m.Records != uint64(inPart) || len(devicesOf(b)) != inPart {
		t.Fatalf("a get that stalled once: %d devices restored (%d in the tables), want %d", m.Records, len(devicesOf(b)), inPart)
	}
	if !strings.Contains(logs.String(), "stalled: getting it again") {
		t.Errorf("the second get was not logged:\n%s", logs.String())
	}

	// Both gets stall half-way through the object.
	c, err := New(Config{Workers: 2, Partitions: partitions}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c.cfg.CheckpointStore = stalling
	stalling.after = int(info.Size / 2)
	stalling.stalls.Store(2)
	_, err = c.loadPartition(ctx, 2)
	if !errors.Is(err, errObjectStalled) || !strings.Contains(err.Error(), name) {
		t.Fatalf("two gets that stalled: err = %v; want one naming %q and saying it stalled", err, name)
	}
	t.Logf("two stalled gets: %v", err)
	if n := len(devicesOf(c)); n != 0 {
		t.Fatalf("two stalled gets left %d devices in the tables; want none (a cold start)", n)
	}
	if ctx.Err() != nil {
		t.Fatal("the test's hang bound passed")
	}
}
