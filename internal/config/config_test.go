package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

const secretSuffix = " (a secret)"

// testFlags is a small command's flags; values holds what they parse into.
type testFlags struct {
	workers  int
	name     string
	hosts    string
	password string
	url      string
	dryRun   bool
	wait     time.Duration
}

func newTestFlags() (*testFlags, *flag.FlagSet) {
	v := &testFlags{}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	fs.String(Flag, "", "config file")
	fs.Bool(PrintFlag, false, "print the configuration")
	fs.IntVar(&v.workers, "workers", 2, "worker goroutines")
	fs.StringVar(&v.name, "name", "iotwatch", "a name")
	fs.StringVar(&v.hosts, "hosts", "", "hosts, comma-separated")
	fs.StringVar(&v.password, "password", "", "a password"+secretSuffix)
	fs.StringVar(&v.url, "url", "", "a URL without credentials")
	fs.BoolVar(&v.dryRun, "dry-run", false, "change nothing")
	fs.DurationVar(&v.wait, "wait", time.Second, "how long to wait")
	return v, fs
}

func testSchema() *Schema {
	_, fs := newTestFlags()
	return &Schema{
		Flags:  fs,
		Lists:  map[string]bool{"hosts": true},
		Secret: func(f *flag.Flag) bool { return strings.HasSuffix(f.Usage, secretSuffix) },
		Check: func(key, value string) error {
			if key == "url" && strings.Contains(value, "@") {
				return errors.New("credentials are not allowed in a config file's URL")
			}
			return nil
		},
		Display: func(f *flag.Flag) string {
			if f.Name == "url" && strings.Contains(f.Value.String(), "@") {
				return "redacted-url"
			}
			return f.Value.String()
		},
	}
}

