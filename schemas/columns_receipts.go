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
	// ColVerification: String, the receipt's verification status (a Receipt*
	// verification status such as ReceiptVerified); added by migration,
	// empty in rows written before it existed (unverified).
	ColVerification = "verification"
	// ColReceiptKeyID: String, the key id of the receipt's own signature
	// (the enforcement point's key); empty if unsigned. Added by migration.
	ColReceiptKeyID = "receipt_key_id"
	// ColReceivedAt: DateTime, when NATS stored the receipt (received_ms);
	// the rejected receipts table's partition and retention time, which a
	// forger does not choose.
	ColReceivedAt = "received_at"
)
