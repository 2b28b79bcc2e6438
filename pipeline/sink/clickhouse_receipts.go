package sink

import (
	"context"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Receipt is one apply receipt with where the stream holds it and whether it
// was verified, as stored in the receipts table (schemas.TableReceipts) or,
// when it failed verification, the rejected receipts table
// (schemas.TableRejectedReceipts).
type Receipt struct {
	schemas.ApplyReceipt
	// Received is when NATS stored the receipt (its stream timestamp).
	Received time.Time
	// StreamSeq is the receipt's sequence in IOTWATCH_DECISIONS.
	StreamSeq uint64
	// Verification is a schemas.Receipt* verification status
	// (schemas.ReceiptVerified, schemas.ReceiptUnverified, or why it was
	// rejected).
	Verification string
}

// WriteReceipts inserts receipts into the receipts table, retrying like
// WriteScored. The table is keyed by (decision, enforcer, action), so writing
// a receipt again (a redelivery) is counted once by queries that use FINAL.
// Only receipts that passed verification (or were not checked: unverified)
// belong there; WriteRejectedReceipts stores the others.
func (c *ClickHouse) WriteReceipts(ctx context.Context, rs []Receipt) error {
	if len(rs) == 0 {
		return nil
	}
	table := schemas.ReceiptsTable()
	return c.insertColumns(ctx, table, len(rs), receiptColumns(rs))
}

// WriteRejectedReceipts inserts receipts that failed verification into the
// rejected receipts table, one row per stream message, retrying like
// WriteScored.
func (c *ClickHouse) WriteRejectedReceipts(ctx context.Context, rs []Receipt) error {
	if len(rs) == 0 {
		return nil
	}
	table := schemas.RejectedReceiptsTable()
	cols := receiptColumns(rs)
	received := make([]int64, len(rs))
	for i := range rs {
		received[i] = dateTime(rs[i].Received)
	}
	cols[schemas.ColReceivedAt] = received
	return c.insert(ctx, table, len(rs), appendAll(table, cols))
}

// receiptColumns returns the receipts as column slices keyed by column name.
func receiptColumns(rs []Receipt) map[string]any {
	n := len(rs)
	var (
		decisions, enforcers, actions = make([]string, n), make([]string, n), make([]string, n)
		scopes, values, keyIDs        = make([]string, n), make([]string, n), make([]string, n)
		applied, appliedMs, received  = make([]int64, n), make([]int64, n), make([]int64, n)
		seqs                          = make([]uint64, n)
		results, reasons, details     = make([]string, n), make([]string, n), make([]string, n)
		verifications, signers        = make([]string, n), make([]string, n)
	)
	for i := range rs {
		r := &rs[i]
		decisions[i], enforcers[i], actions[i] = r.DecisionID, r.EnforcerID, r.Action
		scopes[i], values[i], keyIDs[i] = r.Scope, r.Value, r.KeyID
		applied[i], appliedMs[i], received[i] = dateTime(r.AppliedAt), unixMilli(r.AppliedAt), unixMilli(r.Received)
		seqs[i] = r.StreamSeq
		results[i], reasons[i], details[i] = r.Outcome(), r.Reason, r.Detail
		verifications[i], signers[i] = r.Verification, schemas.ReceiptSignerKeyID(&r.ApplyReceipt)
	}
	return map[string]any{
		schemas.ColDecisionID: decisions, schemas.ColEnforcer: enforcers, schemas.ColAction: actions,
		schemas.ColScope: scopes, schemas.ColValue: values, schemas.ColKeyID: keyIDs,
		schemas.ColAppliedAt: applied, schemas.ColAppliedMs: appliedMs, schemas.ColReceivedMs: received,
		schemas.ColStreamSeq: seqs,
		schemas.ColResult:    results, schemas.ColReason: reasons, schemas.ColDetail: details,
		schemas.ColVerification: verifications, schemas.ColReceiptKeyID: signers,
	}
}
