package bus

import (
	"errors"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

func TestValidate(t *testing.T) {
	if err := DefaultStreamsConfig().Validate(); err != nil {
		t.Fatalf("default config is invalid: %v", err)
	}
	f := func(mutate func(*StreamsConfig), want string) {
		t.Helper()
		c := DefaultStreamsConfig()
		mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Fatalf("Validate accepted a config; want an error containing %q", want)
		}
		if !strings.HasPrefix(err.Error(), "cannot use streams config: ") || !strings.Contains(err.Error(), want) {
			t.Fatalf("Validate error %q; want it to start with \"cannot use streams config: \" and contain %q", err, want)
		}
	}
	f(func(c *StreamsConfig) { c.LogsMaxAge = -time.Second }, "logs.max_age -1s must be >= 0")
	f(func(c *StreamsConfig) { c.DLQMaxAge = -time.Minute }, "dlq.max_age -1m0s must be >= 0")
	f(func(c *StreamsConfig) { c.AlertsMaxAge = -1 }, "alerts.max_age")
	f(func(c *StreamsConfig) { c.DecisionsMaxAge = -1 }, "decisions.max_age")
	f(func(c *StreamsConfig) { c.LogsMaxBytes = -2 }, "logs.max_bytes -2")
	f(func(c *StreamsConfig) { c.LogsStorage = "disk" }, `logs.storage "disk"`)
	f(func(c *StreamsConfig) { c.LogsReplicas = 0 }, "logs.replicas 0")
	f(func(c *StreamsConfig) { c.LogsReplicas = 7 }, "logs.replicas 7")
	f(func(c *StreamsConfig) { c.Retention = "forever" }, `logs.retention "forever"`)
	f(func(c *StreamsConfig) { c.DuplicateWindow = -1 }, "duplicate_window")
	f(func(c *StreamsConfig) { c.LogsMaxAge = time.Minute }, "duplicate_window 2m0s must not exceed logs.max_age 1m0s")
	f(func(c *StreamsConfig) { c.BlocksTTL = -time.Hour }, "blocks.ttl")
	f(func(c *StreamsConfig) { c.MaxAckPending = 0 }, "consumer.max_ack_pending 0")
	f(func(c *StreamsConfig) { c.AckWait = 0 }, "consumer.ack_wait 0s")
	f(func(c *StreamsConfig) { c.MaxDeliver = 0 }, "consumer.max_deliver 0")

	// Zero ages mean "no limit", -1 and 0 bytes mean "no limit".
	c := DefaultStreamsConfig()
	c.LogsMaxAge, c.DLQMaxAge, c.LogsMaxBytes, c.MaxDeliver = 0, 0, 0, 5
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate rejected unlimited ages: %v", err)
	}
}

