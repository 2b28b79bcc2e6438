package bus

import (
	"strings"
	"unicode/utf8"

	"github.com/iotwatch/iotwatch/schemas"
)

// maxTokenLen bounds one sanitized subject token; longer input is cut.
const maxTokenLen = 128

// LogSubject returns the subject access logs of the given format (such as
// schemas.FormatJSON) from the given source are published on:
// iotwatch.logs.<format>.<source>, each token sanitized by SubjectToken.
func LogSubject(format, source string) string {
	return schemas.SubjectLogsPrefix + "." + SubjectToken(format) + "." + SubjectToken(source)
}

// SubjectToken turns s into one valid subject token: dots, wildcards ('*',
// '>'), whitespace and control characters become '_', the result is cut to
// at most 128 bytes on a UTF-8 boundary, and an empty s becomes "_". A token that is already valid is
// returned unchanged, without allocating.
func SubjectToken(s string) string {
	if s == "" {
		return "_"
	}
	if len(s) > maxTokenLen {
		n := maxTokenLen
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if badTokenByte(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if badTokenByte(c) {
			c = '_'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func badTokenByte(c byte) bool {
	return c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>'
}
