package sink

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// natsEnv is an embedded NATS server with the iotwatch streams and bucket.
type natsEnv struct {
	ctx  context.Context
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	pub  *NATSPublisher
	keys map[string]ed25519.PublicKey // the public half of the publisher's signing key "k1"
}

func newNATSEnv(t testing.TB, ensure bool) *natsEnv {
	t.Helper()
	e, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatalf("cannot start embedded NATS server: %v", err)
	}
	t.Cleanup(e.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	nc, js, err := bus.Connect(ctx, e.URL(), "sink-test", nil)
	if err != nil {
		t.Fatalf("cannot connect: %v", err)
	}
	t.Cleanup(nc.Close)
	env := &natsEnv{ctx: ctx, js: js}
	if ensure {
		if _, env.kv, err = bus.Ensure(ctx, js, bus.DefaultStreamsConfig()); err != nil {
			t.Fatalf("cannot ensure streams: %v", err)
		}
	}
	env.pub = NewNATSPublisher(js, env.kv, nil)
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.pub.SetSigner("k1", priv); err != nil {
		t.Fatal(err)
	}
	env.keys = map[string]ed25519.PublicKey{"k1": pub}
	return env
}

// streamMsgs returns every message of stream, in order.
func (env *natsEnv) streamMsgs(t *testing.T, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := env.js.Stream(env.ctx, stream)
	if err != nil {
		t.Fatalf("cannot get stream %q: %v", stream, err)
	}
	info, err := s.Info(env.ctx)
	if err != nil {
		t.Fatalf("cannot get stream %q info: %v", stream, err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(env.ctx, seq)
		if err != nil {
			t.Fatalf("cannot get message %d of %q: %v", seq, stream, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// kvDecision returns the decision the bucket holds under key (the error of
// the lookup when it holds none); a value that is not a decision fails t.
func (env *natsEnv) kvDecision(t *testing.T, key string) (schemas.Decision, error) {
	t.Helper()
	e, err := env.kv.Get(env.ctx, key)
	if err != nil {
		return schemas.Decision{}, err
	}
	var d schemas.Decision
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		t.Fatalf("KV value of %q is not a decision: %v", key, err)
	}
	return d, nil
}

func testAlerts() []schemas.Alert {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	mk := func(id, device, severity string, score float64) schemas.Alert {
		return schemas.Alert{
			ID: id, Time: at, Tenant: "acme", Device: device, Score: score, Severity: severity,
			Reasons:      []schemas.Explanation{{Detector: volume.Name, Reason: volume.ReasonRateSpike, Score: score, Observed: 120, Expected: 3}},
			FirstEventID: 100, LastEventID: 140, SchemaV: schemas.SchemaVersion,
		}
	}
	return []schemas.Alert{
		mk("a-1", "d-1", schemas.SeverityHigh, 0.8),
		mk("a-2", "d-2", schemas.SeverityCritical, 0.97),
		mk("a-3", "d-3", schemas.SeverityLow, 0.4),
	}
}

func TestNATSPublishAlerts(t *testing.T) {
	env := newNATSEnv(t, true)
	alerts := testAlerts()
	for range 2 { // the second call is a retry: the duplicate window drops it
		if err := env.pub.PublishAlerts(env.ctx, alerts); err != nil {
			t.Fatalf("cannot publish alerts: %v", err)
		}
	}
	msgs := env.streamMsgs(t, schemas.StreamAlerts)
	if len(msgs) != len(alerts) {
		t.Fatalf("IOTWATCH_ALERTS holds %d messages after publishing %d alerts twice; want %d", len(msgs), len(alerts), len(alerts))
	}
	for i, m := range msgs {
		a := alerts[i]
		wantSubj := "iotwatch.alerts." + a.Severity
		if m.Subject != wantSubj || m.Header.Get(jetstream.MsgIDHeader) != a.ID || m.Header.Get(schemas.HeaderSchemaVersion) != "1" {
			t.Fatalf("message %d: subject %q, msg id %q, schema version %q; want %q, %q, \"1\"",
				i, m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Header.Get(schemas.HeaderSchemaVersion), wantSubj, a.ID)
		}
		var got schemas.Alert
		if err := json.Unmarshal(m.Data, &got); err != nil {
			t.Fatalf("message %d is not an alert: %v", i, err)
		}
		if got.ID != a.ID || got.Device != a.Device || !got.Time.Equal(a.Time) || len(got.Reasons) != 1 || got.Reasons[0].Observed != 120 {
			t.Fatalf("message %d decodes to %+v; want %+v", i, got, a)
		}
	}
}

func TestNATSPublishAlertsRejectsIncomplete(t *testing.T) {
	env := newNATSEnv(t, true)
	alerts := testAlerts()
	alerts[2].ID = ""
	if err := env.pub.PublishAlerts(env.ctx, alerts); err == nil || !strings.Contains(err.Error(), `device "d-3"`) {
		t.Fatalf("PublishAlerts with an empty id: error %v; want one naming device \"d-3\"", err)
	}
	if msgs := env.streamMsgs(t, schemas.StreamAlerts); len(msgs) != 0 {
		t.Fatalf("a rejected slice published %d alerts; want none", len(msgs))
	}
}

func TestNATSPublishAlertsWithoutStreamFails(t *testing.T) {
	env := newNATSEnv(t, false)
	err := env.pub.PublishAlerts(env.ctx, testAlerts()[:1])
	if err == nil || !strings.Contains(err.Error(), `cannot publish alert "a-1"`) {
		t.Fatalf("PublishAlerts without streams: error %v; want one naming alert \"a-1\"", err)
	}
}

// testDecision returns a decision created now (the bucket's per-key TTL
// follows the wall clock) that expires in an hour.
func testDecision(id, action, scope, value string) schemas.Decision {
	at := time.Now().UTC().Truncate(time.Second)
	return schemas.Decision{
		ID: id, Action: action, Scope: scope, Value: value, Tenant: "acme", Device: "d-1",
		CreatedAt: at, ExpiresAt: at.Add(time.Hour), Reason: command.ReasonPrivilegedNew, Score: 0.95,
		AlertID: "a-1", Issuer: "iotwatch", SchemaV: schemas.SchemaVersion,
	}
}

func TestNATSPublishDecisions(t *testing.T) {
	env := newNATSEnv(t, true)
	block := testDecision("dec-1", schemas.ActionBlock, schemas.ScopeDevice, "acme/d-1")
	throttle := testDecision("dec-2", schemas.ActionThrottle, schemas.ScopeIP, "203.0.113.7")
	dry := testDecision("dec-3", schemas.ActionDryRunBlock, schemas.ScopeDevice, "acme/d-2")
	dry.DryRun = true
	dryFlag := testDecision("dec-4", schemas.ActionBlock, schemas.ScopeAPIKey, "key-9")
	dryFlag.DryRun = true
	first := []schemas.Decision{block, throttle, dry, dryFlag}
	for range 2 { // a retried slice stores nothing new
		if err := env.pub.PublishDecisions(env.ctx, first); err != nil {
			t.Fatalf("cannot publish decisions: %v", err)
		}
	}

	getKV := func(d schemas.Decision) (schemas.Decision, error) {
		t.Helper()
		return env.kvDecision(t, schemas.KVKey(d.Scope, d.Value))
	}
	for _, d := range []schemas.Decision{block, throttle} {
		got, err := getKV(d)
		if err != nil || got.ID != d.ID || got.Action != d.Action || !got.ExpiresAt.Equal(d.ExpiresAt) {
			t.Fatalf("KV entry for %s %s=%q: %+v, error %v; want decision %q", d.Action, d.Scope, d.Value, got, err, d.ID)
		}
	}
	for _, d := range []schemas.Decision{dry, dryFlag} {
		if _, err := getKV(d); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("dry-run decision %q: KV lookup error %v; want ErrKeyNotFound", d.ID, err)
		}
	}

	// An unblock replaces the block it lifts: a signed value, not a delete.
	unblock := testDecision("dec-5", schemas.ActionUnblock, schemas.ScopeDevice, "acme/d-1")
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{unblock}); err != nil {
		t.Fatalf("cannot publish unblock: %v", err)
	}
	if got, err := getKV(block); err != nil || got.ID != "dec-5" || got.Action != schemas.ActionUnblock {
		t.Fatalf("after unblock the KV entry of the device is %+v, error %v; want unblock dec-5", got, err)
	}
	if _, err := getKV(throttle); err != nil {
		t.Fatalf("unblocking the device removed the IP throttle: %v", err)
	}

	msgs := env.streamMsgs(t, schemas.StreamDecisions)
	want := []struct{ subject, id string }{
		{"iotwatch.decisions.block", "dec-1"},
		{"iotwatch.decisions.throttle", "dec-2"},
		{"iotwatch.decisions.would_block", "dec-3"},
		{"iotwatch.decisions.block", "dec-4"},
		{"iotwatch.decisions.unblock", "dec-5"},
	}
	if len(msgs) != len(want) {
		t.Fatalf("IOTWATCH_DECISIONS holds %d messages; want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if m.Subject != want[i].subject || m.Header.Get(jetstream.MsgIDHeader) != want[i].id {
			t.Fatalf("decision message %d: subject %q, msg id %q; want %q, %q", i, m.Subject, m.Header.Get(jetstream.MsgIDHeader), want[i].subject, want[i].id)
		}
	}

	// Block and unblock of one key in a single slice leaves it unblocked.
	again := testDecision("dec-6", schemas.ActionBlock, schemas.ScopeDevice, "acme/d-7")
	undo := testDecision("dec-7", schemas.ActionUnblock, schemas.ScopeDevice, "acme/d-7")
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{again, undo}); err != nil {
		t.Fatalf("cannot publish block+unblock: %v", err)
	}
	if got, err := getKV(again); err != nil || got.ID != "dec-7" {
		t.Fatalf("block then unblock in one slice: KV entry %+v, error %v; want unblock dec-7", got, err)
	}

	// An old unblock (created before the block, naming another decision)
	// leaves a newer block in place; one naming it lifts it whenever created.
	newer := testDecision("dec-8", schemas.ActionBlock, schemas.ScopeDevice, "acme/d-8")
	stale := testDecision("dec-0", schemas.ActionUnblock, schemas.ScopeDevice, "acme/d-8")
	stale.CreatedAt = newer.CreatedAt.Add(-time.Minute)
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{newer, stale}); err != nil {
		t.Fatal(err)
	}
	if got, err := getKV(newer); err != nil || got.ID != "dec-8" {
		t.Fatalf("a stale unblock replaced the newer block: KV entry %+v, error %v", got, err)
	}
	named := stale
	named.ID = schemas.UnblockID("dec-8")
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{named}); err != nil {
		t.Fatal(err)
	}
	if got, err := getKV(newer); err != nil || got.ID != named.ID {
		t.Fatalf("an unblock naming the block did not replace it: KV entry %+v, error %v", got, err)
	}
}

