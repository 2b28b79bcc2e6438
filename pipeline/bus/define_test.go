package bus

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

var update = flag.Bool("update", false, "rewrite the exported NATS definitions in deploy/nats/jetstream")

// exportDir holds the committed definitions (Definitions.Files of the
// default configuration).
const exportDir = "../../deploy/nats/jetstream"

// TestDefinitionsAreWhatEnsureCreates: every field a definition sets is
// what the server holds after Ensure, EnsureIngest, EnsurePartitions,
// EnsureCheckpoints and EnsureClassStats, so the exported files are the objects iotwatch creates.
func TestDefinitionsAreWhatEnsureCreates(t *testing.T) {
	ctx, js := serverJS(t)
	cfg := DefaultStreamsConfig()
	cfg.BlocksTTL = 0
	if _, _, err := Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureIngest(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := EnsurePartitions(ctx, js, cfg, schemas.DefaultPartitions, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureCheckpoints(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureClassStats(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	for _, c := range storeConsumers() { // as package receipts creates them, with StoreConsumer
		if _, err := js.CreateOrUpdateConsumer(ctx, c.Stream, c.Config); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Define(cfg, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range js.StreamNames(ctx).Name() {
		names = append(names, n)
	}
	var want []string
	for _, s := range d.Streams {
		want = append(want, s.Name)
	}
	for _, k := range d.Buckets {
		want = append(want, KVStream(k.Bucket))
	}
	for _, o := range d.ObjectStores {
		want = append(want, "OBJ_"+o.Bucket)
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("the server holds streams %v; the definitions name %v", names, want)
	}
	for _, sc := range d.Streams {
		s, err := js.Stream(ctx, sc.Name)
		if err != nil {
			t.Fatal(err)
		}
		subset(t, "stream "+sc.Name, sc, s.CachedInfo().Config)
	}
	for _, cd := range d.Consumers {
		c, err := js.Consumer(ctx, cd.Stream, cd.Config.Durable)
		if err != nil {
			t.Fatalf("consumer %s on %s: %v", cd.Config.Durable, cd.Stream, err)
		}
		subset(t, "consumer "+cd.Config.Durable, cd.Config, c.CachedInfo().Config)
	}
	for _, kc := range d.Buckets {
		s, err := js.Stream(ctx, KVStream(kc.Bucket))
		if err != nil {
			t.Fatal(err)
		}
		got := s.CachedInfo().Config
		if got.Description != kc.Description || got.MaxMsgsPerSubject != int64(kc.History) || got.MaxAge != kc.TTL ||
			got.Replicas != kc.Replicas || got.Storage != kc.Storage ||
			got.SubjectDeleteMarkerTTL != kc.LimitMarkerTTL {
			t.Fatalf("bucket %s: its stream is %+v; defined %+v", kc.Bucket, got, kc)
		}
	}
	for _, oc := range d.ObjectStores {
		s, err := js.Stream(ctx, "OBJ_"+oc.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		got := s.CachedInfo().Config
		if got.Description != oc.Description || got.Replicas != oc.Replicas || got.Storage != oc.Storage || got.MaxAge != oc.TTL {
			t.Fatalf("object store %s: its stream is %+v; defined %+v", oc.Bucket, got, oc)
		}
	}
}

// subset fails unless every field of want (in its JSON form) has the same
// value in got: fields the definition leaves out are the server's defaults.
func subset(t *testing.T, what string, want, got any) {
	t.Helper()
	var w, g map[string]any
	for _, x := range []struct {
		v   any
		dst *map[string]any
	}{{want, &w}, {got, &g}} {
		b, err := json.Marshal(x.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, x.dst); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range w {
		if v == 0.0 && g[k] == -1.0 {
			continue // a limit left at 0 is no limit, which the server spells -1
		}
		if !reflect.DeepEqual(g[k], v) {
			t.Errorf("%s: %s is %v on the server, %v in the definition", what, k, g[k], v)
		}
	}
}

// TestExportedDefinitions: deploy/nats/jetstream holds the definitions of
// the default configuration, no more and no less (rewrite with -update).
func TestExportedDefinitions(t *testing.T) {
	d, err := Define(DefaultStreamsConfig(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	files, err := d.Files()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.Streams) + len(d.Consumers) + len(d.Buckets) + len(d.ObjectStores); len(files) != n {
		t.Fatalf("%d files for %d definitions: two share a name", len(files), n)
	}
	if _, ok := files["stream-"+schemas.StreamLogs+".json"]; !ok {
		t.Fatalf("no file for %s among %v", schemas.StreamLogs, slices.Sorted(maps.Keys(files)))
	}
	if *update {
		if err := os.RemoveAll(exportDir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(exportDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(exportDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(exportDir)
	if err != nil {
		t.Fatalf("cannot read the exported definitions (go test ./pipeline/bus -run TestExportedDefinitions -update writes them): %v", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(exportDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		want, ok := files[e.Name()]
		switch {
		case !ok:
			t.Errorf("%s: no such definition (stale file; rerun with -update)", e.Name())
		case !bytes.Equal(b, want):
			t.Errorf("%s differs from the definition (rerun with -update and review the diff):\n%s", e.Name(), want)
		}
		delete(files, e.Name())
	}
	for name := range files {
		t.Errorf("%s is missing from %s (rerun with -update)", name, exportDir)
	}
}
