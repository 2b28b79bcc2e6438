package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/iotwatch/iotwatch/detectors"
	commanddet "github.com/iotwatch/iotwatch/detectors/command" // registers the command detector
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// Names the sequence evaluation gives its synthetic devices: every session is a
// device of one class of one tenant.
const (
	seqTenant = "eval"
	seqClass  = "sequences"
	// seqStep is the event-time gap between a session's tokens (1 s), and
	// seqGap between the starts of consecutive sessions (1 min): sessions
	// arrive one after another, training first, as a stream would.
	seqStep = int64(1e9)
	seqGap  = int64(60e9)
	// seqEpoch is the event time of the first session's first token (2025-01-06).
	seqEpoch = int64(1736121600e9)
	// seqEnd is the default token that closes every session: the device's
	// disconnect. The class model then learns which commands end a session, so a
	// session cut short after a command that never ends one is a rare transition.
	seqEnd = "<end>"
)

// session is one labelled line of a sequence file; tokens are slices of one
// buffer per file.
type session struct {
	anomaly bool
	tokens  [][]byte
}

// seqResult is what `eval sequences` reports (the --json object).
type seqResult struct {
	Detector       string  `json:"detector"`
	EndToken       string  `json:"end_token"` // appended to every session; empty when off
	Mode           string  `json:"mode"`      // semi-supervised or unsupervised
	UsedLabels     bool    `json:"used_training_labels"`
	TrainSessions  int     `json:"train_sessions"`
	TrainLearned   int     `json:"train_sessions_learned"`
	TrainFlagged   int     `json:"train_learned_sessions_flagged"`
	TestSessions   int     `json:"test_sessions"`
	TestAnomalies  int     `json:"test_anomalies"`
	Threshold      float64 `json:"threshold"`
	ThresholdFrom  string  `json:"threshold_from"`
	LearnsFromTest bool    `json:"learns_from_test"`
	Flagged        int     `json:"flagged"`
	TP             int     `json:"tp"`
	FP             int     `json:"fp"`
	FN             int     `json:"fn"`
	Precision      float64 `json:"precision"`
	Recall         float64 `json:"recall"`
	F1             float64 `json:"f1"`
	// Reasons counts flagged test sessions by the reason of their top finding.
	Reasons map[string]int `json:"reasons"`
}

// evalSequences learns command sequences from a training file through the
// command detector's own model and scores a test file. Both files hold one
// session per line, "label<TAB>space-separated tokens", label Normal or
// Anomaly; each session is read as a device and each token as a command.
func evalSequences(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("eval sequences", flag.ContinueOnError)
	fs.SetOutput(stdout)
	train := fs.String("train", "", "training sessions (label<TAB>tokens per line)")
	test := fs.String("test", "", "test sessions (label<TAB>tokens per line)")
	unsup := fs.Bool("unsupervised", false, "learn from every training session, ignoring the labels (default: only the Normal ones)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	end := fs.String("end", seqEnd, "token appended to every training and test session as its last command (a disconnect); empty for none")
	alert := decide.DefaultConfig().AlertThreshold
	threshold := fs.Float64("threshold", alert, "flag a session whose top finding scores at least this (default: decide's alert threshold)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch eval sequences --train FILE --test FILE [--unsupervised] [--end TOKEN] [--json]

Reads two files of sessions, one per line: a label (Normal or Anomaly), a tab, and the
session's tokens separated by spaces, in order. Each session is a device of one class and
each token a command it issues (1 s apart; sessions start 1 min apart, training
first), observed by the command detector exactly as
the pipeline's worker does: the class model (commands and transitions, counted by
distinct devices) learns from the training sessions, the Normal ones only unless
--unsupervised. Every session ends with the --end token, read as the device's
disconnect, so that the model knows which commands end a session. Test sessions are then scored without teaching the class model. A session
scores its top finding; it is flagged when that reaches --threshold (decide's alert
threshold by default, chosen without the test labels). The last line is
"precision=P recall=R f1=F" (with --json, one JSON object).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *train == "" || *test == "" || fs.NArg() > 0 {
		return usageError{errors.New("cannot run eval sequences: want --train FILE --test FILE and no other arguments")}
	}
	if !(*threshold > 0 && *threshold <= 1) {
		return usageError{fmt.Errorf("cannot use --threshold %v: want a value in (0,1]", *threshold)}
	}
	trainSet, err := readSessions(*train)
	if err != nil {
		return err
	}
	testSet, err := readSessions(*test)
	if err != nil {
		return err
	}
	res, err := runSequences(ctx, trainSet, testSet, !*unsup, *threshold, *end)
	if err != nil {
		return err
	}
	if *threshold == alert {
		res.ThresholdFrom = "decide's alert threshold"
	} else {
		res.ThresholdFrom = "--threshold"
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	labels := "semi-supervised: learned from the training sessions labelled Normal only"
	if !res.UsedLabels {
		labels = "unsupervised: learned from every training session, labels ignored"
	}
	fmt.Fprintf(stdout, "training: %d sessions, %d learned (%s); %d of those would have been flagged\n",
		res.TrainSessions, res.TrainLearned, labels, res.TrainFlagged)
	ending := "no end-of-session token"
	if res.EndToken != "" {
		ending = fmt.Sprintf("every session ends with %q", res.EndToken)
	}
	fmt.Fprintf(stdout, "test: %d sessions, %d anomalies, scored by the %s detector without learning from them; %s\n",
		res.TestSessions, res.TestAnomalies, res.Detector, ending)
	reasons := make([]string, 0, len(res.Reasons))
	for r, n := range res.Reasons {
		reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
	}
	slices.Sort(reasons)
	fmt.Fprintf(stdout, "threshold: %.2f (%s); flagged %d: tp=%d fp=%d fn=%d; by top reason: %s\n",
		res.Threshold, res.ThresholdFrom, res.Flagged, res.TP, res.FP, res.FN, strings.Join(reasons, " "))
	fmt.Fprintf(stdout, "precision=%.4f recall=%.4f f1=%.4f\n", res.Precision, res.Recall, res.F1)
	return nil
}

// readSessions reads a sequence file. Blank lines are skipped; a line without
// a tab or with a label other than Normal or Anomaly (any case) is an error.
func readSessions(path string) ([]session, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read sessions: %w", err)
	}
	var out []session
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		label, toks, ok := bytes.Cut(line, []byte{'\t'})
		if !ok {
			return nil, fmt.Errorf("cannot parse %q line %d: want label<TAB>tokens", path, n)
		}
		var s session
		switch string(bytes.ToLower(bytes.TrimSpace(label))) {
		case "normal":
		case "anomaly":
			s.anomaly = true
		default:
			return nil, fmt.Errorf("cannot parse %q line %d: label %q is not Normal or Anomaly", path, n, label)
		}
		s.tokens = bytes.Fields(toks) // slices of data, which the sessions keep
		out = append(out, s)
	}
	return out, nil
}