func TestEnsureIdempotentAndApplied(t *testing.T) {
	ctx, js := serverJS(t)

	cfg := DefaultStreamsConfig()
	cons, kv, err := Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatalf("cannot ensure: %v", err)
	}
	if kv.Bucket() != schemas.KVActiveBlocks {
		t.Fatalf("KV bucket %q; want %q", kv.Bucket(), schemas.KVActiveBlocks)
	}
	ci := cons.CachedInfo()
	if ci.Stream != schemas.StreamLogs || ci.Name != schemas.ConsumerPipeline {
		t.Fatalf("consumer %q on %q; want %q on %q", ci.Name, ci.Stream, schemas.ConsumerPipeline, schemas.StreamLogs)
	}
	if ci.Config.AckPolicy != jetstream.AckExplicitPolicy || ci.Config.MaxAckPending != 200000 || ci.Config.AckWait != time.Minute || ci.Config.MaxDeliver != -1 {
		t.Fatalf("consumer config ack=%v max_ack_pending=%d ack_wait=%s max_deliver=%d; want explicit, 200000, 1m, -1",
			ci.Config.AckPolicy, ci.Config.MaxAckPending, ci.Config.AckWait, ci.Config.MaxDeliver)
	}
	wantStreams := map[string]struct {
		subjects []string
		maxAge   time.Duration
	}{
		schemas.StreamLogs:      {[]string{schemas.SubjectLogsAll}, 24 * time.Hour},
		schemas.StreamDLQ:       {[]string{schemas.SubjectDLQAll}, 7 * 24 * time.Hour},
		schemas.StreamAlerts:    {[]string{schemas.SubjectAlertsAll}, 30 * 24 * time.Hour},
		schemas.StreamDecisions: {[]string{schemas.SubjectDecisionsAll}, 30 * 24 * time.Hour},
		schemas.StreamEvents:    {[]string{schemas.SubjectEventsAll, schemas.SubjectObsAll}, 24 * time.Hour},
	}
	for name, want := range wantStreams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %q missing after Ensure: %v", name, err)
		}
		sc := s.CachedInfo().Config
		if !slices.Equal(sc.Subjects, want.subjects) || sc.MaxAge != want.maxAge || sc.Duplicates != 2*time.Minute || sc.Storage != jetstream.FileStorage {
			t.Fatalf("stream %q subjects=%v max_age=%s duplicates=%s storage=%v; want %v, %s, 2m, file",
				name, sc.Subjects, sc.MaxAge, sc.Duplicates, sc.Storage, want.subjects, want.maxAge)
		}
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatalf("cannot get KV status: %v", err)
	}
	if st.History() != 1 || st.TTL() != 0 {
		t.Fatalf("KV history=%d ttl=%s; want 1 and 0", st.History(), st.TTL())
	}

	// A message published before the second Ensure survives it and is delivered.
	if _, err := js.Publish(ctx, LogSubject(schemas.FormatJSON, "gw1"), []byte(`{"a":1}`)); err != nil {
		t.Fatalf("cannot publish a log: %v", err)
	}
	if _, _, err := Ensure(ctx, js, cfg); err != nil {
		t.Fatalf("second Ensure with the same config failed: %v", err)
	}

	cfg.LogsMaxAge = time.Hour
	cfg.Retention = "interest"
	cfg.MaxAckPending = 500
	cfg.AckWait = 10 * time.Second
	cfg.MaxDeliver = 7
	cfg.BlocksTTL = 6 * time.Hour
	cons, kv, err = Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatalf("Ensure with a changed config failed: %v", err)
	}
	ci, err = cons.Info(ctx)
	if err != nil {
		t.Fatalf("cannot get consumer info: %v", err)
	}
	if ci.Config.MaxAckPending != 500 || ci.Config.AckWait != 10*time.Second || ci.Config.MaxDeliver != 7 {
		t.Fatalf("updated consumer max_ack_pending=%d ack_wait=%s max_deliver=%d; want 500, 10s, 7",
			ci.Config.MaxAckPending, ci.Config.AckWait, ci.Config.MaxDeliver)
	}
	if ci.NumPending != 1 {
		t.Fatalf("consumer has %d pending messages after the updates; want 1", ci.NumPending)
	}
	s, err := js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatalf("cannot get stream: %v", err)
	}
	if sc := s.CachedInfo().Config; sc.MaxAge != time.Hour || sc.Retention != jetstream.InterestPolicy {
		t.Fatalf("updated logs stream max_age=%s retention=%v; want 1h, interest", sc.MaxAge, sc.Retention)
	}
	if st, err = kv.Status(ctx); err != nil || st.TTL() != 6*time.Hour {
		t.Fatalf("updated KV ttl=%v (err %v); want 6h", st.TTL(), err)
	}
	mb, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("cannot fetch: %v", err)
	}
	var got []string
	for m := range mb.Messages() {
		got = append(got, string(m.Data()))
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("cannot ack: %v", err)
		}
	}
	if !slices.Equal(got, []string{`{"a":1}`}) {
		t.Fatalf("fetched %q; want the one log published before the updates", got)
	}
}

func TestEnsureRejectsInvalidConfigBeforeTouchingServer(t *testing.T) {
	ctx, js := serverJS(t)
	cfg := DefaultStreamsConfig()
	cfg.AckWait = -time.Second
	if _, _, err := Ensure(ctx, js, cfg); err == nil || !strings.Contains(err.Error(), "consumer.ack_wait") {
		t.Fatalf("Ensure error %v; want one naming consumer.ack_wait", err)
	}
	if _, err := js.Stream(ctx, schemas.StreamLogs); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream lookup after a rejected Ensure: %v; want ErrStreamNotFound", err)
	}
}

func TestEnsureRefusedChangeNamesStream(t *testing.T) {
	ctx, js := serverJS(t)
	cfg := DefaultStreamsConfig()
	if _, _, err := Ensure(ctx, js, cfg); err != nil {
		t.Fatalf("cannot ensure: %v", err)
	}
	cfg.LogsStorage = "memory"
	_, _, err := Ensure(ctx, js, cfg)
	if err == nil || !strings.Contains(err.Error(), `stream "IOTWATCH_LOGS"`) {
		t.Fatalf("Ensure changing the storage type: error %v; want one naming stream \"IOTWATCH_LOGS\"", err)
	}
}

