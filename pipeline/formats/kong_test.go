package formats

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// kongOptionSets are the option sets the selective parse is checked with:
// nothing configured, and every field configured from a header or a path.
var kongOptionSets = []Options{
	{},
	{Identity: "header:X-Device-Id", CountryField: "CF-IPCountry", ClassField: "consumer.custom_id"},
	{Identity: "header:x-device-id", CountryField: "X-Country", ClassField: "service.name"},
	{CountryField: "cf_ipcountry", ClassField: UserAgentProduct},
}

// kongEdgeRecords exercise the skipping: escapes, nesting, odd header case,
// arrays and objects where scalars are wanted, and deep objects.
var kongEdgeRecords = []string{
	`{"started_at":1767607200000,"client_ip":"192.0.2.1","request":{"headers":{"X-Device-Id":"dev-\"1\"","CF-IPCountry":"de","x-other":"a\\\"b{["},"method":"GET","uri":"/v1/x"},"response":{"headers":{"x-device-id":"not-this"},"status":200}}`,
	`{"service":{"name":"svc\\","tags":[{"a":"}"},"]"]},"started_at":1767607200000,"client_ip":"192.0.2.2","consumer":{"custom_id":{"nested":1},"username":["x"]}}`,
	`{"request":{"headers":{"x-device-id":{"a":{"b":{"c":"deep"}}}}},"started_at":1767607200000,"client_ip":"192.0.2.3","x-country":"fr","http_x_country":"nl"}`,
	`{"route":{"paths":["/v1"],"x":{"y":{"z":{"w":{"v":1}}}}},"started_at":1767607200000,"client_ip":"192.0.2.4","request":{"tls":{"client_verify":"FAILED:x"}},"response":{"status":403}}`,
	`{"service":{"port":80,"ok":true,"no":false,"none":null,"neg":-1.5e3},"started_at":1767607200000,"client_ip":"192.0.2.5"}`,
	`{"started_at":1767607200000,"service":{"name":"unterminated}`,
	`{"started_at":1767607200000,"service":{"a":[1,2}}`,
	`{"started_at":1767607200000,"service":{"a":tru}}`,
	`{"started_at":1767607200000,"client_ip":"192.0.2.6"} trailing`,
	`["not","an","object"]`,
}

// kongRecords returns every testdata record of kong plus kongEdgeRecords.
func kongRecords(tb testing.TB) [][]byte {
	tb.Helper()
	logs, err := filepath.Glob("testdata/kong/*.log")
	if err != nil || len(logs) == 0 {
		tb.Fatalf("no kong testdata: %v", err)
	}
	var recs [][]byte
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, Records(schemas.FormatKong, nil, b)...)
	}
	for _, r := range kongEdgeRecords {
		recs = append(recs, []byte(r))
	}
	return recs
}

// checkKongSelected checks that the kong decoder's selective parse of rec
// yields exactly the tokens of the full flattening that the decoder reads
// (its fields by name, the configured ones as matchField finds them), and
// fails only where the full flattening fails too.
func checkKongSelected(t *testing.T, o Options, rec []byte) {
	t.Helper()
	dec, err := New(schemas.FormatKong, o)
	if err != nil {
		t.Fatal(err)
	}
	d := dec.(*kong)
	var full flattener
	fullErr := full.parse(rec, nil)
	selErr := d.f.parse(rec, d.want)
	if selErr != nil {
		if fullErr == nil {
			t.Fatalf("options %+v, record %s: the selective parse fails (%v), the full one does not", o, rec, selErr)
		}
		return
	}
	if fullErr != nil {
		return // a malformed scalar inside a skipped member: accepted, never read
	}
	read := func(path []byte) bool {
		for _, f := range kongFields {
			if eqName(path, f) {
				return true
			}
		}
		return matchField(path, d.configuredHeader()) || matchField(path, d.country) || matchField(path, d.class)
	}
	var want []token
	for _, tk := range full.toks {
		if read(tk.path) {
			want = append(want, tk)
		}
	}
	got := d.f.toks
	eq := func(a, b token) bool {
		return string(a.path) == string(b.path) && string(a.val) == string(b.val) && a.kind == b.kind && a.num == b.num
	}
	if !slices.EqualFunc(got, want, eq) {
		t.Errorf("options %+v, record %s:\nselected %s\nwant     %s", o, rec, renderTokens(got), renderTokens(want))
	}
}

func renderTokens(ts []token) string {
	s := ""
	for _, t := range ts {
		s += string(t.path) + "=" + string(t.val) + " "
	}
	return s
}

func TestKongSelectedMatchesFlattener(t *testing.T) {
	recs := kongRecords(t)
	for _, o := range kongOptionSets {
		for _, rec := range recs {
			checkKongSelected(t, o, rec)
		}
	}
}

// TestKongConfiguredFields: a header identity, a country header and a class
// path are found wherever the options say, in any case, and only there.
func TestKongConfiguredFields(t *testing.T) {
	d, err := New(schemas.FormatKong, kongOptionSets[1])
	if err != nil {
		t.Fatal(err)
	}
	var ev schemas.Event
	rec := `{"service":{"name":"x","custom_id":"no"},"response":{"headers":{"x-device-id":"resp"}},"request":{"headers":{"X-Device-Id":"dev-9","CF-IPCountry":"ch","x-country":"fr"},"method":"GET","uri":"/v1/a"},"client_ip":"192.0.2.9","started_at":1767607200000,"consumer":{"custom_id":"meter/m2","username":"u"}}`
	if err := d.Decode([]byte(rec), 1, 0, now, &ev); err != nil {
		t.Fatal(err)
	}
	if string(ev.Device) != "dev-9" || ev.IDMethod != schemas.IDToken || ev.Country != (schemas.Country{'C', 'H'}) || string(ev.Class) != "meter/m2" {
		t.Errorf("device %q by %v, country %s, class %q; want dev-9 by token (the header), CH, meter/m2", ev.Device, ev.IDMethod, ev.Country[:], ev.Class)
	}
}

