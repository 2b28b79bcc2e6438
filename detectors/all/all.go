// Package all registers every detector: import it for its side effect.
//
//	import _ "github.com/iotwatch/iotwatch/detectors/all"
//
// A new detector package is added here, and nowhere else.
package all

import (
	_ "github.com/iotwatch/iotwatch/detectors/command"
	_ "github.com/iotwatch/iotwatch/detectors/geo"
	_ "github.com/iotwatch/iotwatch/detectors/volume"
)