// runSequences feeds the training sessions (the normal ones only when
// semiSupervised) through the command detector and its class model as the
// worker does, then scores the test sessions without learning from them. A
// non-empty end is observed after each session's last token.
func runSequences(ctx context.Context, trainSet, testSet []session, semiSupervised bool, threshold float64, end string) (*seqResult, error) {
	spec, ok := detectors.Lookup(commanddet.Name)
	if !ok {
		return nil, fmt.Errorf("cannot find detector %q", commanddet.Name)
	}
	det := spec.New()
	model := detectors.NewClassModel(detectors.NewLayout([]detectors.Spec{spec}), detectors.NewClassTable(1<<16, 1<<10))
	state, before := make([]byte, spec.StateSize), make([]byte, spec.StateSize)
	var ev schemas.Event
	var name []byte

	// observe runs one session as device id and returns its top finding.
	start := seqEpoch
	observe := func(prefix string, i int, s *session, learn bool) schemas.Finding {
		clear(state)
		start += seqGap
		name = strconv.AppendInt(append(name[:0], prefix...), int64(i), 10)
		var top schemas.Finding
		tokens := s.tokens
		if end != "" {
			tokens = append(tokens[:len(tokens):len(tokens)], []byte(end))
		}
		for j, tok := range tokens {
			ev.Reset()
			ev.ID = uint64(j)
			ev.Time = start + int64(j)*seqStep
			ev.SetDevice([]byte(seqTenant), name)
			ev.SetClass([]byte(seqClass))
			ev.SetCommand(tok)
			copy(before, state)
			if f := det.Observe(&ev, state, model.Fleet(0)); f.Reason != schemas.ReasonNone && f.Score > top.Score {
				top = f
			}
			if learn {
				model.Learn(&ev, before)
			}
		}
		return top
	}

	res := &seqResult{
		Detector: spec.Name, EndToken: end, Mode: "semi-supervised", UsedLabels: semiSupervised,
		TrainSessions: len(trainSet), TestSessions: len(testSet), Threshold: threshold,
		Reasons: map[string]int{},
	}
	if !semiSupervised {
		res.Mode = "unsupervised"
	}
	for i := range trainSet {
		if i%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s := &trainSet[i]
		if semiSupervised && s.anomaly {
			continue
		}
		res.TrainLearned++
		if f := observe("train-", i, s, true); float64(f.Score) >= threshold {
			res.TrainFlagged++
		}
	}
	for i := range testSet {
		if i%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s := &testSet[i]
		f := observe("test-", i, s, false)
		flagged := f.Reason != schemas.ReasonNone && float64(f.Score) >= threshold
		if s.anomaly {
			res.TestAnomalies++
		}
		switch {
		case flagged && s.anomaly:
			res.TP++
		case flagged:
			res.FP++
		case s.anomaly:
			res.FN++
		}
		if flagged {
			res.Flagged++
			res.Reasons[f.Reason]++
		}
	}
	if res.TP+res.FP > 0 {
		res.Precision = float64(res.TP) / float64(res.TP+res.FP)
	}
	if res.TP+res.FN > 0 {
		res.Recall = float64(res.TP) / float64(res.TP+res.FN)
	}
	if res.Precision+res.Recall > 0 {
		res.F1 = 2 * res.Precision * res.Recall / (res.Precision + res.Recall)
	}
	return res, nil
}
