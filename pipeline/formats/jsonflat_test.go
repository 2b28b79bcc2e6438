package formats

import (
	"strings"
	"testing"
)

// TestQuoteOrBackslash checks the eight-bytes-at-a-time scan against a byte
// loop at every position of strings that put the quote or backslash in each
// lane, after other special bytes and at the tail.
func TestQuoteOrBackslash(t *testing.T) {
	naive := func(b []byte, i int) int {
		for ; i < len(b); i++ {
			if b[i] == '"' || b[i] == '\\' {
				return i
			}
		}
		return len(b)
	}
	f := func(s string) {
		t.Helper()
		b := []byte(s)
		for i := 0; i <= len(b); i++ {
			if got, want := quoteOrBackslash(b, i), naive(b, i); got != want {
				t.Errorf("quoteOrBackslash(%q, %d) = %d, want %d", s, i, got, want)
			}
		}
	}
	f("")
	f(`"`)
	f(`abcdefgh`)
	f(`\"\"\"\"\"\"\"\"`)
	f("\x00\x01!#[\\]\x7f\x80\xff\"") // neighbours of '"' (0x22) and '\\' (0x5c), borrow-prone bytes
	for n := 0; n < 20; n++ {
		f(strings.Repeat("x", n) + `"` + strings.Repeat("y", 9))
		f(strings.Repeat("#", n) + `\` + strings.Repeat("!", 9))
		f(strings.Repeat("\x01", n) + "\x00\"")
	}
}
