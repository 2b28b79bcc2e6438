package eval

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"

	"github.com/iotwatch/iotwatch/detectors/volume"
)

// NABCandidate is one parameter set of the cross-validation grid.
type NABCandidate struct {
	Name   string
	Params volume.SeriesParams
}

// NABGrid is the declared grid `iotwatch eval nab --cv` chooses from: the
// default first (it wins ties), then every combination of two values of the
// four parameters that matter most (see bench/nab/LOG.md): the alarm level,
// the hold-off, the refractory time constant and the novelty slack. Small on
// purpose: every extra candidate is another chance to fit the files rather
// than the problem. The rest (the floor's quantum on, a divergence window of
// 100 steps, novelty blocks of 3 and 12 steps, patterns of 4 blocks, 1024
// blocks of history, escalation by 2 decades, a level shift adopted after 36
// steps) is fixed at the default's values.
func NABGrid() []NABCandidate {
	grid := []NABCandidate{{Name: "default", Params: volume.DefaultSeriesParams}}
	for _, alarm := range []float64{2, 2.25} {
		for _, hold := range []uint32{72, 144} {
			for _, ref := range []float64{72, 288} {
				for _, slack := range []float64{1, 1.5} {
					p := volume.DefaultSeriesParams
					p.Alarm, p.Hold, p.Refractory, p.NovSlack = alarm, hold, ref, slack
					if p == volume.DefaultSeriesParams {
						continue
					}
					name := fmt.Sprintf("alarm=%g hold=%d refractory=%g slack=%g", alarm, hold, ref, slack)
					grid = append(grid, NABCandidate{Name: name, Params: p})
				}
			}
		}
	}
	return grid
}

// NABFold is one fold of leave-one-category-out cross-validation: the
// candidate chosen on every other category (by the first profile's
// normalised score, standard), its scores there at thresholds optimised
// there (one per profile), and its scores on the held-out category at those
// same thresholds.
type NABFold struct {
	Category string
	Chosen   string
	Train    []NABScore // per profile
	Test     []NABScore // per profile
}

// NABCVResult is the outcome of NABCV. Scores are per profile, in the order
// of Profiles.
type NABCVResult struct {
	Profiles   []string
	Candidates []string
	Files      int
	// InSample is the candidate chosen on all files, scored on all files at
	// thresholds optimised there, and per category at those thresholds.
	InSample NABFold
	// InSampleByCategory has one entry per category (Train unused).
	InSampleByCategory []NABFold
	// Grid is every candidate's score on all files (first profile), in the
	// order of Candidates.
	Grid []NABScore
	// Folds has one entry per held-out category.
	Folds []NABFold
	// LeftOut sums the folds' held-out raw scores over all files, normalised
	// over all files: every row scored by parameters and at a threshold chosen
	// without its category.
	LeftOut []NABScore
	// LeftOutCorpusThreshold scores the same held-out outputs at one
	// threshold per profile optimised over all files, as NAB (and
	// nabscore.py on the --out directory) does for every detector: the
	// parameters are still chosen without the file's category.
	LeftOutCorpusThreshold []NABScore
}

// nabFold is a split of files into training and held-out by category.
type nabFold struct {
	category    string
	train, test []int // file indices
}

// nabFolds returns one fold per distinct category (sorted): the files of that
// category held out, every other file in training.
func nabFolds(categories []string) []nabFold {
	cats := slices.Clone(categories)
	slices.Sort(cats)
	cats = slices.Compact(cats)
	folds := make([]nabFold, 0, len(cats))
	for _, c := range cats {
		f := nabFold{category: c}
		for i, fc := range categories {
			if fc == c {
				f.test = append(f.test, i)
			} else {
				f.train = append(f.train, i)
			}
		}
		folds = append(folds, f)
	}
	return folds
}

// indexSet turns file indices into a membership test.
func indexSet(idx []int) func(int) bool {
	m := make(map[int]bool, len(idx))
	for _, i := range idx {
		m[i] = true
	}
	return func(i int) bool { return m[i] }
}