func TestParseErrorsNameLineAndField(t *testing.T) {
	s := testSchema()
	f := func(text, want string) {
		t.Helper()
		_, err := s.Parse("t.conf", strings.NewReader("# test\nworkers = 3\n"+text+"\n"))
		if err == nil || !strings.Contains(err.Error(), `cannot load config "t.conf": `+want) {
			t.Errorf("%q: error %v, want it to contain %q", text, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error quotes a secret: %v", text, err)
		}
	}
	f("workers 3", "line 3: want")
	f("= 3", "line 3: no name")
	f("workerz = 3", `line 3: field "workerz": unknown key`)
	f("config = other.conf", `line 3: field "config": can only be given on the command line`)
	f("print-config = true", `line 3: field "print-config": can only be given on the command line`)
	f("workers = 4", `line 3: field "workers": set again (first on line 2)`)
	f("password = hunter2", `line 3: field "password": must be a reference`)
	f("url = http://u:hunter2@h", `line 3: field "url": credentials are not allowed`)
	f(strings.Repeat("x", maxConfigLine+1), "line 3: ")
}

func TestParseJoinsListKeys(t *testing.T) {
	settings, err := testSchema().Parse("t.conf", strings.NewReader("hosts = a\n# c\n\nname = x # not a comment\nhosts = b\r\npassword = env:PW\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{{"hosts", "a,b", 1}, {"name", "x # not a comment", 4}, {"password", "env:PW", 6}}
	if fmt.Sprint(settings) != fmt.Sprint(want) {
		t.Errorf("settings %v, want %v", settings, want)
	}
}

func TestApplyCommandLineWins(t *testing.T) {
	s := testSchema()
	v, fs := newTestFlags()
	if err := fs.Parse([]string{"--workers", "5"}); err != nil {
		t.Fatal(err)
	}
	src, err := s.Apply(fs, "t.conf", strings.NewReader("workers = 3\nname = from-file\nwait = 1m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v.workers != 5 || v.name != "from-file" || v.wait != time.Minute {
		t.Errorf("workers %d, name %q, wait %v; want 5 (command line), from-file and 1m (file)", v.workers, v.name, v.wait)
	}
	if _, ok := src.lines["workers"]; ok {
		t.Errorf("the command line's --workers is located in the file: %v", src.lines)
	}
	// A file value that does not parse is an error even when the command
	// line overrides it.
	_, fs = newTestFlags()
	if err := fs.Parse([]string{"--dry-run"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Apply(fs, "t.conf", strings.NewReader("\ndry-run = perhaps\n"))
	if err == nil || !strings.Contains(err.Error(), `line 2: field "dry-run": invalid value "perhaps"`) {
		t.Errorf("error %v, want one naming line 2 and dry-run", err)
	}
	// Keys of the schema that the command lacks are ignored.
	small := flag.NewFlagSet("small", flag.ContinueOnError)
	small.Int("workers", 1, "")
	if _, err := s.Apply(small, "t.conf", strings.NewReader("password = env:X\nworkers = 4\n")); err != nil {
		t.Errorf("a key the command lacks: %v", err)
	}
}

func TestLocate(t *testing.T) {
	s := testSchema()
	_, fs := newTestFlags()
	src, err := s.Apply(fs, "t.conf", strings.NewReader("name = x\n\nwait = 1m\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := func(err error, want string) {
		t.Helper()
		if got := src.Locate(err).Error(); got != want {
			t.Errorf("Locate(%v) = %q, want %q", err, got, want)
		}
	}
	f(BadField("wait", "%v must be > 0", -1), `cannot load config "t.conf": line 3: field "wait": -1 must be > 0`)
	// About a flag the file did not set, compared with one it did.
	f(BadField("workers", "must be below --wait"), `cannot load config "t.conf": line 3: field "wait": cannot use --workers: must be below --wait`)
	// --wait-long is not --wait.
	f(BadField("workers", "must be below --wait-long"), "cannot use --workers: must be below --wait-long")
	f(errors.New("not a field"), "not a field")
	if got := (*Source)(nil).Locate(BadField("wait", "bad")).Error(); got != "cannot use --wait: bad" {
		t.Errorf("nil Source: %q", got)
	}
}

func TestWriteRedactsAndReloads(t *testing.T) {
	s := testSchema()
	_, fs := newTestFlags()
	if err := fs.Parse([]string{"--password", "hunter2", "--url", "http://u:pw@h", "--hosts", "a,b"}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := s.Write(&out, fs); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if strings.Contains(text, "hunter2") || !strings.Contains(text, "\npassword = [REDACTED]\n") || !strings.Contains(text, "\nurl = redacted-url\n") {
		t.Errorf("secrets not redacted:\n%s", text)
	}
	if strings.Contains(text, Flag+" =") || strings.Contains(text, PrintFlag+" =") {
		t.Errorf("--config or --print-config written as a key:\n%s", text)
	}
	if !strings.HasPrefix(text, "dry-run = false\nhosts = a,b\n") {
		t.Errorf("keys not sorted or values wrong:\n%s", text)
	}
}

func TestWriteExample(t *testing.T) {
	s := testSchema()
	var out bytes.Buffer
	if err := s.WriteExample(&out, "# lists: %s\n# secrets: %s\n"); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !strings.HasPrefix(text, "# lists: hosts\n# secrets: password\n") {
		t.Errorf("header:\n%s", text)
	}
	if !strings.Contains(text, "\n# worker goroutines\n#workers = 2\n") || !strings.Contains(text, "\n# a name\n#name = iotwatch\n") {
		t.Errorf("keys not documented with usage and default:\n%s", text)
	}
	// Uncommented, the example loads as the defaults.
	uncommented := regexp.MustCompile(`(?m)^#([a-z][a-z0-9-]* =)`).ReplaceAllString(text, "$1")
	v, fs := newTestFlags()
	if _, err := s.Apply(fs, "example.conf", strings.NewReader(uncommented)); err != nil {
		t.Fatalf("the example does not load: %v\n%s", err, uncommented)
	}
	if v.workers != 2 || v.name != "iotwatch" || v.wait != time.Second {
		t.Errorf("the example's values are not the defaults: %+v", v)
	}
}

func TestWrapWords(t *testing.T) {
	for _, c := range []struct {
		text  string
		width int
		want  []string
	}{
		{"", 10, nil},
		{"a b c", 3, []string{"a b", "c"}},
		{"short averyveryverylongword x", 8, []string{"short", "averyveryverylongword", "x"}},
	} {
		if got := wrapWords(c.text, c.width); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("wrapWords(%q, %d) = %q, want %q", c.text, c.width, got, c.want)
		}
	}
}

// FuzzApply: loading never panics, every error names a line or a field, and a
// configuration written and loaded again writes the same.
func FuzzApply(f *testing.F) {
	for _, s := range []string{
		"workers = 3\nname = x\n", "hosts = a\nhosts = b\n", "password = env:PW\n", "password = hunter2\n",
		"url = http://u:p@h\n", "dry-run = perhaps\n", "# c\n\nwait = 1m\r\n", "workers 3\n", "= 1\n", "config = x\n",
	} {
		f.Add([]byte(s))
	}
	s := testSchema()
	named := regexp.MustCompile(`line \d+`)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, fs := newTestFlags()
		if _, err := s.Apply(fs, "fuzz.conf", bytes.NewReader(data)); err != nil {
			if !named.MatchString(err.Error()) {
				t.Fatalf("error names no line: %v", err)
			}
			return
		}
		var first bytes.Buffer
		if err := s.Write(&first, fs); err != nil {
			t.Fatal(err)
		}
		_, fs2 := newTestFlags()
		if _, err := s.Apply(fs2, "written.conf", bytes.NewReader(first.Bytes())); err != nil {
			t.Fatalf("the written configuration does not load: %v\n%s", err, first.String())
		}
		var second bytes.Buffer
		if err := s.Write(&second, fs2); err != nil {
			t.Fatal(err)
		}
		if first.String() != second.String() {
			t.Fatalf("written and reloaded, the configuration changes:\n%s\n---\n%s", first.String(), second.String())
		}
	})
}
