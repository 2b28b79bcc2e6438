package volume_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/detectors/volume"
)

func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", volume.Name)
}
