package ingest

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// ingestMessage returns a log message of n records: the first record of a
// formats sample, with its device (and client IP) varied so that the
// records are n devices spread over the partitions.
func ingestMessage(tb testing.TB, format, file string, n int) []byte {
	tb.Helper()
	b, err := os.ReadFile("../formats/testdata/" + format + "/" + file)
	if err != nil {
		tb.Fatal(err)
	}
	rec := formats.Records(format, nil, b)[0]
	var msg []byte
	for i := range n {
		l := bytes.ReplaceAll(rec, []byte("lock-000042"), fmt.Appendf(nil, "lock-%06d", i))
		l = bytes.ReplaceAll(l, []byte("203.0.113.7"), fmt.Appendf(nil, "10.1.%d.%d", i/250, i%250+1))
		msg = append(append(msg, l...), '\n')
	}
	return msg
}

// cpuTime returns the CPU time (user and system) the process has used: on a
// shared, oversubscribed machine, lines per CPU-second is the per-core
// figure, where lines per wall-clock second depends on the other load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIngest is the ingest stage's work per log message in one
// goroutine (one core): decode every record (the decoder 'run' uses),
// partition it, append it to its partition's Arrow batch and encode every
// batch as Arrow IPC stream bytes, as Stage publishes them; NATS is left
// out. lines/s is per core. obs=on also puts each event's entity
// observations into the batch of their entity partition (what Stage
// publishes to iotwatch.obs.<q>); obs=off is StageConfig.NoObs.
func BenchmarkIngest(b *testing.B) {
	for _, c := range []struct{ format, file string }{{schemas.FormatNginx, "combined.log"}, {schemas.FormatKong, "http-log.log"}} {
		for _, parts := range []int{schemas.DefaultPartitions, 4} {
			for _, obs := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/partitions=%d/obs=%s", c.format, parts, map[bool]string{false: "off", true: "on"}[obs]), func(b *testing.B) {
					const lines = 100
					msg := ingestMessage(b, c.format, c.file, lines)
					subject := schemas.SubjectLogsPrefix + "." + c.format + ".bench"
					d := NewDecoder(Options{Formats: formats.Options{Tenant: "acme", ClassField: formats.UserAgentProduct}})
					var p partitioner
					p.init(parts, obs)
					defer p.release()
					var out []byte
					wire := 0
					step := func() {
						if got := d.Logs(subject, msg, 7, 0, &p); got.Events != lines {
							b.Fatalf("decoded %d events of %d (dead letters %v)", got.Events, lines, d.Letters())
						}
						wire = 0
						for _, bt := range p.batches {
							if bt.Len() == 0 {
								continue
							}
							var err error
							if out, err = bt.AppendIPC(out[:0]); err != nil {
								b.Fatal(err)
							}
							wire += len(out)
						}
						for q, ob := range p.obs {
							wire += len(ob)
							p.obs[q] = ob[:schemas.ObsHeaderSize]
						}
					}
					step()
					b.SetBytes(int64(len(msg)))
					b.ReportAllocs()
					cpu0 := cpuTime()
					for b.Loop() {
						step()
					}
					b.ReportMetric(float64(b.N)*lines/b.Elapsed().Seconds(), "lines/s")
					b.ReportMetric(float64(b.N)*lines/(cpuTime()-cpu0).Seconds(), "lines/cpu-s")
					b.ReportMetric(float64(wire)/lines, "wire-B/line")
				})
			}
		}
	}
}
