package all

import _ "github.com/iotwatch/iotwatch/detectors/volume" // registers the volume detector
