package pipeline

import "testing"

func TestSeenSeqs(t *testing.T) {
	var s seenSeqs
	if s.has(5) {
		t.Fatal("an empty set has 5")
	}
	for _, seq := range []uint64{1000, 1001, 1064, 3000} {
		s.add(seq)
	}
	for _, c := range []struct {
		seq  uint64
		want bool
	}{{1000, true}, {1001, true}, {1002, false}, {1064, true}, {3000, true}, {999, false}, {0, false}} {
		if got := s.has(c.seq); got != c.want {
			t.Errorf("has(%d) = %v, want %v", c.seq, got, c.want)
		}
	}
	// Sliding by less than the window keeps the recent ones, forgets the oldest.
	far := uint64(1000 + seenWindow + 100)
	s.add(far)
	if s.has(1000) || s.has(1001) {
		t.Error("sequences more than the window behind the newest are still remembered")
	}
	if !s.has(3000) || !s.has(far) {
		t.Error("a slide forgot sequences within the window")
	}
	// Positions freed by the slide read as not seen.
	if s.has(far - 64) {
		t.Error("a position never added reads as seen after the slide")
	}
	// A jump of more than the window forgets everything before.
	s.add(far + 10*seenWindow)
	if s.has(far) || s.has(3000) {
		t.Error("a jump past the window kept old sequences")
	}
	s.add(5) // older than the window: ignored
	if s.has(5) {
		t.Error("a sequence older than the window was recorded")
	}
}
