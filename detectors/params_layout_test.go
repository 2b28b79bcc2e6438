package detectors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

var updateParams = flag.Bool("update-params", false, "rewrite testdata/paramtable_columns.golden (only from a build whose encoding is the reference)")

// teachGolden teaches a 1024-slot table 150 arguments of one command (some
// of whose keys collide and are probed past), 60 in-range values each from
// 10 devices, then out-of-range values from 3 devices to a third of them
// (their out-of-range sketches) and from 9 devices to one (a restart).
func teachGolden() (tab *ParamTable, class, command uint64) {
	tab = NewParamTable(1024)
	rng := rand.New(rand.NewPCG(3, 5))
	var ev schemas.Event
	learn := func(arg, device int, v float64) {
		ev.Reset()
		ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("t-%d", device)))
		ev.SetClass([]byte("thermostat/x"))
		ev.SetCommand([]byte("POST /v1/thermostats/{id}/set"))
		ev.SetArg([]byte(fmt.Sprintf("a%d", arg)), v)
		tab.Learn(&ev)
	}
	for i := range 60 {
		for arg := range 150 {
			learn(arg, i%10, float64(arg)+rng.Float64())
		}
	}
	for arg := 0; arg < 150; arg += 3 {
		for d := range 3 {
			learn(arg, 100+d, 1e6)
		}
	}
	for d := range 9 {
		learn(1, 200+d, -1e6)
	}
	return tab, ev.ClassKey, ev.CommandID
}

// paramColumns is the table's encoding in snapshots: its columns (keys,
// stats, events, devices, outs), each slot's word in order, little-endian.
func paramColumns(tab *ParamTable) []byte { return tab.AppendWords(nil) }

// TestParamTableEncoding: the snapshot encoding of a ParamTable (part of
// the command and upload statistics' snapshots, in checkpoints and class
// contributions) is the one testdata/paramtable_columns.golden holds, written
// by the build whose table kept one array per column: a table taught the
// same values encodes to the same bytes, and the golden bytes load and
// encode back unchanged, read as the same ranges.
func TestParamTableEncoding(t *testing.T) {
	const path = "testdata/paramtable_columns.golden"
	tab, class, command := teachGolden()
	got := paramColumns(tab)
	if *updateParams {
		writeColumnsGolden(t, path, "ParamTable columns of teachGolden: column slot word (hex), non-zero words only; 5 columns of 1024 slots", got)
	}
	want := readColumnsGolden(t, path, 5)
	if !bytes.Equal(got, want) {
		t.Fatalf("the encoding of the taught table differs from %s", path)
	}
	loaded := NewParamTable(1024)
	if err := loaded.LoadWords(want); err != nil {
		t.Fatal(err)
	}
	if again := paramColumns(loaded); !bytes.Equal(again, want) {
		t.Fatal("the golden bytes, loaded, encode differently")
	}
	for arg := range 150 {
		name := schemas.Hash([]byte(fmt.Sprintf("a%d", arg)))
		if a, b := tab.ClassParam(class, command, name), loaded.ClassParam(class, command, name); a != b || a.Events == 0 && arg != 1 {
			t.Fatalf("argument a%d: taught %+v, loaded %+v", arg, a, b)
		}
	}
}

// writeColumnsGolden writes the non-zero words of b, columns of 1024 slots,
// as "column slot word" lines under a comment line.
func writeColumnsGolden(t *testing.T, path, comment string, b []byte) {
	var out strings.Builder
	fmt.Fprintf(&out, "# %s\n", comment)
	for i := 0; i < len(b); i += 8 {
		if w := binary.LittleEndian.Uint64(b[i:]); w != 0 {
			fmt.Fprintf(&out, "%d %d %016x\n", i/8/1024, i/8%1024, w)
		}
	}
	if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readColumnsGolden reads what writeColumnsGolden wrote, cols columns of
// 1024 slots.
func readColumnsGolden(t *testing.T, path string, cols int) []byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, cols*1024*8)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		var col, slot int
		var w uint64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %x", &col, &slot, &w); err != nil || col >= cols || slot >= 1024 {
			t.Fatalf("%s: %q: %v", path, sc.Text(), err)
		}
		binary.LittleEndian.PutUint64(b[8*(col*1024+slot):], w)
	}
	return b
}
