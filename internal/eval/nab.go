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
// distribution-change channel and a shape-novelty channel, calibrated to the
// series' own tail and held off after an alarm (volume.Series,
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

// nabSeries is one NAB data file in memory.
type nabSeries struct {
	rel       string    // <category>/<file>.csv
	stamps    []string  // timestamps as written, for the output
	t         []int64   // timestamps, Unix ns, as parsed (may step back)
	v         []float64 // values
	backsteps int       // rows stamped before an earlier row
}

// category is the series' NAB category: its directory.
func (s *nabSeries) category() string { return filepath.Dir(s.rel) }

// readNABSeries reads one data file. Errors name the file and, for bad rows,
// the line.
func readNABSeries(in, rel string) (*nabSeries, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("cannot open data file %q: %w", in, err)
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("cannot read header of %q: %w", in, err)
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
		return nil, fmt.Errorf("cannot read %q line 1: header %q lacks a timestamp or a value column", in, strings.Join(header, ","))
	}
	s := &nabSeries{rel: rel}
	var latest int64
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("cannot read %q: %w", in, err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) <= max(jt, jv) {
			return nil, fmt.Errorf("cannot read %q line %d: want %d fields, got %d", in, line, len(header), len(rec))
		}
		ts := strings.TrimSpace(rec[jt])
		t, err := parseNABTime(ts)
		if err != nil {
			return nil, fmt.Errorf("cannot read %q line %d: %w", in, line, err)
		}
		switch {
		case len(s.t) == 0 || t > latest:
			latest = t
		case t < latest:
			s.backsteps++ // scored at latest (see score)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rec[jv]), 64)
		if err != nil {
			return nil, fmt.Errorf("cannot read %q line %d: cannot parse value %q as a number", in, line, rec[jv])
		}
		s.stamps = append(s.stamps, ts)
		s.t = append(s.t, t)
		s.v = append(s.v, v)
	}
	return s, nil
}

// score runs a fresh volume.Series with p over the series and writes one
// score per row into dst (len(s.v) long). A row stamped before the previous
// one is scored at the previous row's time: the model's clock never moves
// backwards.
func (s *nabSeries) score(p *volume.SeriesParams, dst []float32) {
	var series volume.Series
	var prev int64
	for i, v := range s.v {
		t := s.t[i]
		if i > 0 && t < prev {
			t = prev
		}
		prev = t
		dst[i], _ = series.Step(p, t, v)
	}
}

// writeNABScores writes one results file: header timestamp,anomaly_score and
// one row per data row.
func writeNABScores(out string, s *nabSeries, scores []float32) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("cannot create output directory %q: %w", filepath.Dir(out), err)
	}
	buf := make([]byte, 0, 32*len(scores)+32)
	buf = append(buf, "timestamp,anomaly_score\n"...)
	for i, sc := range scores {
		buf = append(buf, s.stamps[i]...)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, float64(sc), 'g', 7, 32)
		buf = append(buf, '\n')
	}
	if err := os.WriteFile(out, buf, 0o644); err != nil {
		return fmt.Errorf("cannot write results %q: %w", out, err)
	}
	return nil
}

// scoreNABFile scores one series with p and writes its results; it returns
// the number of rows and of rows that stepped back in time.
func scoreNABFile(in, out string, p *volume.SeriesParams) (rows, backsteps int, err error) {
	s, err := readNABSeries(in, filepath.Base(in))
	if err != nil {
		return 0, 0, err
	}
	scores := make([]float32, len(s.v))
	s.score(p, scores)
	if err := writeNABScores(out, s, scores); err != nil {
		return 0, 0, err
	}
	return len(s.v), s.backsteps, nil
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
