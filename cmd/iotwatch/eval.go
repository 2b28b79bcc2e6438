package main

import (
	"context"
	"fmt"
	"io"
)

// evalCommands are the evaluations on labelled data: the simulated fleet's
// attacks, and data sets in a documented generic format (so that they work on
// any such data, not only ours).
var evalCommands = []command{
	{"attacks", "run the simulated fleet's labelled attacks through the detectors and decide: recall, time to detect, precision", evalAttacks},
	{"nab", "score time series (NAB layout: DIR/<category>/<file>.csv) with the volume model's core", evalNAB},
	{"sequences", "learn command sequences from a training file and score a test file (label<TAB>tokens)", evalSequences},
}

func evalCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(stdout, "Usage: iotwatch eval <evaluation> [flags]\n\nRuns a detector's model on labelled data and reports how it does.\n\nEvaluations:\n")
		for _, c := range evalCommands {
			fmt.Fprintf(stdout, "  %-10s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(stdout, "\nRun 'iotwatch eval <evaluation> --help' for its flags.\n")
		if len(args) == 0 {
			return usageError{fmt.Errorf("no evaluation given")}
		}
		return nil
	}
	for _, c := range evalCommands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout)
		}
	}
	return usageError{fmt.Errorf("unknown evaluation %q", args[0])}
}
