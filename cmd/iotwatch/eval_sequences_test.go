package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/internal/eval"
	"github.com/iotwatch/iotwatch/internal/eval/evaltest"
)

func TestEvalSequencesOutput(t *testing.T) {
	train, test := evaltest.WriteSequences(t)
	var out bytes.Buffer
	if err := evalCmd(context.Background(), []string{"sequences", "--train", train, "--test", test}, &out); err != nil {
		t.Fatal(err)
	}
	text := strings.TrimRight(out.String(), "\n")
	if !strings.Contains(text, "semi-supervised") || !strings.Contains(text, "0.60 (decide's alert threshold)") {
		t.Errorf("output does not state the labels used and the threshold:\n%s", text)
	}
	lines := strings.Split(text, "\n")
	if last := lines[len(lines)-1]; !regexp.MustCompile(`^precision=1\.0000 recall=1\.0000 f1=1\.0000$`).MatchString(last) {
		t.Errorf("last line %q; want precision=1.0000 recall=1.0000 f1=1.0000", last)
	}

	out.Reset()
	if err := evalCmd(context.Background(), []string{"sequences", "--train", train, "--test", test, "--json", "--unsupervised"}, &out); err != nil {
		t.Fatal(err)
	}
	var res eval.SequencesResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out.String())
	}
	if res.Mode != "unsupervised" || res.UsedLabels || res.TestSessions != 32 || res.TP != 1 || res.Recall != 0.5 || res.Precision != 1 {
		t.Errorf("--json --unsupervised gave %+v; want unsupervised, 32 test sessions, tp=1, recall 0.5, precision 1", res)
	}
}

func TestEvalSequencesErrors(t *testing.T) {
	train, _ := evaltest.WriteSequences(t)
	bad := filepath.Join(t.TempDir(), "bad.tsv")
	if err := os.WriteFile(bad, []byte("Normal\ta b\nweird\tc d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := evalCmd(context.Background(), []string{"sequences", "--train", train}, &out)
	if !errors.As(err, new(usageError)) {
		t.Errorf("without --test: error %v; want a usage error", err)
	}
	err = evalCmd(context.Background(), []string{"sequences", "--train", train, "--test", bad}, &out)
	if err == nil || !strings.Contains(err.Error(), `line 2: label "weird"`) {
		t.Errorf("bad label: error %v; want it to name line 2 and the label", err)
	}
}
