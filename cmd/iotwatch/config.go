package main

// The configuration file of run, replay and demo (--config FILE).
//
// Syntax, one setting per line:
//
//	# a comment (only at the start of a line: values may contain '#')
//	name = value
//
// Every name is the long name of a flag of 'iotwatch run', so --help documents
// every key; the value is what the flag takes, without quotes, spaces around it
// trimmed. A key may appear once, except the list keys (listKeys), whose
// repeated values are joined with commas. Precedence: built-in default <
// config file < command line. Keys of 'iotwatch run' that a command lacks (the
// connection flags in replay and demo) are accepted and ignored, so that one
// file serves the live pipeline and its backtests. Secret keys take only
// file: or env: references, and a URL or DSN must not carry credentials.

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/iotwatch/iotwatch/internal/secrets"
	"github.com/iotwatch/iotwatch/pipeline/bus"
)

const (
	// The servers 'iotwatch run' connects to by default.
	defaultNATS       = "nats://127.0.0.1:4222"
	defaultClickHouse = "clickhouse://127.0.0.1:9000/default"

	configFlag      = "config"
	printConfigFlag = "print-config"
	// maxConfigLine bounds one line of a config file.
	maxConfigLine = 64 << 10
)

// errConfigPrinted ends a command after --print-config; it wraps flag.ErrHelp
// so that the command exits with status 0.
var errConfigPrinted = fmt.Errorf("configuration printed: %w", flag.ErrHelp)

// listKeys are the comma-separated list flags, which a file may repeat.
var listKeys = map[string]bool{"nats": true, "detectors": true, "allowlist": true}

// configSchema is the flag set of 'iotwatch run' with its defaults: the keys a
// config file may hold.
var configSchema = sync.OnceValue(func() *flag.FlagSet {
	_, fs := newRunFlags()
	return fs
})

// newRunFlags returns options bound to a flag set with the flags and defaults
// of 'iotwatch run'.
func newRunFlags() (*options, *flag.FlagSet) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	o := &options{}
	o.register(fs, defaultNATS, defaultClickHouse)
	o.conn.register(fs)
	return o, fs
}

// isConfigKey reports whether name is a key of the config file (every flag of
// run but --config and --print-config themselves).
func isConfigKey(name string) bool {
	return name != configFlag && name != printConfigFlag && configSchema().Lookup(name) != nil
}

// isSecretKey reports whether the flag holds a secret: connflags.go documents
// exactly those as taking a reference (secretRefHelp).
func isSecretKey(f *flag.Flag) bool { return strings.HasSuffix(f.Usage, secretRefHelp) }

// configSource records where a config file's settings came from.
type configSource struct {
	path string
	// lines holds the line of each key the file set and the command line did
	// not override, so a semantic error about it names the line.
	lines map[string]int
}

// loadConfig applies --config to the flags the command line did not set.
func (o *options) loadConfig() error {
	if o.configFile == "" {
		return nil
	}
	f, err := os.Open(o.configFile)
	if err != nil {
		return fmt.Errorf("cannot load config: %w", err) // the error names the file
	}
	defer f.Close()
	o.src, err = applyConfig(o.fs, o.configFile, f)
	return err
}

// setting is one key of a config file.
type setting struct {
	key, value string
	line       int
}

