package eval

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestNABFolds(t *testing.T) {
	cats := []string{"b", "a", "b", "c", "a", "b"}
	folds := nabFolds(cats)
	var held []string
	seen := make([]int, len(cats))
	for _, f := range folds {
		held = append(held, f.category)
		for _, i := range f.test {
			seen[i]++
			if cats[i] != f.category {
				t.Errorf("fold %q holds out file %d of category %q", f.category, i, cats[i])
			}
		}
		for _, i := range f.train {
			if cats[i] == f.category {
				t.Errorf("fold %q trains on file %d of the held-out category", f.category, i)
			}
		}
		if len(f.train)+len(f.test) != len(cats) {
			t.Errorf("fold %q: %d train + %d test files, want %d in all", f.category, len(f.train), len(f.test), len(cats))
		}
	}
	if !slices.Equal(held, []string{"a", "b", "c"}) {
		t.Errorf("held out %q, want each category once: a, b, c", held)
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("file %d held out %d times, want once", i, n)
		}
	}
}

// nabToy builds n files of 100 rows, one window of rows 60-69 each; file f is
// of category cats[f].
func nabToy(t *testing.T, n int) []*nabGeometry {
	t.Helper()
	t0 := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	stamp := func(i int) string { return t0.Add(time.Duration(i) * time.Minute).Format("2006-01-02 15:04:05") }
	ts := make([]int64, 100)
	for i := range ts {
		ts[i] = t0.Add(time.Duration(i) * time.Minute).UnixNano()
	}
	var geo []*nabGeometry
	for range n {
		g, err := newNABGeometry("toy", ts, [][2]string{{stamp(60), stamp(69)}})
		if err != nil {
			t.Fatal(err)
		}
		geo = append(geo, g)
	}
	return geo
}

// toyScores returns a file's scores: 0.9 at row hit (none if negative), and
// at row fp (none if negative), 0 elsewhere.
func toyScores(hit, fp int) []float32 {
	s := make([]float32, 100)
	if hit >= 0 {
		s[hit] = 0.9
	}
	if fp >= 0 {
		s[fp] = 0.9
	}
	return s
}

var toyProfiles = []NABProfile{{"standard", 1, 0.11, 1}, {"reward_low_FP_rate", 1, 0.22, 1}, {"reward_low_FN_rate", 1, 0.11, 2}}

func TestNABScoreRule(t *testing.T) {
	geo := nabToy(t, 1)
	if geo[0].start != 15 {
		t.Fatalf("probation ends at row %d, want 15 (15%% of 100)", geo[0].start)
	}
	for _, tc := range []struct {
		name    string
		scores  []float32
		raw     float64
		hits    int
		fpRows  int
		normHit bool
	}{
		{"first row of the window earns A_TP", toyScores(60, -1), 1, 1, 0, true},
		{"last row earns less", toyScores(69, -1), nabSig(-0.1) / nabSig(-1), 1, 0, true},
		{"a false positive before the window costs A_FP", toyScores(60, 30), 1 - 0.11, 1, 1, true},
		{"a detection in the probation is ignored", toyScores(-1, 10), -1, 0, 0, false},
		{"a miss costs A_FN", toyScores(-1, -1), -1, 0, 0, false},
	} {
		c := newNABCorpus(geo, [][]float32{tc.scores})
		s := c.at(toyProfiles[0], 0.5)
		if math.Abs(s.Raw-tc.raw) > 1e-12 || s.Hits != tc.hits || s.FPRows != tc.fpRows {
			t.Errorf("%s: raw %g hits %d fp %d, want %g %d %d", tc.name, s.Raw, s.Hits, s.FPRows, tc.raw, tc.hits, tc.fpRows)
		}
		if want := 100 * (tc.raw + 1) / 2; math.Abs(s.Normalized-want) > 1e-9 {
			t.Errorf("%s: normalised %g, want %g", tc.name, s.Normalized, want)
		}
		if o := c.optimize(toyProfiles[0]); o.Raw < s.Raw || (o.Raw > s.Raw && !math.IsInf(o.Threshold, 1)) {
			t.Errorf("%s: optimised raw %g at %g, want at least %g (or nothing detected)", tc.name, o.Raw, o.Threshold, s.Raw)
		}
	}
}

// TestNABCrossValidateNoLeak: the candidate a fold chooses, and the
// thresholds it scores the held-out category at, depend only on the other
// categories' scores; the held-out figures are the chosen candidate's.
func TestNABCrossValidateNoLeak(t *testing.T) {
	cats := []string{"a", "a", "b", "b", "c", "c"}
	geo := nabToy(t, len(cats))
	// Candidate 0 hits every window in categories a and b and misses in c;
	// candidate 1 does the opposite. Fold c trains on a and b: candidate 0.
	scores := make([][][]float32, 2)
	for _, c := range cats {
		good, bad := toyScores(60, -1), toyScores(-1, 30)
		if c == "c" {
			good, bad = bad, good
		}
		scores[0] = append(scores[0], good)
		scores[1] = append(scores[1], bad)
	}
	names := []string{"zero", "one"}
	res := nabCrossValidate(names, toyProfiles, cats, geo, scores)
	fold := func(r NABCVResult, c string) NABFold {
		for _, f := range r.Folds {
			if f.Category == c {
				return f
			}
		}
		t.Fatalf("no fold holds out %q", c)
		return NABFold{}
	}
	fc := fold(res, "c")
	if fc.Chosen != "zero" {
		t.Errorf("fold c chose %q, want zero (best on a and b)", fc.Chosen)
	}
	// Held out, candidate zero misses both windows of c and fires early.
	if fc.Test[0].Hits != 0 || fc.Test[0].FPRows != 2 || !(fc.Test[0].Normalized < 0) {
		t.Errorf("fold c held-out: %d hits, %d FP rows, normalised %g; want 0, 2, below 0 (zero misses c)", fc.Test[0].Hits, fc.Test[0].FPRows, fc.Test[0].Normalized)
	}
	// Make candidate one perfect on c: fold c must not notice.
	for i, c := range cats {
		if c == "c" {
			scores[1][i] = toyScores(60, -1)
		}
	}
	res2 := nabCrossValidate(names, toyProfiles, cats, geo, scores)
	fc2 := fold(res2, "c")
	if fc2.Chosen != fc.Chosen || fc2.Train[0] != fc.Train[0] || fc2.Test[0].Raw != fc.Test[0].Raw {
		t.Errorf("fold c changed when only c's scores changed: chose %q (was %q), train %+v (was %+v)", fc2.Chosen, fc.Chosen, fc2.Train[0], fc.Train[0])
	}
	// In sample, candidate one now wins on c but not overall (zero: 4 of 6
	// windows, one: 2 of 6).
	if res2.InSample.Chosen != "zero" {
		t.Errorf("in-sample choice %q, want zero", res2.InSample.Chosen)
	}
	// The left-out total is the sum of the folds' held-out raw scores.
	sum := 0.0
	for _, f := range res.Folds {
		sum += f.Test[0].Raw
	}
	if math.Abs(sum-res.LeftOut[0].Raw) > 1e-12 {
		t.Errorf("left-out raw %g, want the folds' sum %g", res.LeftOut[0].Raw, sum)
	}
}
