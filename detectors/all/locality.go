package all

import _ "github.com/iotwatch/iotwatch/detectors/locality" // registers the locality detector
