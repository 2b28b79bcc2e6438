package schemas

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// The body of a dead-letter message.
//
// The pipeline sends the dead letters of one log message with the same reason
// together, in one message on SubjectDLQPrefix.<reason> (several when they do
// not fit the server's max payload), with the headers HeaderDLQReason,
// HeaderDLQSubject, HeaderDLQSequence (the log message in IOTWATCH_LOGS),
// HeaderDLQLine (the first entry's line) and HeaderDLQCount (how many
// entries). The body is the entries, each an entry line then the record:
//
//	<line> <stored>[/<size>][ <detail>]\n<stored bytes of the record>\n
//
// line is the record's line in its log message (from 0); stored is how many
// bytes of the record follow; /size, present only when the record was cut,
// is its whole length (the original stays in IOTWATCH_LOGS); detail is the
// human-readable detail on one line. An entry line without a detail (no
// space after the lengths) has the detail of the entry before it, so that a
// hundred records failing alike repeat it once. Records are stored as they
// came, bytes and all, so the body reads as text when they were text:
//
//	0 1 invalid character 'x' looking for beginning of value
//	x
//	1 1
//	y

// DeadLetter is one record the pipeline could not score: where it was in its
// log message, why, and (a prefix of) the record itself.
type DeadLetter struct {
	Line   uint32 // the record's line in its log message, from 0
	Reason string // a DeadLetter* reason code
	Detail string // human-readable, one line
	Size   int    // the record's whole length; len(Record) when not cut
	Record []byte // the record, or its first bytes when it was cut
}

// Truncated reports whether Record holds only a prefix of the record.
func (d *DeadLetter) Truncated() bool { return d.Size > len(d.Record) }

// AppendDeadLetter appends the body entry of d to dst. prev is the entry
// appended before it in the same body, or nil for the first: an entry with the
// same detail as prev leaves it out. CR and LF in the detail become spaces.
func AppendDeadLetter(dst []byte, d, prev *DeadLetter) []byte {
	dst = strconv.AppendUint(dst, uint64(d.Line), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(d.Record)), 10)
	if d.Truncated() {
		dst = append(dst, '/')
		dst = strconv.AppendInt(dst, int64(d.Size), 10)
	}
	if prev == nil || !sameDetail(prev.Detail, d.Detail) {
		dst = append(dst, ' ')
		for i := 0; i < len(d.Detail); i++ {
			c := d.Detail[i]
			if c == '\r' || c == '\n' {
				c = ' '
			}
			dst = append(dst, c)
		}
	}
	dst = append(dst, '\n')
	dst = append(dst, d.Record...)
	return append(dst, '\n')
}

// DeadLetterEntrySize is the length AppendDeadLetter gives d after prev.
func DeadLetterEntrySize(d, prev *DeadLetter) int {
	n := decimalLen(uint64(d.Line)) + 1 + decimalLen(uint64(len(d.Record))) + 1 + len(d.Record) + 1
	if d.Truncated() {
		n += 1 + decimalLen(uint64(d.Size))
	}
	if prev == nil || !sameDetail(prev.Detail, d.Detail) {
		n += 1 + len(d.Detail)
	}
	return n
}

// sameDetail reports whether details a and b are written alike (CR and LF
// as spaces).
func sameDetail(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '\r' || x == '\n' {
			x = ' '
		}
		if y == '\r' || y == '\n' {
			y = ' '
		}
		if x != y {
			return false
		}
	}
	return true
}

func decimalLen(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// ParseDeadLetters appends the entries of a dead-letter message body to dst,
// each with the given reason (the message's HeaderDLQReason). Records are
// subslices of body.
func ParseDeadLetters(dst []DeadLetter, body []byte, reason string) ([]DeadLetter, error) {
	detail := ""
	for off := 0; off < len(body); {
		nl := bytes.IndexByte(body[off:], '\n')
		if nl < 0 {
			return dst, fmt.Errorf("cannot parse dead letters: entry line at byte %d has no end", off)
		}
		head := string(body[off : off+nl])
		off += nl + 1
		lineStr, rest, ok := strings.Cut(head, " ")
		if !ok {
			return dst, fmt.Errorf("cannot parse dead letters: entry line %q has no length", head)
		}
		lengths, d, hasDetail := strings.Cut(rest, " ")
		if hasDetail {
			detail = d
		}
		storedStr, sizeStr, cut := strings.Cut(lengths, "/")
		line, err1 := strconv.ParseUint(lineStr, 10, 32)
		stored, err2 := strconv.Atoi(storedStr)
		size := stored
		var err3 error
		if cut {
			size, err3 = strconv.Atoi(sizeStr)
		}
		if err1 != nil || err2 != nil || err3 != nil || stored < 0 || size < stored {
			return dst, fmt.Errorf("cannot parse dead letters: bad entry line %q", head)
		}
		if len(body)-off < stored+1 || body[off+stored] != '\n' {
			return dst, fmt.Errorf("cannot parse dead letters: the record of line %d is not %d bytes and a newline", line, stored)
		}
		dst = append(dst, DeadLetter{Line: uint32(line), Reason: reason, Detail: detail, Size: size, Record: body[off : off+stored : off+stored]})
		off += stored + 1
	}
	return dst, nil
}
