package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNATSConfigExport: with the defaults, 'iotwatch nats-config --out'
// writes exactly the committed deploy/nats/jetstream files; a flag such as
// --replicas shapes them as it shapes what run creates.
func TestNATSConfigExport(t *testing.T) {
	dir := t.TempDir()
	if err := natsConfigCmd(context.Background(), []string{"--out", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadDir("../../deploy/nats/jetstream")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("wrote %d files, deploy/nats/jetstream has %d", len(got), len(want))
	}
	for _, e := range want {
		a, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("not written: %v", err)
		}
		b, _ := os.ReadFile(filepath.Join("../../deploy/nats/jetstream", e.Name()))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from the committed file", e.Name())
		}
	}
	var out strings.Builder
	if err := natsConfigCmd(context.Background(), []string{"--replicas", "3"}, &out); err != nil {
		t.Fatal(err)
	}
	consumers := 0
	for _, e := range want {
		if strings.HasPrefix(e.Name(), "consumer-") {
			consumers++
		}
	}
	if n := strings.Count(out.String(), `"num_replicas": 3`); n != len(want)-consumers { // every stream and bucket; consumers inherit
		t.Fatalf("%d definitions with 3 replicas, want %d:\n%s", n, len(want)-consumers, out.String())
	}
	// --partitions and --pinned-ttl shape the scorers' consumers and presence bucket as run's do.
	out.Reset()
	if err := natsConfigCmd(context.Background(), []string{"--partitions", "3", "--pinned-ttl", "4s"}, &out); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "# consumer-IOTWATCH_EVENTS-iotwatch-scorer-"); n != 3 || !strings.Contains(out.String(), `"priority_timeout": 4000000000`) ||
		!strings.Contains(out.String(), "# kv-iotwatch_scorers.json") || !strings.Contains(out.String(), "# obj-IOTWATCH_CHECKPOINTS.json") {
		t.Fatalf("--partitions 3 --pinned-ttl 4s: %d partition consumers, want 3, each with a 4 s pinned TTL, and the two buckets:\n%s", n, out.String())
	}
	if err := natsConfigCmd(context.Background(), []string{"--replicas", "9"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--replicas") {
		t.Fatalf("--replicas 9: error %v, want one naming the flag", err)
	}
}
