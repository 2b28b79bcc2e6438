package forwardauth_test

import (
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/enforce/forwardauth"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// defaultConfig is forwardauth.DefaultConfig with throttleRPS.
func defaultConfig(throttleRPS float64) forwardauth.Config {
	c := forwardauth.DefaultConfig()
	c.ThrottleRPS = throttleRPS
	return c
}

// TestHandler publishes signed decisions through the pipeline's publisher on
// an embedded NATS and checks the answers a gateway gets, by scope, header
// and path.
func TestHandler(t *testing.T) {
	b := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	pubs := sink.NewNATSPublisher(b.JS, b.KV, nil)
	pubKey, priv, _ := ed25519.GenerateKey(nil)
	publish := func(id, action, scope, value string) {
		t.Helper()
		now := time.Now()
		d := schemas.Decision{ID: id, Action: action, Scope: scope, Value: value, CreatedAt: now, ExpiresAt: now.Add(time.Hour), SchemaV: schemas.SchemaVersion}
		if err := schemas.SignDecision(&d, "k1", priv); err != nil {
			t.Fatal(err)
		}
		if err := pubs.PublishDecisions(ctx, []schemas.Decision{d}); err != nil {
			t.Fatal(err)
		}
	}
	publish("dec-dev", schemas.ActionBlock, schemas.ScopeDevice, "dev-bad")
	publish("dec-net", schemas.ActionBlock, schemas.ScopeIP, "203.0.113.0/24")
	publish("dec-thr", schemas.ActionThrottle, schemas.ScopeAPIKey, "key-slow")
	publish("dec-ten", schemas.ActionBlock, schemas.ScopeTenant, "tenant-bad")

	c, err := enforce.New(enforce.Options{EnforcerID: "test", Keys: map[string]ed25519.PublicKey{"k1": pubKey}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig(0)
	cfg.DeviceHeader = "x-device-id" // any case
	srv := httptest.NewServer(forwardauth.New(c, cfg).Mux())
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
	if r := get(forwardauth.PathHealth); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz before sync: %d; want 503", r.StatusCode)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(runCtx, b.JS) }()
	defer func() { stop(); <-done }()
	<-c.Synced()
	if r := get(forwardauth.PathHealth); r.StatusCode != http.StatusOK {
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
	f("/check", 403, "dec-net", "X-Real-IP", "203.0.113.9:4711")
	f("/check", 403, "dec-net", "X-Forwarded-For", "198.51.100.1, 203.0.113.9")
	// The client cannot spoof its way out: the gateway appends the real address last.
	f("/check", 403, "dec-net", "X-Forwarded-For", "192.0.2.1, 203.0.113.9")
	f("/check", 200, "", "X-Forwarded-For", "203.0.113.9, 192.0.2.1")
	f("/check", 200, "", "X-Real-IP", "not-an-address", "X-Forwarded-For", "203.0.113.9") // first present wins
	f("/check", 403, "dec-ten", schemas.HeaderTenantID, "tenant-bad")
	f("/check", 403, "dec-thr", "X-Api-Key", "key-slow") // throttle at 0 rps: denied
	r := get("/check", "X-Api-Key", "key-slow")
	if r.Header.Get(schemas.HeaderEnforceAction) != schemas.ActionThrottle || r.Header.Get(schemas.HeaderEnforceScope) != schemas.ScopeAPIKey {
		t.Errorf("throttle headers %v", r.Header)
	}

	// With a rate, a fresh bucket lets the first request through, marked.
	rated := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/check", nil)
	req.Header.Set("X-Api-Key", "key-slow")
	forwardauth.New(c, defaultConfig(1)).ServeHTTP(rated, req)
	if rated.Code != 200 || rated.Header().Get(schemas.HeaderEnforceAction) != schemas.ActionThrottle {
		t.Errorf("throttled within its rate: %d %v; want 200 with %s %s", rated.Code, rated.Header(), schemas.HeaderEnforceAction, schemas.ActionThrottle)
	}

	publish("dec-unb", schemas.ActionUnblock, schemas.ScopeDevice, "dev-bad")
	pollUntil(t, "unblock", func() bool { return get("/check", "X-Device-Id", "dev-bad").StatusCode == 200 })

	resp, err := http.Get(srv.URL + forwardauth.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		schemas.MetricEnforceChecks + `{verdict="throttle"} 2`, // the block count depends on the unblock polling
		schemas.MetricEnforceActive + " 3",
		schemas.MetricEnforceRemoved + " 1",
		schemas.MetricEnforceRejected + `{reason="bad_signature"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

// TestKeyHashMatchesDecoders: the handler hashes an API key from its header
// exactly as pipeline/formats hashes it in logs (vector from
// pipeline/formats/testdata/kong/apikey.golden), so api_key decisions match.
func TestKeyHashMatchesDecoders(t *testing.T) {
	hash := formats.KeyHasher([]byte("test-secret"))
	if got := hash("sk_live_9f8e7d6c5b4a"); got != "4b2577e74e8e84b4" {
		t.Fatalf("hash %q; want 4b2577e74e8e84b4", got)
	}
	if formats.KeyHasher(nil) != nil {
		t.Fatal("a hasher without a secret")
	}
	var seen string
	cfg := defaultConfig(0)
	cfg.KeyHash = func(k string) string { seen = hash(k); return seen }
	h := forwardauth.New(newUnsignedClient(t), cfg)
	req := httptest.NewRequest(http.MethodGet, "/check", nil)
	req.Header.Set("X-Api-Key", "sk_live_9f8e7d6c5b4a")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if seen != "4b2577e74e8e84b4" {
		t.Fatalf("handler looked up %q", seen)
	}
}

func newUnsignedClient(tb testing.TB) *enforce.Client {
	tb.Helper()
	c, err := enforce.New(enforce.Options{EnforcerID: "test", AllowUnsigned: true})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// pollUntil polls cond until it holds, failing the test after 20 s.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition with a deadline
	}
}

// BenchmarkHandler measures one check without the network: header parsing,
// the cache lookup and the response.
func BenchmarkHandler(b *testing.B) {
	h := forwardauth.New(newUnsignedClient(b), defaultConfig(1))
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

// BenchmarkHTTPLoopback measures one check round trip over a keep-alive
// loopback connection, as a gateway makes it.
func BenchmarkHTTPLoopback(b *testing.B) {
	srv := httptest.NewServer(forwardauth.New(newUnsignedClient(b), defaultConfig(1)).Mux())
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
