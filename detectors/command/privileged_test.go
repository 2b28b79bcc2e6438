package command

import (
	"math"
	"strings"
	"testing"
)

func TestPrivileged(t *testing.T) {
	f := func(cmd string, want bool) {
		t.Helper()
		if got := Privileged([]byte(cmd)); got != want {
			t.Errorf("Privileged(%q) = %v; want %v", cmd, got, want)
		}
	}
	f("POST /v1/devices/{id}/unlock", true)
	f("PUT /v1/devices/{id}/firmware", true)
	f("POST /v1/devices/{id}/firmware-update", true)
	f("POST /fw/{id}", true)
	f("POST /v1/ota/{id}/start", true)
	f("POST /v1/OTA/{id}", true)
	f("POST /v1/devices/{id}/credentials", true)
	f("POST /v1/users/{id}/password", true)
	f("POST /v1/devices/{id}/factoryReset", true)
	f("POST /v1/devices/{id}/reset_password", true)
	f("GET /v1/devices/{id}/config", false) // a read changes nothing
	f("GET /v1/devices/{id}/firmware/latest", false)
	f("SUBSCRIBE devices/{id}/cmd/unlock", false)
	f("PUT /v1/devices/{id}/config", true)
	f("GETX /v1/devices/{id}/unlock", true)
	f("PUBLISH devices/{id}/cmd/unlock", true)
	f("POST /v1/devices/{id}/readings", false)
	f("GET /v1/thermostats/{id}/presets", false)
	f("GET /v1/tenants/{id}/quota", false)
	f("POST /v1/keys/{id}/rotate", false)
	f("GET /v1/devices/{id}/fwversion", false)
	f("", false)
	f("fw", true)
}

// TestPrivilegedWordEveryPrefix checks every prefix, in both cases and
// followed by more letters, against privilegedWord's first-letter shortcut:
// a prefix added with a new first letter fails here until the shortcut
// knows it.
func TestPrivilegedWordEveryPrefix(t *testing.T) {
	for _, p := range privilegedPrefixes {
		for _, w := range []string{p, p + "s", strings.ToUpper(p[:1]) + p[1:], strings.ToUpper(p)} {
			if !privilegedWord([]byte(w)) {
				t.Errorf("privilegedWord(%q) = false; want true", w)
			}
		}
	}
}

// TestDistinctTable checks the enumeration's estimate by ones against the
// computed one, for a bitmap of every count.
func TestDistinctTable(t *testing.T) {
	for ones := 0; ones <= 64; ones++ {
		m := uint64(1)<<ones - 1
		if ones == 64 {
			m = ^uint64(0)
		}
		if got, want := distinct(m), distinctOf(ones); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("distinct of %d ones = %v, computed %v", ones, got, want)
		}
	}
	if got, want := distinct(^uint64(0)), 64*math.Log(64); math.Abs(got-want) > 1e-9 {
		t.Errorf("distinct of a full bitmap = %v, want the limit 64·ln 64 = %v", got, want)
	}
	if got, want := distinct(1), 64*math.Log(64.0/63); got != want {
		t.Errorf("distinct of one bit = %v, want %v", got, want)
	}
}
