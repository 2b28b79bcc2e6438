package loop_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/enforce/forwardauth"
	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/mosquittotest"
	"github.com/iotwatch/iotwatch/internal/mqtt"
	"github.com/iotwatch/iotwatch/internal/nginxtest"
	"github.com/iotwatch/iotwatch/internal/ship"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// Parameters of TestEnforcementLoopDefaults.
const (
	defaultsTTL     = 8 * time.Second  // a block's TTL: short, so that the test sees it lift
	hangBound       = 60 * time.Second // a generous bound on a hang, never a speed
	outageEventTime = 60 * time.Second // the enforcer outage, in event time (log lines)
	outageEvery     = 200 * time.Millisecond
	httpEnforcerID  = "nginx-loop"
	mqttEnforcerID  = "mosq-loop" // startEnforcer's --enforcer-id
)

// TestEnforcementLoopDefaults is issue 11's "Done when" in one closed loop,
// with the pipeline's default identity (auto) and block scope (auto), the
// shipped NGINX site and JSON log format (verdict logged, the API key header
// added as deploy/nginx's format file says), a real Mosquitto with dynamic
// security, the forward-auth handler of `iotwatch enforce http` and the real
// `iotwatch enforce mosquitto`, all on one pipeline and one embedded NATS:
//
//  1. a flood from an API-key HTTP device is refused by NGINX (403; the block
//     names the key's hash, scope api_key) and a privileged publish of an MQTT
//     username is refused by Mosquitto (username disabled, scope
//     mqtt_username); the time from the deciding event to the first refusal
//     is logged, and only a hang (hangBound) fails the test;
//  2. the same for two other devices with the private ClickHouse stopped
//     before the offence: decisions flow without it, and their rows arrive
//     once it is back;
//  3. after the HTTP device's block lifts (TTL), its next legitimate requests
//     pass and it is not blocked again (the 403s NGINX logged during the
//     block carry the verdict, and the pipeline ignores them);
//  4. an enforcer outage (NGINX answers 500, logged as enforcer_unavailable:
//     a real one, then outageEventTime of such lines in event time) raises
//     no alert;
//  5. the other enforcer acknowledges each decision as not_applicable;
//  6. the MQTT devices' retries while blocked (refused connections the
//     broker logs with the client id alone) never block their address.
//
// Baselines are seeded as in the other loops, in the sources' own formats
// (nginx-json lines with the API key, Mosquitto log lines) so that they decode
// exactly as the live lines do.
func TestEnforcementLoopDefaults(t *testing.T) {
	nginxBin := nginxtest.Find(t)
	b := mosquittotest.Start(t)
	mosquittotest.Tool(t, "mosquitto_pub")
	if _, err := chserver.Available(); err != nil {
		t.Fatalf("the closed-loop test needs a real ClickHouse (run `make deps`): %v", err)
	}
	iotwatch := buildIotwatch(t, t.TempDir())
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sv := startServers(t, ctx, log, "loop-defaults-test", "loop_defaults")
	nc, js := sv.nc, sv.js

	// Block decisions by value, and every receipt, with arrival times.
	var mu sync.Mutex
	decisions := map[string][]schemas.Decision{}
	var receipts []schemas.ApplyReceipt
	sub := func(subject string, f func([]byte)) {
		s, err := nc.Subscribe(subject, func(m *nats.Msg) { f(m.Data) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Unsubscribe() })
	}
	sub(schemas.SubjectDecisionsPrefix+"."+schemas.ActionBlock, func(data []byte) {
		var d schemas.Decision
		if json.Unmarshal(data, &d) == nil {
			mu.Lock()
			decisions[d.Value] = append(decisions[d.Value], d)
			mu.Unlock()
		}
	})
	sub(schemas.SubjectDecisionsApplied, func(data []byte) {
		var r schemas.ApplyReceipt
		if json.Unmarshal(data, &r) == nil {
			mu.Lock()
			receipts = append(receipts, r)
			mu.Unlock()
		}
	})
	decisionOf := func(value string) schemas.Decision {
		t.Helper()
		var d schemas.Decision
		pollUntil(t, hangBound, "block decision of "+value, func() bool {
			mu.Lock()
			defer mu.Unlock()
			if ds := decisions[value]; len(ds) > 0 {
				d = ds[0]
				return true
			}
			return false
		})
		return d
	}
	receiptOf := func(d schemas.Decision, enforcer string) schemas.ApplyReceipt {
		t.Helper()
		var r schemas.ApplyReceipt
		pollUntil(t, hangBound, "receipt of "+enforcer+" for "+d.Scope+"="+d.Value, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, x := range receipts {
				if x.DecisionID == d.ID && x.EnforcerID == enforcer && x.Action == schemas.ActionBlock {
					r = x
					return true
				}
			}
			return false
		})
		return r
	}

	// Keys: the pipeline signs, both enforcers verify; the API keys' hash secret.
	keyDir := t.TempDir()
	privFile, pubFile, err := schemas.GenerateKey(mqttKeyID)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"k.key": privFile, "k.pub": pubFile, "admin.pw": []byte(mosquittotest.AdminPassword + "\n")} {
		if err := os.WriteFile(filepath.Join(keyDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyID, priv, err := schemas.LoadPrivateKey(filepath.Join(keyDir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	pubKeys, err := schemas.LoadPublicKeys(filepath.Join(keyDir, "k.pub"))
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	hash := formats.KeyHasher(secret)

	// The pipeline with the defaults of `iotwatch run` (identity auto, block
	// scope auto), a key secret (--key-secret-file) and a short TTL.
	dc := decide.DefaultConfig()
	dc.BlockTTL, dc.MaxBlockTTL = defaultsTTL, time.Minute
	if dc.Scope != "auto" {
		t.Fatalf("decide's default scope is %q; this test is about auto", dc.Scope)
	}
	p := sv.runPipeline(t, ctx, log, dc, keyID, priv, formats.Options{Identity: "auto", Tenant: tenant, KeySecret: secret})

	// Devices: two API keys (HTTP) and two MQTT usernames; the second of
	// each offends while ClickHouse is down.
	keys := []string{"ak-7f3a9c01-live", "ak-7f3a9c02-live"}
	locks := []string{"lock-a", "lock-b"}
	for _, d := range locks {
		b.AddClient(t, d, devicePassword+d)
	}
	end := time.Now().Truncate(time.Second)
	s := seeder{t: t, ctx: ctx, js: js, subject: bus.LogSubject(schemas.FormatNginxJSON, "seed")}
	for at := end.Add(-seedHistory); !at.After(end); at = at.Add(seedEvery) {
		for _, k := range keys {
			s.addf("%s", nginxJSONLine(at, k, 200, "", "200"))
		}
	}
	s.flush()
	seeded := s.n + seedMosquitto(t, ctx, js, locks, end)
	pollUntil(t, hangBound, "pipeline scored the seeded history", func() bool { return p.M.Events.Load() >= uint64(seeded) })
	if n := p.M.Decisions.Load(); n != 0 {
		t.Fatalf("the seeded history produced %d decisions; want none", n)
	}

	// `iotwatch enforce http`: the client with forward-auth's scopes and the
	// handler with its default configuration and the key hash.
	client, err := enforce.New(enforce.Options{EnforcerID: httpEnforcerID, Keys: pubKeys, Scopes: forwardauth.Scopes()})
	if err != nil {
		t.Fatal(err)
	}
	enfDone := make(chan error, 1)
	enfCtx, stopEnf := context.WithCancel(ctx)
	go func() { enfDone <- client.Run(enfCtx, js) }()
	t.Cleanup(func() { stopEnf(); <-enfDone })
	fa := forwardauth.DefaultConfig()
	fa.KeyHash = hash
	auth := httptest.NewServer(forwardauth.New(client, fa).Mux())
	t.Cleanup(auth.Close)
	pollUntil(t, hangBound, "enforcement client synced", func() bool {
		select {
		case <-client.Synced():
			return true
		default:
			return false
		}
	})
	startEnforcer(t, iotwatch, sv.ns.URL(), b.Addr, keyDir)

	// NGINX with the shipped site, logging the API key; ship follows its log
	// and the broker's.
	dir := t.TempDir()
	nginxAddr := nginxtest.Start(t, nginxBin, nginxtest.Options{Deploy: "../../deploy", Dir: dir,
		AuthAddr: strings.TrimPrefix(auth.URL, "http://"), AccessLog: true, LogAPIKey: true})
	accessLog := filepath.Join(dir, "access.log")
	get := nginxGetter(t, nginxAddr, schemas.HeaderAPIKey)
	for _, in := range []struct{ file, format, source string }{
		{accessLog, schemas.FormatNginxJSON, "edge-1"},
		{filepath.Join(b.Dir, "mosquitto.log"), schemas.FormatMosquitto, mqttSource},
	} {
		cfg := ship.DefaultConfig()
		cfg.Inputs, cfg.Subject = []string{in.file}, bus.LogSubject(in.format, in.source)
		done := make(chan error, 1)
		shipCtx, stop := context.WithCancel(ctx)
		go func() { done <- ship.Run(shipCtx, js, cfg, &ship.Stats{}) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("ship %s: %v", in.file, err)
			}
		})
	}

	// offendHTTP floods with key until NGINX answers 403 and checks the block.
	offendHTTP := func(key string) schemas.Decision {
		t.Helper()
		first403, sent, decID := flood(t, get, key, hangBound)
		d := decisionOf(hash(key))
		if d.Scope != schemas.ScopeAPIKey || d.Tenant != tenant || d.Signature == "" {
			t.Errorf("API key %s: decision scope %q tenant %q signature %q; want %s, %q, signed", key, d.Scope, d.Tenant, d.Signature, schemas.ScopeAPIKey, tenant)
		}
		if decID != d.ID {
			t.Errorf("API key %s: NGINX's 403 names decision %q; the pipeline issued %q", key, decID, d.ID)
		}
		t.Logf("API key %s (hash %s): %d requests; decision %s (%s, score %.2f) on the line of %s; first 403 from NGINX +%s after the deciding event",
			key, hash(key), sent, d.ID, d.Reason, d.Score, d.CreatedAt.Format("15:04:05.000"), first403.Sub(d.CreatedAt).Round(time.Millisecond))
		return d
	}
	// offendMQTT publishes to a privileged command topic as username and
	// waits until the broker refuses mosquitto_pub with its credentials.
	offendMQTT := func(i int, username string) schemas.Decision {
		t.Helper()
		c, err := mqtt.Dial(ctx, mqtt.Options{Addr: b.Addr, ClientID: username + "-live", Username: username, Password: devicePassword + username})
		if err != nil {
			t.Fatalf("%s cannot connect: %v", username, err)
		}
		t.Cleanup(func() { c.Close() })
		topic := "devices/" + username + "/" + commandTopic(i)
		if err := c.Publish(ctx, topic, []byte(`{"now":true}`), 1); err != nil {
			t.Fatalf("%s: cannot publish to %q: %v", username, topic, err)
		}
		var out string
		pollUntil(t, hangBound, username+" refused by the broker", func() bool {
			var err error
			out, err = b.Pub(t, username, devicePassword+username, "devices/"+username+"/telemetry", "1")
			return err != nil
		})
		refused := time.Now()
		d := decisionOf(username)
		if d.Scope != schemas.ScopeMQTTUsername || d.Tenant != tenant {
			t.Errorf("%s: decision scope %q tenant %q; want %s, %q", username, d.Scope, d.Tenant, schemas.ScopeMQTTUsername, tenant)
		}
		t.Logf("MQTT username %s → %s: decision %s (%s, score %.2f) on the line of %s; mosquitto_pub refused +%s after the deciding event (%q)",
			username, topic, d.ID, d.Reason, d.Score, d.CreatedAt.Format("15:04:05.000"), refused.Sub(d.CreatedAt).Round(time.Millisecond), strings.TrimSpace(out))
		return d
	}
	pollUntil(t, hangBound, "nginx serving "+keys[0], func() bool { s, _, _ := get(keys[0]); return s == 200 })

	// 1. With ClickHouse up.
	httpA, mqttA := offendHTTP(keys[0]), offendMQTT(0, locks[0])

	// 2. With ClickHouse stopped before the offences.
	sv.stopClickHouse(t)
	httpB, mqttB := offendHTTP(keys[1]), offendMQTT(1, locks[1])
	if _, err := chCount(sv.chs, "SELECT 1"); err == nil {
		t.Fatalf("ClickHouse answers while it should be stopped")
	}
	sv.restartClickHouse(t, ctx)
	ids := []string{httpA.ID, mqttA.ID, httpB.ID, mqttB.ID}
	pollUntil(t, 2*hangBound, "the decisions' rows in ClickHouse after its restart", func() bool {
		n, err := chCount(sv.chs, fmt.Sprintf("SELECT uniqExact(%s) FROM %s.%s WHERE %s IN ('%s')",
			schemas.ColID, sv.ch.Database(), schemas.TableDecisions, schemas.ColID, strings.Join(ids, "','")))
		return err == nil && n == len(ids)
	})

	// 5. Each decision: applied by its enforcer, not_applicable for the other.
	for _, d := range []schemas.Decision{httpA, mqttA, httpB, mqttB} {
		mine, other := httpEnforcerID, mqttEnforcerID
		if d.Scope == schemas.ScopeMQTTUsername {
			mine, other = other, mine
		}
		if r := receiptOf(d, mine); r.Outcome() != schemas.ReceiptApplied {
			t.Errorf("%s=%s: receipt of %s says %s (%s); want %s", d.Scope, d.Value, mine, r.Outcome(), r.Reason, schemas.ReceiptApplied)
		}
		if r := receiptOf(d, other); r.Outcome() != schemas.ReceiptNotApplicable {
			t.Errorf("%s=%s: receipt of %s says %s; want %s", d.Scope, d.Value, other, r.Outcome(), schemas.ReceiptNotApplicable)
		}
	}

	// 3. The blocks lift at their TTL. Every 403 NGINX logged during the
	// blocks was recognized as an enforced deny (neither scored nor learned).
	// The devices' next requests and publishes pass and they stay unblocked:
	// the HTTP device's flood, scored before its block, is still in the
	// volume detector's short window (time constant 30 s) when a TTL of a
	// few seconds ends, but a lifted block rearms the device's detectors
	// (detectors.Rearmer), so the flood cannot renew it.
	checkTTL(t, httpB, defaultsTTL)
	pollUntil(t, time.Until(httpB.ExpiresAt)+hangBound, "block of API key "+keys[1]+" lifted", func() bool {
		return client.Check(enforce.Request{APIKey: hash(keys[1])}).Allowed()
	})
	denied := strings.Count(readFile(t, accessLog), `"status":"403"`)
	pollUntil(t, hangBound, fmt.Sprintf("the %d 403s in NGINX's log recognized as enforced denies", denied), func() bool {
		return p.M.EnforcedDenied.Load() >= uint64(denied)
	})
	events := p.M.Events.Load()
	const after = 3
	for i := range after {
		if s, _, err := get(keys[1]); s != 200 {
			t.Errorf("API key %s, request %d after its block lifted: NGINX answered %d (%v); want 200", keys[1], i, s, err)
		}
	}
	pollUntil(t, time.Until(mqttB.ExpiresAt)+hangBound, locks[1]+" enabled again by the enforcer", func() bool {
		_, err := b.Pub(t, locks[1], devicePassword+locks[1], "devices/"+locks[1]+"/telemetry", "1")
		return err == nil
	})
	for i := range after {
		if out, err := b.Pub(t, locks[1], devicePassword+locks[1], "devices/"+locks[1]+"/telemetry", "1"); err != nil {
			t.Errorf("%s, publish %d after its block lifted: %v: %s", locks[1], i, err, out)
		}
	}
	pollUntil(t, hangBound, "the requests and publishes after the lifts scored", func() bool { return p.M.Events.Load() >= events+2*after })
	if s, id, err := get(keys[1]); s != 200 {
		t.Errorf("API key %s after its block lifted and %d requests: NGINX answered %d (%v), decision %q; want 200", keys[1], after, s, err, id)
	}
	if out, err := b.Pub(t, locks[1], devicePassword+locks[1], "devices/"+locks[1]+"/telemetry", "1"); err != nil {
		t.Errorf("%s after its block lifted and %d publishes: %v: %s", locks[1], after, err, out)
	}
	mu.Lock()
	if n := len(decisions[locks[1]]); n != 1 {
		t.Errorf("%s was blocked %d times; want once (no renewal after the lift)", locks[1], n)
	}
	for _, d := range decisions[hash(keys[1])][1:] {
		t.Errorf("API key %s blocked again after its block lifted: %s (%s, score %.2f) on the line of %s; want once",
			keys[1], d.ID, d.Reason, d.Score, d.CreatedAt.Format("15:04:05.000"))
	}
	mu.Unlock()
	t.Logf("NGINX logged %d 403s during the blocks; the pipeline recognized %d enforced denies", denied, p.M.EnforcedDenied.Load())

	// 4. An enforcer outage: the real one first (NGINX answers 500 and logs
	// it), then outageEventTime of the same lines in event time.
	auth.Close()
	unavailable := p.M.EnforcedUnavailable.Load()
	for _, k := range keys {
		if s, _, err := get(k); s != http.StatusInternalServerError {
			t.Fatalf("API key %s with the enforcer down: NGINX answered %d (%v); want 500", k, s, err)
		}
	}
	pollUntil(t, hangBound, "the real outage's lines recognized as enforcer_unavailable", func() bool {
		return p.M.EnforcedUnavailable.Load() >= unavailable+uint64(len(keys))
	})
	last := lastLine(t, accessLog)
	var real map[string]string
	if err := json.Unmarshal([]byte(last), &real); err != nil || real["status"] != "500" {
		t.Fatalf("NGINX's last line is not the outage's 500: %v: %s", err, last)
	}
	t.Logf("NGINX logs an enforcer outage as: status %s, iotwatch_auth_status %q, iotwatch_action %q", real["status"], real["iotwatch_auth_status"], real["iotwatch_action"])
	msec, err := strconv.ParseFloat(real["msec"], 64)
	if err != nil {
		t.Fatal(err)
	}
	start := time.UnixMilli(int64(msec * 1000))
	// Every log message so far acked, so every alert of the phases before is
	// counted: a message is acked only after the workers and the entity
	// owners passed it and its alerts were published (an entity owner's
	// alert could otherwise land after the snapshot below).
	logStream, err := js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, hangBound, "every log message before the outage acked", func() bool {
		info, err := logStream.Info(ctx)
		return err == nil && p.M.Acked.Load() >= info.State.Msgs
	})
	alerts, unavailable := p.M.Alerts.Load(), p.M.EnforcedUnavailable.Load()
	alertStream, err := js.Stream(ctx, schemas.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := alertStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alertsBefore := info.State.LastSeq
	s = seeder{t: t, ctx: ctx, js: js, subject: bus.LogSubject(schemas.FormatNginxJSON, "edge-1")}
	for at := start.Add(outageEvery); !at.After(start.Add(outageEventTime)); at = at.Add(outageEvery) {
		for _, k := range keys {
			real["http_x_api_key"], real["msec"], real["time"] = k, msecOf(at), at.Format(time.RFC3339)
			line, _ := json.Marshal(real)
			s.addf("%s", line)
		}
	}
	s.flush()
	pollUntil(t, hangBound, "the outage's lines recognized as enforcer_unavailable", func() bool {
		return p.M.EnforcedUnavailable.Load() >= unavailable+uint64(s.n)
	})
	if got := p.M.Alerts.Load() - alerts; got != 0 {
		t.Errorf("%d alerts during a %s enforcer outage (%d lines); want none", got, outageEventTime, s.n)
		if info, err := alertStream.Info(ctx); err == nil {
			for seq := alertsBefore + 1; seq <= info.State.LastSeq; seq++ {
				if m, err := alertStream.GetMsg(ctx, seq); err == nil {
					t.Logf("alert published since the outage began: %s", m.Data)
				}
			}
		}
	}
	// The MQTT devices retried while blocked (mosquitto_pub until the broker
	// refused, then until it accepted again): the broker logs those refusals
	// with the client id alone, and they must not block the address every
	// device here shares (decide.RefusalGrace).
	mu.Lock()
	for _, ds := range decisions {
		for _, d := range ds {
			t.Logf("decision %s: %s=%s (%s, score %.2f) on the line of %s", d.ID, d.Scope, d.Value, d.Reason, d.Score, d.CreatedAt.Format("15:04:05.000"))
			if d.Scope == schemas.ScopeIP {
				t.Errorf("address %s blocked (%s): the blocked devices' retries escalated into a block of everyone behind it", d.Value, d.Reason)
			}
		}
	}
	mu.Unlock()
	t.Logf("pipeline: %d events, %d alerts, %d decisions; enforced denies ignored %d, enforcer_unavailable ignored %d",
		p.M.Events.Load(), p.M.Alerts.Load(), p.M.Decisions.Load(), p.M.EnforcedDenied.Load(), p.M.EnforcedUnavailable.Load())
}

// nginxJSONLine returns a line of deploy/nginx's JSON format (with
// http_x_api_key) for a GET of command with key at time at.
func nginxJSONLine(at time.Time, key string, status int, action, authStatus string) []byte {
	line, _ := json.Marshal(map[string]string{
		"time": at.Format(time.RFC3339), "msec": msecOf(at), "remote_addr": "127.0.0.1", "remote_user": "",
		"request_method": "GET", "request_uri": command, "server_protocol": "HTTP/1.1", "status": strconv.Itoa(status),
		"request_length": "120", "bytes_sent": "160", "body_bytes_sent": "3", "request_time": "0.001",
		"http_user_agent": userAgent, "http_x_device_id": "", "http_x_api_key": key,
		"iotwatch_action": action, "iotwatch_auth_status": authStatus,
	})
	return line
}

// msecOf formats at as NGINX's $msec.
func msecOf(at time.Time) string {
	return fmt.Sprintf("%d.%03d", at.Unix(), at.Nanosecond()/1e6)
}

// lastLine returns the last line of file.
func lastLine(t *testing.T, file string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(readFile(t, file)), "\n")
	return lines[len(lines)-1]
}

// readFile returns the content of file.
func readFile(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// chCount runs a query returning one number over ClickHouse's HTTP interface.
func chCount(s *chserver.Server, query string) (int, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/?query=%s", s.HTTPPort(), url.QueryEscape(query)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return 0, fmt.Errorf("cannot query ClickHouse: %d %v: %s", resp.StatusCode, err, b)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// checkTTL fails t unless d expires ttl after it was decided: its expiry
// counts from the later of its event's time and the moment the pipeline
// decided (never a block that is already over when it arrives), so it is ttl
// after the event plus at most the pipeline's latency (bounded by hangBound).
func checkTTL(t *testing.T, d schemas.Decision, ttl time.Duration) {
	t.Helper()
	if got := d.ExpiresAt.Sub(d.CreatedAt); got < ttl || got > ttl+hangBound {
		t.Errorf("decision %s expires %s after its event; want %s after the event or after the decision", d.ID, got, ttl)
	}
}
