package command_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/scenario"
)

func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", command.Name)
}
