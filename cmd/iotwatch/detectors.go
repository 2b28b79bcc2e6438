package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/iotwatch/iotwatch/detectors"
)

// detectorsCmd prints the registry: the detectors built into this binary.
func detectorsCmd(_ context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("detectors", flag.ContinueOnError)
	fs.SetOutput(stdout)
	markdown := fs.Bool("markdown", false, "print a Markdown table and each detector's description")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch detectors [--markdown]

Lists the detectors built into this binary: their names (what --detectors of
'iotwatch run' takes), state version and bytes of state per device (their sum
against the budget of %d bytes), the reasons they report (the reason column of
alerts and scored events in ClickHouse), and what each one judges.

Flags:
`, detectors.StateBudget)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	specs := detectors.All()
	if *markdown {
		return detectors.WriteCatalog(stdout, specs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DETECTOR\tVERSION\tSTATE BYTES\tREASONS")
	total := 0
	for _, s := range specs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", s.Name, s.Version, s.StateSize, strings.Join(s.Reasons, ", "))
		total += s.StateSize
	}
	fmt.Fprintf(tw, "total\t\t%d of %d\t\n", total, detectors.StateBudget)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range specs {
		fmt.Fprintf(stdout, "\n%s\n", s.Name)
		line := " "
		for _, w := range strings.Fields(s.Doc) {
			if len(line)+1+len(w) > 100 && line != " " {
				fmt.Fprintln(stdout, line)
				line = " "
			}
			line += " " + w
		}
		fmt.Fprintln(stdout, line)
	}
	return nil
}
