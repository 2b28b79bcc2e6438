package schemas

// Signed decisions.
//
// An enforcement point must be able to trust a decision it reads from NATS:
// anyone who can write to the KV bucket or the decisions stream could otherwise
// block the whole fleet. Every decision is therefore signed with ed25519 by the
// pipeline that issues it, and enforcement points verify the signature against
// the public keys they were given before applying it.
//
// # Signed bytes (version 1)
//
// DecisionSigningBytes returns the bytes that are signed. They are a fixed
// binary layout, independent of JSON field order, whitespace or escaping:
//
//	"iotwatch-decision-v1\x00"                  domain separation and version
//	str(keyID)                                   the signing key's id
//	str(ID) str(Action) str(Scope) str(Value) str(Tenant) str(Device)
//	time(CreatedAt) time(ExpiresAt)
//	str(Reason) f64(Score) str(AlertID) str(Issuer)
//	u8(DryRun: 0 or 1) i64(SchemaV)
//
// # Signed bytes (version 2)
//
// A decision with a non-zero Revision is signed with layout version 2: the
// version-1 fields under the domain "iotwatch-decision-v2\x00", followed by
// u64(Revision) (8 bytes big-endian). A verifier picks the layout from
// Revision, so a revision added to, removed from or changed in a signed
// decision breaks its signature: the revision that orders a decision is the
// one its signer chose.
//
// where str(s) is the 4-byte big-endian length of s followed by its bytes,
// time(t) is t.Unix() as 8 bytes big-endian two's complement followed by
// t.Nanosecond() as 4 bytes big-endian (so the time zone and monotonic reading
// do not matter, and a JSON round trip with RFC 3339 nanoseconds is exact),
// f64(x) is math.Float64bits(x) as 8 bytes big-endian and i64 is 8 bytes
// big-endian two's complement. Every field of Decision except Signature (and
// Revision, covered by version 2) is covered. A new Decision field needs a new layout version ("-v2") that
// verifiers accept alongside v1 before signers use it.
//
// # Signature format
//
// Decision.Signature is "ed25519:<keyID>:<base64>", where <base64> is the
// 64-byte ed25519 signature in standard base64 with padding, and keyID is 1 to
// 64 characters from [A-Za-z0-9._-] (for example "iotwatch-2026-11").
//
// # Key files
//
// A private key file holds one line
//
//	iotwatch-ed25519-private <keyID> <base64 of the 32-byte seed>
//
// and a public key file one or more lines
//
//	iotwatch-ed25519-public <keyID> <base64 of the 32-byte public key>
//
// Empty lines and lines starting with '#' are ignored. Private key files
// should be mode 0600; LoadPublicKeys also accepts a private key file and uses
// its public half. GenerateKey (and `iotwatch enforce keygen`) writes both.
//
// # Unblocks
//
// An unblock is a signed Decision too (action unblock), written over the block
// it lifts in the KV bucket, never a bare KV delete, which nobody could
// authenticate. Its ID is UnblockID of the lifted decision's ID, and Lifts
// states which active decision it ends. The key that signs unblocks (a SOC
// key for `iotwatch unblock`) must be trusted by enforcement points like the
// pipeline's.
//
// # Key rotation
//
//  1. Generate a new key pair with a new key id.
//  2. Give every enforcement point the new public key in addition to the old
//     one (they accept any key in their set) and restart or reload them.
//  3. Switch the pipeline to sign with the new private key. Decisions already
//     in the KV bucket stay signed with the old key and stay valid.
//  4. Once no active decision is signed by the old key (the longest block TTL
//     has passed, or the active set was re-signed), remove the old public key
//     from the enforcement points and destroy the old private key.
//
// A compromised key is retired the same way, skipping the wait in step 4:
// decisions signed with it are then rejected and must be re-issued.

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"
)

// Key file line prefixes and the signature scheme prefix.
const (
	keyFilePrivate   = "iotwatch-ed25519-private"
	keyFilePublic    = "iotwatch-ed25519-public"
	signaturePrefix  = "ed25519:"
	signingDomainV1  = "iotwatch-decision-v1\x00"
	signingDomainV2  = "iotwatch-decision-v2\x00"
	maxKeyIDLen      = 64
	ed25519SeedBytes = ed25519.SeedSize
)

