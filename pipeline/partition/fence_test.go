package partition_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/partition"
)

// TestStalledOwnerIsFenced stalls a scorer that owns all 8 partitions, in
// the middle of scoring a batch, for 4 pinned TTLs (all its goroutines: as
// SIGSTOP or a long GC pause would), while events keep arriving. The other
// scorer takes every partition; the stalled one, when it wakes, must not ack
// what it held (given back: the new owner scores it), hand on nothing more
// of the partitions, and take no partition back under its old pins. So no
// event is acked by both, every event is acked, and the only events judged
// by both are those the stalled scorer had in hand, whose acks it was
// refused. IOTWATCH_FENCE_BEFORE=1 runs the same stall with the fence
// off and logs what is acked twice (the behaviour before the fence).
func TestStalledOwnerIsFenced(t *testing.T) {
	const pinnedTTL = time.Second
	env := startPartitions(t, pinnedTTL, 3*time.Second)
	before := os.Getenv("IOTWATCH_FENCE_BEFORE") == "1"

	published, stopPub := publishEvery(t, env.JS)
	defer stopPub()

	res := &results{}
	cfg := partition.Config{PinnedTTL: pinnedTTL, PullBatch: 16, Rebalance: -1}
	a := startScorer(t, env.Server.URL(), "a", res, cfg)
	if before {
		partition.DisableFence(a.c)
	}
	waitOwned(t, a, 8)
	b := startScorer(t, env.Server.URL(), "b", res, cfg)
	// b waits for pins: a keeps all 8 (no release for balance).
	time.Sleep(300 * time.Millisecond) // traffic scored by a while b waits, not a wait for a result

	// Stall a, its loop with a message in hand, and its consumer.
	wake, stalledAt := make(chan struct{}), make(chan time.Time)
	a.stallAt <- func() {
		resume := partition.Stall(a.c)
		stalledAt <- time.Now()
		<-wake
		resume()
	}
	stalled := <-stalledAt
	waitOwned(t, b, 8)
	takeover := time.Since(stalled)
	for time.Since(stalled) < 4*pinnedTTL {
		time.Sleep(10 * time.Millisecond) // the stall's length, not a wait for a result
	}
	close(wake)
	woke := time.Now()

	// a fences its partitions off and gets none back: b keeps pulling.
	deadline := time.Now().Add(time.Minute)
	for len(a.c.Owned()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a still owns %v a minute after it woke", a.c.Owned())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	fenceTook := time.Since(woke)

	time.Sleep(300 * time.Millisecond) // traffic after the stall, not a wait for a result
	stopPub()
	want := int(published.Load())
	deadline = time.Now().Add(2 * time.Minute)
	for {
		res.mu.Lock()
		distinct := map[string]bool{}
		for _, s := range res.all {
			distinct[s.id] = true
		}
		res.mu.Unlock()
		if len(distinct) >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events acked two minutes after the last publish", len(distinct), want)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}

	res.mu.Lock()
	defer res.mu.Unlock()
	acked := map[string][]string{}
	for _, s := range res.all {
		acked[s.id] = append(acked[s.id], s.scorer)
	}
	judged := map[string]map[string]int{}
	for _, s := range res.judged {
		if judged[s.id] == nil {
			judged[s.id] = map[string]int{}
		}
		judged[s.id][s.scorer]++
	}
	ackedTwice, ackedByBoth, judgedByBoth := 0, 0, 0
	for id, by := range acked {
		if len(by) > 1 {
			ackedTwice++
			// One scorer acking an event twice is its own redelivery
			// after the ack wait (a slow loop on a loaded machine, one
			// round trip per ack): not what the fence is about.
			if slices.Contains(by, "a") && slices.Contains(by, "b") {
				ackedByBoth++
				if !before {
					t.Errorf("event %s acked by %v", id, by)
				}
			}
		}
	}
	for _, by := range judged {
		if by["a"] > 0 && by["b"] > 0 {
			judgedByBoth++
		}
	}
	fencedMsgs, fencedParts := a.c.Fenced()
	t.Logf("fence off: %v; %d events; b owned all 8 partitions %.2f s after a stalled (pinned TTL %s); a let go of them %.3f s after it woke; "+
		"a fenced %d partitions and gave back %d messages (%d acks refused); acked twice: %d, by a and b: %d; judged by both: %d",
		before, want, takeover.Seconds(), pinnedTTL, fenceTook.Seconds(), fencedParts, fencedMsgs, res.fenced, ackedTwice, ackedByBoth, judgedByBoth)
	if before {
		return
	}
	if len(acked) != want {
		t.Errorf("%d distinct events acked, %d published", len(acked), want)
	}
	// a lets go of its partitions either way: by its lease (fenced, counted)
	// or, when a pull it sent before the stall comes back first, by the
	// server's "pin id mismatch" (CI saw that order once on a loaded
	// machine: 0 fenced, 5 acks refused). What the fence is for is checked
	// below and above: a's acks after the stall refused, nothing acked by
	// both.
	if fencedParts == 0 {
		t.Logf("a fenced off no partition after a stall of %s (4 pinned TTLs): the server's refusal of its pull ended them first", 4*pinnedTTL)
	}
	// a held at least the message its loop stalled on: its ack was
	// refused, and only such messages may be judged by both.
	if res.fenced == 0 {
		t.Error("no ack of a refused: a acked what it held during the stall")
	}
	if judgedByBoth > res.fenced {
		t.Errorf("%d events judged by both, more than the %d a held when it stalled (acks refused)", judgedByBoth, res.fenced)
	}
}

func waitOwned(t *testing.T, s *scorer, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(s.c.Owned()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s owns %v, want %d partitions, after a minute", s.name, s.c.Owned(), n)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
}
