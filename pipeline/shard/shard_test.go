package shard

import (
	"strconv"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

func TestOfIsStableAndBalanced(t *testing.T) {
	const n, devices = 7, 70000
	counts := make([]int, n)
	for i := range devices {
		k := schemas.Hash2([]byte("acme"), []byte("dev-"+strconv.Itoa(i)))
		w := Of(k, n)
		if w != Of(k, n) || w < 0 || w >= n {
			t.Fatalf("Of(%x) = %d, unstable or out of range", k, w)
		}
		counts[w]++
	}
	for w, c := range counts {
		if c < devices/n*9/10 || c > devices/n*11/10 {
			t.Errorf("worker %d owns %d devices, want about %d", w, c, devices/n)
		}
	}
}
