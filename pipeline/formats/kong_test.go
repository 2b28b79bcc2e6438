package formats

import (
	"os"
	"path/filepath"
	"slices"
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
