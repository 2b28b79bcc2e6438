package schemas

// Normalizer turns a raw request ("POST", "/v1/devices/d-17/unlock?x=1") or
// MQTT operation ("PUBLISH", "devices/d-17/cmd/unlock") into a command of a small
// vocabulary by replacing identifiers with the placeholder "{id}", and reports a
// hash of the replaced identifiers (which resource was addressed).
//
// A path segment is an identifier when it contains a digit (except version
// segments such as "v1" or "v2beta"), or is longer than 32 bytes. The query
// string and fragment are dropped. MQTT wildcards '+' and '#' are kept.
//
// Normalizing a normalized command returns it unchanged (FuzzDecode checks
// this through the codec's round trip).
//
// The zero Normalizer is ready to use and allocates nothing beyond dst's growth.
type Normalizer struct{}

// Placeholder replaces identifiers in commands.
const Placeholder = "{id}"

// maxSegment is the longest segment kept verbatim.
const maxSegment = 32

// Append appends the normalized command to dst. method may be empty (then path
// is assumed to be a whole command, possibly "METHOD path" already). It returns
// the extended dst and the resource hash (0 when nothing was replaced).
func (Normalizer) Append(dst, method, path []byte) ([]byte, uint64) {
	dst, res, _ := appendCommand(dst, nil, method, path)
	return dst, res
}

// Byte classes of a path, for the normalizer's one pass: what ends a
// segment, and digits (which make a segment an identifier).
const (
	pathSep   = 1 // '/', '?', '#'
	pathDigit = 2
)

var pathClass = [256]uint8{'/': pathSep, '?': pathSep, '#': pathSep,
	'0': pathDigit, '1': pathDigit, '2': pathDigit, '3': pathDigit, '4': pathDigit,
	'5': pathDigit, '6': pathDigit, '7': pathDigit, '8': pathDigit, '9': pathDigit}

// appendCommand is Append that also returns the query string the command
// dropped: what follows the path's '?', fragment included (nil if none);
// with ids, it adds the identifiers it replaced to ids (the resource text),
// in the same pass.
func appendCommand(dst []byte, ids *resourceText, method, path []byte) (_ []byte, res uint64, query []byte) {
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
	// The path is copied in runs, from kept (the first byte not copied
	// yet) to an identifier, which is replaced, or to the end.
	start, kept, digits := 0, 0, uint8(0)
	for i := 0; ; i++ {
		if i < len(path) {
			if k := pathClass[path[i]]; k&pathSep == 0 {
				digits |= k
				continue
			}
		}
		if seg := path[start:i]; isIdentifier(seg, digits != 0) {
			dst = append(dst, path[kept:start]...)
			dst = append(dst, Placeholder...)
			kept = i
			if res == 0 {
				res = seedMain
			}
			res = hashBytes(res, seg)
			if ids != nil {
				ids.add(seg)
			}
		}
		if i == len(path) || path[i] != '/' {
			// The end of the path, or '?' or '#': the rest is dropped,
			// unless it is an MQTT wildcard '#' segment.
			dst = append(dst, path[kept:i]...)
			switch {
			case i == len(path):
			case path[i] == '?':
				query = path[i+1:]
			case i == start:
				dst = append(dst, '#')
			}
			break
		}
		start, digits = i+1, 0
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

// splitCommand returns the method and path that appendCommand normalizes,
// and the query string when the path was a query alone ("GET ?a=1": a path
// that normalizes to nothing, dropped with its separating space).
func splitCommand(method, path []byte) (_, _, query []byte) {
	method, path = trimSpace(method), trimSpace(path)
	// At most three rounds: a method alone that is not a plain word becomes
	// the whole command, which splits again at most once more.
	for range 3 {
		if len(path) == 0 && !letters(method) {
			// A method alone that is not a plain word ("0", "GET x") is
			// normalized as a whole command, so that normalizing the output
			// again gives the same command. A plain word ("connect") is
			// upper-cased as a method.
			method, path = nil, method
		}
		if len(method) == 0 {
			// "POST /v1/x": split at the first space.
			for i, c := range path {
				if c == ' ' {
					method, path = path[:i], trimSpace(path[i+1:])
					break
				}
			}
		}
		if len(path) == 0 || path[0] != '?' || len(method) == 0 {
			break
		}
		// "0 ?", "GET ?x": the path normalizes to nothing; without it the
		// command must read as the method alone would, or normalizing the
		// output ("0 ") again would give another command ("{id}").
		query, path = path[1:], nil
	}
	return method, path, query
}

// MaxResourceText bounds Event.ResourceText, in bytes.
const MaxResourceText = 128

// resourceText collects the identifiers the normalizer replaces in a
// command, in order, joined by '/'; an identifier that would take the text
// past MaxResourceText bytes ends it (it is cut, and "…" marks the cut, only
// when it is the first).
type resourceText struct {
	b    [MaxResourceText]byte
	n    int
	full bool // an identifier did not fit: the text is complete
}

func (r *resourceText) add(seg []byte) {
	if r.full {
		return
	}
	sep := 0
	if r.n > 0 {
		sep = 1
	}
	if len(seg) > MaxResourceText-r.n-sep {
		if r.n == 0 {
			const ellipsis = "…"
			r.n = copy(r.b[:], seg[:MaxResourceText-len(ellipsis)])
			r.n += copy(r.b[r.n:], ellipsis)
		}
		r.full = true
		return
	}
	if sep == 1 {
		r.b[r.n] = '/'
		r.n++
	}
	r.n += copy(r.b[r.n:], seg)
}

// trimSpace drops leading and trailing ASCII spaces, so that normalizing a
// normalized command changes nothing.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

// letters reports whether b is ASCII letters only.
func letters(b []byte) bool {
	for _, c := range b {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// isIdentifier reports whether the path segment seg, which holds a digit
// when digits is set, is an identifier.
func isIdentifier(seg []byte, digits bool) bool {
	if len(seg) > maxSegment {
		return true
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

// NormalizeCommand returns the normalized form of a raw command (for callers
// off the hot path, such as tests and the simulator).
func NormalizeCommand(method, path string) string {
	b, _ := Normalizer{}.Append(nil, []byte(method), []byte(path))
	return string(b)
}
