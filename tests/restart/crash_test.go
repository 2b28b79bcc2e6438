package restart_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/internal/testids"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// crashMessage is minute k of a fleet of 40 meters whose commands alternate
// (readings, config, readings, ...: the class knows those two transitions
// and no other), and from minute 100 on a flood from meter-0 to meter-2
// (300 events a minute each, alternating too), so that rate alerts, blocks
// with strikes and cool-downs are in play when the pipeline crashes. A
// redelivered event judged against a record that learned later events sees
// a transition the class never made (readings after readings): the bursts
// of rare_transition alerts of issue 13.
func crashMessage(k int) []byte {
	var b strings.Builder
	add := func(device string, at time.Duration, n int) {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		cmd := `"method":"POST","path":"/v1/devices/` + device + `/readings"`
		if n%2 == 1 {
			cmd = `"method":"PUT","path":"/v1/devices/` + device + `/config/interval"`
		}
		fmt.Fprintf(&b, `{"ts":%q,"src":"gateway","tenant":"acme","device":%q,"class":"meter/m1","api_key":"key-%s","ip":"203.0.113.9","country":"DE",%s,"status":200,"auth":"ok"}`,
			base.Add(at).Format(time.RFC3339Nano), device, device, cmd)
	}
	minute := time.Duration(k) * time.Minute
	for d := range 40 {
		add(fmt.Sprint("meter-", d), minute+time.Duration(d)*100*time.Millisecond, k)
	}
	if k >= 100 {
		for i := range 300 {
			add(fmt.Sprint("meter-", i%3), minute+time.Duration(i)*200*time.Millisecond, i/3)
		}
	}
	return []byte(b.String())
}

const crashMessages = 140

// crashFirst is how many of them the crash tests publish before their first
// save: the flood's first messages included, whose rows reach the crash's
// (crashingRows.at).
const crashFirst = 104

// crashPartitions is the partition count the Object Store variant of the
// crash test splits its checkpoint into.
const crashPartitions = 2

// crashRig is one NATS server with the log streams and a ClickHouse database.
type crashRig struct {
	ns      *natsserver.Server
	streams bus.StreamsConfig
	js      jetstream.JetStream // the test's own client
	ch      *sink.ClickHouse
	e       *env // for count
}

func newCrashRig(t *testing.T, db string) *crashRig {
	t.Helper()
	return newCrashRigOf(t, db, crashMessages)
}

// publish publishes the fleet's minutes from to to (not included).
func (r *crashRig) publish(t *testing.T, from, to int) {
	t.Helper()
	for k := from; k < to; k++ {
		if _, err := r.js.Publish(context.Background(), bus.LogSubject(schemas.FormatJSON, "crash"), crashMessage(k)); err != nil {
			t.Fatal(err)
		}
	}
}

