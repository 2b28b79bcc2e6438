package schemas

// ClickHouse columns of the receipts table (TableReceipts). The table also
// uses ColAction, ColScope, ColValue, ColReason (ApplyReceipt.Reason: a
// ReceiptReason* code, empty when applied) and ColStreamSeq with their usual
// meaning.
const (
	ColDecisionID = "decision_id" // String: the decision applied (for an unblock: the lifted decision)
	ColEnforcer   = "enforcer"    // String: the enforcement point's id (ApplyReceipt.EnforcerID)
	ColKeyID      = "key_id"      // String: the key that signed the decision; empty if unsigned
	ColAppliedAt  = "applied_at"  // DateTime: when the enforcement point applied (or lifted) the decision
	ColAppliedMs  = "applied_ms"  // Int64: the same time, Unix milliseconds
	ColReceivedMs = "received_ms" // Int64: Unix milliseconds at which NATS stored the receipt
	ColResult     = "result"      // String: ReceiptApplied, ReceiptNotApplicable or ReceiptFailed (ApplyReceipt.Outcome)
	ColDetail     = "detail"      // String: ApplyReceipt.Detail, the reason in words
)
