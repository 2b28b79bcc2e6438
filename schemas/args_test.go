package schemas

import (
	"errors"
	"testing"
)

func TestDecodeArgs(t *testing.T) {
	f := func(line string, want ...Arg) {
		t.Helper()
		var d Decoder
		var ev Event
		if err := d.Decode([]byte(line), 1, 0, now, &ev); err != nil {
			t.Errorf("%s: %v", line, err)
			return
		}
		got := ev.ArgList()
		if len(got) != len(want) {
			t.Errorf("%s: %d args %v, want %d", line, len(got), got, len(want))
			return
		}
		for i, w := range want {
			if string(got[i].Name) != string(w.Name) || got[i].Value != w.Value || got[i].Key != Hash(w.Name) {
				t.Errorf("%s: arg %d = %s=%v, want %s=%v", line, i, got[i].Name, got[i].Value, w.Name, w.Value)
			}
		}
	}
	a := func(name string, v float64) Arg { return Arg{Name: []byte(name), Value: v} }
	const head = `{"ts":"2026-01-05T10:00:00Z","device":"t-1",`
	f(head+`"args":{"temp":90.5,"fan":-2}}`, a("temp", 90.5), a("fan", -2))
	f(head+`"args" : { "temp" : 1e2 } , "cmd":"POST /x"}`, a("temp", 100))
	// Non-numeric values and names that are not plain are ignored.
	f(head+`"args":{"mode":"eco","on":true,"n":null,"x":[1],"bad name":3,"ok":4}}`, a("ok", 4))
	f(head + `"args":null}`)
	f(head + `"args":{}}`)
	// The first MaxArgs distinct names; a repeated name keeps the last value.
	f(head+`"args":{"a":1,"b":2,"a":3,"c":4,"d":5,"e":6}}`, a("a", 3), a("b", 2), a("c", 4), a("d", 5))
	// Query strings: plain decimals only; "args" wins over the query.
	f(head+`"method":"POST","path":"/v1/thermostats/17/set?temp=90&mode=eco&lvl=-1.5&x=1e3&y=&z=2.#frag=3"}`,
		a("temp", 90), a("lvl", -1.5))
	f(head+`"cmd":"POST /v1/t/17/set?temp=90&fan=2","args":{"temp":21}}`, a("temp", 21), a("fan", 2))
	f(head + `"cmd":"POST /v1/t/17/set#x?temp=90"}`)
	// The query is the one the normalizer drops: read after it trims the
	// command and splits off the method.
	f(head+`"cmd":" POST /v1/t/17/set?temp=90 "}`, a("temp", 90))
	f(head+`"cmd":"GE?T /v1/t/17/set?temp=90"}`, a("temp", 90))
	// An escaped key counts; "args" inside another member is not the event's.
	f(head+`"x\"y":{"args":{"no":1}},"\u0061rgs":{"temp":7}}`, a("temp", 7))
	f(head+`"args":{"t\u0065mp":7}}`, a("temp", 7))
	// An escaped key whose nested value holds escaped strings keeps its name.
	f(head+`"\u0061rgs":{"t\u0065mp":5}}`, a("temp", 5))
}

func TestDecodeArgsRejects(t *testing.T) {
	f := func(line, reason string) {
		t.Helper()
		var d Decoder
		var ev Event
		err := d.Decode([]byte(`{"ts":"2026-01-05T10:00:00Z","device":"t-1",`+line), 1, 0, now, &ev)
		var de *DecodeError
		if !errors.As(err, &de) || de.Reason != reason {
			t.Errorf("%s: err = %v, want reason %q", line, err, reason)
		}
	}
	f(`"args":[1,2]}`, DeadLetterBadField)
	f(`"args":"temp=90"}`, DeadLetterBadField)
	f(`"args":{"temp" 90}}`, DeadLetterMalformedJSON)
	f(`"args":{"temp":1e999}}`, DeadLetterMalformedJSON)
	f(`"args":{temp:1}}`, DeadLetterMalformedJSON)
}

func TestArgsRoundTripAndCopy(t *testing.T) {
	var d Decoder
	var a, b, c Event
	line := `{"ts":"2026-01-05T10:00:00Z","device":"t-1","cmd":"POST /v1/t/17/set?temp=90.25","args":{"tiny":1e-7,"big":1e21,"neg":-0}}`
	if err := d.Decode([]byte(line), 1, 0, now, &a); err != nil {
		t.Fatal(err)
	}
	enc := AppendJSON(nil, &a)
	if err := d.Decode(enc, 1, 0, now, &b); err != nil {
		t.Fatalf("cannot decode %s: %v", enc, err)
	}
	if !equalEvents(&a, &b) || b.NArgs != 4 {
		t.Errorf("round trip changed the args:\n%s\n%s", enc, AppendJSON(nil, &b))
	}
	c.CopyFrom(&a)
	a.Reset()
	if a.NArgs != 0 || string(AppendJSON(nil, &c)) != string(enc) {
		t.Errorf("CopyFrom/Reset: copy %s, reset left %d args", AppendJSON(nil, &c), a.NArgs)
	}
}

func TestDecodeArgsZeroAllocs(t *testing.T) {
	var d Decoder
	var ev Event
	line := []byte(`{"ts":"2026-01-05T10:00:00Z","device":"t-1","cmd":"POST /v1/t/17/set?temp=90&fan=2","args":{"t\u0065mp":21.5,"mode":"eco"}}`)
	_ = d.Decode(line, 1, 0, now, &ev)
	if allocs := testing.AllocsPerRun(1000, func() { _ = d.Decode(line, 1, 0, now, &ev) }); allocs != 0 {
		t.Errorf("Decode with args allocates %.1f times per event, want 0", allocs)
	}
	if ev.NArgs != 2 {
		t.Errorf("decoded %d args, want 2", ev.NArgs)
	}
}
