package schemas

import (
	"bytes"
	"testing"
)

// The normalizer as it was before its identifiers and digits were found in
// the same pass as the command (2026-12-07): the specification the one-pass
// code must match byte for byte (FuzzNormalizeOnePass).

// refAppendCommand is appendCommand without the resource text.
func refAppendCommand(dst, method, path []byte) (_ []byte, res uint64, query []byte) {
	method, path, query = splitCommand(method, path)
	start0 := len(dst)
	for _, c := range method {
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c == ' ':
			// The first space ends the method when the command is read again.
			c = '_'
		}
		dst = append(dst, c)
	}
	if len(method) > 0 && len(path) > 0 {
		dst = append(dst, ' ')
	}
	start := 0
	for i := 0; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' && path[i] != '?' && path[i] != '#' {
			continue
		}
		seg := path[start:i]
		if refIsIdentifier(seg) {
			dst = append(dst, Placeholder...)
			if res == 0 {
				res = seedMain
			}
			res = hashBytes(res, seg)
		} else {
			dst = append(dst, seg...)
		}
		if i == len(path) {
			break
		}
		if path[i] != '/' {
			// '?' or '#': drop the rest, unless it is an MQTT wildcard '#' segment.
			switch {
			case path[i] == '?':
				query = path[i+1:]
			case i == start:
				dst = append(dst, '#')
			}
			break
		}
		dst = append(dst, '/')
		start = i + 1
	}
	// A space before a dropped query ("GET /x ?a") would end the command, and
	// reading it again trims it.
	for len(dst) > start0 && dst[len(dst)-1] == ' ' {
		dst = dst[:len(dst)-1]
	}
	if res != 0 {
		res = mix(res)
	}
	return dst, res, query
}

// refAppendIdentifiers appends the resource text of (method, path): the
// second pass over the path.
func refAppendIdentifiers(dst, method, path []byte) []byte {
	_, path, _ = splitCommand(method, path)
	start0 := len(dst)
	start := 0
	for i := 0; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' && path[i] != '?' && path[i] != '#' {
			continue
		}
		if seg := path[start:i]; refIsIdentifier(seg) {
			sep := 0
			if len(dst) > start0 {
				sep = 1
			}
			room := MaxResourceText - (len(dst) - start0) - sep
			if len(seg) > room {
				if len(dst) == start0 {
					const ellipsis = "…"
					dst = append(dst, seg[:MaxResourceText-len(ellipsis)]...)
					dst = append(dst, ellipsis...)
				}
				return dst
			}
			if sep == 1 {
				dst = append(dst, '/')
			}
			dst = append(dst, seg...)
		}
		if i == len(path) || path[i] != '/' {
			break
		}
		start = i + 1
	}
	return dst
}

func refIsIdentifier(seg []byte) bool {
	if len(seg) > maxSegment {
		return true
	}
	digits := false
	for _, c := range seg {
		if c >= '0' && c <= '9' {
			digits = true
			break
		}
	}
	if !digits {
		return false
	}
	// Version segments: v1, v2, v10beta.
	if len(seg) >= 2 && len(seg) <= 8 && (seg[0] == 'v' || seg[0] == 'V') && seg[1] >= '0' && seg[1] <= '9' {
		return false
	}
	return true
}

// FuzzNormalizeOnePass checks that SetRawCommand's one pass gives the
// command, resource hash, dropped query and resource text of the two-pass
// reference above, for any method and path.
func FuzzNormalizeOnePass(f *testing.F) {
	for _, c := range [][2]string{
		{"POST", "/v1/devices/d-17/unlock?x=1"}, {"get", "/v2beta/status"}, {"", "post /v1/cars/7f3a9c/start"},
		{"PUBLISH", "devices/d-1/cmd/#"}, {"", "  GET   /x/0123456789012345678901234567890123456789  "},
		{"0", ""}, {"get x", ""}, {"a 1", "c"}, {"", "0 ?a=1"}, {"", "GET /x ?a"}, {"GET", "/v2beta/status#frag-1"},
		{"GET", "/x/" + string(bytes.Repeat([]byte("a1"), 100))}, {"GET", "/x/dev-1/" + string(bytes.Repeat([]byte("a1"), 70)) + "/b2"},
		{"GET", "/a1/b2/c3/d4/e5/f6/g7/h8/i9/j10/k11/l12/m13/n14/o15/p16/q17/r18/s19/t20/u21/v22/w23/x24/y25/z26/aa27/bb28/cc29/dd30/ee31/ff32/gg33/hh34/ii35/jj36/kk37/ll38/mm39"},
		{"PUBLISH", "a/V9/v10beta/vv1/v1234567/x/#/y"}, {"", "/\xff1/\xc3\xa9"},
	} {
		f.Add([]byte(c[0]), []byte(c[1]))
	}
	f.Fuzz(func(t *testing.T, method, path []byte) {
		wantCmd, wantRes, wantQuery := refAppendCommand([]byte("pre"), method, path)
		var wantText []byte
		if wantRes != 0 {
			wantText = refAppendIdentifiers(nil, method, path)
		}
		gotCmd, gotRes, gotQuery := appendCommand([]byte("pre"), nil, method, path)
		if !bytes.Equal(gotCmd, wantCmd) || gotRes != wantRes || !bytes.Equal(gotQuery, wantQuery) {
			t.Fatalf("appendCommand(%q, %q) = %q %x %q, want %q %x %q", method, path, gotCmd, gotRes, gotQuery, wantCmd, wantRes, wantQuery)
		}
		var ev Event
		ev.SetRawCommand(method, path)
		if !bytes.Equal(ev.Command, wantCmd[3:]) || ev.Resource != wantRes || !bytes.Equal(ev.ResourceText, wantText) {
			t.Fatalf("SetRawCommand(%q, %q): %q %x %q, want %q %x %q", method, path, ev.Command, ev.Resource, ev.ResourceText, wantCmd[3:], wantRes, wantText)
		}
	})
}
