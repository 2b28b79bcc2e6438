package sources_test

import (
	"os"
	"testing"

	_ "github.com/iotwatch/iotwatch/detectors/all" // the detectors the pipeline runs
	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
)

// One private ClickHouse for the package (about 1 s to start and 1 s to
// stop).
var sharedCH chtest.Shared

func TestMain(m *testing.M) { os.Exit(sharedCH.Main(m)) }
