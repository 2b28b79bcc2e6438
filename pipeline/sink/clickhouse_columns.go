package sink

import (
	"fmt"
	"math"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/iotwatch/iotwatch/schemas"
)

// Conversion of rows to the column slices clickhouse-go appends column-wise
// (batch.Column(i).Append(slice)), which is about 25% faster than row-wise Append.

// columnFunc appends rows [lo, hi) of one column (of the rows selected, when
// a selection is given) to a batch's column. The slices it appends may point
// into an Arrow record, which must stay alive until the INSERT is sent.
type columnFunc func(bc driver.BatchColumn, lo, hi int) error

// InsertBlockRows is how many rows of an Arrow record one block of its INSERT
// holds: the record's rows go to the server in blocks of this many (batch.Flush,
// one INSERT all the same; the server squashes its blocks into parts of
// min_insert_block_size_rows, a million rows by default, so a flush of 50,000
// rows still makes one part). clickhouse-go builds a block's columns by
// appending one value at a time into buffers that start empty for every
// INSERT; growing them by a quarter at a time up to a whole record's size
// allocated five times its string positions and list offsets, a third of
// all the bytes the process allocated end to end (bench/RESULTS.md, "p6").
// After a block is sent its buffers are reused for the next, so they grow
// only to one block's size.
const InsertBlockRows = 4096

// arrowColumns returns, for each column of table in order, a function that
// appends the field of rec with the same name. It fails when a column is
// missing from rec or has an Arrow type that does not fit the column.
//
// rows, when not nil, selects the rows to append, in that order. The
// functions convert values into buffers they share (clickhouse-go copies
// what it is given): call them one at a time.
func arrowColumns(table *schemas.Table, rec arrow.RecordBatch, rows []int) ([]columnFunc, error) {
	schema := rec.Schema()
	cols := make([]columnFunc, len(table.Columns))
	var bufs convertBufs
	for i, c := range table.Columns {
		idx := schema.FieldIndices(c.Name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("cannot write Arrow record to ClickHouse table %q: it has %d fields named %q, want 1", table.Name, len(idx), c.Name)
		}
		f, err := arrowColumn(c.Type, rec.Column(idx[0]), rows, &bufs)
		if err != nil {
			return nil, fmt.Errorf("cannot write Arrow record to ClickHouse table %q: column %q: %w", table.Name, c.Name, err)
		}
		cols[i] = f
	}
	return cols, nil
}

// arrowColumn converts one Arrow column for a ClickHouse column of type chType,
// only its rows (in that order) when rows is not nil. Numeric columns of all
// rows are appended without copying; strings are views into the Arrow buffers
// (clickhouse-go copies them into its own block).
func arrowColumn(chType string, arr arrow.Array, rows []int, bufs *convertBufs) (columnFunc, error) {
	mismatch := func() (columnFunc, error) {
		return nil, fmt.Errorf("arrow type %s does not fit ClickHouse type %s", arr.DataType(), chType)
	}
	switch chType {
	case "DateTime":
		a, ok := arr.(*array.Timestamp)
		if !ok {
			return mismatch()
		}
		// Units per second: 1 for seconds, 1000 for milliseconds, ...
		div := int64(time.Second / a.DataType().(*arrow.TimestampType).Unit.Multiplier())
		vals := a.TimestampValues()
		return appendConverted(&bufs.int64s, rows, func(r int) int64 { return clampDateTime(floorDiv(int64(vals[r]), div)) }), nil
	case "String":
		a, ok := arr.(*array.String)
		if !ok {
			return mismatch()
		}
		return appendConverted(&bufs.strings, rows, a.Value), nil
	case "Int64":
		if a, ok := arr.(*array.Int64); ok {
			return appendRows(a.Int64Values(), rows), nil
		}
	case "UInt8":
		if a, ok := arr.(*array.Uint8); ok {
			return appendRows(a.Uint8Values(), rows), nil
		}
	case "UInt16":
		if a, ok := arr.(*array.Uint16); ok {
			return appendRows(a.Uint16Values(), rows), nil
		}
	case "UInt32":
		if a, ok := arr.(*array.Uint32); ok {
			return appendRows(a.Uint32Values(), rows), nil
		}
	case "UInt64":
		if a, ok := arr.(*array.Uint64); ok {
			return appendRows(a.Uint64Values(), rows), nil
		}
	case "Float32":
		if a, ok := arr.(*array.Float32); ok {
			return appendRows(a.Float32Values(), rows), nil
		}
	case "Float64":
		if a, ok := arr.(*array.Float64); ok {
			return appendRows(a.Float64Values(), rows), nil
		}
	case "Array(String)", "Array(Float32)", "Array(Float64)":
		l, ok := arr.(*array.List)
		if !ok {
			return mismatch()
		}
		switch v := l.ListValues().(type) {
		case *array.String:
			if chType == "Array(String)" {
				return appendLists(l, stringValues(v), rows), nil
			}
		case *array.Float32:
			if chType == "Array(Float32)" {
				return appendLists(l, v.Float32Values(), rows), nil
			}
		case *array.Float64:
			if chType == "Array(Float64)" {
				return appendLists(l, v.Float64Values(), rows), nil
			}
		}
	}
	return mismatch()
}