// parseConfig reads a config file. Errors name the file and the line, and the
// field when there is one; they never quote a secret key's value.
func parseConfig(path string, r io.Reader) ([]setting, error) {
	fail := func(line int, field, format string, args ...any) ([]setting, error) {
		msg := fmt.Sprintf(format, args...)
		if field != "" {
			return nil, fmt.Errorf("cannot load config %q: line %d: field %q: %s", path, line, field, msg)
		}
		return nil, fmt.Errorf("cannot load config %q: line %d: %s", path, line, msg)
	}
	var out []setting
	first := map[string]int{} // key -> index in out
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxConfigLine)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return fail(n, "", "want \"name = value\" or a # comment")
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch {
		case key == "":
			return fail(n, "", "no name before \"=\"")
		case key == configFlag || key == printConfigFlag:
			return fail(n, key, "can only be given on the command line")
		case !isConfigKey(key):
			return fail(n, key, "unknown key (keys are the flags of 'iotwatch run' without dashes; see --help)")
		}
		f := configSchema().Lookup(key)
		if isSecretKey(f) && secrets.IsLiteral(value) {
			return fail(n, key, "must be a reference, %sPATH or %sNAME, never the secret itself", secrets.FilePrefix, secrets.EnvPrefix)
		}
		if err := credentialsInURL(key, value); err != nil {
			return fail(n, key, "%v", err)
		}
		if i, dup := first[key]; dup {
			if !listKeys[key] {
				return fail(n, key, "set again (first on line %d); only list keys may repeat", out[i].line)
			}
			out[i].value += "," + value
			continue
		}
		first[key] = len(out)
		out = append(out, setting{key: key, value: value, line: n})
	}
	if err := sc.Err(); err != nil {
		return fail(n+1, "", "%v", err) // a line too long
	}
	return out, nil
}

// credentialsInURL rejects a NATS URL or ClickHouse DSN that carries a user's
// credentials: a file is read by more people than a secret should be.
func credentialsInURL(key, value string) error {
	var urls []string
	switch key {
	case "nats":
		urls = strings.Split(value, ",")
	case "clickhouse":
		urls = []string{value}
	default:
		return nil
	}
	for _, u := range urls {
		p, err := neturl.Parse(strings.TrimSpace(u))
		if err != nil {
			continue // the connection reports a malformed URL, naming the flag
		}
		_, pw := p.User.Password()
		if pw || (key == "nats" && p.User != nil) || p.Query().Has("password") {
			return errors.New("credentials are not allowed in a config file's URL: use the user, password and token keys with file: or env: references")
		}
	}
	return nil
}

// applyConfig sets the flags of fs from the config file read from r, except
// those set on the command line; their file values are still checked. Keys of
// 'iotwatch run' that fs lacks are ignored.
func applyConfig(fs *flag.FlagSet, path string, r io.Reader) (*configSource, error) {
	settings, err := parseConfig(path, r)
	if err != nil {
		return nil, err
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	src := &configSource{path: path, lines: map[string]int{}}
	for _, s := range settings {
		f := fs.Lookup(s.key)
		if f == nil {
			continue
		}
		if onCommandLine[s.key] {
			// Check the file's value, then restore the command line's: a
			// standard flag's String parses back to the same value.
			cl := f.Value.String()
			err = f.Value.Set(s.value)
			if rerr := f.Value.Set(cl); rerr != nil {
				panic(fmt.Sprintf("BUG: flag --%s does not parse its own value %q: %v", s.key, cl, rerr))
			}
		} else {
			err = fs.Set(s.key, s.value)
			src.lines[s.key] = s.line
		}
		if err != nil {
			return nil, fmt.Errorf("cannot load config %q: line %d: field %q: invalid value %q: %w", path, s.line, s.key, s.value, err)
		}
	}
	return src, nil
}

// locate names the file and line of a fieldError about a value the file set,
// or about a value compared with one the file set; other errors are returned
// unchanged.
func (s *configSource) locate(err error) error {
	var fe fieldError
	if s == nil || !errors.As(err, &fe) {
		return err
	}
	if line, ok := s.lines[fe.Field]; ok {
		return fmt.Errorf("cannot load config %q: line %d: field %q: %w", s.path, line, fe.Field, fe.Err)
	}
	msg := fe.Err.Error()
	field, line := "", 0
	for k, l := range s.lines {
		if mentionsFlag(msg, k) && (line == 0 || l < line) {
			field, line = k, l
		}
	}
	if line == 0 {
		return err
	}
	return fmt.Errorf("cannot load config %q: line %d: field %q: %w", s.path, line, field, err)
}

// mentionsFlag reports whether text names --name as a whole flag.
func mentionsFlag(text, name string) bool {
	for rest := text; ; {
		i := strings.Index(rest, "--"+name)
		if i < 0 {
			return false
		}
		rest = rest[i+2+len(name):]
		if rest == "" || !(rest[0] == '-' || rest[0] >= 'a' && rest[0] <= 'z') {
			return true
		}
	}
}

// writeConfig writes the config keys of fs with their current values, sorted,
// in config file syntax. Secrets given literally (only possible on the command
// line) and credentials in URLs are redacted.
func writeConfig(w io.Writer, fs *flag.FlagSet) error {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if isConfigKey(f.Name) {
			writeSetting(&b, f.Name, displayValue(f))
		}
	})
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("cannot write the configuration: %w", err)
	}
	return nil
}

