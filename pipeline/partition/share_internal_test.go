package partition

import (
	"fmt"
	"slices"
	"testing"
)

// TestShareConverges plays the balance rules (share.give, share.takes) in
// rounds over instance counts 1-8 and partition counts 1-64, from one
// instance owning everything and from every instance but one owning ceil
// (6, 6, 4 of 16: no instance owns more than ceil, yet the share is not
// fair): each round every instance gives what give says, and each released
// partition goes to the instance the rules let take it (on the counts before
// the round's releases: its pulls are waiting at the server already) that
// owns the most (the worst choice the server's waiting pulls could make), or, when none
// may take it (an orphan), to the one owning the most among the others. Every
// play must reach a fair share (each owns floor or ceil) within 3 rounds.
// The rule before (give only beyond ceil, every instance takes) stayed at 6,
// 6, 4 for ever.
func TestShareConverges(t *testing.T) {
	worst := 0
	for n := 1; n <= 8; n++ {
		for parts := 1; parts <= 64; parts++ {
			floor, ceil := parts/n, (parts+n-1)/n
			starts := [][]int{append([]int{parts}, make([]int, n-1)...)}
			if rest := parts - (n-1)*ceil; n > 1 && rest >= 0 {
				s := slices.Repeat([]int{ceil}, n-1)
				starts = append(starts, append(s, rest))
			}
			for _, start := range starts {
				rounds := playBalance(t, parts, slices.Clone(start))
				if rounds < 0 {
					t.Errorf("%d instances, %d partitions (floor %d, ceil %d): no fair share from %v in 20 rounds", n, parts, floor, ceil, start)
				}
				if rounds > 2*n {
					t.Errorf("%d instances, %d partitions: a fair share from %v took %d rounds, more than twice the instances", n, parts, start, rounds)
				}
				worst = max(worst, rounds)
			}
		}
	}
	t.Logf("the slowest play took %d rounds", worst)
}

// playBalance plays rounds from owned and returns how many it took to reach
// a fair share (-1: not within 20).
func playBalance(t *testing.T, parts int, owned []int) int {
	t.Helper()
	n := len(owned)
	fair := func() bool {
		for _, o := range owned {
			if o < parts/n || o > (parts+n-1)/n {
				return false
			}
		}
		return true
	}
	shareFor := func(i int) share {
		others := slices.Delete(slices.Clone(owned), i, i+1)
		return shareOf(parts, n, others)
	}
	for round := 0; round <= 20; round++ {
		if fair() {
			return round
		}
		// Every instance decides on the counts of the round's start.
		var released []int // the releasers, one entry per partition
		gives := make([]int, n)
		for i := range owned {
			gives[i] = shareFor(i).give(owned[i])
		}
		for i, g := range gives {
			owned[i] -= g
			for range g {
				released = append(released, i)
			}
		}
		// Who takes is decided on the counts before the releases: an
		// instance's waiting pulls are at the server already, and it may
		// be pinned more than it lacks.
		takes := make([]bool, n)
		for j := range owned {
			takes[j] = shareFor(j).takes(owned[j] + gives[j])
		}
		for _, from := range released {
			to := -1
			for j := range owned {
				if j != from && takes[j] && (to < 0 || owned[j] > owned[to]) {
					to = j
				}
			}
			if to < 0 { // an orphan: whoever probes first
				for j := range owned {
					if j != from && (to < 0 || owned[j] > owned[to]) {
						to = j
					}
				}
			}
			if to < 0 {
				to = from // one instance: it takes its own back
			}
			owned[to]++
		}
		if sum := sumOf(owned); sum != parts {
			panic(fmt.Sprintf("BUG: %d partitions owned of %d", sum, parts))
		}
	}
	return -1
}

func sumOf(s []int) int {
	n := 0
	for _, v := range s {
		n += v
	}
	return n
}
