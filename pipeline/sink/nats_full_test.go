package sink

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestPublishDecisionsStoreFull reproduces issue 13's wedge on the real
// nats-server (Debian's 2.9) with a tiny JetStream store: once logs fill it,
// publishing a decision fails (it is neither stored nor acknowledged), and it
// fails within the attempt's bound instead of hanging, so the pipeline's
// retry loop can report the stall; once room is made, the same decision is
// published.
func TestPublishDecisionsStoreFull(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte("jetstream: {max_file_store: 1MB, max_memory_store: 1MB}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.StartProcess(natsserver.ProcessOptions{Config: conf, StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := bus.DefaultStreamsConfig()
	cfg.LogsMaxBytes = 256 << 10 // each stream must fit the 1 MB store
	_, kv, err := bus.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Fill the store with dead letters (unbounded stream).
	filler := make([]byte, 16<<10)
	full := false
	for range 200 {
		if _, err := js.Publish(ctx, schemas.SubjectDLQPrefix+".x", filler); err != nil {
			full = true
			break
		}
	}
	if !full {
		t.Fatal("3 MB of dead letters fit into a 1 MB store")
	}
	p := NewNATSPublisher(js, kv, nil)
	now := time.Now().UTC()
	d := schemas.Decision{ID: "dec-full", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "meter-1",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), Issuer: "iotwatch", SchemaV: 1}
	actx, acancel := context.WithTimeout(ctx, 5*time.Second) // pipeline.PublishTimeout
	start := time.Now()
	err = p.PublishDecisions(actx, []schemas.Decision{d})
	acancel()
	if err == nil {
		t.Fatal("a decision was published into a full store")
	}
	t.Logf("publish into a full store failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	// Make room: the operator shortens the DLQ (here: purges it).
	s, err := js.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishDecisions(ctx, []schemas.Decision{d}); err != nil {
		t.Fatalf("decision not published once the store has room: %v", err)
	}
	if _, err := kv.Get(ctx, schemas.KVKey(schemas.ScopeDevice, "meter-1")); err != nil {
		t.Fatalf("block not in the bucket once the store has room: %v", err)
	}
}
