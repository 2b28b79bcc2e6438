package bus

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestMetadata: the metadata of messages fetched from the embedded server,
// first deliveries and redeliveries, is msg.Metadata()'s, and reading it
// does not allocate.
func TestMetadata(t *testing.T) {
	ctx, js := serverJS(t)
	cons, _, err := Ensure(ctx, js, DefaultStreamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if _, err := js.Publish(ctx, LogSubject(schemas.FormatJSON, "gw1"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(msgs []jetstream.Msg) {
		t.Helper()
		for _, m := range msgs {
			want, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			var got jetstream.MsgMetadata
			if err := Metadata(m, &got); err != nil {
				t.Fatal(err)
			}
			if got != *want {
				t.Fatalf("reply %q: metadata %+v, want %+v", m.Reply(), got, *want)
			}
			if a := testing.AllocsPerRun(10, func() { _ = Metadata(m, &got) }); a != 0 {
				t.Fatalf("reply %q: %.0f allocations", m.Reply(), a)
			}
		}
	}
	fetch := func() []jetstream.Msg {
		t.Helper()
		b, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != n {
			t.Fatalf("fetched %d messages, want %d (%v)", len(msgs), n, b.Error())
		}
		return msgs
	}
	msgs := fetch()
	check(msgs)
	for _, m := range msgs {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	again := fetch()
	check(again)
	if md, _ := again[0].Metadata(); md.NumDelivered != 2 {
		t.Fatalf("redelivered message: %d deliveries, want 2", md.NumDelivered)
	}
}

// FuzzAckSubject: any reply subject parses as an ack subject exactly when
// nats.go's parser (legacy nats.Msg.Metadata, the rules jetstream's
// Metadata shares) takes it, into the same metadata.
func FuzzAckSubject(f *testing.F) {
	for _, s := range []string{
		"$JS.ACK.IOTWATCH_LOGS.iotwatch-scorer.1.42.41.1765152000123456789.7",
		"$JS.ACK._.ABCHASH.IOTWATCH_LOGS.iotwatch-scorer.3.42.41.1765152000123456789.0.rnd",
		"$JS.ACK.hub.ABCHASH.S.C.1.2.3.4.5",
		"$JS.ACK.hub.ABCHASH.S.C.1.2.3.4.5.x.y",
		"$JS.ACK.S.C.1.2.3.4",     // 8 tokens
		"$JS.ACK.d.h.S.C.1.2.3.4", // 10 tokens
		"$JS.ACK.S.C.x1.2.3.4.5",  // not a number: 0
		"$JS.ACK.S.C.1.18446744073709551615.3.4.5",
		"$JS.ACK.S.C.1.99999999999999999999.3.4.5", // overflow, as nats.go
		"$JS.ACK.S.C.1.2.3.-4.5",
		"$JS.ACK.S.C.1.2.3.4.\u00e9",
		"$JS.NAK.S.C.1.2.3.4.5",
		"_INBOX.abc",
		"",
		"$JS.ACK..........",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		var got jetstream.MsgMetadata
		ok := parseAckSubject(reply, &got)
		want, err := (&nats.Msg{Reply: reply, Sub: &nats.Subscription{}}).Metadata()
		if ok != (err == nil) {
			t.Fatalf("reply %q: parsed %v, nats.go's error %v", reply, ok, err)
		}
		if !ok {
			return
		}
		w := jetstream.MsgMetadata{
			Sequence:     jetstream.SequencePair{Stream: want.Sequence.Stream, Consumer: want.Sequence.Consumer},
			NumDelivered: want.NumDelivered, NumPending: want.NumPending, Timestamp: want.Timestamp,
			Stream: want.Stream, Consumer: want.Consumer, Domain: want.Domain,
		}
		if got != w {
			t.Fatalf("reply %q: metadata %+v, want %+v", reply, got, w)
		}
	})
}
