package schemas

import (
	"strconv"
	"testing"
)

func TestHashStringMatchesHash(t *testing.T) {
	for _, s := range []string{"", "a", "abcdefg", "abcdefgh", "abcdefghi", "POST /v1/devices/{id}/unlock"} {
		if Hash([]byte(s)) != HashString(s) {
			t.Errorf("Hash(%q) != HashString(%q)", s, s)
		}
	}
}

func TestHashSeparatesFields(t *testing.T) {
	if Hash2([]byte("ab"), []byte("c")) == Hash2([]byte("a"), []byte("bc")) {
		t.Error("Hash2 does not separate its fields")
	}
	if Hash([]byte("a")) == Hash([]byte("a\x00")) {
		t.Error("trailing zero bytes do not change the hash")
	}
	seen := map[uint64]bool{}
	alt := map[uint64]bool{}
	for i := range 200000 {
		d := []byte("dev-" + strconv.Itoa(i))
		h, a := Hash2([]byte("acme"), d), Hash2Alt([]byte("acme"), d)
		if seen[h] || alt[a] {
			t.Fatalf("collision at %d devices", i)
		}
		seen[h], alt[a] = true, true
	}
}

const stableAcme = 0x5b0ae807273f5091

// TestHashIsStable pins the values: state checkpoints and stored ids depend on them.
func TestHashIsStable(t *testing.T) {
	if got := Hash([]byte("acme")); got != stableAcme {
		t.Errorf("Hash(\"acme\") = %#x, want %#x: changing the hash is a migration", got, uint64(stableAcme))
	}
}

func BenchmarkHash2(b *testing.B) {
	t, d := []byte("hausnetz"), []byte("therm-000123")
	for b.Loop() {
		Hash2(t, d)
	}
}

// TestSetKeysMatchesHash2: the keys a decoder derives with the tenant hashed
// once are those of SetDevice and SetClass (Hash2, Hash2Alt, ModelKeyOf).
func TestSetKeysMatchesHash2(t *testing.T) {
	for _, tenant := range []string{"", "acme", "a-tenant-longer-than-eight"} {
		for _, class := range []string{"", "m", "thermostat/acme-t100"} {
			var ev, want Event
			want.SetDevice([]byte(tenant), []byte("therm-000042"))
			want.SetClass([]byte(class))
			ev.Tenant, ev.Device, ev.Class = want.Tenant, want.Device, want.Class
			ev.setKeys()
			if ev.DeviceKey != want.DeviceKey || ev.DeviceAlt != want.DeviceAlt || ev.ClassKey != want.ClassKey || ev.ModelKey != want.ModelKey {
				t.Errorf("tenant %q class %q: keys %x %x %x %x, want %x %x %x %x", tenant, class,
					ev.DeviceKey, ev.DeviceAlt, ev.ClassKey, ev.ModelKey, want.DeviceKey, want.DeviceAlt, want.ClassKey, want.ModelKey)
			}
		}
	}
}
