package pipeline

import "testing"

// TestDefaultMaxDevices: the device cap is on by default, shared by the
// workers (DefaultStateBudget / StateBytesPerDevice in all), an explicit cap
// is kept, and a negative one means none.
func TestDefaultMaxDevices(t *testing.T) {
	f := func(workers, maxDevices, want int) {
		t.Helper()
		c := Config{Workers: workers}
		c.Worker.MaxDevices = maxDevices
		c.defaults()
		if got := c.ScoreConfig().Worker.MaxDevices; got != want {
			t.Errorf("workers %d, MaxDevices %d: cap per worker %d, want %d", workers, maxDevices, got, want)
		}
	}
	if DefaultMaxDevices != DefaultStateBudget/StateBytesPerDevice || DefaultMaxDevices < 1_000_000 {
		t.Fatalf("DefaultMaxDevices %d is not the budget's share", DefaultMaxDevices)
	}
	f(1, 0, DefaultMaxDevices)
	f(3, 0, (DefaultMaxDevices+2)/3)
	f(3, 500, 500)
	f(3, -1, 0)
}