// TestNATSKeyTTL: on a server with per-key TTLs (the embedded one), a block
// is written with the time left until its expires_at, rounded up to a second,
// and its unblock keeps the same deadline.
func TestNATSKeyTTL(t *testing.T) {
	env := newNATSEnv(t, true)
	if ok, err := bus.KeyTTL(env.ctx, env.kv); err != nil || !ok {
		t.Fatalf("KeyTTL = %v, %v; want per-key TTLs on the embedded server", ok, err)
	}
	block := testDecision("dec-1", schemas.ActionBlock, schemas.ScopeDevice, "d-ttl")
	block.ExpiresAt = time.Now().Add(90*time.Minute + 300*time.Millisecond)
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{block}); err != nil {
		t.Fatal(err)
	}
	ttlOf := func() time.Duration {
		t.Helper()
		s, err := env.js.Stream(env.ctx, bus.KVStream(schemas.KVActiveBlocks))
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(env.ctx, bus.KVSubject(schemas.KVActiveBlocks, schemas.KVKey(block.Scope, block.Value)))
		if err != nil {
			t.Fatal(err)
		}
		d, err := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader))
		if err != nil {
			t.Fatalf("KV value without a valid %s header: %v", jetstream.MsgTTLHeader, err)
		}
		return d
	}
	if got := ttlOf(); got < 90*time.Minute || got > 91*time.Minute || got%time.Second != 0 {
		t.Errorf("block TTL %s; want 90m1s or so, whole seconds, never less than the time left", got)
	}
	unblock := testDecision(schemas.UnblockID("dec-1"), schemas.ActionUnblock, schemas.ScopeDevice, "d-ttl")
	unblock.ExpiresAt = time.Time{}
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{unblock}); err != nil {
		t.Fatal(err)
	}
	if got := ttlOf(); got < 89*time.Minute || got > 91*time.Minute {
		t.Errorf("unblock TTL %s; want the lifted block's time left", got)
	}
}

