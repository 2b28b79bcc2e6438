package schemas

// Signed receipts.
//
// A receipt says that an enforcement point applied a decision, could not, or
// failed. Anyone who can publish on SubjectDecisionsApplied could otherwise
// claim "applied" for a block that no enforcement point holds. An
// enforcement point therefore signs its receipts with its own ed25519 key
// (SignReceipt), and the pipeline verifies them (VerifyReceipt) before it
// stores them as receipts.
//
// The key files, key id syntax and signature format are the decisions' (see
// sign.go): `iotwatch enforce keygen --id <enforcer id>` makes a receipt key.
// A receipt key's id is the id of the enforcement point it belongs to, so a
// verified receipt cannot claim another enforcement point's id. Rotating it
// means trusting the old and the new public key under the same id for a while
// (LoadPublicKeyRing keeps both).
//
// # Signed bytes (version 1)
//
//	"iotwatch-receipt-v1\x00"                   domain separation and version
//	str(keyID)                                   the signing key's id
//	str(DecisionID) str(EnforcerID) str(Action) str(Scope) str(Value) str(KeyID)
//	time(AppliedAt) str(Result) str(Reason) str(Detail) i64(SchemaV)
//
// with str, time and i64 as for decisions. Result is signed as sent (empty
// stays empty). Every field of ApplyReceipt except Signature is covered.

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

const receiptSigningDomainV1 = "iotwatch-receipt-v1\x00"

// AppendReceiptSigningBytes appends the signed bytes of r under keyID to dst
// (layout in the comment at the top of this file). Signature is not covered.
func AppendReceiptSigningBytes(dst []byte, r *ApplyReceipt, keyID string) []byte {
	str := func(s string) {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
		dst = append(dst, s...)
	}
	tm := func(t time.Time) {
		dst = binary.BigEndian.AppendUint64(dst, uint64(t.Unix()))
		dst = binary.BigEndian.AppendUint32(dst, uint32(t.Nanosecond()))
	}
	dst = append(dst, receiptSigningDomainV1...)
	str(keyID)
	str(r.DecisionID)
	str(r.EnforcerID)
	str(r.Action)
	str(r.Scope)
	str(r.Value)
	str(r.KeyID)
	tm(r.AppliedAt)
	str(r.Result)
	str(r.Reason)
	str(r.Detail)
	dst = binary.BigEndian.AppendUint64(dst, uint64(int64(r.SchemaV)))
	return dst
}

// SignReceipt signs r with priv under keyID and sets r.Signature to
// "ed25519:<keyID>:<base64>", replacing any previous signature. keyID must be
// r.EnforcerID (VerifyReceipt rejects a receipt signed by another enforcement
// point's key), and r must be final: changing a field afterwards makes
// VerifyReceipt fail with ErrBadSignature.
func SignReceipt(r *ApplyReceipt, keyID string, priv ed25519.PrivateKey) error {
	if !ValidKeyID(keyID) {
		return fmt.Errorf("cannot sign receipt for decision %q: invalid key id %q (want 1-64 of [A-Za-z0-9._-])", r.DecisionID, keyID)
	}
	if keyID != r.EnforcerID {
		return fmt.Errorf("cannot sign receipt for decision %q with key %q: the key id must be the enforcer id %q", r.DecisionID, keyID, r.EnforcerID)
	}
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("cannot sign receipt for decision %q with key %q: private key has %d bytes, want %d", r.DecisionID, keyID, len(priv), ed25519.PrivateKeySize)
	}
	sig := ed25519.Sign(priv, AppendReceiptSigningBytes(nil, r, keyID))
	r.Signature = signaturePrefix + keyID + ":" + base64.StdEncoding.EncodeToString(sig)
	return nil
}

// ReceiptSignerKeyID returns the key id named by r's signature, or "" when
// the signature is absent or malformed.
func ReceiptSignerKeyID(r *ApplyReceipt) string {
	id, _, err := parseSignature(r.Signature)
	if err != nil {
		return ""
	}
	return id
}

// VerifyReceipt checks r's signature against ring (enforcement point id, which
// is its key id → its trusted public keys; any one may match). It returns nil
// when the signature is by a key of ring named r.EnforcerID and matches every
// field of r; otherwise an error wrapping ErrUnsigned, ErrMalformedSignature,
// ErrWrongEnforcer (the key id is not r.EnforcerID), ErrUnknownKey or
// ErrBadSignature, checked in that order.
func VerifyReceipt(r *ApplyReceipt, ring map[string][]ed25519.PublicKey) error {
	if r.Signature == "" {
		return fmt.Errorf("cannot verify receipt of %q for decision %q: %w", r.EnforcerID, r.DecisionID, ErrUnsigned)
	}
	keyID, sig, err := parseSignature(r.Signature)
	if err != nil {
		return fmt.Errorf("cannot verify receipt of %q for decision %q: %w", r.EnforcerID, r.DecisionID, err)
	}
	if keyID != r.EnforcerID {
		return fmt.Errorf("cannot verify receipt of %q for decision %q with key %q: %w", r.EnforcerID, r.DecisionID, keyID, ErrWrongEnforcer)
	}
	pubs := ring[keyID]
	if len(pubs) == 0 {
		return fmt.Errorf("cannot verify receipt of %q for decision %q with key %q: %w", r.EnforcerID, r.DecisionID, keyID, ErrUnknownKey)
	}
	msg := AppendReceiptSigningBytes(nil, r, keyID)
	for _, pub := range pubs {
		if len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig) {
			return nil
		}
	}
	return fmt.Errorf("cannot verify receipt of %q for decision %q with key %q: %w", r.EnforcerID, r.DecisionID, keyID, ErrBadSignature)
}

// ReceiptVerification returns the verification status stored with a receipt
// (ColVerification) for VerifyReceipt's result err: ReceiptVerified for nil,
// else the Receipt* status of the sentinel error err wraps.
func ReceiptVerification(err error) string {
	switch {
	case err == nil:
		return ReceiptVerified
	case errors.Is(err, ErrUnsigned):
		return ReceiptUnsigned
	case errors.Is(err, ErrMalformedSignature):
		return ReceiptMalformedSignature
	case errors.Is(err, ErrWrongEnforcer):
		return ReceiptWrongEnforcer
	case errors.Is(err, ErrUnknownKey):
		return ReceiptUnknownKey
	default:
		return ReceiptBadSignature
	}
}
