package detectors

import (
	"fmt"
	"io"
	"strings"
)

// WriteCatalog writes a Markdown description of specs: a table of their state
// sizes (against StateBudget), versions and reasons, then each one's Doc. It
// is what `iotwatch detectors --markdown` prints for the detectors built
// into the binary.
func WriteCatalog(w io.Writer, specs []Spec) error {
	var sb strings.Builder
	sb.WriteString("| detector | version | state bytes | reasons |\n|---|---|---|---|\n")
	total := 0
	for _, s := range specs {
		fmt.Fprintf(&sb, "| `%s` | %d | %d | `%s` |\n", s.Name, s.Version, s.StateSize, strings.Join(s.Reasons, "`, `"))
		total += s.StateSize
	}
	fmt.Fprintf(&sb, "| total | | %d of %d (`detectors.StateBudget`) | |\n", total, StateBudget)
	for _, s := range specs {
		fmt.Fprintf(&sb, "\n**%s**: %s\n", s.Name, s.Doc)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// PackageDoc returns the generated part of a detector's package README.md:
// its name, version, state size, reasons and Doc, from its Spec. The
// detectors' tests check each registered detector's README against it
// (`go test ./detectors -update` rewrites it), so the description a reader
// finds next to the code is the one the registry serves.
func PackageDoc(s Spec) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s\n\n", s.Name)
	fmt.Fprintf(&sb, "Detector `%s`, state version %d, %d bytes of state per device. Reasons: `%s`.\n\n",
		s.Name, s.Version, s.StateSize, strings.Join(s.Reasons, "`, `"))
	sb.WriteString(s.Doc)
	sb.WriteString("\n")
	return sb.String()
}
