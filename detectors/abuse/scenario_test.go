package abuse_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/abuse"
	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/detectors/volume"
)

// The scenarios run the abuse detector next to volume and command, whose
// baseline findings decide drops for a client that is no device identity:
// a browsing person's bursts are no finding, a device's are.
func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", abuse.Name, volume.Name, command.Name)
}
