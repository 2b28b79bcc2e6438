package scenario

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// errDetector flags every 5xx response; its state counts events, so evict shows.
type errDetector struct{}

func (errDetector) Observe(ev *schemas.Event, state []byte, _ detectors.Fleet) schemas.Finding {
	state[0]++
	if ev.Status < 500 {
		return schemas.Finding{}
	}
	return schemas.Finding{Detector: "test5xx", Reason: "server_error", Score: 0.5,
		Observed: float64(state[0]), Expected: 1.5, ObservedLabel: schemas.LabelString(string(ev.Country[:]))}
}

func init() {
	detectors.Register(detectors.Spec{Name: "test5xx", Doc: "test", StateSize: 1, Reasons: []string{"server_error"},
		New: func() detectors.Detector { return errDetector{} }})
}

func TestGolden(t *testing.T) {
	RunDir(t, "testdata", "test5xx")
}

// recorder is a testing.TB that collects errors instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

func TestMismatchIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.txt")
	text := "# comment\ndevice d-1 status=500\n----\n\nreplay every=1s count=2\n----\n2 events, no findings\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{TB: t}
	r := RunFile(rec, path, "test5xx")
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "s.txt:5: replay") ||
		!strings.Contains(rec.errs[0], "2 events, 2 findings") {
		t.Fatalf("errors = %q; want one naming line 5 and showing the actual output", rec.errs)
	}
	if r.Seen()["test5xx/server_error"] != 2 {
		t.Fatalf("Seen() = %v; want 2 server_error findings", r.Seen())
	}
}

func TestParseKeepsText(t *testing.T) {
	text := "# c1\n\ndevice a\n----\n\n# c2\nreplay every=1s count=1\n----\nout 1\nout 2\n\n# trailing\n"
	blocks, tail, err := parse("x", text)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 || blocks[0].pre != "# c1\n\n" || blocks[1].pre != "# c2\n" || blocks[1].line != 7 ||
		blocks[1].want != "out 1\nout 2\n" || blocks[0].want != "" || tail != "# trailing\n" {
		t.Fatalf("parse = %+v, tail %q", blocks, tail)
	}
	if _, _, err := parse("x", "device a\nout\n"); err == nil {
		t.Fatalf("parse accepted a block without ----")
	}
}

func TestFormatOffset(t *testing.T) {
	f := func(d time.Duration, want string) {
		t.Helper()
		if got := formatOffset(d); got != want {
			t.Errorf("formatOffset(%v) = %q; want %q", d, got, want)
		}
	}
	f(0, "+0s")
	f(45*time.Second, "+45s")
	f(3*time.Minute+5*time.Second, "+3m05s")
	f(2*time.Hour+5500*time.Millisecond, "+2h00m05.5s")
	f(26*time.Hour+3*time.Minute+4*time.Second, "+1d02h03m04s")
	f(-90*time.Second, "-1m30s")
}

func TestTokenizeAndExpand(t *testing.T) {
	got, err := tokenize(`device d-1  cmd="POST /v1/x y" country=""`)
	if err != nil || strings.Join(got, "|") != "device|d-1|cmd=POST /v1/x y|country=" {
		t.Fatalf("tokenize = %q, %v", got, err)
	}
	if _, err := tokenize(`cmd="open`); err == nil {
		t.Fatalf("tokenize accepted an unterminated quote")
	}
	for _, c := range [][2]string{
		{"GET /d-{i}/s", "GET /d-17/s"}, {"GET /d-{i%5}/{i}", "GET /d-2/17"}, {"GET /{id}", "GET /{id}"},
	} {
		if got := expand(c[0], 17); got != c[1] {
			t.Errorf("expand(%q) = %q; want %q", c[0], got, c[1])
		}
	}
}

func TestParseDuration(t *testing.T) {
	for s, want := range map[string]time.Duration{"90s": 90 * time.Second, "1d": 24 * time.Hour,
		"1d2h": 26 * time.Hour, "250ms": 250 * time.Millisecond} {
		if got, err := parseDuration(s); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := parseDuration("xd"); err == nil {
		t.Errorf("parseDuration(xd) succeeded")
	}
}

func TestExecErrors(t *testing.T) {
	r, err := New("test5xx")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"replay every=1s count=1", "evict", "bogus", "device", "device d status=x",
		"advance", "seed x"} {
		if _, err := r.Exec(line); err == nil {
			t.Errorf("Exec(%q) succeeded; want an error", line)
		}
	}
	if _, err := r.Exec("device d"); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"replay count=1", "replay every=1s count=1 amp=0.5", "replay every=1s count=1 x=1"} {
		if _, err := r.Exec(line); err == nil {
			t.Errorf("Exec(%q) succeeded; want an error", line)
		}
	}
	if _, err := New("nope"); err == nil {
		t.Errorf("New(nope) succeeded")
	}
}

// TestSpread: devices=K and ips=M spread a replay over K device records and
// M addresses counting up from the device's first ip, and say so; ips needs
// an ip to count from.
func TestSpread(t *testing.T) {
	r, err := New("test5xx")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec("device d status=500 ip=192.0.2.254"); err != nil {
		t.Fatal(err)
	}
	out, err := r.Exec("burst every=1s count=6 devices=3 ips=4")
	if err != nil {
		t.Fatal(err)
	}
	// Each device has its own record: the sixth event is d-2's second (one
	// shared record would count 6).
	if !strings.HasPrefix(out, "6 events from 3 devices and 4 addresses, 6 findings\n") ||
		!strings.Contains(out, "t=+6s dev=d-2 test5xx server_error score=0.50 observed=2 ") {
		t.Errorf("output:\n%s\nwant 6 events from 3 devices and 4 addresses, the last d-2's second", out)
	}
	if len(r.Steps()) != 0 {
		t.Errorf("a Runner that is not recording kept %d steps", len(r.Steps()))
	}
	if _, err := r.Exec("device e ip="); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec("burst every=1s count=2 ips=2"); err == nil || !strings.Contains(err.Error(), "ips=N needs") {
		t.Errorf("ips without an ip: error %v", err)
	}
}