// Verification errors. VerifyDecision wraps exactly one of the first four,
// VerifyReceipt one of all five.
var (
	// ErrUnsigned: the decision (or receipt) has no signature.
	ErrUnsigned = errors.New("not signed")
	// ErrMalformedSignature: the signature is not "ed25519:<keyID>:<base64 of 64 bytes>".
	ErrMalformedSignature = errors.New("signature is malformed")
	// ErrUnknownKey: the signature names a key id that is not in the trusted set.
	ErrUnknownKey = errors.New("signed by an unknown key")
	// ErrBadSignature: the signature does not match the decision or receipt
	// (tampered, or signed by another key under the same id).
	ErrBadSignature = errors.New("signature does not verify")
	// ErrWrongEnforcer: a receipt's signing key names another enforcement
	// point than the receipt's EnforcerID (VerifyReceipt).
	ErrWrongEnforcer = errors.New("signed by another enforcement point's key")
)

// ValidKeyID reports whether id may name a signing key: 1 to 64 characters
// from [A-Za-z0-9._-].
func ValidKeyID(id string) bool {
	if len(id) == 0 || len(id) > maxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// AppendDecisionSigningBytes appends the signed bytes of d under keyID to
// dst: layout version 1 when d.Revision is 0, else version 2 (layouts in the
// comment at the top of this file). Signature is not covered.
func AppendDecisionSigningBytes(dst []byte, d *Decision, keyID string) []byte {
	str := func(s string) {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
		dst = append(dst, s...)
	}
	tm := func(t time.Time) {
		dst = binary.BigEndian.AppendUint64(dst, uint64(t.Unix()))
		dst = binary.BigEndian.AppendUint32(dst, uint32(t.Nanosecond()))
	}
	if d.Revision == 0 {
		dst = append(dst, signingDomainV1...)
	} else {
		dst = append(dst, signingDomainV2...)
	}
	str(keyID)
	str(d.ID)
	str(d.Action)
	str(d.Scope)
	str(d.Value)
	str(d.Tenant)
	str(d.Device)
	tm(d.CreatedAt)
	tm(d.ExpiresAt)
	str(d.Reason)
	dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(d.Score))
	str(d.AlertID)
	str(d.Issuer)
	if d.DryRun {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(int64(d.SchemaV)))
	if d.Revision != 0 {
		dst = binary.BigEndian.AppendUint64(dst, d.Revision)
	}
	return dst
}

// DecisionSigningBytes returns AppendDecisionSigningBytes(nil, d, keyID).
func DecisionSigningBytes(d *Decision, keyID string) []byte {
	return AppendDecisionSigningBytes(nil, d, keyID)
}

// SignDecision signs d with priv under keyID and sets d.Signature to
// "ed25519:<keyID>:<base64>". Any previous signature is replaced. It must be
// called after every other field of d is final: changing one afterwards makes
// VerifyDecision fail with ErrBadSignature.
func SignDecision(d *Decision, keyID string, priv ed25519.PrivateKey) error {
	if !ValidKeyID(keyID) {
		return fmt.Errorf("cannot sign decision %q: invalid key id %q (want 1-64 of [A-Za-z0-9._-])", d.ID, keyID)
	}
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("cannot sign decision %q with key %q: private key has %d bytes, want %d", d.ID, keyID, len(priv), ed25519.PrivateKeySize)
	}
	sig := ed25519.Sign(priv, DecisionSigningBytes(d, keyID))
	d.Signature = signaturePrefix + keyID + ":" + base64.StdEncoding.EncodeToString(sig)
	return nil
}

// SignatureKeyID returns the key id named by d's signature, or "" when the
// signature is absent or malformed.
func SignatureKeyID(d *Decision) string {
	id, _, err := parseSignature(d.Signature)
	if err != nil {
		return ""
	}
	return id
}

func parseSignature(s string) (keyID string, sig []byte, err error) {
	rest, ok := strings.CutPrefix(s, signaturePrefix)
	if !ok {
		return "", nil, ErrMalformedSignature
	}
	keyID, b64, ok := strings.Cut(rest, ":")
	if !ok || !ValidKeyID(keyID) {
		return "", nil, ErrMalformedSignature
	}
	sig, err = base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return "", nil, ErrMalformedSignature
	}
	return keyID, sig, nil
}

// VerifyDecision checks d's signature against keys (key id → public key). It
// returns nil when the signature names a key in keys and matches every field
// of d; otherwise an error wrapping ErrUnsigned, ErrMalformedSignature,
// ErrUnknownKey or ErrBadSignature, naming the decision and the key id.
func VerifyDecision(d *Decision, keys map[string]ed25519.PublicKey) error {
	if d.Signature == "" {
		return fmt.Errorf("cannot verify decision %q: %w", d.ID, ErrUnsigned)
	}
	keyID, sig, err := parseSignature(d.Signature)
	if err != nil {
		return fmt.Errorf("cannot verify decision %q: %w", d.ID, err)
	}
	pub, ok := keys[keyID]
	if !ok || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("cannot verify decision %q with key %q: %w", d.ID, keyID, ErrUnknownKey)
	}
	if !ed25519.Verify(pub, DecisionSigningBytes(d, keyID), sig) {
		return fmt.Errorf("cannot verify decision %q with key %q: %w", d.ID, keyID, ErrBadSignature)
	}
	return nil
}

