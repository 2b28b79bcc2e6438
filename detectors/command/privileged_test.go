package command

import "testing"

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
