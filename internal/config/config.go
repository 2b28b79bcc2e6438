// Package config reads the configuration files of iotwatch's commands
// (--config FILE) into a flag.FlagSet.
//
// Syntax, one setting per line:
//
//	# a comment (only at the start of a line: values may contain '#')
//	name = value
//
// Every name is the long name of a flag of the Schema's flag set, so --help
// documents every key; the value is what the flag takes, without quotes,
// spaces around it trimmed. A key may appear once, except the list keys
// (Schema.Lists), whose repeated values are joined with commas. Precedence:
// built-in default < config file < command line. Keys of the schema that a
// command's own flag set lacks are accepted and ignored, so that one file
// serves several commands. Secret keys (Schema.Secret) take only file: or
// env: references; Schema.Check may reject other values (a URL carrying
// credentials, say).
package config

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/iotwatch/iotwatch/internal/secrets"
)

const (
	// Flag is the flag that names the config file, and PrintFlag the flag
	// that prints the effective configuration; neither is a key.
	Flag      = "config"
	PrintFlag = "print-config"
	// maxConfigLine bounds one line of a config file.
	maxConfigLine = 64 << 10
)

// UsageError marks an error in flags or configuration: the command was used
// wrongly (iotwatch exits with status 2).
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// FieldError is an invalid setting. Field is the flag's name, which is also
// its config key; Err says what is wrong with the value.
type FieldError struct {
	Field string
	Err   error
}

func (e FieldError) Error() string { return fmt.Sprintf("cannot use --%s: %v", e.Field, e.Err) }
func (e FieldError) Unwrap() error { return e.Err }

// BadField returns a FieldError about field with a formatted message.
func BadField(field, format string, args ...any) error {
	return FieldError{field, fmt.Errorf(format, args...)}
}

// Schema is what a config file may hold.
type Schema struct {
	// Flags holds the keys (every flag but Flag and PrintFlag) with their
	// defaults and usage. The loader only looks flags up in it.
	Flags *flag.FlagSet
	// Lists are the comma-separated list keys, which a file may repeat.
	Lists map[string]bool
	// Secret reports whether a key holds a secret: its value in a file must
	// be a reference (file: or env:), and it is printed redacted when literal.
	// Nil: no key is secret.
	Secret func(*flag.Flag) bool
	// Check, if not nil, rejects a value a file must not hold; its error is
	// reported with the file, line and key. It must not quote secrets.
	Check func(key, value string) error
	// Display, if not nil, returns a flag's value safe to print (a URL's
	// credentials redacted); literal secrets are redacted before it is asked.
	Display func(*flag.Flag) string
}

// IsKey reports whether name is a key of the config file (every flag of the
// schema but Flag and PrintFlag themselves).
func (s *Schema) IsKey(name string) bool {
	return name != Flag && name != PrintFlag && s.Flags.Lookup(name) != nil
}

func (s *Schema) isSecret(f *flag.Flag) bool { return s.Secret != nil && s.Secret(f) }

// Source records where a config file's settings came from.
type Source struct {
	path string
	// lines holds the line of each key the file set and the command line did
	// not override, so a semantic error about it names the line.
	lines map[string]int
}

// Setting is one key of a config file: its value and its line.
type Setting struct {
	Key, Value string
	Line       int
}

