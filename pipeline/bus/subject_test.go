package bus

import "testing"

func TestLogSubject(t *testing.T) {
	f := func(format, source, want string) {
		t.Helper()
		if got := LogSubject(format, source); got != want {
			t.Fatalf("LogSubject(%q, %q) = %q; want %q", format, source, got, want)
		}
	}
	f("json", "kong-eu1", "iotwatch.logs.json.kong-eu1")
	f("arrow", "emqx_1", "iotwatch.logs.arrow.emqx_1")
	f("json", "gw.eu.1", "iotwatch.logs.json.gw_eu_1")
	f("json", "a b\tc\nd", "iotwatch.logs.json.a_b_c_d")
	f("json", "*", "iotwatch.logs.json._")
	f("j>", "x*y", "iotwatch.logs.j_.x_y")
	f("", "", "iotwatch.logs._._")
	f("json", "zürich-gw", "iotwatch.logs.json.zürich-gw")
}

func TestSubjectTokenCutsOnRuneBoundary(t *testing.T) {
	s := ""
	for len(s) < 200 {
		s += "é" // 2 bytes
	}
	s = "x" + s // the 128-byte cut falls inside a rune
	got := SubjectToken(s)
	if len(got) > maxTokenLen || len(got) < maxTokenLen-3 {
		t.Fatalf("SubjectToken cut to %d bytes; want at most %d and close to it", len(got), maxTokenLen)
	}
	for i, r := range got {
		if r == '\uFFFD' {
			t.Fatalf("SubjectToken produced an invalid rune at byte %d: %q", i, got)
		}
	}
}

func TestSubjectTokenNoAllocWhenClean(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() { _ = SubjectToken("kong-eu1") })
	if allocs != 0 {
		t.Fatalf("SubjectToken of a clean token allocated %.0f times; want 0", allocs)
	}
}