// newCrashRigOf is newCrashRig with the first messages of the fleet only.
func newCrashRigOf(t *testing.T, db string, messages int) *crashRig {
	t.Helper()
	ctx := context.Background()
	e := setup(t, db) // ClickHouse database and the test's connection; its NATS server is not used
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	r := &crashRig{ns: ns, streams: bus.DefaultStreamsConfig(), ch: e.CH, e: e}
	r.streams.AckWait = 2 * time.Second
	nc, js, err := bus.Connect(ctx, ns.URL(), "crash-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r.js = js
	if _, _, err := bus.Ensure(ctx, js, r.streams); err != nil {
		t.Fatal(err)
	}
	r.publish(t, 0, messages)
	return r
}

// connect returns a pipeline's own NATS client (closing it is the network
// side of a crash), its consumer and publisher.
func (r *crashRig) connect(t *testing.T) (*nats.Conn, jetstream.Consumer, *sink.NATSPublisher) {
	nc, _, cons, pub := r.connectJS(t)
	return nc, cons, pub
}

// connectJS is connect that also returns the client's JetStream context.
func (r *crashRig) connectJS(t *testing.T) (*nats.Conn, jetstream.JetStream, jetstream.Consumer, *sink.NATSPublisher) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	nc, js, err := bus.Connect(context.Background(), r.ns.URL(), "crash-pipeline", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cons, kv, err := bus.Ensure(context.Background(), js, r.streams)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, cons, sink.NewNATSPublisher(js, kv, log)
}

// caughtUp waits until the consumer has nothing pending or unacked.
func (r *crashRig) caughtUp(t *testing.T) {
	t.Helper()
	r.caughtUpTo(t, schemas.ConsumerPipeline, crashMessages)
}

// caughtUpTo waits until the consumer durable has delivered messages up to
// seq and has nothing pending or unacked.
func (r *crashRig) caughtUpTo(t *testing.T, durable string, seq uint64) {
	t.Helper()
	stall := pipetest.NewProgress(3 * time.Minute) // a hang bound: no progress at all for 3 minutes
	for {
		cons, err := r.js.Consumer(context.Background(), schemas.StreamLogs, durable)
		if err != nil {
			t.Fatal(err)
		}
		info := cons.CachedInfo()
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream >= seq {
			return
		}
		if stall.Stalled(info.Delivered.Stream + info.AckFloor.Stream) {
			t.Fatalf("pipeline made no progress for 3 minutes: pending %d, ack pending %d", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition
	}
}

// object returns the checkpoint object name and its contents, or nils when
// the store has none yet.
func (r *crashRig) object(t *testing.T, name string) (*jetstream.ObjectInfo, []byte) {
	t.Helper()
	ctx := context.Background()
	objects, err := r.js.ObjectStore(ctx, schemas.BucketCheckpoints)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := objects.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	data, err := objects.GetBytes(ctx, name)
	if err != nil {
		return nil, nil // replaced while it was read (a save every 10 ms): the next poll gets it
	}
	return info, data
}

// objectSeq returns the stream position in the header of a checkpoint
// object (S2-compressed; package checkpoint's format: after magic, three
// versions and the slice count).
func objectSeq(t *testing.T, data []byte) uint64 {
	t.Helper()
	var hdr [32]byte
	if _, err := io.ReadFull(s2.NewReader(bytes.NewReader(data)), hdr[:]); err != nil {
		t.Fatalf("cannot read a checkpoint object's header: %v", err)
	}
	return binary.LittleEndian.Uint64(hdr[24:])
}

// results are the ids of the alerts and decisions a run produced: stored in
// ClickHouse and published on NATS; and its live incidents in ClickHouse
// (id, version and alert count: a restart that lost the open incidents
// opens new ones for the alerts after it).
type results struct{ storedAlerts, storedDecisions, natsAlerts, natsDecisions, incidents []string }

func (r *crashRig) results(t *testing.T) results {
	t.Helper()
	stored := func(table string) []string { return pipetest.IDs(t, r.e.Conn, r.e.DB, table) }
	published := func(stream string) []string {
		ctx := context.Background()
		s, err := r.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		si, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for seq := si.State.FirstSeq; seq <= si.State.LastSeq && si.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			if m.Subject == schemas.SubjectDecisionsApplied {
				continue
			}
			var v struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(m.Data, &v); err != nil {
				t.Fatal(err)
			}
			seen[v.ID] = true
		}
		ids := make([]string, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}
	var incidents []string
	rows, err := r.e.Conn.Query(context.Background(), fmt.Sprintf("SELECT %s, %s, %s FROM %s.%s FINAL WHERE %s = ''",
		schemas.ColID, schemas.ColVersion, schemas.ColAlertCount, r.e.DB, schemas.TableIncidents, schemas.ColMergedInto))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var version uint64
		var alerts uint32
		if err := rows.Scan(&id, &version, &alerts); err != nil {
			t.Fatal(err)
		}
		incidents = append(incidents, fmt.Sprintf("%s v%d alerts=%d", id, version, alerts))
	}
	slices.Sort(incidents)
	return results{stored(schemas.TableAlerts), stored(schemas.TableDecisions), published(schemas.StreamAlerts), published(schemas.StreamDecisions), incidents}
}

// crashingRows is the real ClickHouse writer until crash is set; then
// every scored-row insert waits until its context ends, so nothing more is
// acked (a crash in the middle of a flush).
type crashingRows struct {
	*sink.ClickHouse
	crash *atomic.Bool
	rows  *atomic.Int64
	at    int64       // rows after which the crash comes
	ready func() bool // and once this holds (a periodic checkpoint was written)
}

func (c crashingRows) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	if c.crash.Load() || c.rows.Load() >= c.at && c.ready() {
		c.crash.Store(true)
		<-ctx.Done()
		return ctx.Err()
	}
	if err := c.ClickHouse.WriteScored(ctx, rec); err != nil {
		return err
	}
	c.rows.Add(rec.NumRows())
	return nil
}

// TestCrashRestartSameResults: a pipeline that crashes mid-stream (its
// inserts hang, then its NATS connection drops and it stops without
// draining, after periodic checkpoints), restarted from its checkpoint, ends
// with the alerts and decisions of a run that never crashed: the same ids,
// in ClickHouse and on NATS. The decision engines' cool-downs and blocks
// travel in the checkpoint, and no event is judged against a record that
// learned later events.
func TestCrashRestartSameResults(t *testing.T) { testCrashRestart(t, false) }

// TestCrashRestartObjectStore is TestCrashRestartSameResults with the
// checkpoint in the JetStream Object Store (one object per partition, the
// entities' and the global one) instead of a file: the restart restores
// every partition from NATS and ends with the same ids as the undisturbed
// run.
func TestCrashRestartObjectStore(t *testing.T) { testCrashRestart(t, true) }

// crashControlRun is the undisturbed run both crash tests compare with
// (the same input and configuration): run once for the package.
var crashControlRun struct {
	sync.Mutex
	done   bool
	want   results
	scored uint64
}

// crashControl returns the alerts and decisions of an undisturbed run of
// cfg over the crash fleet, and its scored rows; the first test to ask runs
// it (a test that fails in it leaves it to the next).
func crashControl(t *testing.T, cfg pipeline.Config) (results, uint64) {
	t.Helper()
	c := &crashControlRun
	c.Lock()
	defer c.Unlock()
	if c.done {
		return c.want, c.scored
	}
	control := newCrashRig(t, "crash_control")
	_, cons, pub := control.connect(t)
	if cfg.AckWait != control.streams.AckWait {
		t.Fatalf("the control run's ack wait %v is not its streams' %v", cfg.AckWait, control.streams.AckWait)
	}
	p, err := pipeline.New(cfg, cons, control.ch, pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	control.caughtUp(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := control.results(t)
	if len(want.storedAlerts) == 0 || len(want.storedDecisions) == 0 {
		t.Fatalf("the control run raised %d alerts and %d decisions: the test checks nothing", len(want.storedAlerts), len(want.storedDecisions))
	}
	c.want, c.scored, c.done = want, control.e.count(t, schemas.TableScored), true
	return c.want, c.scored
}

func testCrashRestart(t *testing.T, store bool) {
	cfg := pipeline.Config{Workers: 1, FlushInterval: 20 * time.Millisecond, FetchBatch: 4, FetchWait: 50 * time.Millisecond}
	log := slog.New(slog.DiscardHandler)

	cfg.AckWait = 2 * time.Second // newCrashRigOf's streams
	want, wantScored := crashControl(t, cfg)
	var err error
	done := make(chan error, 1)

	db := "crash_restart"
	if store {
		db = "crash_restart_store"
	}
	// The input comes in two parts: crashFirst messages, then, once a
	// checkpoint is saved, one message after each save until the crash. On a quiet machine
	// the whole fleet was scored before the first save, and nothing was
	// left to crash on (the rest is published after the restart).
	r := newCrashRigOf(t, db, crashFirst)
	next, lastMark, lastPub := crashFirst, "", time.Now()
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	crashCfg := cfg
	// A periodic checkpoint pauses the workers until the results before it
	// are durable: every 10 ms, on a loaded machine with -race, the pipeline
	// was paused nearly all the time and crawled (1,440 events in 3 minutes).
	// 300 ms left it scoring between checkpoints at moderate load, but a save
	// (80 MB of class statistics) takes seconds under -race on a loaded
	// machine: at a load of 16-27, both crash tests missed their 6-minute
	// bound (1,280 and 2,880 events scored), the pipeline saving most of the
	// time. Every second: fewer saves, still many before the crash's rows (a
	// quarter of the fleet) on a fast machine; the crash still waits for one
	// (ready).
	crashCfg.CheckpointEvery = time.Second
	if !store {
		crashCfg.Checkpoint = ckpt
	} else {
		// A save to the Object Store puts an object per device and entity
		// partition and the global one: with 16 partitions (33 puts) under
		// -race on a loaded machine, saving after every fetch left the
		// pipeline no time to reach its crash. Two partitions keep the
		// test's point (a save torn between its partitions) at 5 puts.
		crashCfg.Partitions = crashPartitions
	}
	crashCfg.MaxWaitingBytes = 1 << 20 // stuck inserts soon stop the pipeline
	// DrainTimeout also bounds how long a periodic checkpoint waits for the
	// results before it to be durable: on a loaded machine a flush may take
	// longer than a short bound every time, and then no checkpoint is ever
	// written and the crash never comes. The drain after the crash cannot
	// finish anyway (inserts hang), so a longer bound only delays the stop.
	crashCfg.DrainTimeout = 10 * time.Second
	nc, js, cons, pub := r.connectJS(t)
	var crashed atomic.Bool
	var tornSeq atomic.Uint64 // the position of the torn partition's early object, once kept
	// In the flood, after a periodic checkpoint (on a busy machine the first
	// one may come late: the crash waits for it, a restart needs it).
	checkpointed := func() bool { _, err := os.Stat(ckpt); return err == nil }
	if store {
		if crashCfg.CheckpointStore, err = bus.EnsureCheckpoints(context.Background(), js, r.streams); err != nil {
			t.Fatal(err)
		}
		checkpointed = func() bool {
			// Once the torn partition's early object is kept (below), after a
			// later save: the global object is the last one a save puts.
			info, err := crashCfg.CheckpointStore.GetInfo(context.Background(), schemas.CheckpointGlobalObject)
			if err != nil || tornSeq.Load() == 0 {
				return false
			}
			seq, err := strconv.ParseUint(info.Metadata[schemas.CheckpointMetaStreamSeq], 10, 64)
			return err == nil && seq > tornSeq.Load()
		}
	}
	// saveMark names the last save ("" before the first).
	saveMark := func() string {
		if store {
			info, err := crashCfg.CheckpointStore.GetInfo(context.Background(), schemas.CheckpointGlobalObject)
			if err != nil {
				return ""
			}
			return info.NUID
		}
		fi, err := os.Stat(ckpt)
		if err != nil {
			return ""
		}
		return fmt.Sprint(fi.ModTime().UnixNano(), fi.Size())
	}
	rows := crashingRows{ClickHouse: r.ch, crash: &crashed, rows: new(atomic.Int64), at: int64(40 * 110), ready: checkpointed}
	p, err := pipeline.New(crashCfg, cons, rows, pub, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- p.Run(ctx) }()
	// Crash once the inserts hang and the pipeline went on scoring for a
	// while (up to 1,000 events or 2 s: where exactly does not matter).
	deadline := time.Now().Add(6 * time.Minute) // a hang bound, not a speed check
	var stuckAt time.Time
	// With the Object Store, the first save's object of a flooded meter's
	// partition is kept, and put back after the crash: a save torn between
	// its puts, that partition's object at an earlier position than the
	// others'. Each partition must then be caught up from its own position.
	torn := schemas.CheckpointDevicesObject(schemas.PartitionOf(schemas.Hash2Alt([]byte("acme"), []byte("meter-0")), crashPartitions))
	var tornObject []byte
	var tornInfo *jetstream.ObjectInfo
	for {
		if store && tornObject == nil {
			if tornInfo, tornObject = r.object(t, torn); tornObject != nil {
				tornSeq.Store(max(objectSeq(t, tornObject), 1))
			}
		}
		// One message after each save: the crash's ready condition (a save
		// later than the torn object's, with the Object Store) then holds
		// while messages are still to come, however fast or slow the
		// machine.
		// A save comes only after a fetch: with nothing new to fetch, a
		// message every two seconds brings the next one.
		if m := saveMark(); (m != "" && m != lastMark && (!store || tornObject != nil) || time.Since(lastPub) > 2*time.Second) &&
			!crashed.Load() && next < crashMessages {
			r.publish(t, next, next+1)
			next, lastMark, lastPub = next+1, m, time.Now()
		}
		if crashed.Load() && stuckAt.IsZero() {
			stuckAt = time.Now()
		}
		if !stuckAt.IsZero() && (p.M.Events.Load() >= uint64(rows.at)+1000 || time.Since(stuckAt) > 2*time.Second) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first pipeline did not reach its crash: %d events, crashed %v", p.M.Events.Load(), crashed.Load())
		}
		time.Sleep(10 * time.Millisecond) // polling the pipeline's progress
	}
	nc.Close() // no more acks, publishes or fetches
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the crashed pipeline drained cleanly: no crash was simulated")
	}
	t.Logf("crashed after %d events, %d rows stored, %d acked", p.M.Events.Load(), rows.rows.Load(), p.M.Acked.Load())
	if store {
		_, last := r.object(t, schemas.CheckpointGlobalObject)
		if tornObject == nil || last == nil || objectSeq(t, tornObject) >= objectSeq(t, last) {
			t.Fatalf("no earlier object of %s than the last save's: the torn save is not tested", torn)
		}
		if _, err := crashCfg.CheckpointStore.Put(context.Background(), tornInfo.ObjectMeta, bytes.NewReader(tornObject)); err == nil {
			t.Fatal("the crashed pipeline's connection still puts objects")
		}
		objects, err := r.js.ObjectStore(context.Background(), schemas.BucketCheckpoints)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := objects.Put(context.Background(), tornInfo.ObjectMeta, bytes.NewReader(tornObject)); err != nil {
			t.Fatal(err)
		}
		t.Logf("object %s put back at position %d, the others at %d", torn, objectSeq(t, tornObject), objectSeq(t, last))
	}

	_, js, cons, pub = r.connectJS(t)
	restartCfg := cfg
	if store {
		restartCfg.Partitions = crashPartitions
		if restartCfg.CheckpointStore, err = bus.EnsureCheckpoints(context.Background(), js, r.streams); err != nil {
			t.Fatal(err)
		}
	} else {
		restartCfg.Checkpoint = ckpt
	}
	restartCfg.Stream, err = r.js.Stream(context.Background(), schemas.StreamLogs) // for the catch-up
	if err != nil {
		t.Fatal(err)
	}
	q, err := pipeline.New(restartCfg, cons, r.ch, pub, log)
	if err != nil {
		t.Fatal(err)
	}
	if q.Restored().StreamSeq == 0 {
		t.Fatal("the restarted pipeline restored no checkpoint")
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- q.Run(ctx) }()
	r.publish(t, next, crashMessages) // the rest of the fleet
	r.caughtUp(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := r.results(t)
	if q.M.CaughtUp.Load() == 0 && q.M.RedeliveredDone.Load() == 0 {
		t.Error("the restart judged nothing again and took no redelivery as done: the crash left nothing to recover")
	}
	t.Logf("caught up %d events, %d redelivered messages done already", q.M.CaughtUp.Load(), q.M.RedeliveredDone.Load())
	t.Logf("restored stream seq %d; control: %d alerts, %d decisions; after the crash: %d alerts, %d decisions stored, %d and %d on NATS",
		q.Restored().StreamSeq, len(want.storedAlerts), len(want.storedDecisions), len(got.storedAlerts), len(got.storedDecisions),
		len(got.natsAlerts), len(got.natsDecisions))
	testids.Compare(t, "alerts in ClickHouse", "after the crash", got.storedAlerts, want.storedAlerts)
	testids.Compare(t, "decisions in ClickHouse", "after the crash", got.storedDecisions, want.storedDecisions)
	testids.Compare(t, "alerts on NATS", "after the crash", got.natsAlerts, want.natsAlerts)
	testids.Compare(t, "decisions on NATS", "after the crash", got.natsDecisions, want.natsDecisions)
	// The open incidents travel in the checkpoint: the alerts after the
	// restart join the incidents the crashed run had opened.
	testids.Compare(t, "live incidents in ClickHouse", "after the crash", got.incidents, want.incidents)
	if n := r.e.count(t, schemas.TableScored); n != wantScored {
		t.Errorf("scored rows: %d after the crash, %d in the control run", n, wantScored)
	}
}
