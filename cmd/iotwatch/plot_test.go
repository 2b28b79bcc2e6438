package main

// The tests of 'eval attacks --plot' run in every test binary of this
// package, with or without the build tag plot.

import _ "github.com/iotwatch/iotwatch/internal/eval/plot" // registers the plotter of eval attacks
