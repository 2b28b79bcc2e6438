// Package secrets resolves secret references (a password, a token) from files
// or environment variables, and redacts known secret values from text and logs.
//
// A secret given literally on a command line is visible to every local user in
// ps and /proc/<pid>/cmdline, and often ends up in shell history and process
// supervisors' logs: prefer "file:" (a file readable only by the service user,
// such as a Kubernetes or systemd credential) or "env:".
package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Prefixes of a secret reference.
const (
	FilePrefix = "file:"
	EnvPrefix  = "env:"
)

// Mask replaces a secret in redacted text.
const Mask = "[REDACTED]"

// Value resolves a secret reference:
//
//   - "file:/path" is the content of the file, without trailing CR/LF;
//   - "env:NAME" is the value of the environment variable NAME;
//   - anything else is the secret itself (a literal; discouraged on command
//     lines, see the package documentation).
//
// An empty ref resolves to "" without error (no secret). A file or variable that
// is missing or empty is an error. Errors name the file or the variable, never
// the secret.
func Value(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, FilePrefix):
		path := ref[len(FilePrefix):]
		if path == "" {
			return "", errors.New("cannot read secret: empty file name after \"file:\"")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is already in the message
			}
			return "", fmt.Errorf("cannot read secret file %q: %w", path, err)
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return "", fmt.Errorf("cannot use secret file %q: it is empty", path)
		}
		return s, nil
	case strings.HasPrefix(ref, EnvPrefix):
		name := ref[len(EnvPrefix):]
		if name == "" {
			return "", errors.New("cannot read secret: empty variable name after \"env:\"")
		}
		s, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("cannot read secret from environment variable %q: it is not set", name)
		}
		if s == "" {
			return "", fmt.Errorf("cannot use secret from environment variable %q: it is empty", name)
		}
		return s, nil
	default:
		return ref, nil
	}
}

// IsLiteral reports whether ref is a non-empty literal secret rather than a
// "file:" or "env:" reference, so that callers can warn about it.
func IsLiteral(ref string) bool {
	return ref != "" && !strings.HasPrefix(ref, FilePrefix) && !strings.HasPrefix(ref, EnvPrefix)
}

// Redact returns s with every occurrence of each non-empty secret replaced by
// Mask. Longer secrets are replaced first, so a secret that contains another is
// masked whole.
func Redact(s string, secrets ...string) string {
	for _, sec := range sortedByLength(secrets) {
		s = strings.ReplaceAll(s, sec, Mask)
	}
	return s
}

// sortedByLength returns the non-empty secrets, longest first, without duplicates.
func sortedByLength(secrets []string) []string {
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if s == "" {
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o == s
		}
		if !dup {
			out = append(out, s)
		}
	}
	for i := 1; i < len(out); i++ { // insertion sort: a handful of secrets
		for j := i; j > 0 && len(out[j]) > len(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// NewHandler returns a slog.Handler that passes records to next with every
// occurrence of the given secrets masked in the message and in attribute values
// (strings, errors, fmt.Stringers and anything else formatted with %v, including
// attributes added by WithAttrs and inside groups). With no non-empty secret it
// returns next itself.
//
// It is a safety net for text that may quote a secret (an error from a library,
// a URL with credentials): code must still not log secrets on purpose.
func NewHandler(next slog.Handler, secrets ...string) slog.Handler {
	s := sortedByLength(secrets)
	if len(s) == 0 {
		return next
	}
	return &handler{next: next, secrets: s}
}

type handler struct {
	next    slog.Handler
	secrets []string
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &handler{next: h.next.WithAttrs(red), secrets: h.secrets}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), secrets: h.secrets}
}

func (h *handler) redact(s string) string {
	for _, sec := range h.secrets {
		s = strings.ReplaceAll(s, sec, Mask)
	}
	return s
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = h.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		if v.Any() == nil {
			return a
		}
		return slog.String(a.Key, h.redact(fmt.Sprint(v.Any())))
	default: // numbers, bools, times, durations hold no secret text
		return slog.Attr{Key: a.Key, Value: v}
	}
}
