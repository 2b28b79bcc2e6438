package pipeline

import (
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/iotwatch/iotwatch/schemas"
)

// collect builds columnar batches and hands them to the flusher.
func (p *Pipeline) collect() {
	rows := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer rows.Release()
	var (
		alerts    []schemas.Alert
		decisions []schemas.Decision
		completed []*batch
		waiting   int // messages of completed batches
	)
	flush := func() {
		alerts = p.limiter.AppendAlerts(alerts) // fleet "block cap hit" alerts
		if rows.Len() == 0 && len(alerts) == 0 && len(decisions) == 0 && len(completed) == 0 {
			return
		}
		p.jobs <- flushJob{rec: rows.NewRecord(), alerts: alerts, decisions: decisions, acks: completed}
		alerts, decisions, completed, waiting = nil, nil, nil, 0
	}
	ticker := time.NewTicker(p.cfg.FlushInterval)
	defer ticker.Stop()
	for {
		select {
		case it, ok := <-p.results:
			if !ok {
				flush()
				close(p.jobs)
				return
			}
			if it.b != nil {
				if it.b.left--; it.b.left == 0 {
					completed = append(completed, it.b)
					if waiting += len(it.b.msgs); waiting >= p.cfg.FlushMessages {
						flush()
					}
				}
				continue
			}
			rows.Append(&it.ev, &it.sc)
			if !it.swept {
				p.M.Events.Add(1)
			}
			if it.sc.N > 0 {
				p.findings.add(&it.sc)
			}
			if it.ev.Time > p.M.LastEvent.Load() {
				p.M.LastEvent.Store(it.ev.Time)
			}
			if it.alert != nil {
				alerts = append(alerts, *it.alert)
			}
			if it.dec != nil {
				decisions = append(decisions, *it.dec)
			}
			it.alert, it.dec = nil, nil
			if !it.swept {
				p.free <- it
			}
			if rows.Len() >= p.cfg.FlushRows {
				flush()
			}
		case <-ticker.C:
			flush()
		}
	}
}
