package cluster_test

import (
	"os"
	"testing"

	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
)

// One private ClickHouse for the package.
var sharedCH chtest.Shared

func TestMain(m *testing.M) { os.Exit(sharedCH.Main(m)) }