// GenerateKey returns a new ed25519 key pair named keyID as the contents of a
// private key file and of a public key file (formats in the comment at the top
// of this file).
func GenerateKey(keyID string) (privateFile, publicFile []byte, err error) {
	if !ValidKeyID(keyID) {
		return nil, nil, fmt.Errorf("cannot generate key: invalid key id %q (want 1-64 of [A-Za-z0-9._-])", keyID)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot generate key %q: %w", keyID, err)
	}
	return FormatPrivateKey(keyID, priv), FormatPublicKey(keyID, pub), nil
}

// FormatPrivateKey returns the private key file line for priv.
func FormatPrivateKey(keyID string, priv ed25519.PrivateKey) []byte {
	return fmt.Appendf(nil, "%s %s %s\n", keyFilePrivate, keyID, base64.StdEncoding.EncodeToString(priv.Seed()))
}

// FormatPublicKey returns the public key file line for pub.
func FormatPublicKey(keyID string, pub ed25519.PublicKey) []byte {
	return fmt.Appendf(nil, "%s %s %s\n", keyFilePublic, keyID, base64.StdEncoding.EncodeToString(pub))
}

// LoadPrivateKey reads a private key file and returns its key id and key. The
// file must hold exactly one private key line.
func LoadPrivateKey(path string) (keyID string, priv ed25519.PrivateKey, err error) {
	keys, err := loadKeyFile(path)
	if err != nil {
		return "", nil, err
	}
	for _, k := range keys {
		if k.priv == nil {
			return "", nil, fmt.Errorf("cannot load private key from %q: line %d holds a public key", path, k.line)
		}
	}
	if len(keys) != 1 {
		return "", nil, fmt.Errorf("cannot load private key from %q: found %d keys, want 1", path, len(keys))
	}
	return keys[0].id, keys[0].priv, nil
}

// LoadPublicKeyRing reads public key files like LoadPublicKeys but keeps
// every key of a key id: the trusted set of enforcement points' receipt keys,
// whose key id is the enforcement point's id, so that rotating an enforcement
// point's key means trusting its old and new key under the same id for a
// while. At least one key must be found.
func LoadPublicKeyRing(paths ...string) (map[string][]ed25519.PublicKey, error) {
	ring := make(map[string][]ed25519.PublicKey)
	n := 0
	for _, path := range paths {
		keys, err := loadKeyFile(path)
		if err != nil {
			return nil, err
		}
	next:
		for _, k := range keys {
			for _, old := range ring[k.id] {
				if old.Equal(k.pub) {
					continue next
				}
			}
			ring[k.id] = append(ring[k.id], k.pub)
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("cannot load public keys from %q: no key found", paths)
	}
	return ring, nil
}

// LoadPublicKeys reads public key files (a private key file contributes its
// public half) and returns the trusted set by key id. The same key id with two
// different keys is an error; at least one key must be found.
func LoadPublicKeys(paths ...string) (map[string]ed25519.PublicKey, error) {
	set := make(map[string]ed25519.PublicKey)
	for _, path := range paths {
		keys, err := loadKeyFile(path)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if old, ok := set[k.id]; ok && !old.Equal(k.pub) {
				return nil, fmt.Errorf("cannot load public keys: key id %q has two different keys (second at %q line %d)", k.id, path, k.line)
			}
			set[k.id] = k.pub
		}
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("cannot load public keys from %q: no key found", paths)
	}
	return set, nil
}

type fileKey struct {
	id   string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey // nil for a public key line
	line int
}

func loadKeyFile(path string) ([]fileKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read key file: %w", err)
	}
	keys, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("cannot parse key file %q: %w", path, err)
	}
	return keys, nil
}