func TestKeyTTLRounding(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	f := func(created, left, want time.Duration) {
		t.Helper()
		if got := keyTTL(now.Add(created), now.Add(left), now); got != want {
			t.Errorf("keyTTL(created now%+v, expires now%+v) = %s; want %s", created, left, got, want)
		}
	}
	f(0, time.Millisecond, time.Second)
	f(0, time.Second+time.Nanosecond, 2*time.Second)
	f(-time.Hour, time.Minute, time.Minute)
	f(0, time.Minute+999*time.Millisecond, 61*time.Second)
	// Already expired: its whole duration.
	f(-2*time.Hour, -time.Hour, time.Hour)
	f(-2*time.Hour, 0, 2*time.Hour)
	f(-time.Hour, -time.Hour, time.Second)
}

func TestNATSPublishDecisionsRejectsInvalid(t *testing.T) {
	env := newNATSEnv(t, true)
	f := func(d schemas.Decision, want string) {
		t.Helper()
		ok := testDecision("ok-1", schemas.ActionBlock, schemas.ScopeDevice, "acme/d-1")
		err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{ok, d})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("PublishDecisions error %v; want one containing %q", err, want)
		}
	}
	f(testDecision("x-1", "ban", schemas.ScopeDevice, "d"), `unknown action "ban"`)
	f(testDecision("x-2", schemas.ActionBlock, "mac", "d"), `unknown scope "mac"`)
	f(testDecision("x-3", schemas.ActionBlock, schemas.ScopeIP, ""), "id and value must be set")
	f(testDecision("", schemas.ActionBlock, schemas.ScopeIP, "10.0.0.1"), "id and value must be set")
	if msgs := env.streamMsgs(t, schemas.StreamDecisions); len(msgs) != 0 {
		t.Fatalf("rejected slices published %d decisions; want none", len(msgs))
	}
}

