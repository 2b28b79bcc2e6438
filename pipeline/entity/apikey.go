package entity

import "github.com/iotwatch/iotwatch/schemas"

// MaxKeyText bounds the API key id an observation carries (a keyed hash is
// 16 hex digits; gateways' key ids are short): a longer one is not judged,
// since a block of a cut id would match nothing.
const MaxKeyText = 48

// keyNamespace keeps API keys' state keys apart from addresses'.
var keyNamespace = []byte("iotwatch/api_key")

// KeyObsOf returns the observation of ev's API key, and whether it has one:
// an event with an API key (of at most MaxKeyText bytes) whose device is not
// identified by that key (a device identified by its key is the key's
// device, judged by the device detectors: its locality detector sees the
// networks it comes from), and whose outcome was not the enforcement point's
// doing. Its owner is Shard's, by the key. It does not allocate.
func KeyObsOf(ev *schemas.Event) (Obs, bool) {
	if len(ev.APIKey) == 0 || len(ev.APIKey) > MaxKeyText || ev.IDMethod == schemas.IDAPIKey || ev.Verdict.Enforced() {
		return Obs{}, false
	}
	ob := Obs{
		ForKey: true,
		Failed: ev.FailedAuth(),
		Line:   ev.Line,
		Seq:    ev.Seq,
		ID:     ev.ID,
		Time:   ev.Time,
		Device: ev.DeviceKey,
	}
	ob.KeyLen = uint8(copy(ob.Key[:], ev.APIKey))
	if ev.ClientIP.IsValid() {
		ob.Addr = ev.ClientIP.As16()
		ob.Is4 = ev.ClientIP.Is4() || ev.ClientIP.Is4In6()
	}
	return ob, true
}

// keyKey returns the state key of ob's API key.
func (ob *Obs) keyKey() (key, alt uint64) {
	k := ob.Key[:ob.KeyLen]
	return schemas.Hash2(keyNamespace, k), schemas.Hash2Alt(keyNamespace, k)
}

// hasAddr reports whether ob carries a client address.
func (ob *Obs) hasAddr() bool { return ob.Addr != [16]byte{} }
