package timeofday_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/scenario"
	"github.com/iotwatch/iotwatch/detectors/timeofday"
)

func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", timeofday.Name)
}
