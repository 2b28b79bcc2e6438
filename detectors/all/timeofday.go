package all

import _ "github.com/iotwatch/iotwatch/detectors/timeofday" // registers the time-of-day detector
