package eval

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/detectors/volume"
)

// NAB scores every DATA/<category>/<file>.csv (columns timestamp and value,
// one row per interval, oldest first) with the volume model's core plus a
// distribution-change channel, calibrated to the series' own tail and held off
// after an alarm (volume.Series,
// volume.DefaultSeriesParams: one parameter set for every file), and
// writes OUT/<category>/<file>.csv with the header timestamp,anomaly_score and
// one row per input row, scores in [0,1]. That is the layout of the Numenta
// Anomaly Benchmark; score the output with NAB's rule (nabscore.py). Errors
// name the file and the line.
//
// Real series repeat timestamps or step back in time (NAB's
// machine_temperature_system_failure.csv does at row 10151): a row stamped
// before the previous one is scored as if it came at the previous row's time
// (the model's clock never moves backwards, as the live pipeline's does not),
// keeps its own timestamp in the output, and is counted in Backsteps.
func NAB(ctx context.Context, data, out string) (NABSummary, error) {
	var sum NABSummary
	files, err := nabFiles(data)
	if err != nil {
		return NABSummary{}, err
	}
	for _, rel := range files {
		if err := ctx.Err(); err != nil {
			return NABSummary{}, err
		}
		n, back, err := scoreNABFile(filepath.Join(data, rel), filepath.Join(out, rel), &volume.DefaultSeriesParams)
		if err != nil {
			return NABSummary{}, err
		}
		sum.Rows += n
		sum.Backsteps += back
	}
	sum.Files = files
	return sum, nil
}

// NABSummary is what NAB scored.
type NABSummary struct {
	Files     []string // <category>/<file>.csv, sorted
	Rows      int      // rows scored, one output row each
	Backsteps int      // rows stamped before the previous row, scored at its time
}

// nabFiles lists the <category>/<file>.csv paths under dir, sorted.
func nabFiles(dir string) ([]string, error) {
	cats, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot read data directory %q: %w", dir, err)
	}
	var files []string
	for _, c := range cats {
		if !c.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, c.Name()))
		if err != nil {
			return nil, fmt.Errorf("cannot read category directory %q: %w", filepath.Join(dir, c.Name()), err)
		}
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".csv") {
				files = append(files, filepath.Join(c.Name(), e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("cannot find data files in %q: want DIR/<category>/<file>.csv", dir)
	}
	slices.Sort(files)
	return files, nil
}

// scoreNABFile scores one series and writes its results; it returns the number
// of rows and of rows that stepped back in time. Errors name the file and, for
// bad rows, the line.
func scoreNABFile(in, out string, p *volume.SeriesParams) (rows, backsteps int, err error) {
	f, err := os.Open(in)
	if err != nil {
		return 0, 0, fmt.Errorf("cannot open data file %q: %w", in, err)
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return 0, 0, fmt.Errorf("cannot read header of %q: %w", in, err)
	}
	jt, jv := -1, -1
	for j, h := range header {
		switch strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))) {
		case "timestamp":
			jt = j
		case "value":
			jv = j
		}
	}
	if jt < 0 || jv < 0 {
		return 0, 0, fmt.Errorf("cannot read %q line 1: header %q lacks a timestamp or a value column", in, strings.Join(header, ","))
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return 0, 0, fmt.Errorf("cannot create output directory %q: %w", filepath.Dir(out), err)
	}
	var buf []byte
	buf = append(buf, "timestamp,anomaly_score\n"...)
	var series volume.Series
	n := 0
	var prev int64
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return 0, 0, fmt.Errorf("cannot read %q: %w", in, err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) <= max(jt, jv) {
			return 0, 0, fmt.Errorf("cannot read %q line %d: want %d fields, got %d", in, line, len(header), len(rec))
		}
		ts := strings.TrimSpace(rec[jt])
		t, err := parseNABTime(ts)
		if err != nil {
			return 0, 0, fmt.Errorf("cannot read %q line %d: %w", in, line, err)
		}
		if n > 0 && t < prev {
			t = prev // scored at the previous row's time: the clock never moves backwards
			backsteps++
		}
		prev = t
		v, err := strconv.ParseFloat(strings.TrimSpace(rec[jv]), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("cannot read %q line %d: cannot parse value %q as a number", in, line, rec[jv])
		}
		score, _ := series.Step(p, t, v)
		buf = append(buf, ts...)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, float64(score), 'g', 7, 32)
		buf = append(buf, '\n')
		n++
	}
	if err := os.WriteFile(out, buf, 0o644); err != nil {
		return 0, 0, fmt.Errorf("cannot write results %q: %w", out, err)
	}
	return n, backsteps, nil
}

// nabTimeLayouts are the timestamp layouts eval nab accepts, besides Unix seconds.
var nabTimeLayouts = []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", time.RFC3339Nano, "2006-01-02 15:04", "2006-01-02"}

// parseNABTime parses a timestamp (UTC unless it says otherwise) into Unix ns.
func parseNABTime(s string) (int64, error) {
	for _, l := range nabTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UnixNano(), nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > -1e10 && f < 1e11 {
		return int64(f * 1e9), nil
	}
	return 0, fmt.Errorf("cannot parse timestamp %q: want \"2006-01-02 15:04:05\", RFC 3339 or Unix seconds", s)
}