// TestNATSDeadLetters: the dead letters of one log message go out as one DLQ
// message per reason, their entries readable with schemas.ParseDeadLetters,
// a detail repeated once, and a redelivered message stores nothing new.
func TestNATSDeadLetters(t *testing.T) {
	env := newNATSEnv(t, true)
	const subject = "iotwatch.logs.json.kong-eu1"
	payload := []byte(`{"time":"2026-03-01T12:00:00Z","device":`)
	letters := func() []schemas.DeadLetter {
		return []schemas.DeadLetter{
			{Line: 3, Reason: "bad_json", Detail: "unexpected end\r\nof input", Size: len(payload), Record: payload},
			{Line: 4, Reason: "bad.time", Detail: strings.Repeat("é", 1000), Size: 1, Record: []byte("x")},
			{Line: 7, Reason: "bad_json", Detail: "unexpected end\r\nof input", Size: 1, Record: []byte("\n")},
		}
	}
	for range 2 { // a redelivered message dead-letters the same lines again
		if err := env.pub.DeadLetters(env.ctx, subject, 42, letters()); err != nil {
			t.Fatalf("cannot dead-letter: %v", err)
		}
	}
	msgs := env.streamMsgs(t, schemas.StreamDLQ)
	if len(msgs) != 2 {
		t.Fatalf("IOTWATCH_DLQ holds %d messages; want 2 (one per reason)", len(msgs))
	}
	// Sorted by reason: bad.time first.
	m := msgs[1]
	wantHeaders := map[string]string{
		schemas.HeaderDLQReason:   "bad_json",
		schemas.HeaderDLQSubject:  subject,
		schemas.HeaderDLQSequence: "42",
		schemas.HeaderDLQLine:     "3",
		schemas.HeaderDLQCount:    "2",
		jetstream.MsgIDHeader:     "42-3",
	}
	for k, v := range wantHeaders {
		if got := m.Header.Get(k); got != v {
			t.Fatalf("dead letter header %s = %q; want %q", k, got, v)
		}
	}
	wantBody := "3 " + strconv.Itoa(len(payload)) + " unexpected end  of input\n" + string(payload) + "\n7 1\n\n\n"
	if m.Subject != "iotwatch.dlq.bad_json" || string(m.Data) != wantBody {
		t.Fatalf("dead letter subject %q body %q; want iotwatch.dlq.bad_json and %q", m.Subject, m.Data, wantBody)
	}
	got, err := schemas.ParseDeadLetters(nil, m.Data, m.Header.Get(schemas.HeaderDLQReason))
	if err != nil || len(got) != 2 || got[1].Line != 7 || got[1].Detail != "unexpected end  of input" || string(got[1].Record) != "\n" {
		t.Fatalf("ParseDeadLetters = %+v, %v", got, err)
	}
	m = msgs[0]
	if m.Subject != "iotwatch.dlq.bad_time" || m.Header.Get(schemas.HeaderDLQReason) != "bad.time" || m.Header.Get(jetstream.MsgIDHeader) != "42-4" {
		t.Fatalf("second dead letter: subject %q reason %q msg id %q; want iotwatch.dlq.bad_time, bad.time, 42-4",
			m.Subject, m.Header.Get(schemas.HeaderDLQReason), m.Header.Get(jetstream.MsgIDHeader))
	}
	got, err = schemas.ParseDeadLetters(nil, m.Data, "bad.time")
	if err != nil || len(got) != 1 {
		t.Fatalf("ParseDeadLetters = %+v, %v", got, err)
	}
	if d := got[0].Detail; len(d) > maxDetailLen || len(d) < maxDetailLen-1 || strings.ContainsRune(d, '\uFFFD') {
		t.Fatalf("long detail is %d bytes (valid UTF-8: %v); want it cut to about %d on a rune boundary", len(d), !strings.ContainsRune(d, '\uFFFD'), maxDetailLen)
	}
}

