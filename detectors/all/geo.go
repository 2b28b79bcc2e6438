package all

import _ "github.com/iotwatch/iotwatch/detectors/geo" // registers the geo detector
