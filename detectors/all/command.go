package all

import _ "github.com/iotwatch/iotwatch/detectors/command" // registers the command detector