// nabCrossValidate runs the cross-validation on scores already computed:
// scores[c][f] holds candidate c's scores for file f (one per row). It is
// the part of NABCV that touches no files.
func nabCrossValidate(candidates []string, profiles []NABProfile, categories []string, geo []*nabGeometry, scores [][][]float32) NABCVResult {
	res := NABCVResult{Candidates: candidates, Files: len(geo)}
	for _, p := range profiles {
		res.Profiles = append(res.Profiles, p.Name)
	}
	folds := nabFolds(categories)
	all := make([]int, len(geo))
	for i := range all {
		all[i] = i
	}
	// For every candidate: its scores on the training files of every fold,
	// and on all files (the in-sample choice).
	train := make([][]NABScore, len(candidates)) // [candidate][fold]: first profile
	inAll := make([]NABScore, len(candidates))
	corpora := make([]*nabCorpus, len(candidates))
	for c := range candidates {
		corpora[c] = newNABCorpus(geo, scores[c])
		inAll[c] = corpora[c].optimize(profiles[0])
		for _, f := range folds {
			train[c] = append(train[c], corpora[c].subset(indexSet(f.train)).optimize(profiles[0]))
		}
	}
	choose := func(s func(c int) NABScore) int {
		best := 0
		for c := range candidates {
			if s(c).Raw > s(best).Raw { // same files, same null: raw orders as normalised
				best = c
			}
		}
		return best
	}
	// score returns the fold's scores for candidate c: thresholds optimised on
	// the training files, applied to the test files.
	score := func(c int, trainIdx, testIdx []int) (tr, te []NABScore) {
		trc := corpora[c].subset(indexSet(trainIdx))
		tec := corpora[c].subset(indexSet(testIdx))
		for _, p := range profiles {
			s := trc.optimize(p)
			tr = append(tr, s)
			te = append(te, tec.at(p, s.Threshold))
		}
		return tr, te
	}

	res.Grid = inAll
	c := choose(func(c int) NABScore { return inAll[c] })
	res.InSample = NABFold{Category: "all", Chosen: candidates[c]}
	res.InSample.Train, res.InSample.Test = score(c, all, all)
	for _, f := range folds {
		_, te := score(c, all, f.test)
		res.InSampleByCategory = append(res.InSampleByCategory, NABFold{Category: f.category, Chosen: candidates[c], Test: te})
	}

	// Held out: each category scored by the candidate and thresholds chosen
	// without it; the composite is every file's held-out scores.
	composite := make([][]float32, len(geo))
	res.LeftOut = make([]NABScore, len(profiles))
	for k, f := range folds {
		c := choose(func(c int) NABScore { return train[c][k] })
		tr, te := score(c, f.train, f.test)
		res.Folds = append(res.Folds, NABFold{Category: f.category, Chosen: candidates[c], Train: tr, Test: te})
		for _, i := range f.test {
			composite[i] = scores[c][i]
		}
		for j := range profiles {
			res.LeftOut[j].Raw += te[j].Raw
			res.LeftOut[j].Hits += te[j].Hits
			res.LeftOut[j].FPRows += te[j].FPRows
			res.LeftOut[j].Threshold = math.NaN() // one per fold
		}
	}
	cc := newNABCorpus(geo, composite)
	for j, p := range profiles {
		null, perfect, windows := cc.bounds(p)
		res.LeftOut[j].Windows = windows
		res.LeftOut[j].Normalized = 100 * (res.LeftOut[j].Raw - null) / (perfect - null)
		res.LeftOutCorpusThreshold = append(res.LeftOutCorpusThreshold, cc.optimize(p))
	}
	return res
}

