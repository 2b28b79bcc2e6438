package teapot_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// guideBlock matches a code block of detectors/README.md that the guide
// quotes from a file: a "<!-- guide: PATH [OLD=NEW] -->" line, then a fenced
// block. PATH is relative to detectors/; OLD=NEW is applied to the block
// before it is looked up (to check a template against a real file).
var guideBlock = regexp.MustCompile("(?m)^([ \t]*)<!-- guide: (\\S+)(?: (\\S+)=(\\S+))? -->\n[ \t]*```[a-z]*\n((?:.*\n)*?)[ \t]*```\n")

// TestGuideQuotesTheCode checks that every code block of "Writing a detector"
// and "Testing a detector" marked as a quote is, once unindented, part of the
// file it names: the guide's worked example is this package, so the guide
// cannot go stale.
func TestGuideQuotesTheCode(t *testing.T) {
	const readme = "../../README.md"
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	blocks := guideBlock.FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 6 {
		t.Fatalf("%s quotes %d code blocks; want the guide's (at least 6)", readme, len(blocks))
	}
	for _, b := range blocks {
		indent, path, old, new, code := b[1], b[2], b[3], b[4], b[5]
		var sb strings.Builder
		for _, line := range strings.SplitAfter(code, "\n") {
			sb.WriteString(strings.TrimPrefix(line, indent))
		}
		code = sb.String()
		if old != "" {
			code = strings.ReplaceAll(code, old, new)
		}
		src, err := os.ReadFile(filepath.Join("../..", path))
		if err != nil {
			t.Errorf("%s quotes %s: %v", readme, path, err)
			continue
		}
		if !strings.Contains(string(src), code) {
			t.Errorf("%s quotes code that is not in %s (update the guide):\n%s", readme, path, code)
		}
	}
}
