package cluster_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkBudgetTake: what one block costs the deciding worker, granted
// by the bucket (a KV get and an update: two round trips), refused in a
// minute known full (no round trip), and with the local budget.
func BenchmarkBudgetTake(b *testing.B) {
	env := natstest.Start(b, natsserver.Options{})
	kv := env.KV
	var err error
	if kv, err = env.JS.KeyValue(b.Context(), schemas.KVBudgets); err != nil {
		b.Fatal(err)
	}
	b.Run("granted", func(b *testing.B) {
		bud := cluster.NewKVBudget(kv, cluster.BudgetConfig{Name: "bench", Max: 1 << 30}, nil)
		b.ReportAllocs()
		tok, m := uint64(0), int64(0)
		for b.Loop() {
			tok++
			if tok%100 == 0 { // a minute's list stays at a cap's size (100)
				m++
			}
			if !bud.Take(m, tok) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		bud := cluster.NewKVBudget(kv, cluster.BudgetConfig{Name: "bench-full", Max: 1}, nil)
		bud.Take(1, 1)
		b.ReportAllocs()
		tok := uint64(1)
		for b.Loop() {
			tok++
			if bud.Take(1, tok) {
				b.Fatal("granted over the cap")
			}
		}
	})
	b.Run("local", func(b *testing.B) {
		bud := decide.NewLocalBudget(1 << 30)
		b.ReportAllocs()
		tok := uint64(0)
		for b.Loop() {
			tok++
			bud.Take(0, tok)
		}
	})
}
