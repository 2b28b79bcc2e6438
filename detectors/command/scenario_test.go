package command_test

import (
	"testing"

	_ "github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/schemas"
)

func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", schemas.DetectorCommand)
}