// TestEnsureUpgradesBlocksBucket: a bucket of active blocks created without
// per-key TTLs (an older iotwatch) is updated in place by Ensure on a server
// that has them, its entries kept; Ensure stays idempotent afterwards.
func TestEnsureUpgradesBlocksBucket(t *testing.T) {
	ctx, js := serverJS(t)
	old, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: schemas.KVActiveBlocks, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := KeyTTL(ctx, old); err != nil || ok {
		t.Fatalf("KeyTTL of a legacy bucket = %v, %v; want false", ok, err)
	}
	key := schemas.KVKey(schemas.ScopeDevice, "d-1")
	if _, err := old.Put(ctx, key, []byte(`{"id":"d-old"}`)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, kv, err := Ensure(ctx, js, DefaultStreamsConfig())
		if err != nil {
			t.Fatalf("Ensure on a legacy bucket: %v", err)
		}
		if ok, err := KeyTTL(ctx, kv); err != nil || !ok {
			t.Fatalf("KeyTTL after Ensure = %v, %v; want true", ok, err)
		}
		if got, err := kv.Get(ctx, key); err != nil || string(got.Value()) != `{"id":"d-old"}` {
			t.Fatalf("legacy entry after Ensure: %v; want it kept", err)
		}
	}
}

// startExternalServer starts the standalone nats-server (natsServerBinary)
// with JetStream on a free port and returns its URL; it is killed when the
// test ends, and its output logged if the test failed.
func startExternalServer(t *testing.T) string {
	t.Helper()
	bin := natsServerBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot pick a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var out logBuffer
	cmd := exec.Command(bin, "-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %q: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", out.String())
		}
	})
	return "nats://127.0.0.1:" + strconv.Itoa(port)
}

// TestEnsureBlocksOldServer: on a nats-server without per-key TTLs (Debian's
// 2.9) Ensure still creates and updates the bucket, KeyTTL says so, and the
// writes the publisher makes there (plain, and conditional on the last
// revision) work.
func TestEnsureBlocksOldServer(t *testing.T) {
	nc, js := connectTest(t, startExternalServer(t))
	ctx := testContext(t)
	var kv jetstream.KeyValue
	for range 2 {
		var err error
		if _, kv, err = Ensure(ctx, js, DefaultStreamsConfig()); err != nil {
			t.Fatalf("Ensure on nats-server %s: %v", nc.ConnectedServerVersion(), err)
		}
	}
	ok, err := KeyTTL(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Skipf("nats-server %s has per-key TTLs: the old-server path is not exercised", nc.ConnectedServerVersion())
	}
	key := schemas.KVKey(schemas.ScopeDevice, "d-1")
	rev, err := kv.Put(ctx, key, []byte("block"))
	if err != nil {
		t.Fatal(err)
	}
	subject := KVSubject(schemas.KVActiveBlocks, key)
	if _, err := js.Publish(ctx, subject, []byte("unblock"), jetstream.WithExpectLastSequencePerSubject(rev)); err != nil {
		t.Fatalf("conditional write on nats-server %s: %v", nc.ConnectedServerVersion(), err)
	}
	if _, err := js.Publish(ctx, subject, []byte("late"), jetstream.WithExpectLastSequencePerSubject(rev)); err == nil {
		t.Fatal("a write conditional on a stale revision succeeded")
	}
	if got, err := kv.Get(ctx, key); err != nil || string(got.Value()) != "unblock" {
		t.Fatalf("KV entry %v; want the unblock", err)
	}
}

// TestLogsMaxBytesRefusesNew: at logs.max_bytes the log stream refuses new
// logs instead of dropping the oldest, which are the backlog not scored yet
// (DiscardOld lost 20% of a backlog unscored in issue 13).
func TestLogsMaxBytesRefusesNew(t *testing.T) {
	_, js := connectTest(t, startExternalServer(t))
	ctx := testContext(t)
	cfg := DefaultStreamsConfig()
	cfg.LogsMaxBytes = 64 << 10
	if _, _, err := Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 1024)
	refused := false
	for i := range 200 {
		if _, err := js.Publish(ctx, LogSubject(schemas.FormatJSON, "gw1"), line); err != nil {
			refused = true
			break
		} else if i == 199 {
			t.Fatal("200 KiB published into a 64 KiB log stream")
		}
	}
	s, err := js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	if info := s.CachedInfo(); !refused || info.State.FirstSeq != 1 {
		t.Fatalf("refused %v, first sequence %d: the oldest logs were dropped", refused, info.State.FirstSeq)
	}
}
