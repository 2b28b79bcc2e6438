package formats

import (
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Syslog and journald prefixes in front of a program's own line, as written
// by rsyslog/syslog-ng files, `journalctl` and `journalctl -o short-iso`, and
// a syslog receiver keeping the raw RFC 5424 message:
//
//	Mar  4 10:00:00 host mosquitto[123]: 1767607200: New connection from ...   RFC 3164 / journalctl (short)
//	<30>Mar  4 10:00:00 host mosquitto[123]: ...                                the same with its PRI
//	2026-03-04T10:00:00+0100 host mosquitto[123]: ...                           journalctl -o short-iso (systemd < 255)
//	2026-03-04T10:00:00+01:00 host mosquitto[123]: ...                          journalctl -o short-iso, short-iso-precise
//	<30>1 2026-03-04T10:00:00.123+01:00 host mosquitto 123 - - ...              RFC 5424 (structured data "-" or [...])
//
// stripSyslog returns the message after such a prefix and the prefix's time
// (Unix ns; 0 when the prefix has none), or the line unchanged and ok false
// when it has no prefix. An RFC 3164 time has neither year nor zone: it is
// read in loc, in the latest year that does not put it more than a day after
// ref (the arrival time; the wall clock when 0).
func stripSyslog(line []byte, loc *time.Location, ref int64) (msg []byte, t int64, ok bool) {
	p := line
	if len(p) > 2 && p[0] == '<' {
		i := 1
		for i < len(p) && i < 5 && p[i] >= '0' && p[i] <= '9' {
			i++
		}
		if i == 1 || i >= len(p) || p[i] != '>' {
			return line, 0, false
		}
		p = p[i+1:]
		if len(p) > 2 && p[0] == '1' && p[1] == ' ' { // RFC 5424
			return rfc5424(line, p[2:])
		}
	}
	switch {
	case len(p) > 16 && isMonth(p[:3]) && p[3] == ' ' && p[6] == ' ' && p[9] == ':' && p[12] == ':' && p[15] == ' ':
		t, ok = rfc3164Time(p[:15], loc, ref)
		if !ok {
			return line, 0, false
		}
		p = p[16:]
	case len(p) > 25 && p[4] == '-' && p[10] == 'T' && p[19] != ':':
		sp := indexByte(p, ' ')
		if sp < 20 {
			return line, 0, false
		}
		if t, ok = isoTime(p[:sp]); !ok {
			return line, 0, false
		}
		p = p[sp+1:]
	default:
		return line, 0, false
	}
	// host tag[pid]: message
	_, p = field(p, ' ')
	i := indexOf(p, ": ")
	if i <= 0 || indexByte(p[:i], ' ') >= 0 {
		return line, 0, false
	}
	return p[i+2:], t, true
}

// rfc5424 reads "TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG" after "<PRI>1 ".
func rfc5424(line, p []byte) ([]byte, int64, bool) {
	ts, p := field(p, ' ')
	var t int64
	if string(ts) != "-" {
		var ok bool
		if t, ok = isoTime(ts); !ok {
			return line, 0, false
		}
	}
	for range 3 { // hostname, app-name, procid, msgid: the last one below
		if _, p = field(p, ' '); len(p) == 0 {
			return line, 0, false
		}
	}
	_, p = field(p, ' ') // msgid
	switch {
	case hasPrefix(p, "- "):
		p = p[2:]
	case string(p) == "-":
		p = nil
	case hasPrefix(p, "["):
		for len(p) > 0 && p[0] == '[' { // SD-ELEMENTs; "]" inside a value is escaped as \]
			j := 1
			for j < len(p) && p[j] != ']' {
				if p[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(p) {
				return line, 0, false
			}
			p = p[j+1:]
		}
		if len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
	default:
		return line, 0, false
	}
	if hasPrefix(p, "\xef\xbb\xbf") { // BOM
		p = p[3:]
	}
	return p, t, true
}

// isoTime parses an RFC 3339 time, also with journald's "+0100" offset.
func isoTime(b []byte) (int64, bool) {
	if n := len(b); n > 5 && (b[n-5] == '+' || b[n-5] == '-') && n < 40 {
		var buf [40]byte
		m := copy(buf[:], b[:n-2])
		buf[m] = ':'
		m++
		m += copy(buf[m:], b[n-2:])
		return schemas.ParseRFC3339(buf[:m])
	}
	return schemas.ParseRFC3339(b)
}

func isMonth(b []byte) bool {
	for _, m := range months {
		if string(b) == m {
			return true
		}
	}
	return false
}

// rfc3164Time parses "Mar  4 10:00:00" (or "Mar 04 ...") in loc (see stripSyslog for the year).
func rfc3164Time(b []byte, loc *time.Location, ref int64) (int64, bool) {
	mon := 0
	for i, m := range months {
		if string(b[:3]) == m {
			mon = i + 1
		}
	}
	d := b[4:6]
	if d[0] == ' ' {
		d = d[1:]
	}
	day, ok1 := atou(d)
	h, ok2 := atou(b[7:9])
	mi, ok3 := atou(b[10:12])
	s, ok4 := atou(b[13:15])
	if !(ok1 && ok2 && ok3 && ok4) || day < 1 || day > 31 || h > 23 || mi > 59 || s > 60 {
		return 0, false
	}
	if ref <= 0 {
		ref = time.Now().UnixNano()
	}
	// The latest year that does not put the time in the future (beyond the
	// decoders' bound): a log is read after it was written.
	y := time.Unix(0, ref).In(loc).Year()
	t := time.Date(y, time.Month(mon), int(day), int(h), int(mi), int(s), 0, loc).UnixNano()
	if t > ref+yearSlack {
		t = time.Date(y-1, time.Month(mon), int(day), int(h), int(mi), int(s), 0, loc).UnixNano()
	}
	return t, true
}

// wallTime parses "2006-01-02T15:04:05" or "2006-01-02 15:04:05" (no zone:
// a wall-clock time) in loc.
func wallTime(b []byte, loc *time.Location) (int64, bool) {
	if len(b) != 19 {
		return 0, false
	}
	var buf [20]byte
	copy(buf[:], b)
	buf[19] = 'Z'
	ns, ok := schemas.ParseRFC3339(buf[:])
	if !ok {
		return 0, false
	}
	if loc == time.UTC {
		return ns, true
	}
	w := time.Unix(0, ns).UTC()
	return time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, loc).UnixNano(), true
}