func writeSetting(b *strings.Builder, key, value string) {
	b.WriteString(key)
	b.WriteString(" =")
	if value != "" {
		b.WriteByte(' ')
		b.WriteString(value)
	}
	b.WriteByte('\n')
}

// displayValue is f's value safe to print.
func displayValue(f *flag.Flag) string {
	v := f.Value.String()
	switch {
	case isSecretKey(f) && secrets.IsLiteral(v):
		return secrets.Mask
	case f.Name == "nats" && credentialsInURL(f.Name, v) != nil:
		return bus.RedactURL(v)
	case f.Name == "clickhouse" && credentialsInURL(f.Name, v) != nil:
		return redactDSN(v)
	}
	return v
}

// exampleConfigHeader opens deploy/iotwatch.conf.example.
const exampleConfigHeader = `# iotwatch configuration file: iotwatch run|replay|demo --config FILE
#
# Generated from the flags of 'iotwatch run' by
#   go test ./cmd/iotwatch/ -run TestExampleConfigIsCurrent -update
# (a test fails when it is stale). Every key below is commented out and shows
# its built-in default; uncomment and change what you need.
#
# Syntax: one "name = value" per line; a line starting with # is a comment
# (values may contain #); blank lines are ignored; no quotes. Every name is a
# flag of 'iotwatch run' (see 'iotwatch run --help'). Only list keys may
# repeat; their values are joined with commas. List keys:
#   %s
# A flag given on the command line overrides the file, which overrides the
# default. replay and demo ignore the connection keys; their own flags
# (replay --format, demo --devices, ...) are command-line only.
#
# Secret keys take only a reference: file:/run/secrets/NAME (a file readable
# by the service user alone) or env:NAME, never the secret. Secret keys:
#   %s
# URLs and DSNs must not carry credentials here. 'iotwatch run --config FILE
# --print-config' checks a file and prints the effective configuration.
`

// writeExampleConfig writes the documented example config: every key with its
// usage and default, commented out.
func writeExampleConfig(w io.Writer) error {
	var lists, secretKeys []string
	for k := range listKeys {
		lists = append(lists, k)
	}
	slices.Sort(lists)
	configSchema().VisitAll(func(f *flag.Flag) {
		if isSecretKey(f) {
			secretKeys = append(secretKeys, f.Name)
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, exampleConfigHeader, strings.Join(lists, ", "), strings.Join(secretKeys, ", "))
	configSchema().VisitAll(func(f *flag.Flag) {
		if !isConfigKey(f.Name) {
			return
		}
		b.WriteByte('\n')
		for _, l := range wrapWords(f.Usage, 76) {
			b.WriteString("# ")
			b.WriteString(l)
			b.WriteByte('\n')
		}
		b.WriteByte('#')
		writeSetting(&b, f.Name, f.DefValue)
	})
	_, err := io.WriteString(w, b.String())
	return err
}

// wrapWords splits text into lines of at most width bytes, breaking at spaces
// (a longer word gets a line of its own).
func wrapWords(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
