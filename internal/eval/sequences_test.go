package eval

import (
	"context"
	"testing"

	"github.com/iotwatch/iotwatch/internal/eval/evaltest"
)

func TestEvalSequencesFlagsUnseenTokensAndTransitions(t *testing.T) {
	train, test := evaltest.WriteSequences(t)
	trainSet, err := ReadSessions(train)
	if err != nil {
		t.Fatal(err)
	}
	testSet, err := ReadSessions(test)
	if err != nil {
		t.Fatal(err)
	}
	if len(trainSet) != 151 || len(testSet) != 32 {
		t.Fatalf("read %d training and %d test sessions; want 151 and 32", len(trainSet), len(testSet))
	}
	res, err := RunSequences(context.Background(), trainSet, testSet, true, 0.6, DefaultEndToken)
	if err != nil {
		t.Fatal(err)
	}
	if res.TrainLearned != 150 || !res.UsedLabels {
		t.Errorf("semi-supervised run learned %d sessions (used labels %v); want the 150 normal ones", res.TrainLearned, res.UsedLabels)
	}
	if res.TP != 2 || res.FP != 0 || res.FN != 0 {
		t.Errorf("tp=%d fp=%d fn=%d; want both anomalies flagged and no normal session", res.TP, res.FP, res.FN)
	}
	if res.Reasons["new_class_command"] != 1 || res.Reasons["rare_transition"] != 1 {
		t.Errorf("flagged by %v; want one new_class_command (panic) and one rare_transition (open close)", res.Reasons)
	}

	// Unsupervised, the anomalous training session teaches the class "panic"
	// (one device issued it), so only the unseen transition stays an alert.
	res, err = RunSequences(context.Background(), trainSet, testSet, false, 0.6, DefaultEndToken)
	if err != nil {
		t.Fatal(err)
	}
	if res.TrainLearned != 151 || res.UsedLabels || res.TP != 1 || res.FP != 0 {
		t.Errorf("unsupervised: learned %d, used labels %v, tp=%d fp=%d; want 151, false, 1, 0",
			res.TrainLearned, res.UsedLabels, res.TP, res.FP)
	}
}

// A session cut short ("open read", a prefix of a normal script) is only
// visible through how it ends: flagged with the end-of-session token, not
// without it, while the normal sessions stay quiet either way.
func TestEvalSequencesEndOfSession(t *testing.T) {
	train, _ := evaltest.WriteSequences(t)
	trainSet, err := ReadSessions(train)
	if err != nil {
		t.Fatal(err)
	}
	testSet := []Session{
		{anomaly: true, tokens: [][]byte{[]byte("open"), []byte("read")}},
		{tokens: [][]byte{[]byte("open"), []byte("read"), []byte("close")}},
		{tokens: [][]byte{[]byte("open"), []byte("write"), []byte("read"), []byte("close")}},
	}
	for _, c := range []struct {
		end    string
		tp, fp int
	}{{DefaultEndToken, 1, 0}, {"", 0, 0}} {
		res, err := RunSequences(context.Background(), trainSet, testSet, true, 0.6, c.end)
		if err != nil {
			t.Fatal(err)
		}
		if res.TP != c.tp || res.FP != c.fp || res.EndToken != c.end {
			t.Errorf("end token %q: tp=%d fp=%d (reasons %v, end %q); want tp=%d fp=%d", c.end, res.TP, res.FP, res.Reasons, res.EndToken, c.tp, c.fp)
		}
	}
}
