package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/internal/nginxtest"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// enforceEnv is an embedded NATS with the iotwatch streams and the pipeline's
// decision publisher.
type enforceEnv struct {
	ctx context.Context
	url string
	js  jetstream.JetStream
	pub *sink.NATSPublisher
}

func newEnforceEnv(t *testing.T) *enforceEnv {
	t.Helper()
	b := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return &enforceEnv{ctx: ctx, url: b.Server.URL(), js: b.JS, pub: sink.NewNATSPublisher(b.JS, b.KV, nil)}
}

func (e *enforceEnv) publish(t *testing.T, keyID string, priv ed25519.PrivateKey, id, action, scope, value string) {
	t.Helper()
	now := time.Now()
	d := schemas.Decision{ID: id, Action: action, Scope: scope, Value: value, CreatedAt: now, ExpiresAt: now.Add(time.Hour), SchemaV: schemas.SchemaVersion}
	if err := schemas.SignDecision(&d, keyID, priv); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.PublishDecisions(e.ctx, []schemas.Decision{d}); err != nil {
		t.Fatal(err)
	}
}

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestEnforceHTTPCommand runs `enforce keygen` and `enforce http` as a user
// would, and blocks a device through NATS.
func TestEnforceHTTPCommand(t *testing.T) {
	e := newEnforceEnv(t)
	prefix := filepath.Join(t.TempDir(), "signing")
	var out bytes.Buffer
	if err := enforceCmd(e.ctx, []string{"keygen", "--id", "iotwatch-test", "--out", prefix}, &out); err != nil {
		t.Fatalf("keygen: %v", err)
	}
	if err := enforceCmd(e.ctx, []string{"keygen", "--id", "iotwatch-test", "--out", prefix}, &out); err == nil {
		t.Fatal("keygen overwrote an existing key")
	}
	keyID, priv, err := schemas.LoadPrivateKey(prefix + ".key")
	if err != nil || keyID != "iotwatch-test" {
		t.Fatalf("generated key: %q %v", keyID, err)
	}
	// The enforcement point's own receipt key; its id becomes the enforcer id.
	receiptKey := filepath.Join(t.TempDir(), "edge-1")
	if err := enforceCmd(e.ctx, []string{"keygen", "--id", "edge-1", "--out", receiptKey}, &out); err != nil {
		t.Fatalf("keygen: %v", err)
	}
	ring, err := schemas.LoadPublicKeyRing(receiptKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stdout := &pipetest.LockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- enforceCmd(ctx, []string{"http", "--nats", e.url, "--listen", "127.0.0.1:0", "--keys", prefix + ".pub",
			"--receipt-key", receiptKey + ".key", "--state", filepath.Join(t.TempDir(), "state"), "--log-level", "error"}, stdout)
	}()
	addrRE := regexp.MustCompile(`listening on (\S+)`)
	var base string
	pollUntil(t, "listening line", func() bool {
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			base = "http://" + m[1]
			return true
		}
		return false
	})
	status := func(path, device string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("X-Device-Id", device)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	pollUntil(t, "healthz", func() bool { return status("/healthz", "") == 200 })
	if s := status("/check", "dev-x"); s != 200 {
		t.Fatalf("before the block: %d", s)
	}
	e.publish(t, keyID, priv, "dec-x", schemas.ActionBlock, schemas.ScopeDevice, "dev-x")
	pollUntil(t, "block enforced", func() bool { return status("/check", "dev-x") == 403 })

	// The receipt reaches the decisions stream.
	cons, err := e.js.OrderedConsumer(e.ctx, schemas.StreamDecisions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{schemas.SubjectDecisionsApplied}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no receipt: %v", err)
	}
	if !strings.Contains(string(m.Data()), `"decision_id":"dec-x","enforcer_id":"edge-1","action":"block"`) {
		t.Errorf("receipt %s", m.Data())
	}
	var r schemas.ApplyReceipt
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		t.Fatal(err)
	}
	if err := schemas.VerifyReceipt(&r, ring); err != nil {
		t.Errorf("receipt %s: %v", m.Data(), err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("enforce http: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("enforce http did not stop")
	}
}

func TestEnforceUsageErrors(t *testing.T) {
	f := func(want string, args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := mainExit(append([]string{"enforce"}, args...), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), want) {
			t.Errorf("enforce %v: exit %d, stderr %q; want exit 2 naming %q", args, code, errOut.String(), want)
		}
	}
	f("missing subcommand")
	f(`unknown subcommand "mqtt"`, "mqtt")
	f("--keys", "http")
	f("--keys", "http", "--keys", "/nonexistent.pub")
	f("--deny-status", "http", "--allow-unsigned", "--deny-status", "200")
	f("--enforcer-id", "http", "--allow-unsigned", "--enforcer-id", "a b")
	f("--id", "keygen", "--id", "a:b", "--out", filepath.Join(t.TempDir(), "k"))
	prefix := filepath.Join(t.TempDir(), "gw-1")
	if code := mainExit([]string{"enforce", "keygen", "--id", "gw-1", "--out", prefix}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("keygen: exit %d", code)
	}
	f("is not --enforcer-id", "http", "--allow-unsigned", "--receipt-key", prefix+".key", "--enforcer-id", "gw-2")
	f("--receipt-key", "http", "--allow-unsigned", "--receipt-key", prefix+".pub")
	var out bytes.Buffer
	if code := mainExit([]string{"enforce", "http", "--help"}, &out, &out); code != 0 || !strings.Contains(out.String(), "-identity-header") {
		t.Errorf("enforce http --help: exit %d\n%s", code, out.String())
	}
}

