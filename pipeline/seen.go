package pipeline

// seenWindow is how many stream sequences seenSeqs remembers back from the
// newest: 2^20 (128 KiB). A message this run dispatched is recognised when it
// is redelivered within that many sequences of the newest dispatched (at 100
// lines a message, 100 million events: far more than one ack wait's worth).
const seenWindow = 1 << 20

// seenSeqs remembers which stream sequences this run has dispatched to the
// workers, over the last seenWindow sequences: a ring bitmap, no allocation
// after the first. Only the ingest goroutine uses it.
//
// JetStream redelivers a message whose ack it did not get within the ack
// wait: a slow sink, or an ack lost with a stream or consumer leader killed
// in a cluster. A message this run has dispatched already is not dispatched
// again: judged again, its events would meet records that have learned them
// and later events, and get alerts their first judging did not (issue 15,
// item 4). It is acked after the results queued before it (its first
// delivery's among them), as a redelivery at or below a restored
// checkpoint's position is (doneUpTo).
type seenSeqs struct {
	bits []uint64
	base uint64 // the first word (sequence / 64) the ring holds
}

// add records seq as dispatched. A sequence older than the window is not
// recorded.
func (s *seenSeqs) add(seq uint64) {
	if s.bits == nil {
		s.bits = make([]uint64, seenWindow/64)
		s.base = seq / 64
	}
	w, n := seq/64, uint64(len(s.bits))
	if w < s.base {
		return
	}
	if w >= s.base+n { // slide: forget the oldest words
		newBase := w - n + 1
		if newBase-s.base >= n {
			clear(s.bits)
		} else {
			for i := s.base; i < newBase; i++ {
				s.bits[i%n] = 0
			}
		}
		s.base = newBase
	}
	s.bits[w%n] |= 1 << (seq % 64)
}

// has reports whether seq was dispatched, as far as the window remembers.
func (s *seenSeqs) has(seq uint64) bool {
	w, n := seq/64, uint64(len(s.bits))
	if s.bits == nil || w < s.base || w >= s.base+n {
		return false
	}
	return s.bits[w%n]&(1<<(seq%64)) != 0
}