// parseKeyFile parses the lines of a key file.
func parseKeyFile(data []byte) ([]fileKey, error) {
	var keys []fileKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || (f[0] != keyFilePrivate && f[0] != keyFilePublic) {
			return nil, fmt.Errorf("line %d: want %q or %q followed by a key id and a base64 key", n, keyFilePrivate, keyFilePublic)
		}
		if !ValidKeyID(f[1]) {
			return nil, fmt.Errorf("line %d: invalid key id %q (want 1-64 of [A-Za-z0-9._-])", n, f[1])
		}
		raw, err := base64.StdEncoding.DecodeString(f[2])
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q is not base64: %w", n, f[1], err)
		}
		k := fileKey{id: f[1], line: n}
		switch f[0] {
		case keyFilePrivate:
			if len(raw) != ed25519SeedBytes {
				return nil, fmt.Errorf("line %d: private key %q has %d bytes, want %d", n, f[1], len(raw), ed25519SeedBytes)
			}
			k.priv = ed25519.NewKeyFromSeed(raw)
			k.pub = k.priv.Public().(ed25519.PublicKey)
		default:
			if len(raw) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("line %d: public key %q has %d bytes, want %d", n, f[1], len(raw), ed25519.PublicKeySize)
			}
			k.pub = ed25519.PublicKey(raw)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

// ApplyReceipt is published by an enforcement point on
// SubjectDecisionsApplied when it starts enforcing a decision (Action block or
// throttle) and when it stops because the decision was lifted (Action
// unblock, DecisionID the lifted decision's id, KeyID the key that signed the
// unblock); Result says whether it applied it, cannot apply it (a scope it
// cannot match: not_applicable) or tried and failed. An expiry has no
// receipt. An enforcement point publishes at most one receipt per
// (DecisionID, EnforcerID, Action, Result); its
// Nats-Msg-Id is ReceiptMsgID, so retries are dropped by the stream's
// duplicate window. With decisions' CreatedAt and the stream time of the
// decision message, receipts give the chain decided → delivered → enforced.
type ApplyReceipt struct {
	DecisionID string    `json:"decision_id"`
	EnforcerID string    `json:"enforcer_id"`
	Action     string    `json:"action"`
	Scope      string    `json:"scope"`
	Value      string    `json:"value"`
	KeyID      string    `json:"key_id,omitempty"` // the key that signed the decision; empty if unsigned (testing only)
	AppliedAt  time.Time `json:"applied_at"`
	// Result is ReceiptApplied, ReceiptNotApplicable or ReceiptFailed; empty
	// (an older enforcement point) means ReceiptApplied.
	Result string `json:"result,omitempty"`
	// Reason is one of the ReceiptReason* codes when Result is not applied,
	// and Detail says the same in words (a broker's error message).
	Reason  string `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`
	SchemaV int    `json:"v"`
	// Signature is "ed25519:<enforcer id>:<base64>", by the enforcement
	// point's own receipt key (SignReceipt); empty from an enforcement point
	// without one. It is not part of ReceiptMsgID.
	Signature string `json:"sig,omitempty"`
}

// Outcome returns r's Result, ReceiptApplied when it is empty.
func (r *ApplyReceipt) Outcome() string {
	if r.Result == "" {
		return ReceiptApplied
	}
	return r.Result
}

// ReceiptMsgID returns the Nats-Msg-Id of a receipt:
// "<enforcer>.<decision>.<action>", followed by ".<result>" unless the result
// is applied, so that a failed attempt does not hide the later success from
// the stream's duplicate window.
func ReceiptMsgID(r *ApplyReceipt) string {
	id := r.EnforcerID + "." + r.DecisionID + "." + r.Action
	if out := r.Outcome(); out != ReceiptApplied {
		id += "." + out
	}
	return id
}

// UnblockID returns the id of the unblock that lifts the decision named
// liftedID: liftedID followed by UnblockIDSuffix. The id is covered by the
// signature, so a signed unblock names the one decision it lifts, and lifting
// the same decision twice (a retry) publishes one message.
func UnblockID(liftedID string) string { return liftedID + UnblockIDSuffix }

// LiftedID returns the id of the decision that the unblock id names (see
// UnblockID), or false when id does not name one.
func LiftedID(unblockID string) (string, bool) {
	id, ok := strings.CutSuffix(unblockID, UnblockIDSuffix)
	return id, ok && id != ""
}

// Lifts reports whether the unblock u lifts the active decision d: they have
// the same scope and value, and u names d (u.ID is UnblockID(d.ID)) or is
// newer: a higher Revision when either has one, else created at or after d.
// An unblock thus lifts exactly the decision it names, and whatever older
// decision of the same scope and value an enforcement point still holds, but
// never a newer block: an old unblock replayed from the decision stream
// cannot lift a block issued after it. Signatures are not checked here
// (VerifyDecision).
func Lifts(u, d *Decision) bool {
	if u.Action != ActionUnblock || u.DryRun || u.Scope != d.Scope || u.Value != d.Value {
		return false
	}
	if id, ok := LiftedID(u.ID); ok && id == d.ID {
		return true
	}
	if u.Revision != 0 || d.Revision != 0 {
		return u.Revision > d.Revision
	}
	return !u.CreatedAt.Before(d.CreatedAt)
}