// FuzzKongSelected checks the selective parse against the full flattening
// on any input.
func FuzzKongSelected(f *testing.F) {
	for _, rec := range kongRecords(f) {
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		for _, o := range kongOptionSets {
			checkKongSelected(t, o, rec)
		}
	})
}

// skipScan is the byte-by-byte scan skipBalanced replaces, kept as its
// reference: brackets balanced and matching outside strings, strings ended
// by their first unescaped quote.
func skipScan(f *flattener) error {
	var stack [maxNesting]byte
	depth := 0
	for f.i < len(f.b) {
		switch c := f.b[f.i]; c {
		case '{', '[':
			if depth == maxNesting {
				return syntaxError("nesting too deep")
			}
			stack[depth] = c
			depth++
			f.i++
		case '}', ']':
			if depth == 0 || (c == '}') != (stack[depth-1] == '{') {
				return syntaxError("unbalanced brackets at offset " + strconv.Itoa(f.i))
			}
			depth--
			f.i++
			if depth == 0 {
				return nil
			}
		case '"':
			if err := f.skipString(); err != nil {
				return err
			}
		default:
			f.i++
		}
	}
	return syntaxError("unexpected end of the record inside a nested value")
}

// checkSkipBalanced checks skipBalanced against skipScan from every bracket
// of b: the same end, or the same error.
func checkSkipBalanced(t *testing.T, b []byte) {
	t.Helper()
	for at, c := range b {
		if c != '{' && c != '[' {
			continue
		}
		want, got := flattener{b: b, i: at}, flattener{b: b, i: at}
		wantErr, gotErr := skipScan(&want), got.skipBalanced()
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || (wantErr == nil && got.i != want.i) {
			t.Fatalf("skipping %q from offset %d: end %d, error %v; want end %d, error %v", b, at, got.i, gotErr, want.i, wantErr)
		}
	}
}

// skipEdgeRecords put escapes, quotes and brackets at every lane of a word
// and across word boundaries, brackets inside strings, the bytes the
// bracket test confuses with brackets ('Y', 'y', '_', DEL) outside strings,
// mismatched kinds, nesting past the limit, and records cut short.
var skipEdgeRecords = []string{
	`{}`, `[]`, `{"a":"}"}`, `["]","[",{"}":"{"}]`, `{"a":"\"}"}`, `{"a":"\\"}`, `{"a":"\\\"}"}`,
	`{"abcdef":"\\"}x`, `{"abcdefg":"x\"y]"}`, `{"a":[1,2,{"b":[true,null]}],"c":"d"}`,
	`{"a":1]`, `[1,2}`, `{"a":{"b":1}`, `{"a":"unterminated`, `{"a":"ends in a backslash\`, `{"a":"x"`,
	`{y:_,Y:` + "\x7f" + `}`, `{"a":[_y]}`, `{"k":"v\u005d"}`, `{"a":` + strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1) + `}`,
	`[` + strings.Repeat(`"\\",`, 9) + `"]"]`, `{"` + strings.Repeat(`\"`, 11) + `":{}}`,
}

func TestSkipBalanced(t *testing.T) {
	for _, rec := range kongRecords(t) {
		checkSkipBalanced(t, rec)
	}
	for _, rec := range skipEdgeRecords {
		for cut := 1; cut <= len(rec); cut++ { // every prefix, so that each byte falls in every lane
			checkSkipBalanced(t, []byte(rec[:cut]))
			checkSkipBalanced(t, []byte("  "+rec[:cut])) // shifted by two lanes
		}
	}
}

// FuzzSkipBalanced checks skipBalanced against skipScan on any input.
func FuzzSkipBalanced(f *testing.F) {
	for _, rec := range kongRecords(f) {
		f.Add(rec)
	}
	for _, rec := range skipEdgeRecords {
		f.Add([]byte(rec))
	}
	f.Fuzz(checkSkipBalanced)
}

// TestBlockMasks checks blockMasks (assembly on amd64) and
// blockMasksGeneric against a byte loop: every byte value at every
// position, and the blocks of the Kong records.
func TestBlockMasks(t *testing.T) {
	check := func(p *[64]byte) {
		t.Helper()
		var q, bs, br uint64
		for k, c := range p {
			switch c {
			case '"':
				q |= 1 << k
			case '\\':
				bs |= 1 << k
			case '{', '}', '[', ']':
				br |= 1 << k
			}
		}
		if gq, gbs, gbr := blockMasks(p); gq != q || gbs != bs || gbr != br {
			t.Fatalf("blockMasks(%q) = %x %x %x, want %x %x %x", p[:], gq, gbs, gbr, q, bs, br)
		}
		if gq, gbs, gbr := blockMasksGeneric(p); gq != q || gbs != bs || gbr != br {
			t.Fatalf("blockMasksGeneric(%q) = %x %x %x, want %x %x %x", p[:], gq, gbs, gbr, q, bs, br)
		}
	}
	var p [64]byte
	for c := range 256 {
		for k := range p {
			for j := range p { // the byte among neighbours that match and that do not
				p[j] = "\"\\{}[]x\x00"[(j+c)%8]
			}
			p[k] = byte(c)
			check(&p)
		}
	}
	for _, rec := range kongRecords(t) {
		for i := 0; i+64 <= len(rec); i++ {
			check((*[64]byte)(rec[i : i+64]))
		}
	}
}
