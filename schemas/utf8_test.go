package schemas

import (
	"errors"
	"testing"
	"unicode/utf8"
)

// checkUTF8Reason fails unless Decode dead-letters line as invalid UTF-8
// exactly when it is not valid UTF-8 (whatever else is wrong with it).
func checkUTF8Reason(t *testing.T, line []byte) {
	t.Helper()
	var d Decoder
	var ev Event
	err := d.Decode(line, 1, 0, now, &ev)
	var de *DecodeError
	gotInvalid := errors.As(err, &de) && de.Reason == DeadLetterInvalidUTF8
	if want := len(line) <= DefaultMaxLineBytes && !utf8.Valid(line); gotInvalid != want {
		t.Fatalf("Decode(%q) = %v; invalid UTF-8: %v", line, err, want)
	}
}

// TestInvalidUTF8Reason: the scanner validates UTF-8 only for lines with a
// byte of 0x80 or more; the reason must be the one a check of the whole
// line first gives, wherever the byte is.
func TestInvalidUTF8Reason(t *testing.T) {
	const ts = `"ts":"2026-01-05T10:00:00Z"`
	for _, line := range []string{
		`{` + ts + `,"device":"d-` + "\xff" + `1"}`,                            // in a value
		`{` + ts + `,"devi` + "\xff" + `ce":"d-1"}`,                            // in a key
		`{` + ts + `,"device":"a long device name` + "\xc3" + ` past a word"}`, // in a word of the SWAR loop
		`{` + ts + `,"device":"d\\n` + "\xe2\x82" + `"}`,                       // after an escape
		`{` + ts + `,"device":"d-1","x":{"a":[1,"` + "\xff" + `"]}}`,           // in a nested string
		`{` + ts + `,"device":"d-1","x":{"a":[1` + "\xff" + `]}}`,              // in a nested value, outside strings
		`{` + ts + `,"device":"d-1","args":{"t` + "\xff" + `":1}}`,             // in args
		`{` + ts + `,"device":` + "\xff" + `"d-1"}`,                            // where JSON syntax is expected
		`{` + ts + `,"device":"d-1"}` + "\xff",                                 // after the object
		`{` + ts + `,"device":"d-1","status":"x"` + "\xff",                     // and malformed
		`{` + ts + `,"device":"d-é"}`,                                          // valid UTF-8
		`{` + ts + `,"device":"d-1","x":{"é":["ü"]}}`,                          // valid, nested
		`{` + ts + `,"device":"d-1"}`,                                          // ASCII
	} {
		checkUTF8Reason(t, []byte(line))
	}
}

func FuzzInvalidUTF8Reason(f *testing.F) {
	f.Add([]byte(sampleLine))
	f.Add([]byte(fleetLine))
	f.Add([]byte("{\"ts\":\"2026-01-05T10:00:00Z\",\"device\":\"d-\xff1\",\"x\":{\"a\":[1,\"\xff\"]}}"))
	f.Fuzz(checkUTF8Reason)
}
