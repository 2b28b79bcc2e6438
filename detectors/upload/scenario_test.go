package upload_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/detectors/upload"
)

func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", upload.Name)
}
