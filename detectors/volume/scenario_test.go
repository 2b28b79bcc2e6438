package volume_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/scenario"
	_ "github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/schemas"
)

func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", schemas.DetectorVolume)
}
