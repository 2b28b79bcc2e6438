package eval

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
)

// This file holds NAB's scoring rule (NAB v1.1, Lavin & Ahmad 2015), the
// same rule as ../shared/tools/nabscore.py, so that eval nab --cv can score
// many parameter sets on many subsets of files without writing them out. The
// rule, in short: in each labelled window of width w rows ending at row b,
// the earliest detection at row i earns A_TP·s(-(b-i+1)/w)/s(-1) (s the scaled
// sigmoid 2/(1+e^{5y})-1: early detection is rewarded); a window with none
// costs A_FN; every detection outside the windows costs A_FP·s(y), y the
// distance past the last window in its widths (-A_FP before the first window
// or beyond 3 widths after it). Rows of the probationary period (the first
// min(15%, 750) of a file) are not scored. One threshold serves the whole
// corpus, chosen per profile to maximise the raw score; the normalised score
// is 100·(raw-null)/(perfect-null).

// NABProfile is one of NAB's cost profiles.
type NABProfile struct {
	Name       string
	TP, FP, FN float64
}

// readNABProfiles reads NAB's config/profiles.json, in a fixed order
// (standard first).
func readNABProfiles(path string) ([]NABProfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read NAB profiles: %w", err)
	}
	var raw map[string]struct {
		CostMatrix struct {
			TP float64 `json:"tpWeight"`
			FP float64 `json:"fpWeight"`
			FN float64 `json:"fnWeight"`
		}
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("cannot parse NAB profiles %q: %w", path, err)
	}
	var out []NABProfile
	for name, p := range raw {
		out = append(out, NABProfile{Name: name, TP: p.CostMatrix.TP, FP: p.CostMatrix.FP, FN: p.CostMatrix.FN})
	}
	order := func(p NABProfile) int { // NAB's own order, then by name
		if i := slices.Index([]string{"standard", "reward_low_FP_rate", "reward_low_FN_rate"}, p.Name); i >= 0 {
			return i
		}
		return 3
	}
	slices.SortFunc(out, func(a, b NABProfile) int {
		if d := order(a) - order(b); d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(out) == 0 {
		return nil, fmt.Errorf("cannot use NAB profiles %q: none found", path)
	}
	return out, nil
}

// readNABWindows reads NAB's labels/combined_windows.json: for each
// <category>/<file>.csv, its windows as [start, end] timestamps.
func readNABWindows(path string) (map[string][][2]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read NAB windows: %w", err)
	}
	var w map[string][][2]string
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("cannot parse NAB windows %q: %w", path, err)
	}
	return w, nil
}

// nabGeometry is one file's scoring geometry: for every row, its window (-1
// outside) and its unweighted value (relative to A_TP inside a window, to A_FP
// outside).
type nabGeometry struct {
	start   int // first scored row (after the probationary period)
	win     []int32
	val     []float64
	windows int    // labelled windows
	live    []bool // windows with a scored row
}

// nabSig is NAB's scaled sigmoid.
func nabSig(y float64) float64 {
	z := 5 * y
	if z > 700 {
		return -1
	}
	return 2/(1+math.Exp(z)) - 1
}

// newNABGeometry lays out the windows (timestamps, inclusive) over a file's
// rows, stamped t (Unix ns as parsed from the file, not clamped: a window
// edge is the first row bearing its timestamp).
func newNABGeometry(name string, t []int64, windows [][2]string) (*nabGeometry, error) {
	n := len(t)
	prob := min(math.Floor(0.15*float64(n)), 0.15*5000)
	g := &nabGeometry{start: int(math.Ceil(prob)), win: make([]int32, n), val: make([]float64, n), windows: len(windows)}
	index := make(map[int64]int, n)
	for i, ts := range t {
		if _, ok := index[ts]; !ok {
			index[ts] = i
		}
	}
	spans := make([][2]int, 0, len(windows))
	for _, w := range windows {
		a, errA := parseNABTime(w[0])
		b, errB := parseNABTime(w[1])
		ia, okA := index[a]
		ib, okB := index[b]
		if errA != nil || errB != nil || !okA || !okB {
			return nil, fmt.Errorf("cannot place window %q..%q of %q: a timestamp is not in the series", w[0], w[1], name)
		}
		spans = append(spans, [2]int{ia, ib})
	}
	slices.SortFunc(spans, func(x, y [2]int) int { return x[0] - y[0] })
	for i := range g.win {
		g.win[i] = -1
	}
	top := nabSig(-1)
	for k, s := range spans {
		w := float64(s[1] - s[0] + 1)
		for i := s[0]; i <= s[1]; i++ {
			g.win[i] = int32(k)
			g.val[i] = nabSig(-float64(s[1]-i+1)/w) / top
		}
		g.live = append(g.live, s[1] >= g.start)
	}
	k, prevEnd, prevW := 0, -1, 0
	for i := range n {
		for k < len(spans) && spans[k][1] < i {
			prevEnd, prevW = spans[k][1], spans[k][1]-spans[k][0]+1
			k++
		}
		if g.win[i] >= 0 {
			continue
		}
		switch {
		case prevEnd < 0:
			g.val[i] = -1
		case prevW <= 1:
			g.val[i] = -1
		default:
			y := float64(i-prevEnd) / float64(prevW-1)
			if y > 3 {
				g.val[i] = -1
			} else {
				g.val[i] = nabSig(y)
			}
		}
	}
	return g, nil
}

