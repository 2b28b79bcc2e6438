package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/enforce"
	"github.com/iotwatch/iotwatch/pipeline/formats"
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
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	nc, js, err := bus.Connect(ctx, srv.URL(), "enforce-cmd-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	_, kv, err := bus.Ensure(ctx, js, bus.DefaultStreamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &enforceEnv{ctx: ctx, url: srv.URL(), js: js, pub: sink.NewNATSPublisher(js, kv, nil)}
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

func TestEnforceHTTPHandler(t *testing.T) {
	e := newEnforceEnv(t)
	pubKey, priv, _ := ed25519.GenerateKey(nil)
	e.publish(t, "k1", priv, "dec-dev", schemas.ActionBlock, schemas.ScopeDevice, "dev-bad")
	e.publish(t, "k1", priv, "dec-net", schemas.ActionBlock, schemas.ScopeIP, "203.0.113.0/24")
	e.publish(t, "k1", priv, "dec-thr", schemas.ActionThrottle, schemas.ScopeAPIKey, "key-slow")

	c, err := enforce.New(enforce.Options{EnforcerID: "test", Keys: map[string]ed25519.PublicKey{"k1": pubKey}})
	if err != nil {
		t.Fatal(err)
	}
	h := newAuthHandler(c, "x-device-id", schemas.HeaderAPIKey, schemas.HeaderTenantID, []string{"X-Real-IP", "X-Forwarded-For"}, http.StatusForbidden, 0)
	srv := httptest.NewServer(h.mux())
	defer srv.Close()

	get := func(path string, headers ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := get("/healthz"); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz before sync: %d; want 503", r.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, e.js) }()
	defer func() { cancel(); <-done }()
	<-c.Synced()
	if r := get("/healthz"); r.StatusCode != http.StatusOK {
		t.Errorf("healthz after sync: %d; want 200", r.StatusCode)
	}

	f := func(path string, wantStatus int, wantDecision string, headers ...string) {
		t.Helper()
		r := get(path, headers...)
		if r.StatusCode != wantStatus || r.Header.Get(schemas.HeaderEnforceDecision) != wantDecision {
			t.Errorf("GET %s %q: %d decision %q; want %d %q", path, headers, r.StatusCode, r.Header.Get(schemas.HeaderEnforceDecision), wantStatus, wantDecision)
		}
	}
	f("/check", 200, "")
	f("/check", 200, "", "X-Device-Id", "dev-good")
	f("/check", 403, "dec-dev", "X-Device-Id", "dev-bad")
	f("/check/v1/devices/dev-bad/unlock", 403, "dec-dev", "x-device-id", "dev-bad") // Envoy appends the path
	f("/check", 403, "dec-net", "X-Real-IP", "203.0.113.9")
	f("/check", 403, "dec-net", "X-Forwarded-For", "198.51.100.1, 203.0.113.9")
	// The client cannot spoof its way out: the gateway appends the real address last.
	f("/check", 403, "dec-net", "X-Forwarded-For", "192.0.2.1, 203.0.113.9")
	f("/check", 200, "", "X-Forwarded-For", "203.0.113.9, 192.0.2.1")
	f("/check", 403, "dec-thr", "X-Api-Key", "key-slow") // throttle at 0 rps: denied
	r := get("/check", "X-Api-Key", "key-slow")
	if r.Header.Get(schemas.HeaderEnforceAction) != schemas.ActionThrottle || r.Header.Get(schemas.HeaderEnforceScope) != schemas.ScopeAPIKey {
		t.Errorf("throttle headers %v", r.Header)
	}

	e.publish(t, "k1", priv, "dec-unb", schemas.ActionUnblock, schemas.ScopeDevice, "dev-bad")
	pollUntil(t, "unblock", func() bool { return get("/check", "X-Device-Id", "dev-bad").StatusCode == 200 })

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		schemas.MetricEnforceChecks + `{verdict="throttle"} 2`, // the block count depends on the unblock polling
		schemas.MetricEnforceActive + " 2",
		schemas.MetricEnforceRemoved + " 1",
		schemas.MetricEnforceRejected + `{reason="bad_signature"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestThrottler(t *testing.T) {
	th := newThrottler(2)
	t0 := time.Unix(1000, 0)
	got := ""
	for i, at := range []time.Duration{0, 0, 0, 400 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 2 * time.Second, 2 * time.Second} {
		if th.allow("d", t0.Add(at)) {
			got += "y"
		} else {
			got += "n"
		}
		_ = i
	}
	if got != "yynnyyyn" {
		t.Errorf("2 rps decisions %s; want yynnyyyn", got)
	}
	if newThrottler(0).allow("d", t0) {
		t.Error("0 rps let a request through")
	}
}

// lockedBuffer is a bytes.Buffer safe for the command's goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
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

	ctx, cancel := context.WithCancel(context.Background())
	stdout := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- enforceCmd(ctx, []string{"http", "--nats", e.url, "--listen", "127.0.0.1:0", "--keys", prefix + ".pub",
			"--enforcer-id", "edge-1", "--state", filepath.Join(t.TempDir(), "state"), "--log-level", "error"}, stdout)
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
	var out bytes.Buffer
	if code := mainExit([]string{"enforce", "http", "--help"}, &out, &out); code != 0 || !strings.Contains(out.String(), "-identity-header") {
		t.Errorf("enforce http --help: exit %d\n%s", code, out.String())
	}
}

// BenchmarkAuthHandler measures one /check answer without the network: header
// parsing, the cache lookup and the response.
func BenchmarkAuthHandler(b *testing.B) {
	c, err := enforce.New(enforce.Options{EnforcerID: "bench", AllowUnsigned: true})
	if err != nil {
		b.Fatal(err)
	}
	h := newAuthHandler(c, schemas.HeaderDeviceID, schemas.HeaderAPIKey, schemas.HeaderTenantID, []string{"X-Real-IP", "X-Forwarded-For"}, http.StatusForbidden, 1)
	req := httptest.NewRequest(http.MethodGet, "/check", nil)
	req.Header.Set("X-Device-Id", "dev-1")
	req.Header.Set("X-Api-Key", "key-1")
	req.Header.Set("X-Forwarded-For", "192.0.2.1, 198.51.100.7")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
	if w.status != http.StatusOK {
		b.Fatalf("status %d", w.status)
	}
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

// TestEnforceWithRealNGINX puts the shipped deploy/nginx-auth configuration in
// front of a small upstream and blocks one device through NATS: its requests
// get 403 from NGINX while another device's keep getting 200. Skipped when
// nginx is not installed.
func TestEnforceWithRealNGINX(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if nginx, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Skip("nginx is not installed")
		}
	}
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
	stdout := &lockedBuffer{}
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

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nginxAddr := ln.Addr().String()
	ln.Close()
	site, err := os.ReadFile("../../deploy/nginx-auth/iotwatch-auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer("127.0.0.1:9181", enforceAddr, "127.0.0.1:8081", strings.TrimPrefix(backend.URL, "http://"),
		"listen 8080;", "listen "+nginxAddr+";").Replace(string(site))
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
  access_log off;
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  include %[1]s/site.conf;
}
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off; master_process off;")
	var nginxOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &nginxOut, &nginxOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

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

// TestKeyHasherMatchesDecoders: the enforcer hashes an API key from a header
// exactly as pipeline/formats hashes it in logs (vector from
// pipeline/formats/testdata/kong/apikey.golden), so api_key decisions match.
func TestKeyHasherMatchesDecoders(t *testing.T) {
	h := formats.KeyHasher([]byte("test-secret"))
	if got := h("sk_live_9f8e7d6c5b4a"); got != "4b2577e74e8e84b4" {
		t.Fatalf("hash %q; want 4b2577e74e8e84b4", got)
	}
	if formats.KeyHasher(nil) != nil {
		t.Fatal("a hasher without a secret")
	}
	c, err := enforce.New(enforce.Options{EnforcerID: "t", AllowUnsigned: true})
	if err != nil {
		t.Fatal(err)
	}
	ah := newAuthHandler(c, schemas.HeaderDeviceID, schemas.HeaderAPIKey, schemas.HeaderTenantID, nil, http.StatusForbidden, 0)
	ah.keyHash = h
	var seen string
	ah.keyHash = func(k string) string { seen = h(k); return seen }
	req := httptest.NewRequest(http.MethodGet, "/check", nil)
	req.Header.Set("X-Api-Key", "sk_live_9f8e7d6c5b4a")
	ah.ServeHTTP(httptest.NewRecorder(), req)
	if seen != "4b2577e74e8e84b4" {
		t.Fatalf("handler looked up %q", seen)
	}
}

// BenchmarkAuthHTTPLoopback measures one /check round trip over a keep-alive
// loopback connection, as a gateway makes it.
func BenchmarkAuthHTTPLoopback(b *testing.B) {
	c, err := enforce.New(enforce.Options{EnforcerID: "bench", AllowUnsigned: true})
	if err != nil {
		b.Fatal(err)
	}
	h := newAuthHandler(c, schemas.HeaderDeviceID, schemas.HeaderAPIKey, schemas.HeaderTenantID, []string{"X-Real-IP"}, http.StatusForbidden, 1)
	srv := httptest.NewServer(h.mux())
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/check", nil)
	req.Header.Set("X-Device-Id", "dev-1")
	req.Header.Set("X-Real-IP", "192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		resp, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