// TestEnforceWithRealNGINX puts the shipped deploy/nginx-auth configuration in
// front of a small upstream and blocks one device through NATS: its requests
// get 403 from NGINX while another device's keep getting 200. Fails when nginx
// is not installed (`make deps`).
func TestEnforceWithRealNGINX(t *testing.T) {
	nginx := nginxtest.Find(t)
	e := newEnforceEnv(t)
	pubKey, priv, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.pub"), schemas.FormatPublicKey("k1", pubKey), 0o644); err != nil {
		t.Fatal(err)
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "upstream\n") }))
	defer backend.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &pipetest.LockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- enforceCmd(ctx, []string{"http", "--nats", e.url, "--listen", "127.0.0.1:0", "--keys", filepath.Join(dir, "k.pub"), "--log-level", "error"}, stdout)
	}()
	defer func() { cancel(); <-done }()
	var enforceAddr string
	pollUntil(t, "listening line", func() bool {
		m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(stdout.String())
		if m != nil {
			enforceAddr = m[1]
		}
		return m != nil
	})

	nginxAddr := nginxtest.Start(t, nginx, nginxtest.Options{Deploy: "../../deploy", Dir: dir,
		AuthAddr: enforceAddr, Upstream: strings.TrimPrefix(backend.URL, "http://")})

	get := func(device string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+nginxAddr+"/v1/telemetry", nil)
		req.Header.Set("X-Device-Id", device)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, ""
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get(schemas.HeaderEnforceDecision)
	}
	pollUntil(t, "nginx serving", func() bool { s, _ := get("dev-good"); return s == 200 })
	e.publish(t, "k1", priv, "dec-nginx", schemas.ActionBlock, schemas.ScopeDevice, "dev-flood")
	start := time.Now()
	pollUntil(t, "nginx denying the blocked device", func() bool { s, _ := get("dev-flood"); return s == 403 })
	t.Logf("block enforced by nginx %s after publishing", time.Since(start))
	if s, id := get("dev-flood"); s != 403 || id != "dec-nginx" {
		t.Errorf("blocked device: %d decision %q; want 403 dec-nginx", s, id)
	}
	if s, _ := get("dev-good"); s != 200 {
		t.Errorf("other device: %d; want 200", s)
	}
}
