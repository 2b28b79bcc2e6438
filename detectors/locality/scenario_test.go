package locality_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/locality"
	"github.com/iotwatch/iotwatch/detectors/scenario"
)

func TestScenarios(t *testing.T) { scenario.RunDir(t, "testdata", locality.Name) }
