package secrets

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("hunter2-from-file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IOTWATCH_TEST_SECRET", "hunter2-from-env")
	t.Setenv("IOTWATCH_TEST_EMPTY", "")
	ok := func(ref, want string) {
		t.Helper()
		if got, err := Value(ref); err != nil || got != want {
			t.Errorf("Value(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	bad := func(ref, wantInErr string) {
		t.Helper()
		_, err := Value(ref)
		if err == nil || !strings.Contains(err.Error(), wantInErr) {
			t.Errorf("Value(%q) error %v; want one containing %q", ref, err, wantInErr)
		}
	}
	ok("", "")
	ok("literal-pw", "literal-pw")
	ok("file:"+file, "hunter2-from-file")
	ok("env:IOTWATCH_TEST_SECRET", "hunter2-from-env")
	bad("file:"+filepath.Join(dir, "missing"), "no such file")
	bad("file:"+empty, "empty")
	bad("file:", "empty file name")
	bad("env:IOTWATCH_TEST_UNSET_VAR", "not set")
	bad("env:IOTWATCH_TEST_EMPTY", "empty")
	bad("env:", "empty variable name")

	if IsLiteral("") || IsLiteral("file:/x") || IsLiteral("env:X") || !IsLiteral("pw") {
		t.Error("IsLiteral misclassifies a reference")
	}
}

func TestRedact(t *testing.T) {
	got := Redact("user=ab pass=abcd token=abcd", "ab", "abcd", "")
	if want := "user=" + Mask + " pass=" + Mask + " token=" + Mask; got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
}

func TestHandlerMasksSecrets(t *testing.T) {
	const sec = "s3cr3t-value"
	var buf strings.Builder
	log := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), sec)).With("url", "nats://u:"+sec+"@h")
	log.WithGroup("g").Info("dial "+sec, "error", errors.New("bad "+sec), "n", 3,
		slog.Group("inner", "v", sec), "any", []string{sec})
	out := buf.String()
	if strings.Contains(out, sec) {
		t.Fatalf("log holds the secret:\n%s", out)
	}
	if strings.Count(out, Mask) != 5 || !strings.Contains(out, `"n":3`) {
		t.Fatalf("want 5 masks and the number kept:\n%s", out)
	}
	if h := slog.NewJSONHandler(&buf, nil); NewHandler(h, "") != slog.Handler(h) {
		t.Error("NewHandler without secrets does not return the handler itself")
	}
}
