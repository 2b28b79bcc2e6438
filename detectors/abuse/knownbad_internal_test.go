package abuse

import (
	"strings"
	"testing"
)

// knownBadNaive is the definition KnownBad implements: some entry of
// knownBad is a substring of the first 256 bytes of b, ASCII case ignored.
func knownBadNaive(b []byte) bool {
	low := []byte(string(b[:min(len(b), 256)]))
	for i, c := range low {
		if c >= 'A' && c <= 'Z' {
			low[i] = c + 'a' - 'A'
		}
	}
	for _, s := range knownBad {
		if strings.Contains(string(low), string(s)) {
			return true
		}
	}
	return false
}

var knownBadSeeds = []string{
	"", "/", "GET /v1/devices/{id}/telemetry", "/static/js/app.1f3a9c2e.js", "/WP-LOGIN.php", "/a/..%2F..%2Fetc/passwd",
	"dev-000042", "sn-8f3a9c2e", "/cgi-bin/luci", "/index.php?x=php://input", "/x/%27%20OR%201=1", "/search/union+select",
	"/.ENV", "/.envelope", "/api/sleep(5)", "phpmyadmi", "/hnap", "/hnap1/", strings.Repeat("a", 255) + "/.env",
	strings.Repeat("a", 252) + "/.env", "/ünïcode/../x", "xmlrpc.ph", "eval-stdin.php",
}

func TestKnownBadIsItsDefinition(t *testing.T) {
	for _, s := range knownBadSeeds {
		if got, want := KnownBad([]byte(s)), knownBadNaive([]byte(s)); got != want {
			t.Errorf("KnownBad(%q) = %v, want %v", s, got, want)
		}
	}
	for _, s := range knownBad {
		if !KnownBad([]byte("/x/" + strings.ToUpper(string(s)) + "/y")) {
			t.Errorf("KnownBad misses entry %q in upper case", s)
		}
	}
}

func FuzzKnownBad(f *testing.F) {
	for _, s := range knownBadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := KnownBad(b), knownBadNaive(b); got != want {
			t.Fatalf("KnownBad(%q) = %v, want %v", b, got, want)
		}
	})
}

// BenchmarkKnownBad: the search itself, without the memo, on what it sees
// most: a device identifier (unique per device, so the memo misses on large
// fleets), a normalized command, and a probe.
func BenchmarkKnownBad(b *testing.B) {
	for _, c := range []struct{ name, in string }{
		{"identifier", "dev-000042-8f3a9c2e"},
		{"command", "GET /v1/devices/{id}/telemetry"},
		{"probe", "GET /wp-login.php"},
	} {
		b.Run(c.name, func(b *testing.B) {
			in := []byte(c.in)
			b.ReportAllocs()
			for b.Loop() {
				KnownBad(in)
			}
		})
	}
}
