package pipeline

import (
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/iotwatch/iotwatch/schemas"
)

// collect hands every alert and decision to the publisher as soon as it sees
// it, and builds columnar batches of rows for the flusher (through the bounded
// waiting buffer). When it returns, it has closed both.
func (p *Pipeline) collect() {
	rows := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer rows.Release()
	var (
		alerts    []schemas.Alert
		decisions []schemas.Decision
		completed []*batch
		markers   []chan error // durability markers, answered by the flusher
		waiting   int          // messages of completed batches
		pubSent   uint64       // publish jobs sent
	)
	publish := func(j pubJob) {
		p.pubs <- j
		pubSent++
		p.pubSent.Store(pubSent)
	}
	flush := func() {
		if fleet := p.limiter.AppendAlerts(nil); len(fleet) > 0 { // fleet "block cap hit" alerts
			publish(pubJob{alerts: fleet})
			alerts = append(alerts, fleet...)
		}
		if rows.Len() == 0 && len(alerts) == 0 && len(decisions) == 0 && len(completed) == 0 && len(markers) == 0 {
			return
		}
		job := &flushJob{rec: rows.NewRecord(), alerts: alerts, decisions: decisions, acks: completed,
			pubSeq: pubSent, start: time.Now(), markers: markers}
		job.bytes = jobBytes(job)
		p.waiting.put(job)
		alerts, decisions, completed, markers, waiting = nil, nil, nil, nil, 0
	}
	defer func() {
		close(p.pubs)
		p.waiting.close()
	}()
	ticker := time.NewTicker(p.cfg.FlushInterval)
	defer ticker.Stop()
	for {
		select {
		case it, ok := <-p.results:
			if !ok {
				flush()
				return
			}
			if it.durable != nil {
				markers = append(markers, it.durable)
				flush()
				continue
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
			if it.noRow { // an entity's alert or decision
				var j pubJob
				if it.alert != nil {
					j.alerts = []schemas.Alert{*it.alert}
					alerts = append(alerts, *it.alert)
				}
				if it.dec != nil {
					j.decisions = []schemas.Decision{*it.dec}
					decisions = append(decisions, *it.dec)
				}
				publish(j)
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
			if it.alert != nil || it.dec != nil {
				// Out now, whatever ClickHouse is doing; stored with the rows.
				var j pubJob
				if it.alert != nil {
					j.alerts = []schemas.Alert{*it.alert}
					alerts = append(alerts, *it.alert)
				}
				if it.dec != nil {
					j.decisions = []schemas.Decision{*it.dec}
					decisions = append(decisions, *it.dec)
				}
				publish(j)
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
