// Package evaltest holds fixtures shared by the tests of internal/eval and of
// the commands that drive it.
package evaltest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// WriteSequences writes a tiny synthetic train/test pair. Normal sessions
// follow three scripts; the test file adds one anomaly with a token never seen
// in training (panic) and one with known tokens in an order never seen
// (open then close).
func WriteSequences(t testing.TB) (train, test string) {
	t.Helper()
	scripts := []string{"open read read close", "open read close", "open write read close"}
	var tr, te strings.Builder
	for i := range 150 {
		tr.WriteString("Normal\t" + scripts[i%len(scripts)] + "\n")
	}
	tr.WriteString("Anomaly\topen read panic close\n") // semi-supervised training skips it
	for i := range 30 {
		te.WriteString("normal\t" + scripts[i%len(scripts)] + "\r\n") // any case, CRLF
	}
	te.WriteString("Anomaly\topen read panic close\n")
	te.WriteString("Anomaly\topen close\n")
	te.WriteString("\n")
	dir := t.TempDir()
	train, test = filepath.Join(dir, "train.tsv"), filepath.Join(dir, "test.tsv")
	if err := os.WriteFile(train, []byte(tr.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(test, []byte(te.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return train, test
}
