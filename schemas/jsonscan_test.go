package schemas

import (
	"bytes"
	"math"
	"net/netip"
	"strconv"
	"testing"
)

// FuzzScanNumber checks the scanner's number fast paths against
// strconv.ParseFloat over the same bytes (the longest run of number bytes):
// the same value, bit for bit, the same text, the same end, and an error
// exactly when ParseFloat has one.
func FuzzScanNumber(f *testing.F) {
	for _, s := range []string{"0", "18.4", "12.5,", "0.1}", "123456789012345", "1234567890123456", "12345678901234.5",
		"1234567890123.45", "1.", "1.e5", "1.5e3", "00.25", "-18.4", "-0", "9007199254740993", "0.000000000000001",
		"99999999999999.9", "3.14159265358979", "1e400", "5-", "7.0.1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		if len(text) == 0 || (text[0] != '-' && (text[0] < '0' || text[0] > '9')) {
			return
		}
		end := 0
		for end < len(text) && isNumberByte(text[end]) {
			end++
		}
		want, wantErr := strconv.ParseFloat(string(text[:end]), 64)
		s := scanner{b: text}
		var v jsonValue
		err := s.value(&v)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%q: error %v, ParseFloat's %v", text, err, wantErr)
		}
		if err != nil {
			return
		}
		if v.kind != jsonNumber || math.Float64bits(v.num) != math.Float64bits(want) || !bytes.Equal(v.raw, text[:end]) || s.i != end {
			t.Fatalf("%q: %v %q end %d, want %v %q end %d", text, v.num, v.raw, s.i, want, text[:end], end)
		}
	})
}

// FuzzParseDottedQuad checks the decoder's IPv4 fast path against
// netip.ParseAddr: whatever it accepts, netip accepts as the same address,
// and it accepts every IPv4 address netip parses without a zone.
func FuzzParseDottedQuad(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5",
		"1..2.3", "1.2.3.4 ", "1.2.3.04", "::ffff:1.2.3.4", "1.2.3.4%eth0", "9.99.199.249", "1.2.3.4567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseDottedQuad([]byte(s))
		want, err := netip.ParseAddr(s)
		if ok && (err != nil || got != want) {
			t.Fatalf("parseDottedQuad(%q) = %v, netip.ParseAddr %v, %v", s, got, want, err)
		}
		if !ok && err == nil && want.Is4() && want.Zone() == "" {
			t.Fatalf("parseDottedQuad(%q) refused what netip.ParseAddr parses as %v", s, want)
		}
	})
}
