// Package all registers every production detector: import it for its side
// effect.
//
//	import _ "github.com/iotwatch/iotwatch/detectors/all"
//
// Each detector has one file here, named after it, that imports its package
// for the package's init (CrowdSec-style): adding a detector adds one file and
// edits none. A detector not listed here (the example in detectors/example)
// is not in the binary, so it changes neither the record layout nor any
// figure.
package all
