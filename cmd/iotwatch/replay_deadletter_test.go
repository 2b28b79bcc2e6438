package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestReplayNothingDecoded: a file of which no record decodes (here NGINX
// combined lines replayed as canonical JSON) exits 1 and says how many records
// were dead-lettered and why; one decodable line among them is a success.
func TestReplayNothingDecoded(t *testing.T) {
	dir := t.TempDir()
	nginx := `203.0.113.7 - - [05/Jan/2026:10:00:00 +0000] "POST /v1/devices/lock-1/unlock HTTP/1.1" 200 12 "-" "fw/1.2"` + "\n"
	in := filepath.Join(dir, "access.log")
	if err := os.WriteFile(in, []byte(strings.Repeat(nginx, 5)+"{\"ts\":\"not a time\",\"device\":\"d-1\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := mainExit([]string{"replay", "--out", filepath.Join(dir, "out.jsonl"), in}, &stdout, &stderr)
	msg := stderr.String()
	if code != 1 || !strings.Contains(msg, "none of its 6 records decoded") ||
		!strings.Contains(msg, schemas.DeadLetterNotObject+" 5") || !strings.Contains(msg, schemas.DeadLetterBadTimestamp+" 1") {
		t.Errorf("replay of undecodable records: exit %d, stderr %q; want 1 and the count with the top reasons", code, msg)
	}

	good := `{"ts":"2026-01-05T10:00:00Z","device":"d-1","method":"GET","path":"/v1/status","status":200}` + "\n"
	if err := os.WriteFile(in, []byte(nginx+good), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := mainExit([]string{"replay", "--out", filepath.Join(dir, "out.jsonl"), in}, &stdout, &stderr); code != 0 {
		t.Errorf("replay with one decodable record: exit %d, stderr %q; want 0", code, stderr.String())
	}
}
