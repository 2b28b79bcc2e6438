package enforce_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/enforce/forwardauth"
	"github.com/iotwatch/iotwatch/enforce/mosquitto"
	"github.com/iotwatch/iotwatch/internal/mosquittotest"
	"github.com/iotwatch/iotwatch/internal/mqtt"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestOneNamespace runs the two enforcement points of the closed loops, the
// forward-auth handler of `enforce http` and the Mosquitto enforcer of
// `enforce mosquitto` (a real broker with dynamic security), against the real
// embedded NATS, and feeds them decisions that the decide stage made from
// log lines the real decoders read, each source identified its own way
// (--identity auto,*.gw-devices=header:X-Device-Id):
//
//   - a device identified by the X-Device-Id header is blocked as device=X:
//     forward-auth refuses X-Device-Id: X; the MQTT user X keeps publishing;
//     the Mosquitto enforcer says not_applicable.
//   - a device identified by its API key is blocked as api_key=<hash>:
//     forward-auth refuses a request carrying that key (it hashes the key it
//     sees with the same secret) and no other; Mosquitto says not_applicable.
//   - an MQTT client identified by its username (with a generated client id)
//     is blocked as mqtt_username=X: the broker refuses user X; an HTTP
//     client sending X-Device-Id: X passes; forward-auth says not_applicable.
func TestOneNamespace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nenv := natstest.Start(t, natsserver.Options{})
	pubKey, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]ed25519.PublicKey{"k1": pubKey}
	publisher := sink.NewNATSPublisher(nenv.JS, nenv.KV, nil)
	publish := func(d schemas.Decision) { // signed, as run --signing-key does
		t.Helper()
		if err := schemas.SignDecision(&d, "k1", priv); err != nil {
			t.Fatal(err)
		}
		if err := publisher.PublishDecisions(ctx, []schemas.Decision{d}); err != nil {
			t.Fatal(err)
		}
	}
	secret := []byte("a-key-secret-of-the-deployment")
	log := slog.New(slog.DiscardHandler)

	broker := mosquittotest.Start(t)
	broker.AddClient(t, "therm-5", "therm-pw")

	// enforce http
	httpClient, err := enforce.New(enforce.Options{EnforcerID: "http-1", Keys: keys, Scopes: forwardauth.Scopes(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	cfg := forwardauth.DefaultConfig()
	cfg.KeyHash = formats.KeyHasher(secret)
	srv := httptest.NewServer(forwardauth.New(httpClient, cfg).Mux())
	defer srv.Close()

	// enforce mosquitto
	var mosqClient *enforce.Client
	m, err := mosquitto.New(mosquitto.Config{Retry: 200 * time.Millisecond, Log: log,
		Report: func(r schemas.ApplyReceipt) { mosqClient.Report(r) },
		Dial: func(ctx context.Context) (*mosquitto.DynSec, error) {
			return mosquitto.DialDynSec(ctx, mqtt.Options{Addr: broker.Addr, ClientID: "iotwatch-mosq-1",
				Username: mosquittotest.AdminUser, Password: mosquittotest.AdminPassword})
		}})
	if err != nil {
		t.Fatal(err)
	}
	mosqClient, err = enforce.New(enforce.Options{EnforcerID: "mosq-1", Keys: keys, Scopes: mosquitto.Scopes(), Deferred: true,
		OnApply: m.OnApply, OnExpire: m.OnExpire, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 3)
	go func() { httpClient.Run(runCtx, nenv.JS); done <- struct{}{} }()
	go func() { mosqClient.Run(runCtx, nenv.JS); done <- struct{}{} }()
	go func() { m.Run(runCtx); done <- struct{}{} }()
	defer func() {
		stop()
		for range 3 {
			<-done
		}
	}()

	// The decide stage, with the default policy (--block-scope auto).
	engine, err := decide.NewEngine(decide.DefaultConfig(), decide.NewLimiter(0))
	if err != nil {
		t.Fatal(err)
	}
	const identity = "auto,*.gw-devices=header:X-Device-Id"
	decideLine := func(format, source, line string, lineNo uint32) *schemas.Decision {
		t.Helper()
		dec, err := formats.New(format, formats.Options{Identity: identity, Source: source, Tenant: "acme", KeySecret: secret})
		if err != nil {
			t.Fatal(err)
		}
		var ev schemas.Event
		for i, l := range strings.Split(line, "\n") {
			if err := dec.Decode([]byte(l), 1, uint32(i), 0, &ev); err != nil && err != formats.ErrSkip {
				t.Fatalf("cannot decode %q: %v", l, err)
			}
		}
		ev.ID = uint64(lineNo) // distinct alerts, hence decisions
		var s schemas.Scored
		s.Add(schemas.Finding{Detector: volume.Name, Reason: volume.ReasonRateSpike, Score: 0.95, Observed: 50, Expected: 1})
		_, d := engine.Decide(&ev, &s)
		if d == nil {
			t.Fatalf("no decision for %q", line)
		}
		publish(*d)
		return d
	}
	now := time.Now()
	nginxLine := func(header string) string {
		return fmt.Sprintf(`{"time":%q,"msec":"%d.%03d","remote_addr":"203.0.113.7","request_method":"POST","request_uri":"/v1/devices/lock-1/unlock","status":"200",%s}`,
			now.UTC().Format(time.RFC3339), now.Unix(), now.Nanosecond()/1e6, header)
	}
	check := func(hdr, value string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+forwardauth.PathCheck, nil)
		req.Header.Set(hdr, value)
		req.Header.Set("X-Real-IP", "198.51.100.20")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	mqttPub := func() error {
		_, err := broker.Pub(t, "therm-5", "therm-pw", "devices/therm-5/telemetry", "21.5")
		return err
	}
	receipts := newReceiptReader(t, ctx, nenv.JS)

	// 1. A header-identified HTTP device: device=therm-5.
	d1 := decideLine(schemas.FormatNginxJSON, "gw-devices", nginxLine(`"http_x_device_id":"therm-5"`), 1)
	if d1.Scope != schemas.ScopeDevice || d1.Value != "therm-5" {
		t.Fatalf("header device blocked as %s=%q, want device=therm-5", d1.Scope, d1.Value)
	}
	waitUntil(t, "forward-auth refuses X-Device-Id: therm-5", func() bool { return check(schemas.HeaderDeviceID, "therm-5") == http.StatusForbidden })
	receipts.want(t, d1.ID, "http-1", schemas.ReceiptApplied, "")
	receipts.want(t, d1.ID, "mosq-1", schemas.ReceiptNotApplicable, schemas.ReceiptReasonScope)
	if err := mqttPub(); err != nil {
		t.Errorf("MQTT user therm-5 refused by an HTTP device's block: %v", err)
	}
	lift := schemas.Decision{ID: schemas.UnblockID(d1.ID), Action: schemas.ActionUnblock, Scope: d1.Scope, Value: d1.Value,
		CreatedAt: time.Now(), Reason: "test", Issuer: "test", SchemaV: schemas.SchemaVersion}
	publish(lift)
	waitUntil(t, "device unblocked", func() bool { return check(schemas.HeaderDeviceID, "therm-5") == http.StatusOK })

	// 2. An API-key device: api_key=<hash of the key>.
	d2 := decideLine(schemas.FormatNginxJSON, "gw-keys", nginxLine(`"http_x_api_key":"sk-live-lock-1"`), 2)
	if d2.Scope != schemas.ScopeAPIKey || d2.Value != formats.KeyHasher(secret)("sk-live-lock-1") {
		t.Fatalf("API-key device blocked as %s=%q, want api_key=<hash>", d2.Scope, d2.Value)
	}
	waitUntil(t, "forward-auth refuses the blocked key", func() bool { return check(schemas.HeaderAPIKey, "sk-live-lock-1") == http.StatusForbidden })
	if got := check(schemas.HeaderAPIKey, "sk-live-lock-2"); got != http.StatusOK {
		t.Errorf("another key got %d, want 200", got)
	}
	if got := check(schemas.HeaderDeviceID, d2.Value); got != http.StatusOK {
		t.Errorf("X-Device-Id equal to the key's hash got %d, want 200: an api_key block is not a device block", got)
	}
	receipts.want(t, d2.ID, "http-1", schemas.ReceiptApplied, "")
	receipts.want(t, d2.ID, "mosq-1", schemas.ReceiptNotApplicable, schemas.ReceiptReasonScope)

	// 3. An MQTT client by username, with a generated client id: mqtt_username=therm-5.
	sec := time.Now().Unix()
	d3 := decideLine(schemas.FormatMosquitto, "broker-1", fmt.Sprintf(
		"%d: New client connected from 203.0.113.9:50412 as auto-5B0A9EF1-3C2D-4E5F-8A7B-1C2D3E4F5A6B (p2, c1, k60, u'therm-5').\n"+
			"%d: Received PUBLISH from auto-5B0A9EF1-3C2D-4E5F-8A7B-1C2D3E4F5A6B (d0, q0, r0, m0, 'devices/therm-5/cmd/unlock', ... (1 bytes))", sec, sec), 3)
	if d3.Scope != schemas.ScopeMQTTUsername || d3.Value != "therm-5" {
		t.Fatalf("MQTT username blocked as %s=%q, want mqtt_username=therm-5", d3.Scope, d3.Value)
	}
	waitUntil(t, "the broker refuses therm-5", func() bool { return mqttPub() != nil })
	receipts.want(t, d3.ID, "mosq-1", schemas.ReceiptApplied, "")
	receipts.want(t, d3.ID, "http-1", schemas.ReceiptNotApplicable, schemas.ReceiptReasonScope)
	if got := check(schemas.HeaderDeviceID, "therm-5"); got != http.StatusOK {
		t.Errorf("HTTP client sending X-Device-Id: therm-5 got %d while MQTT user therm-5 is blocked; want 200", got)
	}
	if st := m.Stats(); st.Refused != 0 {
		t.Errorf("Mosquitto enforcer stats %+v: it sent the broker commands for scopes it cannot apply", st)
	}
}

// waitUntil polls cond until it holds; the deadline only bounds a hang.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// receiptReader collects the receipts stored in IOTWATCH_DECISIONS.
type receiptReader struct {
	ctx  context.Context
	cons jetstream.Consumer
	seen []schemas.ApplyReceipt
}

func newReceiptReader(t *testing.T, ctx context.Context, js jetstream.JetStream) *receiptReader {
	cons, err := js.OrderedConsumer(ctx, schemas.StreamDecisions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schemas.SubjectDecisionsApplied}})
	if err != nil {
		t.Fatal(err)
	}
	return &receiptReader{ctx: ctx, cons: cons}
}

// want waits for the receipt of decision by enforcer with result and reason,
// and fails if that enforcer acknowledged the decision otherwise.
func (r *receiptReader) want(t *testing.T, decision, enforcer, result, reason string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%s's receipt of %s", enforcer, decision), func() bool {
		batch, err := r.cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			var rc schemas.ApplyReceipt
			if err := json.Unmarshal(msg.Data(), &rc); err != nil {
				t.Fatalf("bad receipt %s: %v", msg.Data(), err)
			}
			r.seen = append(r.seen, rc)
		}
		return slices.ContainsFunc(r.seen, func(rc schemas.ApplyReceipt) bool {
			return rc.DecisionID == decision && rc.EnforcerID == enforcer && rc.Action == schemas.ActionBlock
		})
	})
	for _, rc := range r.seen {
		if rc.DecisionID == decision && rc.EnforcerID == enforcer && rc.Action == schemas.ActionBlock &&
			(rc.Outcome() != result || rc.Reason != reason) {
			t.Errorf("%s acknowledged %s (%s=%s) as %s/%q (%s); want %s/%q", enforcer, decision, rc.Scope, rc.Value, rc.Outcome(), rc.Reason, rc.Detail, result, reason)
		}
	}
}