// TestDeadLettersTruncateAndSplit: a record as large as the server's max
// payload still reaches the DLQ (cut, and its entry says how long it was)
// instead of failing forever, and letters that do not fit one message are
// split over several, each under the max payload, none lost.
func TestDeadLettersTruncateAndSplit(t *testing.T) {
	env := newNATSEnv(t, true)
	ctx, js := env.ctx, env.js
	maxPayload := int(js.Conn().MaxPayload())
	huge := bytes.Repeat([]byte("x"), maxPayload)
	var letters []schemas.DeadLetter
	n := 2*maxPayload/MaxDeadLetterRecord + 1 // more than two messages' worth
	for i := range n {
		letters = append(letters, schemas.DeadLetter{Line: uint32(i), Reason: "too_large", Detail: "line is longer than the limit", Size: len(huge), Record: huge})
	}
	if err := env.pub.DeadLetters(ctx, "iotwatch.logs.json.big", 9, letters); err != nil {
		t.Fatalf("max-payload records could not be dead-lettered: %v", err)
	}
	msgs := env.streamMsgs(t, schemas.StreamDLQ)
	if len(msgs) < 3 {
		t.Fatalf("%d records of %d bytes in %d DLQ messages; want them split over at least 3", n, MaxDeadLetterRecord, len(msgs))
	}
	var lines []uint32
	for _, m := range msgs {
		got, err := schemas.ParseDeadLetters(nil, m.Data, m.Header.Get(schemas.HeaderDLQReason))
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(schemas.HeaderDLQCount) != strconv.Itoa(len(got)) || m.Header.Get(schemas.HeaderDLQLine) != strconv.Itoa(int(got[0].Line)) {
			t.Errorf("headers count %s line %s; body holds %d from line %d", m.Header.Get(schemas.HeaderDLQCount), m.Header.Get(schemas.HeaderDLQLine), len(got), got[0].Line)
		}
		for _, d := range got {
			if !d.Truncated() || d.Size != len(huge) || len(d.Record) != MaxDeadLetterRecord || !bytes.Equal(d.Record, huge[:len(d.Record)]) {
				t.Fatalf("line %d: %d of %d bytes kept (truncated %v); want %d of %d", d.Line, len(d.Record), d.Size, d.Truncated(), MaxDeadLetterRecord, len(huge))
			}
			lines = append(lines, d.Line)
		}
	}
	if len(lines) != n {
		t.Fatalf("%d records in the DLQ; want %d", len(lines), n)
	}
	for i, l := range lines {
		if l != uint32(i) {
			t.Fatalf("record %d is line %d; want every line once, in order", i, l)
		}
	}
}

