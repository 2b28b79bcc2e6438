package detectors

import "github.com/iotwatch/iotwatch/schemas"

// ClassModel is what a pipeline knows of its classes: the class table (class
// identity and device counts) and the class statistics of each detector of
// a Layout whose Spec has Stats. One per pipeline (or replay, or scenario
// run), shared by every worker; safe for concurrent use as its parts are.
type ClassModel struct {
	Table  *ClassTable
	Layout *Layout
	stats  []ClassStats // by layout index; nil for a detector without
	fleets []Fleet      // by layout index: its stats, or Table
	learn  []int        // layout indexes of the detectors with stats
}

// NewClassModel returns an empty model for the detectors of l over table.
func NewClassModel(l *Layout, table *ClassTable) *ClassModel {
	m := &ClassModel{Table: table, Layout: l, stats: make([]ClassStats, len(l.Specs)), fleets: make([]Fleet, len(l.Specs))}
	for i, s := range l.Specs {
		m.fleets[i] = table
		if s.Stats != nil {
			m.stats[i] = s.Stats(table)
			m.fleets[i] = m.stats[i]
			m.learn = append(m.learn, i)
		}
	}
	return m
}

// Fleet returns the view detector i of the layout observes with: its class
// statistics, or the class table when it has none.
func (m *ClassModel) Fleet(i int) Fleet { return m.fleets[i] }

// Stats returns detector i's class statistics, nil when it has none.
func (m *ClassModel) Stats(i int) ClassStats { return m.stats[i] }

// FleetOf returns the view of the named detector, nil when the layout does not
// have it.
func (m *ClassModel) FleetOf(name string) Fleet {
	for i, s := range m.Layout.Specs {
		if s.Name == name {
			return m.fleets[i]
		}
	}
	return nil
}

// Learn teaches ev to the class table, then to each detector's statistics in
// layout order. before is the detectors' part of the device's record as it
// was before they observed ev (Layout.Size bytes); each detector gets its
// slice. It does not allocate.
func (m *ClassModel) Learn(ev *schemas.Event, before []byte) {
	m.Table.Learn(ev)
	for _, i := range m.learn {
		m.stats[i].Learn(ev, m.Layout.State(before, i))
	}
}

// NeedsBefore reports whether Learn reads its before argument (some detector
// has statistics), so that a caller can skip copying the record otherwise.
func (m *ClassModel) NeedsBefore() bool { return len(m.learn) > 0 }
