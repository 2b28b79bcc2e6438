package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestIngestHelp checks that 'iotwatch ingest --help' teaches the stage (the
// streams, the consumer, the subjects, the partitions) and takes only the
// flags that matter to it.
func TestIngestHelp(t *testing.T) {
	var out bytes.Buffer
	if err := ingestCmd(context.Background(), []string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	help := out.String()
	for _, want := range []string{schemas.StreamLogs, schemas.ConsumerIngest, schemas.StreamEvents, schemas.SubjectEventsPrefix + ".<partition>",
		"-partitions", "-identity", "-nats", "-replicas", "run --source events"} {
		if !strings.Contains(help, want) {
			t.Errorf("the help does not mention %q", want)
		}
	}
	for _, unwanted := range []string{"-clickhouse", "-alert-threshold", "-checkpoint"} {
		if strings.Contains(help, "\n  "+unwanted+" ") {
			t.Errorf("the help lists %s, which ingest ignores", unwanted)
		}
	}
	for _, bad := range [][]string{{"--partitions", "0"}, {"--partitions", "5000"}, {"--clickhouse", "x"}, {"extra"}} {
		out.Reset()
		if err := ingestCmd(context.Background(), bad, &out); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
