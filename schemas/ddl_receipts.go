package schemas

// receiptsTable holds apply receipts: with the decisions table it shows, per
// decision, decided (decisions.created_ms) → enforced (receipts.applied_ms) at
// each enforcement point, and when the block was lifted there (action unblock).
//
// An enforcement point sends at most one receipt per (decision, enforcer,
// action) and result, so that triple is the row's stable id and the whole
// sorting key: a redelivered receipt replaces itself, and a failed attempt's
// row is replaced by the applied one that follows it (the later insert). The partition follows applied_at, which
// a redelivered copy shares.
var receiptsTable = Table{
	Name: TableReceipts,
	Columns: []Column{
		{ColDecisionID, "String", false},
		{ColEnforcer, "String", true},
		{ColAction, "String", true},
		{ColScope, "String", true},
		{ColValue, "String", false},
		{ColKeyID, "String", true},
		{ColResult, "String", true},
		{ColReason, "String", true},
		{ColDetail, "String", false},
		{ColAppliedAt, "DateTime", false},
		{ColAppliedMs, "Int64", false},
		{ColReceivedMs, "Int64", false},
		{ColStreamSeq, "UInt64", false},
	},
	PartitionBy: "toYYYYMMDD(" + QuoteIdent(ColAppliedAt) + ")",
	OrderBy:     []string{ColDecisionID, ColEnforcer, ColAction},
	TimeColumn:  ColAppliedAt,
}

// ReceiptsTable is the table of apply receipts (TableReceipts), one row per
// (decision, enforcer, action).
func ReceiptsTable() *Table { return &receiptsTable }