// TestNATSUnblockMissingKey: an unblock for a key the bucket does not hold
// (never written, or deleted by hand) is written, and the revision it expects
// makes a block written after the lookup win instead of being overwritten.
func TestNATSUnblockMissingKey(t *testing.T) {
	env := newNATSEnv(t, true)
	fresh := testDecision("dec-1", schemas.ActionUnblock, schemas.ScopeDevice, "never-blocked")
	block := testDecision("dec-2", schemas.ActionBlock, schemas.ScopeDevice, "deleted")
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{block}); err != nil {
		t.Fatal(err)
	}
	deletedKey := schemas.KVKey(block.Scope, block.Value)
	if err := env.kv.Delete(env.ctx, deletedKey); err != nil {
		t.Fatal(err)
	}
	lift := testDecision(schemas.UnblockID("dec-2"), schemas.ActionUnblock, schemas.ScopeDevice, "deleted")
	if err := env.pub.PublishDecisions(env.ctx, []schemas.Decision{fresh, lift}); err != nil {
		t.Fatalf("unblocks of a missing and a deleted key: %v", err)
	}
	for _, d := range []schemas.Decision{fresh, lift} {
		got, err := env.kvDecision(t, schemas.KVKey(d.Scope, d.Value))
		if err != nil || got.ID != d.ID {
			t.Fatalf("KV entry of %q after its unblock: %q, error %v; want unblock %q", d.Value, got.ID, err, d.ID)
		}
	}

	// The race putUnblock guards against: a block lands between the lookup
	// (no entry) and the write, which must then fail, not overwrite it.
	key := schemas.KVKey(schemas.ScopeDevice, "raced")
	rev, err := env.pub.lastRevision(env.ctx, key)
	if err != nil || rev != 0 {
		t.Fatalf("lastRevision of a key never written = %d, %v; want 0", rev, err)
	}
	if _, err := env.kv.Put(env.ctx, key, []byte(`{"id":"block"}`)); err != nil {
		t.Fatal(err)
	}
	err = env.pub.putKV(env.ctx, key, []byte(`{"id":"unblock"}`), time.Time{}, time.Time{}, &rev)
	if !isWrongLastSequence(err) {
		t.Fatalf("write expecting no entry after a block landed: error %v; want wrong last sequence", err)
	}
	if e, err := env.kv.Get(env.ctx, key); err != nil || string(e.Value()) != `{"id":"block"}` {
		t.Fatalf("the block was overwritten: %v", err)
	}
}
