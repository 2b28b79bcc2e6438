package bus

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// natsServerBinary is the standalone nats-server the external-server test runs:
// $IOTWATCH_NATS_SERVER, else nats-server on $PATH (Debian ships 2.9.10, an
// older JetStream API than the embedded v2.15).
func natsServerBinary(t *testing.T) string {
	if p := os.Getenv("IOTWATCH_NATS_SERVER"); p != "" {
		return p
	}
	p, err := exec.LookPath("nats-server")
	if err != nil {
		t.Fatalf("cannot find the nats-server binary for the external-server test: %v; "+
			"install it with `make deps` or `apt-get install nats-server`, or point IOTWATCH_NATS_SERVER at one", err)
	}
	return p
}

// TestExternalServer runs Ensure, Connect and the publish/consume paths the
// pipeline uses against a standalone nats-server process, the production path.
func TestExternalServer(t *testing.T) {
	nc, js := connectTest(t, startExternalServer(t)) // retries until the server listens
	ctx := testContext(t)
	t.Logf("external nats-server version %s", nc.ConnectedServerVersion())

	cfg := DefaultStreamsConfig()
	if _, _, err := Ensure(ctx, js, cfg); err != nil {
		t.Fatalf("cannot ensure on nats-server %s: %v", nc.ConnectedServerVersion(), err)
	}
	cfg.MaxAckPending = 100
	cfg.BlocksTTL = time.Hour
	cons, kv, err := Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatalf("cannot update on nats-server %s: %v", nc.ConnectedServerVersion(), err)
	}
	if ci := cons.CachedInfo(); ci.Config.MaxAckPending != 100 {
		t.Fatalf("updated consumer max_ack_pending %d; want 100", ci.Config.MaxAckPending)
	}

	// Duplicate window, expected stream, KV put/delete: what the sinks rely on.
	subj := schemas.SubjectAlertsPrefix + "." + schemas.SeverityHigh
	for i := range 2 {
		ack, err := js.Publish(ctx, subj, []byte("{}"), jetstream.WithMsgID("a-1"), jetstream.WithExpectStream(schemas.StreamAlerts))
		if err != nil || ack.Duplicate != (i == 1) {
			t.Fatalf("publish %d of msg id a-1: ack %+v, error %v; want duplicate=%v", i, ack, err, i == 1)
		}
	}
	key := schemas.KVKey(schemas.ScopeDevice, "acme/d-1")
	if _, err := kv.Put(ctx, key, []byte("{}")); err != nil {
		t.Fatalf("cannot put %q: %v", key, err)
	}
	if err := kv.Delete(ctx, key); err != nil {
		t.Fatalf("cannot delete %q: %v", key, err)
	}
	if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("get after delete: %v; want ErrKeyNotFound", err)
	}

	if _, err := js.Publish(ctx, LogSubject(schemas.FormatJSON, "gw1"), []byte("line")); err != nil {
		t.Fatalf("cannot publish a log: %v", err)
	}
	mb, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("cannot fetch: %v", err)
	}
	n := 0
	for m := range mb.Messages() {
		if md, err := m.Metadata(); err != nil || md.Sequence.Stream != 1 {
			t.Fatalf("log metadata %+v, error %v; want stream sequence 1", md, err)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("cannot ack: %v", err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("fetched %d logs; want 1", n)
	}
	if rate, err := RawConsumeRate(ctx, js, 2000, 300, 500); err != nil || rate <= 0 {
		t.Fatalf("raw consume rate %f, error %v; want > 0", rate, err)
	}
}
