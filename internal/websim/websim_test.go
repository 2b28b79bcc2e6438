package websim

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func run(t *testing.T, cfg Config) ([]byte, []Label) {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out, buf []byte
	var last time.Time
	for {
		line, tt, ok := l.Next(buf[:0])
		if !ok {
			break
		}
		if tt.Before(last) {
			t.Fatalf("line %d at %s before the previous one at %s", l.Emitted(), tt, last)
		}
		last = tt
		buf = line
		out = append(append(out, line...), '\n')
	}
	return out, l.Labels()
}

// TestDeterministic: the same Config gives the same bytes; another seed does not.
func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 3, IPs: 60, Hours: 0.5, AttackIPs: 5}
	a, _ := run(t, cfg)
	b, _ := run(t, cfg)
	if !bytes.Equal(a, b) {
		t.Fatal("two runs of one Config differ")
	}
	cfg.Seed = 4
	if c, _ := run(t, cfg); bytes.Equal(a, c) {
		t.Fatal("two seeds gave the same log")
	}
}

// TestMix: every kind and attack type is present, each attacker made
// requests, and the lines look like NGINX's combined format.
func TestMix(t *testing.T) {
	out, labels := run(t, Config{Seed: 1, IPs: 300, Hours: 1, AttackIPs: 16})
	kinds := map[string]int{}
	for _, l := range labels {
		kinds[l.Kind]++
		if l.Attack != "" && (l.Requests == 0 || l.End.Before(l.Start)) {
			t.Errorf("attacker %s (%s): %d requests from %s to %s", l.IP, l.Attack, l.Requests, l.Start, l.End)
		}
	}
	for _, k := range append(append([]string(nil), BenignKinds...), AttackTypes...) {
		if kinds[k] == 0 {
			t.Errorf("no address of kind %s", k)
		}
	}
	first := string(out[:bytes.IndexByte(out, '\n')])
	if !strings.Contains(first, " - ") || !strings.Contains(first, "/Jan/2026:") || !strings.HasSuffix(first, `"`) {
		t.Errorf("first line %q is not in the combined format", first)
	}
	if testing.Verbose() {
		fmt.Printf("%d lines, %v\n", bytes.Count(out, []byte{'\n'}), kinds)
	}
}