// nabRow is one scored row of a corpus.
type nabRow struct {
	score float32
	file  int32 // index into the corpus' files
	win   int32 // window within the file, -1 outside
	val   float64
}

// nabCorpus is the scored rows of a set of files, highest score first.
type nabCorpus struct {
	geo  []*nabGeometry
	rows []nabRow
}

// newNABCorpus collects the scored rows of files (geometry and scores, one
// per row), sorted by score, highest first (stable: ties keep file order).
func newNABCorpus(geo []*nabGeometry, scores [][]float32) *nabCorpus {
	c := &nabCorpus{geo: geo}
	for f, g := range geo {
		for i := g.start; i < len(g.win); i++ {
			c.rows = append(c.rows, nabRow{score: scores[f][i], file: int32(f), win: g.win[i], val: g.val[i]})
		}
	}
	slices.SortStableFunc(c.rows, func(a, b nabRow) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	return c
}

// subset returns the corpus of the files keep says yes to, rows still
// sorted.
func (c *nabCorpus) subset(keep func(file int) bool) *nabCorpus {
	s := &nabCorpus{geo: make([]*nabGeometry, len(c.geo))}
	for f, g := range c.geo {
		if keep(f) {
			s.geo[f] = g
		}
	}
	for _, r := range c.rows {
		if s.geo[r.file] != nil {
			s.rows = append(s.rows, r)
		}
	}
	return s
}

// NABScore is a detector's score on a set of files under one profile.
type NABScore struct {
	Threshold  float64 // detection threshold (score >= it)
	Raw        float64 // raw score
	Normalized float64 // 100·(raw-null)/(perfect-null); NaN with no windows
	Windows    int     // labelled windows
	Hits       int     // windows detected
	FPRows     int     // detections outside every window
}

// bounds returns the raw scores of a detector that never fires and of a
// perfect one.
func (c *nabCorpus) bounds(p NABProfile) (null, perfect float64, windows int) {
	for _, g := range c.geo {
		if g == nil {
			continue
		}
		windows += g.windows
		for _, l := range g.live {
			if l {
				null -= p.FN
			}
		}
	}
	return null, p.TP * float64(windows), windows
}

// optimize sweeps every distinct score as the threshold and returns the best
// (the highest threshold among equals), as NAB's optimiser does.
func (c *nabCorpus) optimize(p NABProfile) NABScore {
	null, _, _ := c.bounds(p)
	total := null
	best := map[[2]int32]float64{}
	thr, bestRaw := math.Inf(1), null
	for i := 0; i < len(c.rows); {
		s := c.rows[i].score
		for ; i < len(c.rows) && c.rows[i].score == s; i++ {
			r := c.rows[i]
			if r.win < 0 {
				total += p.FP * r.val
				continue
			}
			key := [2]int32{r.file, r.win}
			gain := p.TP * r.val
			old, ok := best[key]
			if !ok {
				old = -p.FN
			}
			if gain > old {
				total += gain - old
				best[key] = gain
			}
		}
		if total > bestRaw {
			thr, bestRaw = float64(s), total
		}
	}
	return c.at(p, thr)
}

// at scores the corpus at a fixed threshold.
func (c *nabCorpus) at(p NABProfile, thr float64) NABScore {
	null, perfect, windows := c.bounds(p)
	sc := NABScore{Threshold: thr, Raw: null, Windows: windows}
	best := map[[2]int32]float64{}
	for _, r := range c.rows {
		if float64(r.score) < thr {
			break
		}
		if r.win < 0 {
			sc.Raw += p.FP * r.val
			sc.FPRows++
			continue
		}
		key := [2]int32{r.file, r.win}
		gain := p.TP * r.val
		old, ok := best[key]
		if !ok {
			old = -p.FN
			sc.Hits++
		}
		if gain > old {
			sc.Raw += gain - old
			best[key] = gain
		}
	}
	sc.Normalized = math.NaN()
	if perfect != null {
		sc.Normalized = 100 * (sc.Raw - null) / (perfect - null)
	}
	return sc
}
