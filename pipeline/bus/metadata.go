package bus

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Metadata fills md with msg's JetStream metadata (stream and consumer
// sequences, deliveries, pending count, timestamp, stream, consumer,
// domain), as msg.Metadata() returns it, parsed from the ack subject
// (msg.Reply()) without allocating: Metadata allocates the record it
// returns, once per message on the consume path. The strings of md alias
// msg's reply subject. A reply that is not an ack subject is left to
// msg.Metadata(), whose result (or error) Metadata then returns.
//
// The ack subject is $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
// (9 tokens), or $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
// followed by any tokens (at least 11; domain "_" is none).
func Metadata(msg jetstream.Msg, md *jetstream.MsgMetadata) error {
	if parseAckSubject(msg.Reply(), md) {
		return nil
	}
	m, err := msg.Metadata()
	if err != nil {
		return err
	}
	*md = *m
	return nil
}

// ackPrefix starts every JetStream ack subject.
const ackPrefix = "$JS.ACK."

// parseAckSubject fills md from the ack subject s and reports whether s is
// one (nats.go's rules: 9 tokens, or at least 11).
func parseAckSubject(s string, md *jetstream.MsgMetadata) bool {
	rest, ok := strings.CutPrefix(s, ackPrefix)
	if !ok {
		return false
	}
	tokens := strings.Count(s, ".") + 1
	var domain string
	switch {
	case tokens == 9:
	case tokens >= 11:
		domain, rest, _ = strings.Cut(rest, ".")
		_, rest, _ = strings.Cut(rest, ".") // the account hash
		if domain == "_" {
			domain = ""
		}
	default:
		return false
	}
	var f [7]string // stream, consumer, delivered, sseq, cseq, tm, pending
	for i := range f {
		f[i], rest, _ = strings.Cut(rest, ".")
	}
	*md = jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Stream: parseNum(f[3]), Consumer: parseNum(f[4])},
		NumDelivered: parseNum(f[2]),
		NumPending:   parseNum(f[6]),
		Timestamp:    time.Unix(0, int64(parseNum(f[5]))),
		Stream:       f[0],
		Consumer:     f[1],
		Domain:       domain,
	}
	return true
}

// parseNum is nats.go's number of an ack subject's token: its decimal
// value, 0 when it has any other byte (overflow is not detected).
func parseNum(d string) (n uint64) {
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}
