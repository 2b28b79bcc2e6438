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
		// Added after the first release (iotwatch migrate adds them):
		// empty in rows written before they existed.
		{ColVerification, "String", true},
		{ColReceiptKeyID, "String", true},
	},
	PartitionBy: "toYYYYMMDD(" + QuoteIdent(ColAppliedAt) + ")",
	OrderBy:     []string{ColDecisionID, ColEnforcer, ColAction},
	TimeColumn:  ColAppliedAt,
	ShardKey:    []string{ColDecisionID},
}

// rejectedReceiptsTable holds the receipts that failed verification, with
// what they claimed and why they were rejected (ColVerification). They are
// kept apart from receiptsTable so that a forged receipt can never replace a
// verified row of the same (decision, enforcer, action) there. One row per
// stream message (its sequence is the row's id); the partition follows the
// time NATS stored it, which a forger does not choose.
var rejectedReceiptsTable = Table{
	Name: TableRejectedReceipts,
	Columns: []Column{
		{ColReceivedAt, "DateTime", false},
		{ColReceivedMs, "Int64", false},
		{ColStreamSeq, "UInt64", false},
		{ColVerification, "String", true},
		{ColReceiptKeyID, "String", false},
		{ColDecisionID, "String", false},
		{ColEnforcer, "String", false},
		{ColAction, "String", false},
		{ColScope, "String", false},
		{ColValue, "String", false},
		{ColKeyID, "String", false},
		{ColResult, "String", false},
		{ColReason, "String", false},
		{ColDetail, "String", false},
		{ColAppliedMs, "Int64", false},
	},
	PartitionBy: "toYYYYMM(" + QuoteIdent(ColReceivedAt) + ")",
	OrderBy:     []string{ColStreamSeq},
	TimeColumn:  ColReceivedAt,
	ShardKey:    []string{ColStreamSeq},
}

// ReceiptsTable is the table of apply receipts (TableReceipts), one row per
// (decision, enforcer, action).
func ReceiptsTable() *Table { return &receiptsTable }

// RejectedReceiptsTable is the table of receipts that failed verification
// (TableRejectedReceipts), one row per stream message.
func RejectedReceiptsTable() *Table { return &rejectedReceiptsTable }
