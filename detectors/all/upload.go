package all

import _ "github.com/iotwatch/iotwatch/detectors/upload" // registers the upload detector