// appendRows returns a columnFunc appending vals[lo:hi] as they are, or
// vals[rows[lo]], ..., vals[rows[hi-1]] when rows is not nil.
func appendRows[T any](vals []T, rows []int) columnFunc {
	if rows == nil {
		return func(bc driver.BatchColumn, lo, hi int) error { return bc.Append(vals[lo:hi]) }
	}
	var buf []T // a selection of a numeric column (rows of too many days): rare
	return appendConverted(&buf, rows, func(r int) T { return vals[r] })
}

// convertBufs are the buffers the columns of one record share to convert
// a block's values in (clickhouse-go copies what it is given, so the next
// column can reuse them): one of each type, not one per column and block.
type convertBufs struct {
	strings []string
	int64s  []int64
}

// appendConverted returns a columnFunc appending value(r) of each row r in
// [lo, hi) (of rows[lo:hi] when rows is not nil), converted into *buf.
func appendConverted[T any](buf *[]T, rows []int, value func(r int) T) columnFunc {
	return func(bc driver.BatchColumn, lo, hi int) error {
		b := *buf
		if cap(b) < hi-lo {
			b = make([]T, 0, hi-lo) // the first block is the largest
		}
		b = b[:0]
		if rows == nil {
			for r := lo; r < hi; r++ {
				b = append(b, value(r))
			}
		} else {
			for _, r := range rows[lo:hi] {
				b = append(b, value(r))
			}
		}
		*buf = b
		return bc.Append(b)
	}
}

// appendLists returns a columnFunc appending each row of the list array l (or
// only rows, in that order, when not nil) as a subslice of flat, the list's
// values. An empty row (most scored events have no finding) is appended as
// one shared empty slice: AppendRow takes an interface, and boxing each
// row's subslice was an allocation per row and list column, a quarter of
// all the pipeline's allocations (bench/RESULTS.md, "p4").
func appendLists[T any](l *array.List, flat []T, rows []int) columnFunc {
	var empty any = []T{}
	return func(bc driver.BatchColumn, lo, hi int) error {
		for i := lo; i < hi; i++ {
			r := i
			if rows != nil {
				r = rows[i]
			}
			v := empty
			if start, end := l.ValueOffsets(r); end > start {
				v = flat[start:end:end]
			}
			if err := bc.AppendRow(v); err != nil {
				return err
			}
		}
		return nil
	}
}