// NABCV chooses SeriesParams by leave-one-category-out cross-validation over
// grid: for each category (a directory of data) held out, the candidate
// scoring best (NAB standard profile) on the other categories, with its
// thresholds optimised there, scores the held-out one. It also reports the
// in-sample choice (chosen and scored on all files). windows and profiles
// are NAB's labels/combined_windows.json and config/profiles.json. If out is
// not empty, the held-out scores (each file scored by the parameters chosen
// without its category) are written there in eval nab's layout.
func NABCV(ctx context.Context, data, windowsPath, profilesPath, out string, grid []NABCandidate) (NABCVResult, error) {
	files, err := nabFiles(data)
	if err != nil {
		return NABCVResult{}, err
	}
	windows, err := readNABWindows(windowsPath)
	if err != nil {
		return NABCVResult{}, err
	}
	profiles, err := readNABProfiles(profilesPath)
	if err != nil {
		return NABCVResult{}, err
	}
	var series []*nabSeries
	var geo []*nabGeometry
	var cats []string
	for _, rel := range files {
		w, ok := windows[filepath.ToSlash(rel)]
		if !ok {
			continue // not labelled: not scored
		}
		s, err := readNABSeries(filepath.Join(data, rel), rel)
		if err != nil {
			return NABCVResult{}, err
		}
		g, err := newNABGeometry(rel, s.t, w)
		if err != nil {
			return NABCVResult{}, err
		}
		series, geo, cats = append(series, s), append(geo, g), append(cats, s.category())
	}
	if len(series) == 0 {
		return NABCVResult{}, fmt.Errorf("cannot cross-validate: no file under %q has windows in %q", data, windowsPath)
	}
	names := make([]string, len(grid))
	scores := make([][][]float32, len(grid))
	for c, cand := range grid {
		if err := ctx.Err(); err != nil {
			return NABCVResult{}, err
		}
		names[c] = cand.Name
		scores[c] = make([][]float32, len(series))
		for i, s := range series {
			scores[c][i] = make([]float32, len(s.v))
			s.score(&grid[c].Params, scores[c][i])
		}
	}
	res := nabCrossValidate(names, profiles, cats, geo, scores)
	if out != "" {
		for _, f := range res.Folds {
			c := slices.Index(names, f.Chosen)
			for i, s := range series {
				if cats[i] != f.Category {
					continue
				}
				if err := writeNABScores(filepath.Join(out, s.rel), s, scores[c][i]); err != nil {
					return NABCVResult{}, err
				}
			}
		}
	}
	return res, nil
}

// Print writes the result as a table: per profile, in-sample and left-out
// scores on all files, then per category.
func (r NABCVResult) Print(w io.Writer) {
	fmt.Fprintf(w, "leave-one-category-out cross-validation over %d candidates, %d files\n", len(r.Candidates), r.Files)
	fmt.Fprintf(w, "in-sample choice (chosen on all files): %s\n", r.InSample.Chosen)
	fmt.Fprintf(w, "%-34s", "all files")
	for _, p := range r.Profiles {
		fmt.Fprintf(w, " %22s", p)
	}
	fmt.Fprintln(w)
	row := func(label string, s []NABScore) {
		fmt.Fprintf(w, "%-34s", label)
		for _, x := range s {
			if math.IsNaN(x.Normalized) {
				fmt.Fprintf(w, " %9s raw=%7.3f fp=%-3d", "-", x.Raw, x.FPRows)
				continue
			}
			fmt.Fprintf(w, " %9.2f %5d/%-3d fp=%-3d", x.Normalized, x.Hits, x.Windows, x.FPRows)
		}
		fmt.Fprintln(w)
	}
	row("  in-sample", r.InSample.Test)
	row("  left-out (CV, fold thresholds)", r.LeftOut)
	row("  left-out (CV, corpus threshold)", r.LeftOutCorpusThreshold)
	fmt.Fprintf(w, "per candidate, all files, %s (in-sample):\n", r.Profiles[0])
	for i, c := range r.Candidates {
		fmt.Fprintf(w, "  %6.2f %3d/%-3d fp=%-4d %s\n", r.Grid[i].Normalized, r.Grid[i].Hits, r.Grid[i].Windows, r.Grid[i].FPRows, c)
	}
	fmt.Fprintln(w, "per category (in-sample / left-out; left-out chose on the others):")
	for i, f := range r.Folds {
		row("  "+f.Category+" in", r.InSampleByCategory[i].Test)
		row("  "+f.Category+" out", f.Test)
		fmt.Fprintf(w, "      chosen without it: %s\n", f.Chosen)
	}
}
