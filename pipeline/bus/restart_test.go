package bus

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestRestartSameStoreDir checks that streams, the durable consumer and its ack
// state survive a server restart on the same store directory, that a client
// connected before the restart reconnects, and that Connect + Ensure work
// against the restarted server.
func TestRestartSameStoreDir(t *testing.T) {
	dir := t.TempDir()
	e1 := startTestServer(t, natsserver.Options{StoreDir: dir})
	port := e1.Port()
	nc, js := connectTest(t, e1.URL())
	ctx := testContext(t)
	if _, _, err := Ensure(ctx, js, DefaultStreamsConfig()); err != nil {
		t.Fatalf("cannot ensure: %v", err)
	}
	subj := LogSubject(schemas.FormatJSON, "gw1")
	for i := range 10 {
		if _, err := js.Publish(ctx, subj, []byte(strconv.Itoa(i)), jetstream.WithMsgID("m"+strconv.Itoa(i))); err != nil {
			t.Fatalf("cannot publish: %v", err)
		}
	}
	cons, err := js.Consumer(ctx, schemas.StreamLogs, schemas.ConsumerPipeline)
	if err != nil {
		t.Fatalf("cannot get consumer: %v", err)
	}
	if seqs := fetchAck(t, ctx, cons, 4); !equalSeqs(seqs, 1, 4) {
		t.Fatalf("first fetch got stream sequences %v; want 1..4", seqs)
	}

	e1.Shutdown()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("caller's store dir is gone after Shutdown: %v", err)
	}
	e2 := startTestServer(t, natsserver.Options{StoreDir: dir, Port: port})

	// The old connection reconnects by itself.
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("client did not reconnect to the restarted server within 10s (status %v)", nc.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}

	_, js2 := connectTest(t, e2.URL())
	cons2, _, err := Ensure(ctx, js2, DefaultStreamsConfig())
	if err != nil {
		t.Fatalf("cannot ensure after restart: %v", err)
	}
	ci, err := cons2.Info(ctx)
	if err != nil {
		t.Fatalf("cannot get consumer info after restart: %v", err)
	}
	if ci.AckFloor.Stream != 4 || ci.NumPending != 6 {
		t.Fatalf("after restart the consumer's ack floor is %d with %d pending; want 4 and 6", ci.AckFloor.Stream, ci.NumPending)
	}
	if seqs := fetchAck(t, ctx, cons2, 6); !equalSeqs(seqs, 5, 10) {
		t.Fatalf("fetch after restart got stream sequences %v; want 5..10", seqs)
	}
	// Message ids published before the restart are still deduplicated.
	ack, err := js2.Publish(ctx, subj, []byte("again"), jetstream.WithMsgID("m3"))
	if err != nil || !ack.Duplicate {
		t.Fatalf("republishing msg id m3 after restart: ack %+v, error %v; want a duplicate", ack, err)
	}
}

func TestConnectGivesUpWhenContextDone(t *testing.T) {
	e := startTestServer(t, natsserver.Options{})
	url := e.URL()
	e.Shutdown() // nothing listens there any more
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := Connect(ctx, url, "test", nil)
	if err == nil {
		t.Fatal("Connect to a stopped server succeeded")
	}
	if !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("Connect error %q; want it to name %q and the deadline", err, url)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Connect took %s to give up after a 300ms deadline", d)
	}
}

func TestConnectRetriesUntilServerStarts(t *testing.T) {
	// Reserve a port by starting and stopping a server, then dial before a
	// server listens there again.
	e := startTestServer(t, natsserver.Options{})
	port := e.Port()
	url := e.URL()
	e.Shutdown()

	failed := make(chan struct{})
	var once sync.Once
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if strings.Contains(string(p), "cannot connect to nats, retrying") {
			once.Do(func() { close(failed) })
		}
		return len(p), nil
	}), nil))
	done := make(chan error, 1)
	go func() {
		nc, _, err := Connect(testContext(t), url, "test", log)
		if err == nil {
			nc.Close()
		}
		done <- err
	}()
	select {
	case <-failed:
	case err := <-done:
		t.Fatalf("Connect returned before a server listened on %q: %v", url, err)
	}
	startTestServer(t, natsserver.Options{Port: port})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Connect did not retry until the server started: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Connect did not return after the server started")
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func fetchAck(t *testing.T, ctx context.Context, cons jetstream.Consumer, n int) []uint64 {
	t.Helper()
	mb, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("cannot fetch: %v", err)
	}
	var seqs []uint64
	for m := range mb.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatalf("cannot read metadata: %v", err)
		}
		seqs = append(seqs, md.Sequence.Stream)
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("cannot ack: %v", err)
		}
	}
	return seqs
}

func equalSeqs(seqs []uint64, from, to uint64) bool {
	if uint64(len(seqs)) != to-from+1 {
		return false
	}
	for i, s := range seqs {
		if s != from+uint64(i) {
			return false
		}
	}
	return true
}
