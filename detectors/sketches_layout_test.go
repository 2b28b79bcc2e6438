package detectors

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"testing"
)

var updateSketches = flag.Bool("update-sketches", false, "rewrite testdata/sketches_columns.golden (only from a build whose encoding is the reference)")

// teachSketches teaches a 1024-slot table 300 keys (some of which collide
// and are probed past), key i by devices spread over the 64 sketch bits.
func teachSketches() (*DeviceSketches, []uint64) {
	s := NewDeviceSketches(1024)
	rng := rand.New(rand.NewPCG(5, 8))
	var keys []uint64
	for i := range 300 {
		key := rng.Uint64()
		keys = append(keys, key)
		for d := range i%7 + 1 {
			s.Learn(key, uint64(i*31+d*17)<<58|uint64(d))
		}
	}
	return s, keys
}

// TestDeviceSketchesEncoding: the snapshot encoding of DeviceSketches (in
// the command and geo statistics' snapshots, in checkpoints and class
// contributions) is the one testdata/sketches_columns.golden holds, written
// by the build whose sketches kept one array for the keys and one for the
// sketches: a table taught the same keys encodes to the same bytes, and the
// golden bytes load and encode back unchanged, read as the same sketches.
func TestDeviceSketchesEncoding(t *testing.T) {
	const path = "testdata/sketches_columns.golden"
	s, keys := teachSketches()
	got := sketchColumns(s)
	if *updateSketches {
		writeColumnsGolden(t, path, "DeviceSketches columns of teachSketches: column slot word (hex), non-zero words only; 2 columns of 1024 slots", got)
	}
	want := readColumnsGolden(t, path, 2)
	if !bytes.Equal(got, want) {
		t.Fatalf("the encoding of the taught sketches differs from %s", path)
	}
	loaded := NewDeviceSketches(1024)
	loadSketchColumns(t, loaded, want)
	if again := sketchColumns(loaded); !bytes.Equal(again, want) {
		t.Fatal("the golden bytes, loaded, encode differently")
	}
	for i, key := range keys {
		a, okA := s.Sketch(key)
		b, okB := loaded.Sketch(key)
		if a != b || okA != okB || !okA || a == 0 {
			t.Fatalf("key %d: taught %x %v, loaded %x %v", i, a, okA, b, okB)
		}
	}
}

func sketchColumns(s *DeviceSketches) []byte { return s.AppendWords(nil) }

func loadSketchColumns(t *testing.T, s *DeviceSketches, b []byte) {
	if err := s.LoadWords(b); err != nil {
		t.Fatal(err)
	}
}
