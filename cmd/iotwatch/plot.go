//go:build plot

package main

// Built with -tags plot (make build-plot), iotwatch links the plotting stack
// (gonum.org/v1/plot, its fonts and its PDF, SVG and PNG writers) and 'eval
// attacks --plot DIR' draws; the production binary stays without it.

import _ "github.com/iotwatch/iotwatch/internal/eval/plot" // registers the plotter of eval attacks

func init() { plotHelp = "" }