// stringValues returns the values of a as strings that share a's memory.
func stringValues(a *array.String) []string {
	out := make([]string, a.Len())
	for i := range out {
		out[i] = a.Value(i)
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// clampDateTime clamps Unix seconds to the range of ClickHouse's DateTime
// (UInt32 seconds since 1970).
func clampDateTime(sec int64) int64 {
	return max(0, min(sec, math.MaxUint32))
}

// dateTime returns t as DateTime seconds, 0 (1970-01-01) for the zero time.
func dateTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return clampDateTime(t.Unix())
}

// unixMilli returns t in Unix milliseconds, 0 for the zero time.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// findingArrays holds findings as the parallel arrays of the tables.
type findingArrays struct {
	detectors, reasons, observedLabels, expectedLabels [][]string
	scores                                             [][]float32
	observed, expected                                 [][]float64
}

func newFindingArrays(n int) *findingArrays {
	return &findingArrays{
		detectors: make([][]string, 0, n), reasons: make([][]string, 0, n),
		observedLabels: make([][]string, 0, n), expectedLabels: make([][]string, 0, n),
		scores: make([][]float32, 0, n), observed: make([][]float64, 0, n), expected: make([][]float64, 0, n),
	}
}

func (f *findingArrays) add(es []schemas.Explanation) {
	n := len(es)
	det, rea, ol, el := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	sc, ob, ex := make([]float32, n), make([]float64, n), make([]float64, n)
	for i, e := range es {
		det[i], rea[i], ol[i], el[i] = e.Detector, e.Reason, e.ObservedLabel, e.ExpectedLabel
		sc[i], ob[i], ex[i] = float32(e.Score), e.Observed, e.Expected
	}
	f.detectors = append(f.detectors, det)
	f.reasons = append(f.reasons, rea)
	f.observedLabels = append(f.observedLabels, ol)
	f.expectedLabels = append(f.expectedLabels, el)
	f.scores = append(f.scores, sc)
	f.observed = append(f.observed, ob)
	f.expected = append(f.expected, ex)
}

func (f *findingArrays) columns(m map[string]any) {
	m[schemas.ColDetectors] = f.detectors
	m[schemas.ColReasons] = f.reasons
	m[schemas.ColScores] = f.scores
	m[schemas.ColObserved] = f.observed
	m[schemas.ColExpected] = f.expected
	m[schemas.ColObservedLabels] = f.observedLabels
	m[schemas.ColExpectedLabels] = f.expectedLabels
}

// alertColumns returns the alerts as column slices keyed by column name.
func alertColumns(alerts []schemas.Alert) map[string]any {
	n := len(alerts)
	var (
		ids, tenants, devices, apiKeys, ips = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		classes, commands, countries, sevs  = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		entityKinds, entities               = make([]string, n), make([]string, n)
		times, timesMs                      = make([]int64, n), make([]int64, n)
		scores                              = make([]float64, n)
		first, last                         = make([]uint64, n), make([]uint64, n)
		falseRates                          = make([]float64, n)
		groups                              = make([]string, n)
		findings                            = newFindingArrays(n)
	)
	for i := range alerts {
		a := &alerts[i]
		ids[i], tenants[i], devices[i], apiKeys[i], ips[i] = a.ID, a.Tenant, a.Device, a.APIKey, a.ClientIP
		classes[i], commands[i], countries[i], sevs[i] = a.Class, a.Command, a.Country, a.Severity
		times[i], timesMs[i] = dateTime(a.Time), unixMilli(a.Time)
		scores[i] = a.Score
		first[i], last[i] = a.FirstEventID, a.LastEventID
		entityKinds[i], entities[i] = a.EntityKind, a.Entity
		falseRates[i], groups[i] = a.FalseRate, a.Group
		findings.add(a.Reasons)
	}
	m := map[string]any{
		schemas.ColID: ids, schemas.ColTime: times, schemas.ColTimeMs: timesMs,
		schemas.ColTenant: tenants, schemas.ColDevice: devices, schemas.ColAPIKey: apiKeys,
		schemas.ColClientIP: ips, schemas.ColClass: classes, schemas.ColCommand: commands,
		schemas.ColCountry: countries, schemas.ColScore: scores, schemas.ColSeverity: sevs,
		schemas.ColFirstEventID: first, schemas.ColLastEventID: last,
		schemas.ColEntityKind: entityKinds, schemas.ColEntity: entities,
		schemas.ColFalseRate: falseRates, schemas.ColGroup: groups,
	}
	findings.columns(m)
	return m
}

// decisionColumns returns the decisions as column slices keyed by column name.
func decisionColumns(ds []schemas.Decision) map[string]any {
	n := len(ds)
	var (
		ids, actions, scopes, values, tenants = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		devices, reasons, alertIDs, issuers   = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		created, createdMs, expires           = make([]int64, n), make([]int64, n), make([]int64, n)
		scores                                = make([]float64, n)
		dryRun                                = make([]uint8, n)
	)
	for i := range ds {
		d := &ds[i]
		ids[i], actions[i], scopes[i], values[i], tenants[i] = d.ID, d.Action, d.Scope, d.Value, d.Tenant
		devices[i], reasons[i], alertIDs[i], issuers[i] = d.Device, d.Reason, d.AlertID, d.Issuer
		created[i], createdMs[i], expires[i] = dateTime(d.CreatedAt), unixMilli(d.CreatedAt), dateTime(d.ExpiresAt)
		scores[i] = d.Score
		if d.DryRun {
			dryRun[i] = 1
		}
	}
	return map[string]any{
		schemas.ColID: ids, schemas.ColAction: actions, schemas.ColScope: scopes, schemas.ColValue: values,
		schemas.ColTenant: tenants, schemas.ColDevice: devices, schemas.ColCreatedAt: created,
		schemas.ColCreatedMs: createdMs, schemas.ColExpiresAt: expires, schemas.ColReason: reasons,
		schemas.ColScore: scores, schemas.ColAlertID: alertIDs, schemas.ColIssuer: issuers, schemas.ColDryRun: dryRun,
	}
}

// incidentColumns returns the incidents as column slices keyed by column name.
func incidentColumns(incs []schemas.Incident) map[string]any {
	n := len(incs)
	var (
		ids, tenants, sevs, firstAlerts, lastAlerts = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		mergedInto                                  = make([]string, n)
		versions                                    = make([]uint64, n)
		first, firstMs, last, lastMs                = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		scores                                      = make([]float64, n)
		alerts, devices, entityCount, decisionCount = make([]uint32, n), make([]uint32, n), make([]uint32, n), make([]uint32, n)
		sample, entities, kinds, decisions          = make([][]string, n), make([][]string, n), make([][]string, n), make([][]string, n)
	)
	for i := range incs {
		x := &incs[i]
		ids[i], tenants[i], sevs[i], firstAlerts[i], lastAlerts[i] = x.ID, x.Tenant, x.Severity, x.FirstAlertID, x.LastAlertID
		versions[i], mergedInto[i] = x.Version, x.MergedInto
		first[i], firstMs[i], last[i], lastMs[i] = dateTime(x.FirstSeen), unixMilli(x.FirstSeen), dateTime(x.LastSeen), unixMilli(x.LastSeen)
		scores[i] = x.Score
		alerts[i], devices[i], entityCount[i], decisionCount[i] = uint32(x.Alerts), uint32(x.Devices), uint32(x.EntityCount), uint32(x.DecisionCount)
		sample[i], entities[i], kinds[i], decisions[i] = nonNil(x.DeviceSample), nonNil(x.Entities), nonNil(x.Reasons), nonNil(x.Decisions)
	}
	return map[string]any{
		schemas.ColID: ids, schemas.ColVersion: versions, schemas.ColTenant: tenants,
		schemas.ColFirstSeen: first, schemas.ColFirstSeenMs: firstMs, schemas.ColLastSeen: last, schemas.ColLastSeenMs: lastMs,
		schemas.ColSeverity: sevs, schemas.ColScore: scores, schemas.ColAlertCount: alerts, schemas.ColDeviceCount: devices,
		schemas.ColDeviceSample: sample, schemas.ColEntities: entities, schemas.ColEntityCount: entityCount,
		schemas.ColFindingKinds: kinds, schemas.ColDecisionIDs: decisions, schemas.ColDecisionCount: decisionCount,
		schemas.ColFirstAlertID: firstAlerts, schemas.ColLastAlertID: lastAlerts, schemas.ColMergedInto: mergedInto,
	}
}

// nonNil returns s, or an empty slice for nil.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// appendAll returns a fill function appending cols, keyed by column name, in
// table order.
func appendAll(table *schemas.Table, cols map[string]any) func(driver.Batch) error {
	return func(b driver.Batch) error {
		for i, c := range table.Columns {
			v, ok := cols[c.Name]
			if !ok {
				panic(fmt.Sprintf("BUG: no values for column %q of table %q", c.Name, table.Name))
			}
			if err := b.Column(i).Append(v); err != nil {
				return fmt.Errorf("cannot append column %q: %w", c.Name, err)
			}
		}
		return nil
	}
}
