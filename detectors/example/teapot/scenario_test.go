package teapot_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/example/teapot"
	"github.com/iotwatch/iotwatch/detectors/scenario"
)

func TestScenarios(t *testing.T) { scenario.RunDir(t, "testdata", teapot.Name) }
