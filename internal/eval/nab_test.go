package eval

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/volume"
)

// writeSeries writes a NAB-layout file: a calm count series of n 5-minute
// intervals with a spike of the given value at row spike (-1: none).
func writeSeries(t *testing.T, path string, n, spike int, spikeValue float64) {
	t.Helper()
	var b strings.Builder
	b.WriteString("timestamp,value\n")
	t0 := time.Date(2015, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		v := 50.0 + float64(i%7) - 3 // calm, with a little wobble
		if i == spike {
			v = spikeValue
		}
		fmt.Fprintf(&b, "%s,%g\n", t0.Add(time.Duration(i)*5*time.Minute).Format("2006-01-02 15:04:05"), v)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEvalNAB(t *testing.T) {
	data, out := t.TempDir(), t.TempDir()
	const n, spike = 600, 450
	writeSeries(t, filepath.Join(data, "catA", "spiky.csv"), n, spike, 400)
	writeSeries(t, filepath.Join(data, "catB", "calm.csv"), n, -1, 0)
	if err := os.WriteFile(filepath.Join(data, "README.md"), []byte("not data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NAB(context.Background(), data, out); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"catA/spiky.csv", "catB/calm.csv"} {
		scores := readScores(t, filepath.Join(out, rel), n)
		if rel != "catA/spiky.csv" {
			continue
		}
		// The spike is judged when the novelty channel's block that holds it
		// closes: at most NovBlock-1 rows after it.
		lag := int(max(volume.DefaultSeriesParams.NovBlock, 1))
		calm, alarm, at := 0.0, 0.0, -1
		for i, s := range scores {
			switch {
			case i >= spike && i < spike+lag:
				if s > alarm {
					alarm, at = s, i
				}
			case i > 100:
				calm = max(calm, s)
			}
		}
		if !(alarm > calm) || !(alarm >= 0.5) {
			t.Errorf("%s: rows %d-%d (the spike and its block) score at most %g, want >= 0.5 and above every calm row (max %g)", rel, spike, spike+lag-1, alarm, calm)
		}
		t.Logf("%s: spike at row %d alarmed at row %d (%g), calm rows at most %g", rel, spike, at, alarm, calm)
	}
}

// readScores checks a results file's shape and returns its scores.
func readScores(t *testing.T, path string, n int) []float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if lines[0] != "timestamp,anomaly_score" {
		t.Fatalf("%s: header %q, want timestamp,anomaly_score", path, lines[0])
	}
	if len(lines)-1 != n {
		t.Fatalf("%s: %d rows, want %d", path, len(lines)-1, n)
	}
	scores := make([]float64, n)
	for i, l := range lines[1:] {
		_, v, ok := strings.Cut(l, ",")
		s, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || !(s >= 0 && s <= 1) {
			t.Fatalf("%s row %d: %q, want a score in [0,1]", path, i+1, l)
		}
		scores[i] = s
	}
	return scores
}

func TestEvalNABErrors(t *testing.T) {
	for _, tc := range []struct {
		name, csv, want string
	}{
		{"bad_value", "timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,abc\n", `line 3: cannot parse value "abc"`},
		{"bad_time", "timestamp,value\n2015-03-01 00:00:00,1\nyesterday,2\n", `line 3: cannot parse timestamp "yesterday"`},
		{"no_value_column", "timestamp,count\n2015-03-01 00:00:00,1\n", "line 1: header"},
		{"short_row", "timestamp,value\n2015-03-01 00:00:00\n", "line 2: want 2 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			path := filepath.Join(data, "cat", tc.name+".csv")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(tc.csv), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := NAB(context.Background(), data, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q and containing %q", err, path, tc.want)
			}
		})
	}
	if _, err := NAB(context.Background(), t.TempDir(), t.TempDir()); err == nil {
		t.Error("an empty data directory gave no error")
	}
}

// TestEvalNABBackwardTimes checks that a series whose timestamps step back (as
// NAB's machine_temperature_system_failure.csv does) is scored, one output
// row per input row with its own timestamp, and that the step is counted.
func TestEvalNABBackwardTimes(t *testing.T) {
	data := t.TempDir()
	var in strings.Builder
	in.WriteString("timestamp,value\n")
	base := time.Date(2015, 3, 1, 0, 0, 0, 0, time.UTC)
	var stamps []string
	for i := range 400 {
		at := base.Add(time.Duration(i) * 5 * time.Minute)
		if i >= 200 && i < 212 { // 12 rows an hour back, as a merged file does: 11 of them before row 199, the last at its time
			at = at.Add(-time.Hour)
		}
		s := at.Format("2006-01-02 15:04:05")
		stamps = append(stamps, s)
		fmt.Fprintf(&in, "%s,%d\n", s, 10+i%7)
	}
	path := filepath.Join(data, "cat", "back.csv")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	sum, err := NAB(context.Background(), data, out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 400 || sum.Backsteps != 11 {
		t.Fatalf("rows %d, backsteps %d; want 400 and 11", sum.Rows, sum.Backsteps)
	}
	got, err := os.ReadFile(filepath.Join(out, "cat", "back.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")[1:]
	for i, l := range lines {
		ts, score, _ := strings.Cut(l, ",")
		v, err := strconv.ParseFloat(score, 64)
		if ts != stamps[i] || err != nil || v < 0 || v > 1 || math.IsNaN(v) {
			t.Fatalf("row %d: %q; want timestamp %q and a score in [0,1]", i, l, stamps[i])
		}
	}
}
