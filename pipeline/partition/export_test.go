package partition

// Stall stops c's pulls, keep-alives, hand-ons and Fetch, as a stopped
// process (SIGSTOP, a long GC pause) would, until resume is called.
func Stall(c *Consumer) (resume func()) {
	c.gate.Lock()
	return c.gate.Unlock
}

// DisableFence turns c's fence off: c hands on and acks a partition's
// messages whatever its lease (the behaviour before fencing).
func DisableFence(c *Consumer) { c.noFence.Store(true) }
