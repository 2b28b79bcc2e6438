package schemas

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends ev in the canonical JSON encoding (one line, no newline).
// The command is written already normalized in "cmd". Decoding the result with a
// Decoder yields an equal Event, except ID, Seq and Line, which come from the stream.
func AppendJSON(dst []byte, ev *Event) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, SchemaVersion, 10)
	dst = append(dst, `,"ts":"`...)
	dst = time.Unix(0, ev.Time).UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	if ev.Source != SourceUnknown {
		dst = appendStr(dst, "src", []byte(ev.Source.String()))
	}
	dst = appendStr(dst, "src_id", ev.SourceID)
	dst = appendStr(dst, "tenant", ev.Tenant)
	dst = appendStr(dst, "device", ev.Device)
	if ev.IDMethod != IDUnknown {
		dst = appendStr(dst, "id_by", []byte(ev.IDMethod.String()))
	}
	dst = appendStr(dst, "api_key", ev.APIKey)
	dst = appendStr(dst, "class", ev.Class)
	dst = appendStr(dst, "fw", ev.Firmware)
	if ev.ClientIP.IsValid() {
		dst = append(dst, `,"ip":"`...)
		dst = ev.ClientIP.AppendTo(dst)
		dst = append(dst, '"')
	}
	if ev.Country.Known() {
		dst = appendStr(dst, "country", ev.Country[:])
	}
	if ev.ASN != 0 {
		dst = appendNum(dst, "asn", uint64(ev.ASN))
	}
	if ev.Protocol != ProtoUnknown {
		dst = appendStr(dst, "proto", []byte(ev.Protocol.String()))
	}
	dst = appendStr(dst, "cmd", ev.Command)
	dst = appendArgs(dst, ev)
	if ev.Status != 0 {
		dst = appendNum(dst, "status", uint64(ev.Status))
	}
	if ev.Auth != AuthUnknown {
		dst = appendStr(dst, "auth", []byte(ev.Auth.String()))
	}
	if ev.Verdict != VerdictNone {
		dst = appendStr(dst, "verdict", []byte(ev.Verdict.String()))
	}
	dst = appendNum(dst, "bytes_in", ev.BytesIn)
	dst = appendNum(dst, "bytes_out", ev.BytesOut)
	dst = append(dst, `,"latency_ms":`...)
	dst = strconv.AppendFloat(dst, float64(ev.Latency)/1000, 'f', -1, 64)
	return append(dst, '}')
}

func appendNum(dst []byte, key string, v uint64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return strconv.AppendUint(dst, v, 10)
}

func appendStr(dst []byte, key string, v []byte) []byte {
	if len(v) == 0 {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return AppendQuoted(dst, v)
}

// AppendQuoted appends b as a JSON string, replacing invalid UTF-8 with U+FFFD.
func AppendQuoted(dst, b []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, "\ufffd"...)
		} else {
			dst = append(dst, b[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}
