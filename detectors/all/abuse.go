package all

import _ "github.com/iotwatch/iotwatch/detectors/abuse" // registers the abuse detector
