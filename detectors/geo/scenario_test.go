package geo_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/detectors/scenario"
)

func TestScenarios(t *testing.T) {
	scenario.RunDir(t, "testdata", geo.Name)
}
