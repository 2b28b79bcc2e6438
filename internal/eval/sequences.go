package eval

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/iotwatch/iotwatch/detectors"
	commanddet "github.com/iotwatch/iotwatch/detectors/command" // registers the command detector
	"github.com/iotwatch/iotwatch/schemas"
)

// Names the sequence evaluation gives its synthetic devices: every session is a
// device of one class of one tenant.
const (
	seqTenant = "eval"
	seqClass  = "sequences"
	// seqStep is the event-time gap between a session's tokens (1 s), and
	// seqGap between the starts of consecutive sessions (1 min, or more when
	// the training sessions would span less than a day): sessions arrive one
	// after another, training first, as a stream would.
	seqStep = int64(1e9)
	seqGap  = int64(60e9)
	// seqEpoch is the event time of the first session's first token (2025-01-06).
	seqEpoch = int64(1736121600e9)
	// DefaultEndToken is the default token that closes every session: the device's
	// disconnect. The class model then learns which commands end a session, so a
	// session cut short after a command that never ends one is a rare transition.
	DefaultEndToken = "<end>"
)

// Session is one labelled line of a sequence file; tokens are slices of one
// buffer per file.
type Session struct {
	anomaly bool
	tokens  [][]byte
}

// SequencesResult is what `eval sequences` reports (the --json object).
type SequencesResult struct {
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

// Print writes the result as text; its last line is
// "precision=P recall=R f1=F".
func (res *SequencesResult) Print(stdout io.Writer) {
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
}

// ReadSessions reads a sequence file. Blank lines are skipped; a line without
// a tab or with a label other than Normal or Anomaly (any case) is an error.
func ReadSessions(path string) ([]Session, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read sessions: %w", err)
	}
	var out []Session
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
		var s Session
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

// RunSequences feeds the training sessions (the normal ones only when
// semiSupervised) through the command detector and its class model as the
// worker does, then scores the test sessions without learning from them. A
// non-empty end is observed after each session's last token.
func RunSequences(ctx context.Context, trainSet, testSet []Session, semiSupervised bool, threshold float64, end string) (*SequencesResult, error) {
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
	// The training sessions are spread over at least a day of event time
	// (commanddet.ClassMatureAge): a data set's sessions were collected over
	// its devices' life, and the command detector trusts a class's
	// vocabulary in full only once it has seen a day of it. A large
	// training set (6,352 HDFS sessions: 4.4 days) keeps seqGap.
	gap := max(seqGap, int64(commanddet.ClassMatureAge*1e9)/int64(max(len(trainSet), 1)))
	start := seqEpoch
	observe := func(prefix string, i int, s *Session, learn bool) schemas.Finding {
		clear(state)
		start += gap
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

	res := &SequencesResult{
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
