package pipeline

import (
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/iotwatch/iotwatch/schemas"
)

// collect hands every alert and decision to the publisher as soon as it sees
// it, and builds columnar batches of rows for the flusher (through the bounded
// waiting buffer). When it returns, it has closed both.
//
// It is also the one writer of the incident grouper: every alert (with the
// decision taken on it) joins or opens an incident, and the latest update of
// each incident since the last flush is handed to the publisher at the flush,
// before the flush's job is made, so the job's acks wait for those updates to
// be published as they wait for its alerts and decisions; the job stores them.
// Its state travels with the checkpoints: a durability marker takes it as of
// the results before the marker, and the collector leaves it in
// p.incidentState when it ends.
func (p *Pipeline) collect() {
	rows := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer rows.Release()
	rows.SetScorer(p.cfg.Instance)
	var (
		alerts    []schemas.Alert
		decisions []schemas.Decision
		completed []*batch
		markers   []chan error       // durability markers, answered by the flusher
		waiting   int                // messages of completed batches
		pubSent   uint64             // publish jobs sent
		incidents []schemas.Incident // the latest update of each incident since the last flush
		incIndex  = map[string]int{} // incident id -> index in incidents
		grouper   = p.grouper
	)
	pending := func(inc *schemas.Incident) {
		if i, ok := incIndex[inc.ID]; ok {
			incidents[i] = *inc
		} else {
			incIndex[inc.ID] = len(incidents)
			incidents = append(incidents, *inc)
		}
	}
	grouper.OnRetire(pending) // a merged or renamed id's retirement is stored and published as its updates are
	// group adds an alert to its incident; stored: the alert is stored
	// already (a partition's previous owner's, written.go), and so is the
	// incident update it made.
	group := func(a *schemas.Alert, dec *schemas.Decision, stored bool) {
		decID := ""
		if dec != nil && dec.AlertID == a.ID {
			decID = dec.ID
		}
		inc := grouper.Add(a, decID)
		if inc == nil {
			return
		}
		if !stored {
			pending(inc)
		}
		st := grouper.Stats()
		p.M.IncidentsOpened.Store(st.Opened)
		p.M.IncidentsEvicted.Store(st.Evicted)
		p.M.IncidentsMerged.Store(st.Merged)
		p.M.IncidentsRetired.Store(st.Retired)
		p.M.IncidentsOpen.Store(int64(st.Open))
	}
	publish := func(j pubJob) {
		p.pubs <- j
		pubSent++
		p.pubSent.Store(pubSent)
	}
	// out publishes its alert and decision now, whatever ClickHouse is
	// doing; they are stored with the next flush. The alert, a device's or an
	// entity's (it.noRow), joins its incident: the grouping does not depend
	// on the order in which the workers' and the entity owners' alerts
	// arrive here (pipeline/incident).
	//
	// An alert or decision a partition's previous owner stored already
	// (written.go) is published again (its id makes the copy a duplicate
	// the server drops), not stored again. An event whose row the previous
	// owner stored (it.written) keeps the previous owner's judgement: an
	// alert or decision its judging again raised that the previous owner
	// did not store is dropped (counted), never invented: the flusher
	// stores an event's alerts and decisions before its row (written.go).
	out := func(it *item) {
		var j pubJob
		if it.alert != nil {
			stored := p.written.take(it.alert.ID, false)
			if !stored && it.written {
				p.M.CatchUpDropped.Add(1)
				it.alert, it.dec = nil, nil
				return
			}
			j.alerts = []schemas.Alert{*it.alert}
			if !stored {
				alerts = append(alerts, *it.alert)
			}
			group(it.alert, it.dec, stored)
		}
		if it.dec != nil {
			stored := p.written.take(it.dec.ID, true)
			if !stored && it.written {
				p.M.CatchUpDropped.Add(1)
			} else {
				j.decisions = []schemas.Decision{*it.dec}
				if !stored {
					decisions = append(decisions, *it.dec)
				}
			}
		}
		publish(j)
	}
	flush := func() {
		if fleet := p.limiter.AppendAlerts(nil); len(fleet) > 0 { // fleet "block cap hit" alerts
			publish(pubJob{alerts: fleet})
			alerts = append(alerts, fleet...)
			for i := range fleet {
				group(&fleet[i], nil, false)
			}
		}
		if len(incidents) > 0 {
			publish(pubJob{incidents: incidents})
		}
		if rows.Len() == 0 && len(alerts) == 0 && len(decisions) == 0 && len(incidents) == 0 && len(completed) == 0 && len(markers) == 0 {
			return
		}
		job := &flushJob{rec: rows.NewRecord(), alerts: alerts, decisions: decisions, incidents: incidents, acks: completed,
			pubSeq: pubSent, start: time.Now(), markers: markers}
		job.bytes = jobBytes(job)
		p.waiting.put(job)
		alerts, decisions, incidents, completed, markers, waiting = nil, nil, nil, nil, nil, 0
		clear(incIndex)
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
				p.incidentState = grouper.AppendState(nil) // for the checkpoint after the drain
				return
			}
			if it.durable != nil {
				// The grouper as of the results before the marker: what the
				// checkpoint after it saves (its stream position covers
				// exactly those results).
				it.incidents = grouper.AppendState(nil)
				markers = append(markers, it.durable)
				flush()
				continue
			}
			if it.b != nil {
				if it.b.left--; it.b.left == 0 {
					if p.gate != nil {
						p.gate.Learned(it.b.upTo, false) // every worker learned what came before
						p.inflight.Add(-1)
					}
					completed = append(completed, it.b)
					if waiting += len(it.b.msgs); waiting >= p.cfg.FlushMessages {
						flush()
					}
				}
				continue
			}
			if it.noRow { // an entity's alert or decision
				out(it)
				continue
			}
			if it.written {
				p.M.CatchUpStored.Add(1) // its row is stored already
			} else {
				rows.Append(&it.ev, &it.sc)
			}
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
				out(it)
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