// Parse reads a config file; a list key's repeated values come joined with
// commas, on its first line. Errors name the file and the line, and the field
// when there is one; they never quote a secret key's value.
func (s *Schema) Parse(path string, r io.Reader) ([]Setting, error) {
	fail := func(line int, field, format string, args ...any) ([]Setting, error) {
		msg := fmt.Sprintf(format, args...)
		if field != "" {
			return nil, fmt.Errorf("cannot load config %q: line %d: field %q: %s", path, line, field, msg)
		}
		return nil, fmt.Errorf("cannot load config %q: line %d: %s", path, line, msg)
	}
	var out []Setting
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
		case key == Flag || key == PrintFlag:
			return fail(n, key, "can only be given on the command line")
		case !s.IsKey(key):
			return fail(n, key, "unknown key (keys are the flags of 'iotwatch run' without dashes; see --help)")
		}
		f := s.Flags.Lookup(key)
		if s.isSecret(f) && secrets.IsLiteral(value) {
			return fail(n, key, "must be a reference, %sPATH or %sNAME, never the secret itself", secrets.FilePrefix, secrets.EnvPrefix)
		}
		if s.Check != nil {
			if err := s.Check(key, value); err != nil {
				return fail(n, key, "%v", err)
			}
		}
		if i, dup := first[key]; dup {
			if !s.Lists[key] {
				return fail(n, key, "set again (first on line %d); only list keys may repeat", out[i].Line)
			}
			out[i].Value += "," + value
			continue
		}
		first[key] = len(out)
		out = append(out, Setting{Key: key, Value: value, Line: n})
	}
	if err := sc.Err(); err != nil {
		return fail(n+1, "", "%v", err) // a line too long
	}
	return out, nil
}

// Load opens the config file at path and applies it to fs (Apply).
func (s *Schema) Load(fs *flag.FlagSet, path string) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot load config: %w", err) // the error names the file
	}
	defer f.Close()
	return s.Apply(fs, path, f)
}

// Apply sets the flags of fs from the config file read from r, except those
// set on the command line; their file values are still checked. Keys of the
// schema that fs lacks are ignored. The Source it returns locates later
// errors about the values it set.
func (s *Schema) Apply(fs *flag.FlagSet, path string, r io.Reader) (*Source, error) {
	settings, err := s.Parse(path, r)
	if err != nil {
		return nil, err
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	src := &Source{path: path, lines: map[string]int{}}
	for _, set := range settings {
		f := fs.Lookup(set.Key)
		if f == nil {
			continue
		}
		if onCommandLine[set.Key] {
			// Check the file's value, then restore the command line's: a
			// standard flag's String parses back to the same value.
			cl := f.Value.String()
			err = f.Value.Set(set.Value)
			if rerr := f.Value.Set(cl); rerr != nil {
				panic(fmt.Sprintf("BUG: flag --%s does not parse its own value %q: %v", set.Key, cl, rerr))
			}
		} else {
			err = fs.Set(set.Key, set.Value)
			src.lines[set.Key] = set.Line
		}
		if err != nil {
			return nil, fmt.Errorf("cannot load config %q: line %d: field %q: invalid value %q: %w", path, set.Line, set.Key, set.Value, err)
		}
	}
	return src, nil
}

// Locate names the file and line of a FieldError about a value the file set,
// or about a value compared with one the file set (its message names the
// other flag, --name); other errors, and every error with a nil Source, are
// returned unchanged.
func (s *Source) Locate(err error) error {
	var fe FieldError
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

// Write writes the config keys of fs with their current values, sorted, in
// config file syntax. Secrets given literally (only possible on the command
// line) are redacted, and so is what Display redacts.
func (s *Schema) Write(w io.Writer, fs *flag.FlagSet) error {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if s.IsKey(f.Name) {
			writeSetting(&b, f.Name, s.display(f))
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

// display is f's value safe to print.
func (s *Schema) display(f *flag.Flag) string {
	v := f.Value.String()
	switch {
	case s.isSecret(f) && secrets.IsLiteral(v):
		return secrets.Mask
	case s.Display != nil:
		return s.Display(f)
	}
	return v
}

// WriteExample writes a documented example config: header, then every key
// with its usage and default, commented out. header is a format whose two
// verbs (%s) are given the list keys and the secret keys, comma-separated.
func (s *Schema) WriteExample(w io.Writer, header string) error {
	var lists, secretKeys []string
	for k := range s.Lists {
		lists = append(lists, k)
	}
	slices.Sort(lists)
	s.Flags.VisitAll(func(f *flag.Flag) {
		if s.isSecret(f) {
			secretKeys = append(secretKeys, f.Name)
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, header, strings.Join(lists, ", "), strings.Join(secretKeys, ", "))
	s.Flags.VisitAll(func(f *flag.Flag) {
		if !s.IsKey(f.Name) {
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
